import UsherCaddyfile
import UsherCore

// `reverse_proxy` and the modules it configures: transports, selection policies, dynamic upstreams, plus the
// directives built on it (`copy_response`, `copy_response_headers`, `php_fastcgi`, `forward_auth`).

let reverseProxyParsers = CaddyfileSupport(
    directives: [
        "php_fastcgi": parsePHPFastCGI,
        "forward_auth": parseForwardAuth,
    ],
    handlerDirectives: [
        "reverse_proxy": { h in
            var rp = ReverseProxyConfig()
            try rp.unmarshal(h.d, h.registry)
            try rp.finalize(h)
            return rp.handler
        },
        "copy_response": parseCopyResponse,
        "copy_response_headers": parseCopyResponseHeaders,
    ],
    modules: [
        "http.reverse_proxy.transport.http": { d, r in .object(try parseHTTPTransport(d, r).fields) },
        "http.reverse_proxy.transport.fastcgi": { d, _ in .object(try parseFastCGITransport(d)) },
        "http.reverse_proxy.selection_policies.random": noArgPolicy,
        "http.reverse_proxy.selection_policies.least_conn": noArgPolicy,
        "http.reverse_proxy.selection_policies.round_robin": noArgPolicy,
        "http.reverse_proxy.selection_policies.first": noArgPolicy,
        "http.reverse_proxy.selection_policies.ip_hash": noArgPolicy,
        "http.reverse_proxy.selection_policies.client_ip_hash": noArgPolicy,
        "http.reverse_proxy.selection_policies.uri_hash": noArgPolicy,
        "http.reverse_proxy.selection_policies.weighted_round_robin": parseWeightedRoundRobin,
        "http.reverse_proxy.selection_policies.random_choose": parseRandomChoose,
        "http.reverse_proxy.selection_policies.query": { d, r in try parseKeyedHashPolicy(d, r, field: "key") },
        "http.reverse_proxy.selection_policies.header": { d, r in try parseKeyedHashPolicy(d, r, field: "field") },
        "http.reverse_proxy.selection_policies.cookie": parseCookiePolicy,
        "http.reverse_proxy.upstreams.srv": parseSRVUpstreams,
        "http.reverse_proxy.upstreams.a": parseAUpstreams,
        "http.reverse_proxy.upstreams.multi": parseMultiUpstreams,
        "caddy.network_proxy.url": { d, _ in
            d.next()
            d.next()
            return .object(["url": .string(d.val)])
        },
        "caddy.network_proxy.none": { _, _ in .object(JSONObject()) },
    ]
)

/// A transport module as the reverse proxy reasons about it (TLS on or off, h2c).
struct TransportValue {
    var name: String
    var fields: JSONObject

    var supportsTLS: Bool { name == "http" }
    var tlsEnabled: Bool { fields["tls"] != nil }
    mutating func enableTLS() { if fields["tls"] == nil { fields["tls"] = .object(JSONObject()) } }
    mutating func enableH2C() { fields["versions"] = .strings(["h2c", "2"]) }
}

/// An upstream dial address split into its parts (Caddy's `parsedAddr`).
struct UpstreamAddress {
    var network = ""
    var scheme = ""
    var host = ""
    var port = ""

    var dialAddress: String {
        if !network.isEmpty { return CaddyNetworkAddress.join(network, host, port) }
        if port.isEmpty && host.contains("{") { return host }
        return Go.joinHostPort(host, port)
    }
    var rangedPort: Bool { port.contains("-") }
    var replaceablePort: Bool { port.contains("{") && port.contains("}") }
    var isUnix: Bool { CaddyNetworkAddress.isUnix(network) }

    init(parsing input: String) throws {
        if input.contains("://") {
            if input.contains("{") {
                throw CaddyfileError("due to parsing difficulties, placeholders are not allowed when an upstream address contains a scheme")
            }
            var u: SimpleURL
            do {
                u = try SimpleURL(parsing: input)
            } catch let e as SimpleURL.PortError {
                // A port range is not a valid URL port; parse with a placeholder port and keep the range.
                guard e.port.contains("-"), let colon = input.lastIndex(of: ":") else {
                    throw CaddyfileError("parsing upstream URL: \(e)")
                }
                let range = String(input[input.index(after: colon)...])
                if range.filter({ $0 == "-" }).count != 1 {
                    throw CaddyfileError("parsing upstream URL: parse \"\(input)\": port range invalid: \(range)")
                }
                do { u = try SimpleURL(parsing: input.replacingAll(range, with: "0")) } catch {
                    throw CaddyfileError("parsing upstream URL: \(error)")
                }
                port = range
            } catch {
                throw CaddyfileError("parsing upstream URL: \(error)")
            }
            if port.isEmpty { port = u.port }
            if !u.path.isEmpty || !u.rawQuery.isEmpty || !u.fragment.isEmpty {
                throw CaddyfileError("for now, URLs for proxy upstreams only support scheme, host, and port components")
            }
            if u.scheme == "http" && port == "443" {
                throw CaddyfileError("upstream address has conflicting scheme (http://) and port (:443, the HTTPS port)")
            }
            if u.scheme == "https" && port == "80" {
                throw CaddyfileError("upstream address has conflicting scheme (https://) and port (:80, the HTTP port)")
            }
            if u.scheme == "h2c" && port == "443" {
                throw CaddyfileError("upstream address has conflicting scheme (h2c://) and port (:443, the HTTPS port)")
            }
            if port.isEmpty {
                switch u.scheme {
                case "", "http", "h2c": port = "80"
                case "https": port = "443"
                default: break
                }
            }
            scheme = u.scheme
            host = u.hostname
        } else {
            if let parts = try? CaddyNetworkAddress.split(input) {
                (network, host, port) = parts
            } else {
                host = input
            }
            if port.isEmpty && !host.contains("{") && !CaddyNetworkAddress.isUnix(network)
                && !CaddyNetworkAddress.isFD(network) {
                port = "80"
            }
        }
        if network == "unix+h2c" {
            network = "unix"
            scheme = "h2c"
        }
    }
}

