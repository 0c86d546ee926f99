import UsherCaddyfile
import UsherCore
import UsherHTTP
import UsherTLS

/// The `servers` global option: settings applied to the servers listening on an address (or to all).
struct ServerOptions {
    var listenerAddress = ""
    var name = ""
    var listenerWrappers: [JSONObject] = []
    var packetConnWrappers: [JSONObject] = []
    var readTimeout: Int64 = 0
    var readHeaderTimeout: Int64 = 0
    var readIdleTimeout: Int64 = 0
    var readMinRate = 0
    var writeTimeout: Int64 = 0
    var writeIdleTimeout: Int64 = 0
    var writeMinRate = 0
    var maxWriteChunk = 0
    var idleTimeout: Int64 = 0
    var keepAliveInterval: Int64 = 0
    var keepAliveIdle: Int64 = 0
    var keepAliveCount = 0
    var maxHeaderBytes = 0
    var enableFullDuplex = false
    var expectedUnderscoreHeaders: [String] = []
    var expectedDotHeaders: [String] = []
    var protocols: [String] = []
    var strictSNIHost: Bool?
    var trustedProxies: JSONObject?
    var trustedProxiesStrict = 0
    var trustedProxiesUnix = false
    var clientIPHeaders: [String] = []
    var shouldLogCredentials = false
    var metrics: HTTPMetricsConfig.Document?
    var trace = false
    var allow0RTT: Bool?
    /// Usher: accept WebTransport sessions on this server's HTTP/3 listener.
    var enableWebTransport = false
}

func parseServerOptions(_ input: GlobalOptionInput) throws -> Any? {
    let d = input.d
    let registry = input.context.registry
    d.next()
    var o = ServerOptions()
    if d.nextArg() {
        o.listenerAddress = d.val
        if d.nextArg() { throw d.argErr() }
    }
    func duration(_ what: String) throws -> Int64 {
        do { return try Go.caddyDuration(d.val) } catch { throw d.err("parsing \(what): \(error)") }
    }
    while d.nextBlock(0) {
        switch d.val {
        case "name":
            if o.listenerAddress.isEmpty { throw d.err("cannot set a name for a server without a listener address") }
            guard d.nextArg() else { throw d.argErr() }
            o.name = d.val
        case "listener_wrappers":
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                let name = d.val
                let v = try registry.unmarshalModuleObject(d, "caddy.listeners." + name)
                o.listenerWrappers.append(moduleObject(v, key: "wrapper", name: name))
            }
        case "packet_conn_wrappers":
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                let name = d.val
                let v = try registry.unmarshalModuleObject(d, "caddy.packetconns." + name)
                o.packetConnWrappers.append(moduleObject(v, key: "wrapper", name: name))
            }
        case "timeouts":
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                switch d.val {
                case "read_body":
                    guard d.nextArg() else { throw d.argErr() }
                    o.readTimeout = try duration("read_body timeout duration")
                case "read_body_idle":
                    let args = d.remainingArgs()
                    guard args.count == 1 || args.count == 2 else { throw d.argErr() }
                    do { o.readIdleTimeout = try Go.caddyDuration(args[0]) } catch {
                        throw d.err("parsing read_body_idle timeout duration: \(error)")
                    }
                    if args.count == 2 {
                        do { o.readMinRate = try Go.parseInt(args[1]) } catch {
                            throw d.err("parsing read_body_idle min_rate bytes/second: \(error)")
                        }
                    }
                case "read_header":
                    guard d.nextArg() else { throw d.argErr() }
                    o.readHeaderTimeout = try duration("read_header timeout duration")
                case "write":
                    guard d.nextArg() else { throw d.argErr() }
                    o.writeTimeout = try duration("write timeout duration")
                case "write_idle":
                    let args = d.remainingArgs()
                    guard args.count == 1 || args.count == 2 else { throw d.argErr() }
                    do { o.writeIdleTimeout = try Go.caddyDuration(args[0]) } catch {
                        throw d.err("parsing write_idle timeout duration: \(error)")
                    }
                    if args.count == 2 {
                        do { o.writeMinRate = try Go.parseInt(args[1]) } catch {
                            throw d.err("parsing write_idle min_rate bytes/second: \(error)")
                        }
                    }
                case "write_max_chunk":
                    guard let a = d.allArgs(1) else { throw d.argErr() }
                    do { o.maxWriteChunk = Int(try Go.parseBytes(a[0])) } catch {
                        throw d.err("parsing write_max_chunk: \(error)")
                    }
                case "idle":
                    guard d.nextArg() else { throw d.argErr() }
                    o.idleTimeout = try duration("idle timeout duration")
                default:
                    throw d.err("unrecognized timeouts option '\(d.val)'")
                }
            }
        case "keepalive_interval":
            guard d.nextArg() else { throw d.argErr() }
            o.keepAliveInterval = try duration("keepalive interval duration")
        case "keepalive_idle":
            guard d.nextArg() else { throw d.argErr() }
            o.keepAliveIdle = try duration("keepalive idle duration")
        case "keepalive_count":
            guard d.nextArg() else { throw d.argErr() }
            do { o.keepAliveCount = try Go.parseInt(d.val, bits: 32) } catch {
                throw d.err("parsing keepalive count int: \(error)")
            }
        case "max_header_size":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            do { o.maxHeaderBytes = Int(try Go.parseBytes(a[0])) } catch {
                throw d.err("parsing max_header_size: \(error)")
            }
        case "enable_full_duplex":
            if d.nextArg() { throw d.argErr() }
            o.enableFullDuplex = true
        case "expected_underscore_headers":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            o.expectedUnderscoreHeaders = args
        case "expected_dot_headers":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            o.expectedDotHeaders = args
        case "log_credentials":
            if d.nextArg() { throw d.argErr() }
            o.shouldLogCredentials = true
        case "protocols":
            for p in d.remainingArgs() {
                guard ["h1", "h2", "h2c", "h3"].contains(p) else {
                    throw d.err("unknown protocol '\(p)': expected h1, h2, h2c, or h3")
                }
                if o.protocols.contains(p) { throw d.err("protocol \(p) specified more than once") }
                o.protocols.append(p)
            }
            if d.nextBlock(d.nesting) { throw d.argErr() }
        case "strict_sni_host":
            if d.nextArg() && d.val != "insecure_off" && d.val != "on" {
                throw d.err("strict_sni_host only supports 'on' or 'insecure_off', got '\(d.val)'")
            }
            o.strictSNIHost = d.val != "insecure_off"
        case "trusted_proxies":
            guard d.nextArg() else {
                throw d.err("trusted_proxies expects an IP range source module name as its first argument")
            }
            let name = d.val
            let v = try registry.unmarshalModuleObject(d, "http.ip_sources." + name)
            o.trustedProxies = moduleObject(v, key: "source", name: name)
        case "trusted_proxies_strict":
            if d.nextArg() { throw d.argErr() }
            o.trustedProxiesStrict = 1
        case "trusted_proxies_unix":
            if d.nextArg() { throw d.argErr() }
            o.trustedProxiesUnix = true
        case "client_ip_headers":
            for h in d.remainingArgs() {
                if o.clientIPHeaders.contains(h) { throw d.err("client IP header \(h) specified more than once") }
                o.clientIPHeaders.append(h)
            }
            if d.nextBlock(d.nesting) { throw d.argErr() }
        case "metrics":
            var m = HTTPMetricsConfig.Document()
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                switch d.val {
                case "per_host": m.perHost = true
                default: throw d.err("unrecognized metrics option '\(d.val)'")
                }
            }
            o.metrics = m
        case "trace":
            if d.nextArg() { throw d.argErr() }
            o.trace = true
        case "0rtt":
            guard d.nextArg() else { throw d.argErr() }
            if d.val != "off" { throw d.err("unsupported 0rtt argument '\(d.val)' (only 'off' is supported)") }
            o.allow0RTT = false
        case "enable_webtransport":
            if d.nextArg() { throw d.argErr() }
            o.enableWebTransport = true
        default:
            throw d.err("unrecognized servers option '\(d.val)'")
        }
    }
    return o
}

