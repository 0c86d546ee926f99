import UsherCaddyfile
import UsherCore

/// `http.reverse_proxy.transport.http` (`transport http { ... }`).
func parseHTTPTransport(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> TransportValue {
    var f = HTTPTransportFields()
    d.next()
    while d.nextBlock(0) {
        func duration(_ what: String) throws -> Int64 {
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        func bytes(_ what: String) throws -> Int64 {
            do { return Int64(try Go.parseBytes(d.val)) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        func int(_ what: String) throws -> Int {
            do { return try Go.atoi(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        switch d.val {
        case "read_buffer":
            guard d.nextArg() else { throw d.argErr() }
            f.readBufferSize = Int(try bytes("invalid read buffer size"))
        case "write_buffer":
            guard d.nextArg() else { throw d.argErr() }
            f.writeBufferSize = Int(try bytes("invalid write buffer size"))
        case "read_timeout":
            guard d.nextArg() else { throw d.argErr() }
            f.readTimeout = try duration("invalid read timeout duration")
        case "write_timeout":
            guard d.nextArg() else { throw d.argErr() }
            f.writeTimeout = try duration("invalid write timeout duration")
        case "max_response_header":
            guard d.nextArg() else { throw d.argErr() }
            f.maxResponseHeaderSize = try bytes("invalid max response header size")
        case "proxy_protocol":
            guard d.nextArg() else { throw d.argErr() }
            guard d.val == "v1" || d.val == "v2" else { throw d.err("invalid proxy protocol version '\(d.val)'") }
            f.proxyProtocol = d.val
        case "forward_proxy_url":
            guard d.nextArg() else { throw d.argErr() }
            f.networkProxy = moduleObject(["url": .string(d.val)], key: "from", name: "url")
        case "network_proxy":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "caddy.network_proxy." + name)
            f.networkProxy = moduleObject(fields, key: "from", name: name)
        case "dial_timeout":
            guard d.nextArg() else { throw d.argErr() }
            f.dialTimeout = try duration("bad timeout value")
        case "dial_fallback_delay":
            guard d.nextArg() else { throw d.argErr() }
            f.fallbackDelay = try duration("bad fallback delay value")
        case "response_header_timeout":
            guard d.nextArg() else { throw d.argErr() }
            f.responseHeaderTimeout = try duration("bad timeout value")
        case "expect_continue_timeout":
            guard d.nextArg() else { throw d.argErr() }
            f.expectContinueTimeout = try duration("bad timeout value")
        case "resolvers":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.err("must specify at least one resolver address") }
            f.resolvers = a
        case "tls":
            if f.tls == nil { f.tls = JSONObject() }
        case "tls_client_auth":
            if f.tls == nil { f.tls = JSONObject() }
            let a = d.remainingArgs()
            switch a.count {
            case 1: f.tls!["client_certificate_automate"] = .string(a[0])
            case 2:
                f.tls!["client_certificate_file"] = .string(a[0])
                f.tls!["client_certificate_key_file"] = .string(a[1])
            default: throw d.argErr()
            }
        case "tls_insecure_skip_verify":
            if d.nextArg() { throw d.argErr() }
            if f.tls == nil { f.tls = JSONObject() }
            f.tls!["insecure_skip_verify"] = .bool(true)
        case "tls_curves":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            if f.tls == nil { f.tls = JSONObject() }
            f.tls!["curves"] = .strings(a)
        case "tls_timeout":
            guard d.nextArg() else { throw d.argErr() }
            let v = try duration("bad timeout value")
            if f.tls == nil { f.tls = JSONObject() }
            f.tls!.putDuration("handshake_timeout", v)
        case "tls_trusted_ca_certs":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            if f.tls == nil { f.tls = JSONObject() }
            if f.tls!["ca"] != nil { throw d.err("cannot specify both 'tls_trust_pool' and 'tls_trusted_ca_certs") }
            f.tls!["root_ca_pem_files"] = .strings(a)
        case "tls_server_name":
            guard d.nextArg() else { throw d.argErr() }
            if f.tls == nil { f.tls = JSONObject() }
            f.tls!.put("server_name", d.val)
        case "tls_renegotiation":
            if f.tls == nil { f.tls = JSONObject() }
            guard d.nextArg() else { throw d.argErr() }
            guard ["never", "once", "freely"].contains(d.val) else { throw d.argErr() }
            f.tls!["renegotiation"] = .string(d.val)
        case "tls_except_ports":
            if f.tls == nil { f.tls = JSONObject() }
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            f.tls!["except_ports"] = .strings(a)
        case "keepalive":
            guard d.nextArg() else { throw d.argErr() }
            if f.keepAlive == nil { f.keepAlive = JSONObject() }
            if d.val == "off" {
                f.keepAlive!["enabled"] = .bool(false)
                break
            }
            f.keepAlive!.putDuration("idle_timeout", try duration("bad duration value"))
        case "keepalive_interval":
            guard d.nextArg() else { throw d.argErr() }
            let v = try duration("bad interval value")
            if f.keepAlive == nil { f.keepAlive = JSONObject() }
            f.keepAlive!.putDuration("probe_interval", v)
        case "keepalive_idle_conns":
            guard d.nextArg() else { throw d.argErr() }
            let n = try int("bad integer value")
            if f.keepAlive == nil { f.keepAlive = JSONObject() }
            f.keepAlive!.put("max_idle_conns", n)
        case "keepalive_idle_conns_per_host":
            guard d.nextArg() else { throw d.argErr() }
            let n = try int("bad integer value")
            if f.keepAlive == nil { f.keepAlive = JSONObject() }
            f.keepAlive!.put("max_idle_conns_per_host", n)
        case "versions":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            f.versions = a
        case "compression":
            if d.nextArg() && d.val == "off" { f.compression = false }
        case "max_conns_per_host":
            guard d.nextArg() else { throw d.argErr() }
            f.maxConnsPerHost = try int("bad integer value")
        case "tls_trust_pool":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "tls.ca_pool.source." + name)
            if f.tls == nil { f.tls = JSONObject() }
            if f.tls!["root_ca_pem_files"] != nil {
                throw d.err("cannot specify both 'tls_trust_pool' and 'tls_trusted_ca_certs'")
            }
            if f.tls!["ca"] != nil { throw d.err("cannot specify \"tls_trust_pool\" twice in caddyfile") }
            f.tls!["ca"] = .object(moduleObject(fields, key: "provider", name: name))
        case "local_address":
            guard d.nextArg() else { throw d.argErr() }
            f.localAddress = d.val
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
    }
    return TransportValue(name: "http", fields: f.json)
}

struct HTTPTransportFields {
    var resolvers: [String]?
    var tls: JSONObject?
    var keepAlive: JSONObject?
    var compression: Bool?
    var maxConnsPerHost = 0
    var proxyProtocol = ""
    var dialTimeout: Int64 = 0
    var fallbackDelay: Int64 = 0
    var responseHeaderTimeout: Int64 = 0
    var expectContinueTimeout: Int64 = 0
    var maxResponseHeaderSize: Int64 = 0
    var writeBufferSize = 0
    var readBufferSize = 0
    var readTimeout: Int64 = 0
    var writeTimeout: Int64 = 0
    var versions: [String] = []
    var localAddress = ""
    var networkProxy: JSONObject?

    var json: JSONObject {
        var o = JSONObject()
        if let resolvers {
            o[HTTPTransport.CodingKeys.resolver] = .object(
                resolvers.isEmpty ? JSONObject() : ["addresses": .strings(resolvers)])
        }
        o.put(HTTPTransport.CodingKeys.tls, tls.map(orderTLSConfig))
        o.put(HTTPTransport.CodingKeys.keepalive, keepAlive.map(orderKeepAlive))
        if let compression { o[HTTPTransport.CodingKeys.compression] = .bool(compression) }
        o.put(HTTPTransport.CodingKeys.maxConnsPerHost, maxConnsPerHost)
        o.put(HTTPTransport.CodingKeys.proxyProtocol, proxyProtocol)
        o.putDuration(HTTPTransport.CodingKeys.dialTimeout, dialTimeout)
        o.putDuration(HTTPTransport.CodingKeys.dialFallbackDelay, fallbackDelay)
        o.putDuration(HTTPTransport.CodingKeys.responseHeaderTimeout, responseHeaderTimeout)
        o.putDuration(HTTPTransport.CodingKeys.expectContinueTimeout, expectContinueTimeout)
        if maxResponseHeaderSize != 0 {
            o[HTTPTransport.CodingKeys.maxResponseHeaderSize] = .number(
                JSONNumber(literal: String(maxResponseHeaderSize)))
        }
        o.put(HTTPTransport.CodingKeys.writeBuffer, writeBufferSize)
        o.put(HTTPTransport.CodingKeys.readBuffer, readBufferSize)
        o.putDuration(HTTPTransport.CodingKeys.readTimeout, readTimeout)
        o.putDuration(HTTPTransport.CodingKeys.writeTimeout, writeTimeout)
        o.put(HTTPTransport.CodingKeys.versions, versions)
        o.put(HTTPTransport.CodingKeys.localAddress, localAddress)
        o.put(HTTPTransport.CodingKeys.networkProxy, networkProxy)
        return o
    }
}

func ordered(_ o: JSONObject, _ keys: [String]) -> JSONObject {
    var out = JSONObject()
    for k in keys { if let v = o[k] { out[k] = v } }
    for m in o where !keys.contains(m.key) { out[m.key] = m.value }
    return out
}

func orderTLSConfig(_ o: JSONObject) -> JSONObject {
    ordered(
        o,
        [
            "ca", "root_ca_pool", "root_ca_pem_files", "client_certificate_file", "client_certificate_key_file",
            "client_certificate_automate", "insecure_skip_verify", "handshake_timeout", "server_name",
            "renegotiation", "except_ports", "curves",
        ])
}

func orderKeepAlive(_ o: JSONObject) -> JSONObject {
    ordered(o, ["enabled", "probe_interval", "max_idle_conns", "max_idle_conns_per_host", "idle_timeout"])
}