/// The parts of a URL `reverse_proxy` looks at, parsed as Go's `url.Parse` would for `scheme://host:port/...`.
struct SimpleURL {
    struct PortError: Error, CustomStringConvertible {
        let url: String
        let port: String
        var description: String { "parse \"\(url)\": invalid port \":\(port)\" after host" }
    }

    var scheme = ""
    var host = ""
    var port = ""
    var path = ""
    var rawQuery = ""
    var fragment = ""
    var hostname: String { host }

    init(parsing input: String) throws {
        var rest = Substring(input)
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        }
        if let q = rest.firstIndex(of: "?") {
            rawQuery = String(rest[rest.index(after: q)...])
            rest = rest[..<q]
        }
        guard let r = rest.firstRange(of: "://") else { throw CaddyfileError("parse \"\(input)\": missing scheme") }
        scheme = rest[..<r.lowerBound].lowercased()
        guard let first = scheme.first, first.isLetter,
              scheme.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "." }) else {
            throw CaddyfileError("parse \"\(input)\": first path segment in URL cannot contain colon")
        }
        rest = rest[r.upperBound...]
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = String(rest[slash...])
        }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var hostPart = authority
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw CaddyfileError("parse \"\(input)\": missing ']' in host")
            }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { port = String(after.dropFirst()) } else if !after.isEmpty {
                throw CaddyfileError("parse \"\(input)\": invalid port \"\(after)\" after host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            port = String(authority[authority.index(after: colon)...])
        }
        if !port.allSatisfy({ $0.isASCII && $0.isNumber }) { throw PortError(url: input, port: port) }
        host = String(hostPart)
    }
}

/// What `reverse_proxy`'s Caddyfile form builds (Caddy's `reverseproxy.Handler` plus parse state).
struct ReverseProxyConfig {
    var transport: JSONObject?
    var loadBalancing: JSONObject?
    var active: JSONObject?
    var passive: JSONObject?
    var upstreams: [JSONObject] = []
    var dynamicUpstreams: JSONObject?
    var flushInterval: Int64?
    var trustedProxies: [String] = []
    var requestHeaders: HeaderOpsJSON?
    var responseHeaders: HeaderOpsJSON?
    var requestBuffers: Int64 = 0
    var responseBuffers: Int64 = 0
    var streamTimeout: Int64 = 0
    var streamBufferSize = 0
    var streamCloseDelay: Int64 = 0
    var rewrite: JSONObject?
    var responses = ResponseHandlers()
    var verboseLogs = false

    var handler: JSONObject {
        var o = JSONObject()
        o.put("transport", transport)
        o.put("load_balancing", loadBalancing)
        if active != nil || passive != nil {
            var hc = JSONObject()
            hc.put("active", active)
            hc.put("passive", passive)
            o["health_checks"] = .object(hc)
        }
        o.put("upstreams", upstreams)
        o.put("dynamic_upstreams", dynamicUpstreams)
        if let flushInterval, flushInterval != 0 { o.putDuration("flush_interval", flushInterval) }
        o.put("trusted_proxies", trustedProxies)
        if requestHeaders != nil || responseHeaders != nil {
            var hh = JSONObject()
            if let requestHeaders { hh["request"] = .object(requestHeaders.json) }
            if let responseHeaders { hh["response"] = .object(responseHeaders.json) }
            o["headers"] = .object(hh)
        }
        if requestBuffers != 0 { o["request_buffers"] = .number(JSONNumber(literal: String(requestBuffers))) }
        if responseBuffers != 0 { o["response_buffers"] = .number(JSONNumber(literal: String(responseBuffers))) }
        o.putDuration("stream_timeout", streamTimeout)
        o.put("stream_buffer_size", streamBufferSize)
        o.putDuration("stream_close_delay", streamCloseDelay)
        o.put("rewrite", rewrite)
        o.put("handle_response", responses.json)
        o.put("verbose_logs", verboseLogs)
        return handlerObject("reverse_proxy", o)
    }

    private mutating func lb(_ f: (inout JSONObject) -> Void) {
        var o = loadBalancing ?? JSONObject()
        f(&o)
        loadBalancing = o
    }

    private mutating func setActive(_ key: String, _ value: JSONValue) {
        var o = active ?? JSONObject()
        o[key] = value
        active = o
    }

    private mutating func setPassive(_ key: String, _ value: JSONValue) {
        var o = passive ?? JSONObject()
        o[key] = value
        passive = o
    }

