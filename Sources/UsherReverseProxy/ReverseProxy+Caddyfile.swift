public import UsherCaddyfile
import UsherCore
import UsherHTTP
import UsherHandlers

// `reverse_proxy` in the Caddyfile: the directive, its subdirectives and `handle_response`. The modules it
// nests (transports, selection policies, upstream sources) have their syntax beside them.

/// The Caddyfile syntax of `reverse_proxy` and the modules and directives built on it; `StandardModules` lists it.
public enum ReverseProxyCaddyfile {
    public static let support = CaddyfileSupport(
        directives: [
            "php_fastcgi": parsePHPFastCGI,
            "forward_auth": parseForwardAuth,
        ],
        handlerDirectives: [
            "reverse_proxy": { h in
                var rp = ReverseProxyHandler.Document()
                try rp.unmarshal(h.d, h.registry)
                try rp.finalize(h)
                return rp.handler
            },
            "copy_response": parseCopyResponse,
            "copy_response_headers": parseCopyResponseHeaders,
            "intercept": parseIntercept,
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
}

/// A transport module as the reverse proxy reasons about it (TLS on or off, h2c).
struct TransportValue {
    var name: String
    var fields: JSONObject

    var supportsTLS: Bool { name == "http" }
    var tlsEnabled: Bool { fields["tls"] != nil }
    mutating func enableTLS() { if fields["tls"] == nil { fields["tls"] = .object(JSONObject()) } }
    mutating func enableH2C() { fields["versions"] = .strings(["h2c", "2"]) }
}

extension ReverseProxyHandler {
    /// What `reverse_proxy`'s Caddyfile form builds (Caddy's `reverseproxy.Handler` plus parse state): the handler's
    /// JSON under construction, written with the decoder's `CodingKeys`.
    struct Document {
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
            typealias Key = ReverseProxyHandler.CodingKeys
            var o = JSONObject()
            o.put(Key.transport, transport)
            o.put(Key.loadBalancing, loadBalancing)
            if active != nil || passive != nil {
                var hc = JSONObject()
                hc.put(HealthChecks.CodingKeys.active, active)
                hc.put(HealthChecks.CodingKeys.passive, passive)
                o[Key.healthChecks] = .object(hc)
            }
            o.put(Key.upstreams, upstreams)
            o.put(Key.dynamicUpstreams, dynamicUpstreams)
            if let flushInterval, flushInterval != 0 { o.putDuration(Key.flushInterval, flushInterval) }
            o.put(Key.trustedProxies, trustedProxies)
            if requestHeaders != nil || responseHeaders != nil {
                var hh = JSONObject()
                if let requestHeaders { hh[ProxyHeaders.CodingKeys.request] = .object(requestHeaders.json) }
                if let responseHeaders { hh[ProxyHeaders.CodingKeys.response] = .object(responseHeaders.json) }
                o[Key.headers] = .object(hh)
            }
            if requestBuffers != 0 { o[Key.requestBuffers] = .number(JSONNumber(literal: String(requestBuffers))) }
            if responseBuffers != 0 { o[Key.responseBuffers] = .number(JSONNumber(literal: String(responseBuffers))) }
            o.putDuration(Key.streamTimeout, streamTimeout)
            o.put(Key.streamBufferSize, streamBufferSize)
            o.putDuration(Key.streamCloseDelay, streamCloseDelay)
            o.put(Key.rewrite, rewrite)
            o.put(Key.handleResponse, responses.json)
            o.put(Key.verboseLogs, verboseLogs)
            return handlerObject("reverse_proxy", o)
        }

        private mutating func lb(_ f: (inout JSONObject) -> Void) {
            var o = loadBalancing ?? JSONObject()
            f(&o)
            loadBalancing = o
        }

        private mutating func setActive(_ key: ActiveHealthChecks.CodingKeys, _ value: JSONValue) {
            var o = active ?? JSONObject()
            o[key] = value
            active = o
        }

        private mutating func setPassive(_ key: PassiveHealthChecks.CodingKeys, _ value: JSONValue) {
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
                    throw d.err(
                        "for now, all proxy upstreams must use the same scheme (transport protocol); expecting '\(commonScheme)://' but got '\(pa.scheme)://'"
                    )
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
                do { return try Go.caddyDuration(d.val) } catch {
                    throw d.err("bad duration value '\(d.val)': \(error)")
                }
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
                        do { try appendUpstream(up) } catch {
                            throw CaddyfileError("parsing upstream '\(up)': \(error)")
                        }
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
                    lb {
                        $0[LoadBalancing.CodingKeys.selectionPolicy] = .object(
                            moduleObject(fields, key: "policy", name: name))
                    }
                case "lb_retries":
                    guard d.nextArg() else { throw d.argErr() }
                    let n = try intValue("bad lb_retries number")
                    lb { $0.put(LoadBalancing.CodingKeys.retries, n) }
                    if n == 0 && loadBalancing!.isEmpty { loadBalancing = JSONObject() }
                case "lb_try_duration":
                    guard d.nextArg() else { throw d.argErr() }
                    if loadBalancing == nil { loadBalancing = JSONObject() }
                    let v: Int64
                    do { v = try Go.caddyDuration(d.val) } catch {
                        throw d.err("bad duration value \(d.val): \(error)")
                    }
                    lb { $0.putDuration(LoadBalancing.CodingKeys.tryDuration, v) }
                case "lb_try_interval":
                    guard d.nextArg() else { throw d.argErr() }
                    if loadBalancing == nil { loadBalancing = JSONObject() }
                    let v = try parseDuration("bad interval value")
                    lb { $0.putDuration(LoadBalancing.CodingKeys.tryInterval, v) }
                case "lb_retry_match":
                    let set: JSONObject
                    do { set = try parseNestedMatcherSet(d, registry) } catch {
                        throw d.err("failed to parse lb_retry_match: \(error)")
                    }
                    lb { o in
                        var list = o[LoadBalancing.CodingKeys.retryMatch]?.arrayValue ?? []
                        list.append(.object(set))
                        o[LoadBalancing.CodingKeys.retryMatch] = .array(list)
                    }
                case "health_uri":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.uri, .string(d.val))
                case "health_path":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.path, .string(d.val))
                case "health_upstream":
                    guard d.nextArg() else { throw d.argErr() }
                    let hp: (host: String, port: String)
                    do { hp = try Go.splitHostPort(d.val) } catch {
                        throw d.err("health_upstream is malformed '\(d.val)': \(error)")
                    }
                    do { _ = try Go.atoi(hp.port) } catch { throw d.err("bad port number '\(d.val)': \(error)") }
                    setActive(.upstream, .string(d.val))
                case "health_port":
                    guard d.nextArg() else { throw d.argErr() }
                    if active == nil { active = JSONObject() }
                    if active?[ActiveHealthChecks.CodingKeys.upstream] != nil {
                        throw d.err("the 'health_port' subdirective is ignored if 'health_upstream' is used!")
                    }
                    let n = try intValue("bad port number")
                    if n != 0 { setActive(.port, .number(JSONNumber(n))) }
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
                    if o.isEmpty {
                        setActive(.headers, .object(JSONObject())); active![ActiveHealthChecks.CodingKeys.headers] = nil
                    } else {
                        setActive(.headers, .object(o.sortedByKey()))
                    }
                case "health_method":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.method, .string(d.val))
                case "health_request_body":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.body, .string(d.val))
                case "health_interval":
                    guard d.nextArg() else { throw d.argErr() }
                    let v: Int64
                    do { v = try Go.caddyDuration(d.val) } catch {
                        throw d.err("bad interval value \(d.val): \(error)")
                    }
                    setActive(.interval, .number(JSONNumber(literal: String(v))))
                case "health_timeout":
                    guard d.nextArg() else { throw d.argErr() }
                    let v: Int64
                    do { v = try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
                    setActive(.timeout, .number(JSONNumber(literal: String(v))))
                case "health_status":
                    guard d.nextArg() else { throw d.argErr() }
                    var val = d.val
                    if val.utf8.count == 3 && val.hasSuffix("xx") { val = String(val.prefix(1)) }
                    let n: Int
                    do { n = try Go.atoi(val) } catch { throw d.err("bad status value '\(d.val)': \(error)") }
                    setActive(.expectStatus, .number(JSONNumber(n)))
                case "health_body":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.expectBody, .string(d.val))
                case "health_follow_redirects":
                    if d.nextArg() { throw d.argErr() }
                    setActive(.followRedirects, .bool(true))
                case "health_passes":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.passes, .number(JSONNumber(try intValue("invalid passes count"))))
                case "health_fails":
                    guard d.nextArg() else { throw d.argErr() }
                    setActive(.fails, .number(JSONNumber(try intValue("invalid fails count"))))
                case "max_fails":
                    guard d.nextArg() else { throw d.argErr() }
                    setPassive(.maxFails, .number(JSONNumber(try intValue("invalid maximum fail count"))))
                case "fail_duration":
                    guard d.nextArg() else { throw d.argErr() }
                    setPassive(
                        .failDuration, .number(JSONNumber(literal: String(try parseDuration("bad duration value")))))
                case "unhealthy_request_count":
                    guard d.nextArg() else { throw d.argErr() }
                    setPassive(
                        .unhealthyRequestCount, .number(JSONNumber(try intValue("invalid maximum connection count")))
                    )
                case "unhealthy_status":
                    let args = d.remainingArgs()
                    if args.isEmpty { throw d.argErr() }
                    var codes = passive?[PassiveHealthChecks.CodingKeys.unhealthyStatus]?.arrayValue ?? []
                    for var arg in args {
                        if arg.utf8.count == 3 && arg.hasSuffix("xx") { arg = String(arg.prefix(1)) }
                        do { codes.append(.number(JSONNumber(try Go.atoi(arg)))) } catch {
                            throw d.err("bad status value '\(d.val)': \(error)")
                        }
                    }
                    setPassive(.unhealthyStatus, .array(codes))
                case "unhealthy_latency":
                    guard d.nextArg() else { throw d.argErr() }
                    setPassive(
                        .unhealthyLatency,
                        .number(JSONNumber(literal: String(try parseDuration("bad duration value")))))
                case "flush_interval":
                    guard d.nextArg() else { throw d.argErr() }
                    flushInterval = try durationOrNanos()
                case "request_buffers", "response_buffers", "stream_buffer_size":
                    let sub = d.val
                    guard d.nextArg() else { throw d.argErr() }
                    let val = d.val
                    var size: Int64 = -1
                    if val != "unlimited" {
                        do { size = Int64(try Go.parseBytes(val)) } catch {
                            throw d.err("invalid byte size '\(val)': \(error)")
                        }
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
                            trustedProxies.append(contentsOf: [
                                "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1",
                            ])
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
                    throw d.err(
                        "upstreams are configured for HTTPS but transport module does not support TLS: \(t.name)")
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
                throw d.err(
                    "too many arguments for 'handle_response': only a single response matcher name is allowed, but got: \(Go.list(args))"
                )
            }
            let match = args.count == 1 ? try namedMatcher(d, args[0]) : nil
            let sub = try h.with(d.newFromNextSegment()).parseSegmentAsSubroute()
            handlers.append((match, "", sub.routes))
        }
        handlers = handlers.filter { $0.match != nil } + handlers.filter { $0.match == nil }
        segments = []
    }
}

func reorderRewrite(_ r: JSONObject) -> JSONObject {
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