/// Applies `servers` options to the servers whose listeners they name (the first matching option wins).
func applyServerOptions(_ servers: inout [String: ServerConfig.Document], _ ctx: AdaptContext) throws {
    guard let opts = ctx.options["servers"] as? [ServerOptions] else { return }
    var names = Set<String>()
    for o in opts where !o.name.isEmpty {
        if names.contains(o.name) { throw CaddyfileError("cannot use duplicate server name '\(o.name)'") }
        names.insert(o.name)
    }
    var renames: [(String, String)] = []
    for key in servers.keys.sorted(by: goLess) {
        let s = servers[key]!
        guard let o = opts.first(where: { $0.listenerAddress.isEmpty || s.listen.contains($0.listenerAddress) }) else {
            continue
        }
        s.listenerWrappers = o.listenerWrappers
        s.packetConnWrappers = o.packetConnWrappers
        s.readTimeout = o.readTimeout
        s.readHeaderTimeout = o.readHeaderTimeout
        s.readIdleTimeout = o.readIdleTimeout
        s.readMinRate = o.readMinRate
        s.writeTimeout = o.writeTimeout
        s.writeIdleTimeout = o.writeIdleTimeout
        s.writeMinRate = o.writeMinRate
        s.maxWriteChunk = o.maxWriteChunk
        s.idleTimeout = o.idleTimeout
        s.keepAliveInterval = o.keepAliveInterval
        s.keepAliveIdle = o.keepAliveIdle
        s.keepAliveCount = o.keepAliveCount
        s.maxHeaderBytes = o.maxHeaderBytes
        s.enableFullDuplex = o.enableFullDuplex
        s.expectedUnderscoreHeaders = o.expectedUnderscoreHeaders
        s.expectedDotHeaders = o.expectedDotHeaders
        s.protocols = o.protocols
        s.strictSNIHost = o.strictSNIHost
        s.trustedProxies = o.trustedProxies
        s.clientIPHeaders = o.clientIPHeaders
        s.trustedProxiesStrict = o.trustedProxiesStrict
        s.trustedProxiesUnix = o.trustedProxiesUnix
        s.metrics = o.metrics
        s.allow0RTT = o.allow0RTT
        s.enableWebTransport = o.enableWebTransport
        if o.shouldLogCredentials {
            if s.logs == nil { s.logs = ServerLogConfig.Document() }
            s.logs!.shouldLogCredentials = true
        }
        if o.trace {
            if s.logs == nil { s.logs = ServerLogConfig.Document() }
            s.logs!.trace = true
        }
        if !o.name.isEmpty { renames.append((key, o.name)) }
    }
    for (old, new) in renames {
        servers[new] = servers[old]
        servers[old] = nil
    }
}