    mutating func unmarshal(_ d: Dispenser, _ registry: CaddyfileRegistry) throws {
        var commonScheme = ""
        var transportValue: TransportValue?

        func appendUpstream(_ address: String) throws {
            let pa: UpstreamAddress
            do { pa = try UpstreamAddress(parsing: address) } catch { throw d.wrap(error) }
            switch pa.scheme {
            case "wss": throw d.err("the scheme wss:// is only supported in browsers; use https:// instead")
            case "ws": throw d.err("the scheme ws:// is only supported in browsers; use http:// instead")
            case "https", "http", "h2c", "": break
            default: throw d.err("unsupported URL scheme \(pa.scheme)://")
            }
            if !commonScheme.isEmpty && pa.scheme != commonScheme {
                throw d.err("for now, all proxy upstreams must use the same scheme (transport protocol); expecting '\(commonScheme)://' but got '\(pa.scheme)://'")
            }
            commonScheme = pa.scheme
            if pa.replaceablePort {
                upstreams.append(["dial": .string(pa.dialAddress)])
                return
            }
            let parsed: CaddyNetworkAddress
            do { parsed = try CaddyNetworkAddress(parsing: pa.dialAddress) } catch { throw d.wrap(error) }
            if pa.isUnix || !pa.rangedPort {
                upstreams.append(["dial": .string(pa.dialAddress)])
            } else {
                var p = parsed.startPort
                while p <= parsed.endPort {
                    upstreams.append(["dial": .string(CaddyNetworkAddress.join("", parsed.host, String(p)))])
                    p += 1
                }
            }
        }
        func parseDuration(_ what: String) throws -> Int64 {
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        func intValue(_ what: String) throws -> Int {
            do { return try Go.atoi(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        func durationOrNanos() throws -> Int64 {
            if let n = try? Go.atoi(d.val) { return Int64(n) }
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("bad duration value '\(d.val)': \(error)") }
        }

        d.next()
        for up in d.remainingArgs() {
            do { try appendUpstream(up) } catch { throw CaddyfileError("parsing upstream '\(up)': \(error)") }
        }

        while d.nextBlock(0) {
            if try responses.parse(d) { continue }
            switch d.val {
            case "to":
                let args = d.remainingArgs()
                if args.isEmpty { throw d.argErr() }
                for up in args {
                    do { try appendUpstream(up) } catch { throw CaddyfileError("parsing upstream '\(up)': \(error)") }
                }
            case "dynamic":
                guard d.nextArg() else { throw d.argErr() }
                if dynamicUpstreams != nil { throw d.err("dynamic upstreams already specified") }
                let name = d.val
                let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.upstreams." + name)
                dynamicUpstreams = moduleObject(fields, key: "source", name: name)
            case "lb_policy":
                guard d.nextArg() else { throw d.argErr() }
                if loadBalancing?["selection_policy"] != nil {
                    throw d.err("load balancing selection policy already specified")
                }
                let name = d.val
                let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.selection_policies." + name)
                lb { $0["selection_policy"] = .object(moduleObject(fields, key: "policy", name: name)) }
            case "lb_retries":
                guard d.nextArg() else { throw d.argErr() }
                let n = try intValue("bad lb_retries number")
                lb { $0.put("retries", n) }
                if n == 0 && loadBalancing!.isEmpty { loadBalancing = JSONObject() }
            case "lb_try_duration":
                guard d.nextArg() else { throw d.argErr() }
                if loadBalancing == nil { loadBalancing = JSONObject() }
                let v: Int64
                do { v = try Go.caddyDuration(d.val) } catch { throw d.err("bad duration value \(d.val): \(error)") }
                lb { $0.putDuration("try_duration", v) }
            case "lb_try_interval":
                guard d.nextArg() else { throw d.argErr() }
                if loadBalancing == nil { loadBalancing = JSONObject() }
                let v = try parseDuration("bad interval value")
                lb { $0.putDuration("try_interval", v) }
            case "lb_retry_match":
                let set: JSONObject
                do { set = try parseNestedMatcherSet(d, registry) } catch {
                    throw d.err("failed to parse lb_retry_match: \(error)")
                }
                lb { o in
                    var list = o["retry_match"]?.arrayValue ?? []
                    list.append(.object(set))
                    o["retry_match"] = .array(list)
                }
            case "health_uri":
                guard d.nextArg() else { throw d.argErr() }
                setActive("uri", .string(d.val))
            case "health_path":
                guard d.nextArg() else { throw d.argErr() }
                setActive("path", .string(d.val))
            case "health_upstream":
                guard d.nextArg() else { throw d.argErr() }
                let hp: (host: String, port: String)
                do { hp = try Go.splitHostPort(d.val) } catch {
                    throw d.err("health_upstream is malformed '\(d.val)': \(error)")
                }
                do { _ = try Go.atoi(hp.port) } catch { throw d.err("bad port number '\(d.val)': \(error)") }
                setActive("upstream", .string(d.val))
            case "health_port":
                guard d.nextArg() else { throw d.argErr() }
                if active == nil { active = JSONObject() }
                if active?["upstream"] != nil {
                    throw d.err("the 'health_port' subdirective is ignored if 'health_upstream' is used!")
                }
                let n = try intValue("bad port number")
                if n != 0 { setActive("port", .number(JSONNumber(n))) }
            case "health_headers":
                var fields: [(String, [String])] = []
                let nesting = d.nesting
                while d.nextBlock(nesting) {
                    let key = d.val
                    var values = d.remainingArgs()
                    if values.isEmpty { values.append("") }
                    fields.append((key, values))
                }
                var o = JSONObject()
                for (k, v) in fields { o[k] = .strings((o[k]?.stringArray ?? []) + v) }
                if o.isEmpty { setActive("headers", .object(JSONObject())); active!["headers"] = nil } else {
                    setActive("headers", .object(o.sortedByKey()))
                }
            case "health_method":
                guard d.nextArg() else { throw d.argErr() }
                setActive("method", .string(d.val))
            case "health_request_body":
                guard d.nextArg() else { throw d.argErr() }
                setActive("body", .string(d.val))
            case "health_interval":
                guard d.nextArg() else { throw d.argErr() }
                let v: Int64
                do { v = try Go.caddyDuration(d.val) } catch { throw d.err("bad interval value \(d.val): \(error)") }
                setActive("interval", .number(JSONNumber(literal: String(v))))
            case "health_timeout":
                guard d.nextArg() else { throw d.argErr() }
                let v: Int64
                do { v = try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
                setActive("timeout", .number(JSONNumber(literal: String(v))))
            case "health_status":
                guard d.nextArg() else { throw d.argErr() }
                var val = d.val
                if val.utf8.count == 3 && val.hasSuffix("xx") { val = String(val.prefix(1)) }
                let n: Int
                do { n = try Go.atoi(val) } catch { throw d.err("bad status value '\(d.val)': \(error)") }
                setActive("expect_status", .number(JSONNumber(n)))
            case "health_body":
                guard d.nextArg() else { throw d.argErr() }
                setActive("expect_body", .string(d.val))
            case "health_follow_redirects":
                if d.nextArg() { throw d.argErr() }
                setActive("follow_redirects", .bool(true))
            case "health_passes":
                guard d.nextArg() else { throw d.argErr() }
                setActive("passes", .number(JSONNumber(try intValue("invalid passes count"))))
            case "health_fails":
                guard d.nextArg() else { throw d.argErr() }
                setActive("fails", .number(JSONNumber(try intValue("invalid fails count"))))
            case "max_fails":
                guard d.nextArg() else { throw d.argErr() }
                setPassive("max_fails", .number(JSONNumber(try intValue("invalid maximum fail count"))))
            case "fail_duration":
                guard d.nextArg() else { throw d.argErr() }
                setPassive("fail_duration", .number(JSONNumber(literal: String(try parseDuration("bad duration value")))))
            case "unhealthy_request_count":
                guard d.nextArg() else { throw d.argErr() }
                setPassive("unhealthy_request_count", .number(JSONNumber(try intValue("invalid maximum connection count"))))
            case "unhealthy_status":
                let args = d.remainingArgs()
                if args.isEmpty { throw d.argErr() }
                var codes = passive?["unhealthy_status"]?.arrayValue ?? []
                for var arg in args {
                    if arg.utf8.count == 3 && arg.hasSuffix("xx") { arg = String(arg.prefix(1)) }
                    do { codes.append(.number(JSONNumber(try Go.atoi(arg)))) } catch {
                        throw d.err("bad status value '\(d.val)': \(error)")
                    }
                }
                setPassive("unhealthy_status", .array(codes))
            case "unhealthy_latency":
                guard d.nextArg() else { throw d.argErr() }
                setPassive("unhealthy_latency", .number(JSONNumber(literal: String(try parseDuration("bad duration value")))))
            case "flush_interval":
                guard d.nextArg() else { throw d.argErr() }
                flushInterval = try durationOrNanos()
            case "request_buffers", "response_buffers", "stream_buffer_size":
                let sub = d.val
                guard d.nextArg() else { throw d.argErr() }
                let val = d.val
                var size: Int64 = -1
                if val != "unlimited" {
                    do { size = Int64(try Go.parseBytes(val)) } catch { throw d.err("invalid byte size '\(val)': \(error)") }
                }
                if d.nextArg() { throw d.argErr() }
                switch sub {
                case "request_buffers": requestBuffers = size
                case "response_buffers": responseBuffers = size
                default: streamBufferSize = Int(size)
                }
            case "stream_timeout":
                guard d.nextArg() else { throw d.argErr() }
                streamTimeout = try durationOrNanos()
            case "stream_close_delay":
                guard d.nextArg() else { throw d.argErr() }
                streamCloseDelay = try durationOrNanos()
            case "trusted_proxies":
                while d.nextArg() {
                    if d.val == "private_ranges" {
                        trustedProxies.append(contentsOf: ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1"])
                        continue
                    }
                    trustedProxies.append(d.val)
                }
            case "header_up":
                var ops = requestHeaders ?? HeaderOpsJSON()
                let args = d.remainingArgs()
                try applyHeaderArgs(&ops, args, d)
                requestHeaders = ops
            case "header_down":
                var ops = responseHeaders ?? HeaderOpsJSON()
                let args = d.remainingArgs()
                try applyHeaderArgs(&ops, args, d)
                responseHeaders = ops
            case "method":
                guard d.nextArg() else { throw d.argErr() }
                var r = rewrite ?? JSONObject()
                r["method"] = .string(d.val)
                rewrite = reorderRewrite(r)
                if d.nextArg() { throw d.argErr() }
            case "rewrite":
                guard d.nextArg() else { throw d.argErr() }
                var r = rewrite ?? JSONObject()
                r["uri"] = .string(d.val)
                rewrite = reorderRewrite(r)
                if d.nextArg() { throw d.argErr() }
            case "transport":
                guard d.nextArg() else { throw d.argErr() }
                if transport != nil { throw d.err("transport already specified") }
                let name = d.val
                if name == "http" {
                    transportValue = try parseHTTPTransport(d.newFromNextSegment(), registry)
                } else {
                    let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.transport." + name)
                    transportValue = TransportValue(name: name, fields: fields)
                }
            case "verbose_logs":
                if verboseLogs { throw d.err("verbose_logs already specified") }
                verboseLogs = true
            default:
                throw d.err("unrecognized subdirective \(d.val)")
            }
        }

        if (commonScheme == "https" || commonScheme == "h2c") && transportValue == nil {
            transportValue = TransportValue(name: "http", fields: JSONObject())
        }
        if var t = transportValue {
            if t.supportsTLS {
                if commonScheme == "https" && !t.tlsEnabled { t.enableTLS() }
                if commonScheme == "http" && t.tlsEnabled {
                    throw d.err("upstream address scheme is HTTP but transport is configured for HTTP+TLS (HTTPS)")
                }
                if commonScheme == "h2c" { t.enableH2C() }
            } else if commonScheme == "https" {
                throw d.err("upstreams are configured for HTTPS but transport module does not support TLS: \(t.name)")
            }
            if !(t.name == "http" && t.fields.isEmpty) {
                transport = moduleObject(t.fields, key: "protocol", name: t.name)
            }
        }
    }

    /// Parses `handle_response` blocks into routes.
    mutating func finalize(_ h: Helper) throws {
        try responses.finalize(h)
    }
}

/// Response matchers, `handle_response` and `replace_status` as `reverse_proxy` and `intercept` take them.
struct ResponseHandlers {
    var matchers: [String: JSONObject] = [:]
    var segments: [Dispenser] = []
    var handlers: [(match: JSONObject?, status: String, routes: [HTTPRoute]?)] = []

    var json: [JSONObject] { handlers.map { responseHandlerJSON($0.match, $0.status, $0.routes) } }

    private func namedMatcher(_ d: Dispenser, _ name: String) throws -> JSONObject {
        guard name.hasPrefix("@") else { throw d.err("must use a named response matcher, starting with '@'") }
        guard let m = matchers[name] else {
            throw d.err("no named response matcher defined with name '\(name.dropFirst())'")
        }
        return m
    }

    /// Takes a `@name` matcher definition, `handle_response` or `replace_status`; returns whether it did.
    mutating func parse(_ d: Dispenser) throws -> Bool {
        if d.val.hasPrefix("@") {
            try parseNamedResponseMatcher(d.newFromNextSegment(), &matchers)
            return true
        }
        switch d.val {
        case "handle_response":
            segments.append(d.newFromNextSegment())
        case "replace_status":
            let args = d.remainingArgs()
            guard args.count == 1 || args.count == 2 else {
                throw d.err("must have one or two arguments: an optional response matcher, and a status code")
            }
            let match = args.count == 2 ? try namedMatcher(d, args[0]) : nil
            if d.nextBlock(d.nesting) {
                throw d.err("cannot define routes for 'replace_status', use 'handle_response' instead.")
            }
            handlers.append((match, args.count == 2 ? args[1] : args[0], nil))
        default:
            return false
        }
        return true
    }

    /// Parses the `handle_response` blocks (after all matchers are known) and puts handlers with matchers first.
    mutating func finalize(_ h: Helper) throws {
        for d in segments {
            d.next()
            let args = d.remainingArgs()
            if args.count > 1 {
                throw d.err("too many arguments for 'handle_response': only a single response matcher name is allowed, but got: \(Go.list(args))")
            }
            let match = args.count == 1 ? try namedMatcher(d, args[0]) : nil
            let sub = try h.with(d.newFromNextSegment()).parseSegmentAsSubroute()
            handlers.append((match, "", sub.routes))
        }
        handlers = handlers.filter { $0.match != nil } + handlers.filter { $0.match == nil }
        segments = []
    }
}

private func reorderRewrite(_ r: JSONObject) -> JSONObject {
    var o = JSONObject()
    for k in ["method", "uri"] { if let v = r[k] { o[k] = v } }
    return o
}

/// `caddyhttp.ResponseHandler` as JSON.
func responseHandlerJSON(_ match: JSONObject?, _ status: String, _ routes: [HTTPRoute]?) -> JSONObject {
    var o = JSONObject()
    o.put("match", match)
    if !status.isEmpty { o["status_code"] = weakStringJSON(status) }
    o.put("routes", (routes ?? []).map(\.json))
    return o
}

private func parseCopyResponse(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    let args = d.remainingArgs()
    var o = JSONObject()
    if args.count == 1, let n = try? Go.atoi(args[0]), n > 0 {
        o["status_code"] = weakStringJSON(args[0])
        return handlerObject("copy_response", o)
    }
    while d.nextBlock(0) {
        switch d.val {
        case "status":
            guard d.nextArg() else { throw d.argErr() }
            o["status_code"] = weakStringJSON(d.val)
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    return handlerObject("copy_response", o)
}

private func parseCopyResponseHeaders(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if !d.remainingArgs().isEmpty { throw d.argErr() }
    var include: [String] = []
    var exclude: [String] = []
    while d.nextBlock(0) {
        switch d.val {
        case "include": include += d.remainingArgs()
        case "exclude": exclude += d.remainingArgs()
        default: throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("include", include)
    o.put("exclude", exclude)
    return handlerObject("copy_response_headers", o)
}

// MARK: - Transports

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

private struct HTTPTransportFields {
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
        if let resolvers { o["resolver"] = .object(resolvers.isEmpty ? JSONObject() : ["addresses": .strings(resolvers)]) }
        o.put("tls", tls.map(orderTLSConfig))
        o.put("keep_alive", keepAlive.map(orderKeepAlive))
        if let compression { o["compression"] = .bool(compression) }
        o.put("max_conns_per_host", maxConnsPerHost)
        o.put("proxy_protocol", proxyProtocol)
        o.putDuration("dial_timeout", dialTimeout)
        o.putDuration("dial_fallback_delay", fallbackDelay)
        o.putDuration("response_header_timeout", responseHeaderTimeout)
        o.putDuration("expect_continue_timeout", expectContinueTimeout)
        if maxResponseHeaderSize != 0 { o["max_response_header_size"] = .number(JSONNumber(literal: String(maxResponseHeaderSize))) }
        o.put("write_buffer_size", writeBufferSize)
        o.put("read_buffer_size", readBufferSize)
        o.putDuration("read_timeout", readTimeout)
        o.putDuration("write_timeout", writeTimeout)
        o.put("versions", versions)
        o.put("local_address", localAddress)
        o.put("network_proxy", networkProxy)
        return o
    }
}

private func ordered(_ o: JSONObject, _ keys: [String]) -> JSONObject {
    var out = JSONObject()
    for k in keys { if let v = o[k] { out[k] = v } }
    for m in o where !keys.contains(m.key) { out[m.key] = m.value }
    return out
}

private func orderTLSConfig(_ o: JSONObject) -> JSONObject {
    ordered(o, ["ca", "root_ca_pool", "root_ca_pem_files", "client_certificate_file", "client_certificate_key_file",
                "client_certificate_automate", "insecure_skip_verify", "handshake_timeout", "server_name",
                "renegotiation", "except_ports", "curves"])
}

private func orderKeepAlive(_ o: JSONObject) -> JSONObject {
    ordered(o, ["enabled", "probe_interval", "max_idle_conns", "max_idle_conns_per_host", "idle_timeout"])
}

/// `http.reverse_proxy.transport.fastcgi`.
func parseFastCGITransport(_ d: Dispenser) throws -> JSONObject {
    var root = ""
    var split: [String] = []
    var env: [(String, String)] = []
    var resolveRootSymlink = false
    var dialTimeout: Int64 = 0
    var readTimeout: Int64 = 0
    var writeTimeout: Int64 = 0
    var captureStderr = false
    d.next()
    while d.nextBlock(0) {
        func duration() throws -> Int64 {
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
        }
        switch d.val {
        case "root":
            guard d.nextArg() else { throw d.argErr() }
            root = d.val
        case "split":
            split = d.remainingArgs()
            if split.isEmpty { throw d.argErr() }
        case "env":
            let a = d.remainingArgs()
            guard a.count == 2 else { throw d.argErr() }
            env.removeAll { $0.0 == a[0] }
            env.append((a[0], a[1]))
        case "resolve_root_symlink":
            if d.nextArg() { throw d.argErr() }
            resolveRootSymlink = true
        case "dial_timeout":
            guard d.nextArg() else { throw d.argErr() }
            dialTimeout = try duration()
        case "read_timeout":
            guard d.nextArg() else { throw d.argErr() }
            readTimeout = try duration()
        case "write_timeout":
            guard d.nextArg() else { throw d.argErr() }
            writeTimeout = try duration()
        case "capture_stderr":
            if d.nextArg() { throw d.argErr() }
            captureStderr = true
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
    }
    return fastCGITransportJSON(root: root, split: split, env: env, resolveRootSymlink: resolveRootSymlink,
                                dialTimeout: dialTimeout, readTimeout: readTimeout, writeTimeout: writeTimeout,
                                captureStderr: captureStderr)
}

func fastCGITransportJSON(root: String, split: [String], env: [(String, String)], resolveRootSymlink: Bool,
                          dialTimeout: Int64, readTimeout: Int64, writeTimeout: Int64, captureStderr: Bool) -> JSONObject {
    var o = JSONObject()
    o.put("root", root)
    o.put("split_path", split)
    o.put("resolve_root_symlink", resolveRootSymlink)
    var e = JSONObject()
    for (k, v) in env { e[k] = .string(v) }
    o.putMap("env", e.sortedByKey())
    o.putDuration("dial_timeout", dialTimeout)
    o.putDuration("read_timeout", readTimeout)
    o.putDuration("write_timeout", writeTimeout)
    o.put("capture_stderr", captureStderr)
    return o
}

// MARK: - Selection policies and upstream sources

private let noArgPolicy: ModuleParser = { d, _ in
    d.next()
    if d.nextArg() { throw d.argErr() }
    return .object(JSONObject())
}

private func parseWeightedRoundRobin(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.isEmpty { throw d.argErr() }
    var weights: [JSONValue] = []
    for w in args {
        let n: Int
        do { n = try Go.atoi(w) } catch { throw d.err("invalid weight value '\(w)': \(error)") }
        if n < 0 { throw d.err("invalid weight value '\(w)': weight should be non-negative") }
        weights.append(.number(JSONNumber(n)))
    }
    return .object(["weights": .array(weights)])
}

private func parseRandomChoose(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let n: Int
    do { n = try Go.atoi(d.val) } catch { throw d.err("invalid choice value '\(d.val)': \(error)") }
    var o = JSONObject()
    o.put("choose", n)
    return .object(o)
}

private func fallbackPolicy(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    let name = d.val
    let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.selection_policies." + name)
    return moduleObject(fields, key: "policy", name: name)
}

private func parseKeyedHashPolicy(_ d: Dispenser, _ registry: CaddyfileRegistry, field: String) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var o = JSONObject()
    o.put(field, d.val)
    while d.nextBlock(0) {
        switch d.val {
        case "fallback":
            guard d.nextArg() else { throw d.argErr() }
            if o["fallback"] != nil { throw d.err("fallback selection policy already specified") }
            o["fallback"] = .object(try fallbackPolicy(d, registry))
        default:
            throw d.err("unrecognized option '\(d.val)'")
        }
    }
    return .object(o)
}

private func parseCookiePolicy(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    // Caddy reads the policy name itself as the first argument here.
    let args = d.remainingArgs()
    var name = ""
    var secret = ""
    switch args.count {
    case 1: break
    case 2: name = args[1]
    case 3:
        name = args[1]
        secret = args[2]
    default: throw d.argErr()
    }
    var maxAge: Int64 = 0
    var fallback: JSONObject?
    while d.nextBlock(0) {
        switch d.val {
        case "fallback":
            guard d.nextArg() else { throw d.argErr() }
            if fallback != nil { throw d.err("fallback selection policy already specified") }
            fallback = try fallbackPolicy(d, registry)
        case "max_age":
            guard d.nextArg() else { throw d.argErr() }
            if maxAge != 0 { throw d.err("cookie max_age already specified") }
            guard let v = try? Go.caddyDuration(d.val) else { throw d.err("invalid duration: \(d.val)") }
            if v <= 0 { throw d.err("invalid duration: \(d.val), max_age should be non-zero and positive") }
            if d.nextArg() { throw d.argErr() }
            maxAge = v
        default:
            throw d.err("unrecognized option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("name", name)
    o.put("secret", secret)
    o.putDuration("max_age", maxAge)
    o.put("fallback", fallback)
    return .object(o)
}

/// The settings the `srv` and `a` upstream sources share: refresh, resolvers and dialing.
private struct DynamicSourceCommon {
    var refresh: Int64 = 0
    var resolver: JSONObject?
    var dialTimeout: Int64 = 0
    var fallbackDelay: Int64 = 0

    /// Handles the current subdirective if it is one of the shared ones; returns whether it was.
    mutating func parse(_ d: Dispenser) throws -> Bool {
        func duration(_ what: String) throws -> Int64 {
            guard d.nextArg() else { throw d.argErr() }
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        switch d.val {
        case "refresh":
            guard d.nextArg() else { throw d.argErr() }
            do { refresh = try Go.caddyDuration(d.val) } catch { throw d.err("parsing refresh interval duration: \(error)") }
        case "resolvers":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.err("must specify at least one resolver address") }
            resolver = ["addresses": .strings(a)]
        case "dial_timeout":
            dialTimeout = try duration("bad timeout value")
        case "dial_fallback_delay":
            fallbackDelay = try duration("bad delay value")
        default:
            return false
        }
        return true
    }
}

private func parseSRVUpstreams(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.count > 1 { throw d.argErr() }
    var service = ""
    var proto = ""
    var name = args.first ?? ""
    var grace: Int64 = 0
    var common = DynamicSourceCommon()
    while d.nextBlock(0) {
        if try common.parse(d) { continue }
        switch d.val {
        case "service":
            try d.setArgOnce(&service, duplicateMessage: "srv service has already been specified")
        case "proto":
            try d.setArgOnce(&proto, duplicateMessage: "srv proto has already been specified")
        case "name":
            try d.setArgOnce(&name, duplicateMessage: "srv name has already been specified")
        case "grace_period":
            guard d.nextArg() else { throw d.argErr() }
            do { grace = try Go.caddyDuration(d.val) } catch { throw d.err("bad grace period value '\(d.val)': \(error)") }
        default:
            throw d.err("unrecognized srv option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("service", service)
    o.put("proto", proto)
    o.put("name", name)
    o.putDuration("refresh", common.refresh)
    o.putDuration("grace_period", grace)
    o.put("resolver", common.resolver)
    o.putDuration("dial_timeout", common.dialTimeout)
    o.putDuration("dial_fallback_delay", common.fallbackDelay)
    return .object(o)
}

private func parseAUpstreams(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.count > 2 { throw d.argErr() }
    var name = args.first ?? ""
    var port = args.count == 2 ? args[1] : ""
    var versions: JSONObject?
    var common = DynamicSourceCommon()
    while d.nextBlock(0) {
        if try common.parse(d) { continue }
        switch d.val {
        case "name":
            try d.setArgOnce(&name, duplicateMessage: "a name has already been specified")
        case "port":
            try d.setArgOnce(&port, duplicateMessage: "a port has already been specified")
        case "versions":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.err("must specify at least one version") }
            var v = versions ?? JSONObject()
            for arg in a {
                switch arg {
                case "ipv4": v["ipv4"] = .bool(true)
                case "ipv6": v["ipv6"] = .bool(true)
                default: throw d.err("unsupported version: '\(arg)'")
                }
            }
            versions = ordered(v, ["ipv4", "ipv6"])
        default:
            throw d.err("unrecognized a option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("name", name)
    o.put("port", port)
    o.putDuration("refresh", common.refresh)
    o.put("resolver", common.resolver)
    o.putDuration("dial_timeout", common.dialTimeout)
    o.putDuration("dial_fallback_delay", common.fallbackDelay)
    o.put("versions", versions)
    return .object(o)
}

private func parseMultiUpstreams(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.nextArg() { throw d.argErr() }
    var sources: [JSONObject] = []
    while d.nextBlock(0) {
        let name = d.val
        let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.upstreams." + name)
        sources.append(moduleObject(fields, key: "source", name: name))
    }
    var o = JSONObject()
    o.put("sources", sources)
    return .object(o)
}

// MARK: - php_fastcgi and forward_auth

private func parsePHPFastCGI(_ h: Helper) throws -> [ConfigValue] {
    guard h.d.next() else { throw h.d.argErr() }
    var root = ""
    var env: [(String, String)] = []
    var resolveRootSymlink = false
    var dialTimeout: Int64 = 0
    var readTimeout: Int64 = 0
    var writeTimeout: Int64 = 0
    var captureStderr = false
    var extensions = [".php"]
    var indexFile = "index.php"
    var tryFiles: [String] = []

    let userMatcherSet = try h.extractMatcherSet()
    let d = h.d.newFromNextSegment()

    // Subdirectives for the transport and the file matchers are taken out; the rest go to reverse_proxy.
    while d.next() {
        while d.nextBlock(0) {
            if d.nesting != 1 { continue }
            func duration() throws -> Int64 {
                do { return try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
            }
            switch d.val {
            case "root":
                guard d.nextArg() else { throw d.argErr() }
                root = d.val
                d.deleteN(2)
            case "split":
                extensions = d.remainingArgs()
                d.deleteN(extensions.count + 1)
                if extensions.isEmpty { throw d.argErr() }
            case "env":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                guard a.count == 2 else { throw d.argErr() }
                env.removeAll { $0.0 == a[0] }
                env.append((a[0], a[1]))
            case "index":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                guard a.count == 1 else { throw d.argErr() }
                indexFile = a[0]
            case "try_files":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                if a.isEmpty { throw d.argErr() }
                tryFiles = a
            case "resolve_root_symlink":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                resolveRootSymlink = true
            case "dial_timeout":
                guard d.nextArg() else { throw d.argErr() }
                dialTimeout = try duration()
                d.deleteN(2)
            case "read_timeout":
                guard d.nextArg() else { throw d.argErr() }
                readTimeout = try duration()
                d.deleteN(2)
            case "write_timeout":
                guard d.nextArg() else { throw d.argErr() }
                writeTimeout = try duration()
                d.deleteN(2)
            case "capture_stderr":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                captureStderr = true
            default:
                break
            }
        }
    }
    d.reset()

    var routes: [HTTPRoute] = []
    if indexFile != "off" {
        var dirRedirect: Bool
        let dirIndex = "{http.request.uri.path}/" + indexFile
        var tryPolicy = "first_exist_fallback"
        if tryFiles.isEmpty {
            tryFiles = ["{http.request.uri.path}", dirIndex, indexFile]
            dirRedirect = true
        } else {
            if !(tryFiles.last!.hasSuffix(".php")) { tryPolicy = "" }
            dirRedirect = tryFiles.contains(dirIndex)
        }
        if dirRedirect {
            let matcher: JSONObject = [
                "file": .object(["try_files": .strings([dirIndex])]),
                "not": .array([.object(["path": .strings(["*/"])])]),
            ]
            var redirect = JSONObject()
            redirect["headers"] = .object(["Location": .strings(["{http.request.orig_uri.path}/{http.request.orig_uri.prefixed_query}"])])
            redirect["status_code"] = .number(JSONNumber(308))
            routes.append(HTTPRoute(matcherSets: [matcher], handlers: [handlerObject("static_response", redirect)]))
        }
        var file = JSONObject()
        file["try_files"] = .strings(tryFiles)
        file.put("try_policy", tryPolicy)
        file["split_path"] = .strings(extensions)
        routes.append(HTTPRoute(matcherSets: [["file": .object(file)]],
                                handlers: [handlerObject("rewrite", ["uri": "{http.matchers.file.relative}"])]))
    }

    let transport = fastCGITransportJSON(root: root, split: extensions, env: env, resolveRootSymlink: resolveRootSymlink,
                                         dialTimeout: dialTimeout, readTimeout: readTimeout, writeTimeout: writeTimeout,
                                         captureStderr: captureStderr)
    var rp = ReverseProxyConfig()
    rp.transport = moduleObject(transport, key: "protocol", name: "fastcgi")
    d.next()
    try rp.unmarshal(d, h.registry)
    try rp.finalize(h)
    routes.append(HTTPRoute(matcherSets: [["path": .strings(extensions.map { "*" + $0 })]], handlers: [rp.handler]))

    let sub = HTTPSubroute(routes: routes)
    if let userMatcherSet {
        return [ConfigValue("route", HTTPRoute(matcherSets: [userMatcherSet], handlers: [sub.handler]))]
    }
    return [ConfigValue("route", sub)]
}

private func parseForwardAuth(_ h: Helper) throws -> [ConfigValue] {
    guard h.d.next() else { throw h.d.argErr() }
    let userMatcherSet = try h.extractMatcherSet()
    let d = h.d.newFromNextSegment()

    var rp = ReverseProxyConfig()
    var reqOps = HeaderOpsJSON()
    try caddyfileHeaderOp(&reqOps, field: "X-Forwarded-Method", value: "{http.request.method}", replacement: nil)
    try caddyfileHeaderOp(&reqOps, field: "X-Forwarded-Uri", value: "{http.request.uri}", replacement: nil)
    rp.requestHeaders = reqOps
    var uri = ""
    var headersToCopy: [String: String] = [:]

    while d.next() {
        while d.nextBlock(0) {
            if d.nesting != 1 { continue }
            switch d.val {
            case "uri":
                guard d.nextArg() else { throw d.argErr() }
                if !uri.isEmpty { throw d.err("cannot re-declare uri: \(d.val)") }
                uri = d.val
                d.deleteN(2)
            case "copy_headers":
                var args = d.remainingArgs()
                var hadBlock = false
                let nesting = d.nesting
                while d.nextBlock(nesting) {
                    hadBlock = true
                    args.append(d.val)
                }
                d.deleteN(args.count + 1)
                if hadBlock { d.deleteN(2) }
                for field in args {
                    if field.contains(">") {
                        let parts = field.split(separator: ">", omittingEmptySubsequences: false).map(String.init)
                        headersToCopy[parts[0]] = parts[1]
                    } else {
                        headersToCopy[field] = field
                    }
                }
                if headersToCopy.isEmpty { throw d.argErr() }
            default:
                break
            }
        }
    }
    d.reset()
    if uri.isEmpty { throw d.err("the 'uri' subdirective is required") }
    rp.rewrite = ["method": "GET", "uri": .string(uri)]

    var routes = [HTTPRoute(handlers: [handlerObject("vars")])]
    for from in headersToCopy.keys.sorted(by: goLess) {
        let to = Go.canonicalHeaderKey(headersToCopy[from]!)
        let placeholder = "http.reverse_proxy.header." + Go.canonicalHeaderKey(from)
        routes.append(HTTPRoute(handlers: [handlerObject("headers", ["request": .object(["delete": .strings([to])])])]))
        let notSet: JSONObject = ["not": .array([.object(["vars": .object(["{\(placeholder)}": .strings([""])])])])]
        routes.append(HTTPRoute(matcherSets: [notSet], handlers: [
            handlerObject("headers", ["request": .object(["set": .object([to: .strings(["{\(placeholder)}"])])])]),
        ]))
    }
    rp.responses.handlers.append((["status_code": .array([.number(JSONNumber(2))])], "", routes))

    d.next()
    try rp.unmarshal(d, h.registry)
    try rp.finalize(h)
    var route = HTTPRoute(handlers: [rp.handler])
    if let userMatcherSet { route.matcherSets = [userMatcherSet] }
    return [ConfigValue("route", route)]
}
