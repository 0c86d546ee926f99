import Foundation
import Logging
import Synchronization
import NIOCore
import NIOHTTP1
import NIOPosix
import UsherHTTP3
public import UsherCore
public import UsherHTTP
public import UsherHandlers

/// `load_balancing` of `reverse_proxy`.
public struct LoadBalancing: Decodable, Sendable {
    /// `selection_policy`. Default: `random`.
    public var selectionPolicy: Loaded<SelectionPolicies>?
    /// `retries`: how many more upstreams to try after a failed dial. Default: 0 (but see `try_duration`).
    public var retries: Int
    /// `try_duration`: how long to keep trying upstreams after a failed dial. Default: 0 (one try).
    public var tryDuration: ConfigDuration?
    /// `try_interval`: pause between tries. Default: 250ms.
    public var tryInterval: ConfigDuration?
    /// `retry_match`: requests that may be retried after they reached an upstream (not only after a failed dial).
    /// Default: GET requests only. A request whose body was already sent up is never sent again.
    public var retryMatch: [MatcherSet]?

    enum CodingKeys: String, CodingKey {
        case selectionPolicy = "selection_policy", retries, tryDuration = "try_duration", tryInterval = "try_interval"
        case retryMatch = "retry_match"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        selectionPolicy = try c.decodeIfPresent(Loaded<SelectionPolicies>.self, forKey: .selectionPolicy)
        retries = try c.decodeIfPresent(Int.self, forKey: .retries) ?? 0
        tryDuration = try c.decodeIfPresent(ConfigDuration.self, forKey: .tryDuration)
        tryInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .tryInterval)
        retryMatch = try c.decodeIfPresent([MatcherSet].self, forKey: .retryMatch)
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        try await selectionPolicy?.provision(context)
        if var sets = retryMatch {
            for i in sets.indices { try await sets[i].provision(context) }
            retryMatch = sets
        }
    }

    /// Whether a request that failed after reaching an upstream may go to another: Caddy's rule (`retry_match`,
    /// or GET without it), and only while its body has not been sent.
    func mayRetrySent(_ request: Request, bodySent: Bool) -> Bool {
        guard !bodySent else { return false }
        guard let retryMatch else { return request.method == .GET }
        return (try? retryMatch.anyMatches(request)) ?? false
    }
}

/// `headers` of `reverse_proxy`: changes to the request going up and the response coming back.
public struct ProxyHeaders: Decodable, Sendable {
    /// `request`: ops on the request sent upstream.
    public var request: HeaderOps?
    /// `response`: ops on the response sent to the client.
    public var response: ResponseHeaderOps?

    enum CodingKeys: String, CodingKey { case request, response }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        request = try c.decodeIfPresent(HeaderOps.self, forKey: .request)
        response = try c.decodeIfPresent(ResponseHeaderOps.self, forKey: .response)
    }
}

/// `http.handlers.reverse_proxy`: forwards requests to upstreams over HTTP/1.1 with pooled connections, streaming
/// bodies both ways, choosing upstreams by a selection policy, avoiding unhealthy ones, and trying others when one
/// fails.
///
/// Built so far: static `upstreams` (`dial`, `max_requests`), `load_balancing` (policies, `retries`,
/// `try_duration`, `try_interval`, `retry_match`), `health_checks` (active and passive), `headers`,
/// `trusted_proxies`, `transport` `http` (HTTP/1.1, keep-alive pool, timeouts), `flush_interval`. Everything else
/// of Caddy's handler is refused by name until it exists.
public struct ReverseProxyHandler: MiddlewareHandler, Provisioner, CleanerUpper {
    public static let moduleID: ModuleID = "http.handlers.reverse_proxy"

    /// `upstreams`: the backends.
    public var upstreams: [UpstreamConfig]
    /// `dynamic_upstreams`: a source of upstreams looked up per request (`a`, `srv`, `multi`); the static
    /// `upstreams` serve when it fails.
    public var dynamicUpstreams: Loaded<UpstreamSources>?
    /// `load_balancing`.
    public var loadBalancing: LoadBalancing?
    /// `health_checks`.
    public var healthChecks: HealthChecks?
    /// `headers`.
    public var headers: ProxyHeaders?
    /// `trusted_proxies`: CIDR ranges (or addresses) of clients whose `X-Forwarded-*` fields are kept and
    /// extended rather than replaced.
    public var trustedProxies: [IPPrefix]
    /// `transport`. Default: `http`.
    public var transport: Loaded<ProxyTransports>?
    /// `flush_interval`: negative flushes every write at once. Default: 0 (flush per write when the body has no
    /// known length or is an event stream, as Caddy does).
    public var flushInterval: ConfigDuration?
    /// `request_buffers`: bytes of request body to read before sending upstream (-1: all); a body that fits goes
    /// up with a `Content-Length`, for upstreams that cannot take chunked bodies. Default: 0.
    public var requestBuffers: Int
    /// `response_buffers`: bytes of response body to read before answering (-1: all); a body that fits goes to
    /// the client with a `Content-Length`. Default: 0.
    public var responseBuffers: Int
    /// `verbose_logs`: log more about each exchange. Default: false.
    public var verboseLogs: Bool
    /// `rewrite`: changes to the method and URI of the request as it goes up (not as later handlers see it).
    public var rewrite: RewriteHandler?
    /// `handle_response`: routes to run instead of copying the response, for upstream responses that match.
    public var handleResponse: [ResponseHandlerConfig]
    /// `stream_timeout`: longest life of an upgraded connection (WebSocket); 0 means no limit.
    public var streamTimeout: ConfigDuration?
    /// `stream_close_delay`: how long upgraded connections stay open after the handler is unloaded by a config
    /// that has no handler like it. Default: 0 (closed at once).
    public var streamCloseDelay: ConfigDuration?

    /// The handler's config, which names its group of upgraded connections across reloads.
    let configKey: JSONValue
    var tunnels: TunnelRegistry?
    private var pool: [Upstream] = []
    private var dynamicHosts: DynamicHosts?
    var logger: Logger?
    private var connections: ConnectionPool?
    private var registry: UpstreamRegistry?
    /// Whether the `http` app has `metrics`, so responses are counted per upstream.
    private var countsUpstreamRequests = false
    private var checker: CheckerTask?

    enum CodingKeys: String, CodingKey {
        case upstreams, loadBalancing = "load_balancing", headers, transport, flushInterval = "flush_interval"
        case healthChecks = "health_checks", dynamicUpstreams = "dynamic_upstreams", handleResponse = "handle_response"
        case circuitBreaker = "circuit_breaker", rewrite, requestBuffers = "request_buffers"
        case responseBuffers = "response_buffers", streamTimeout = "stream_timeout", streamCloseDelay = "stream_close_delay"
        case trustedProxies = "trusted_proxies", verboseLogs = "verbose_logs", bufferRequests = "buffer_requests"
        case bufferResponses = "buffer_responses", maxBufferSize = "max_buffer_size", streamBufferSize = "stream_buffer_size"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([
            .circuitBreaker,
        ])
        upstreams = try c.decodeIfPresent([UpstreamConfig].self, forKey: .upstreams) ?? []
        dynamicUpstreams = try c.decodeIfPresent(Loaded<UpstreamSources>.self, forKey: .dynamicUpstreams)
        loadBalancing = try c.decodeIfPresent(LoadBalancing.self, forKey: .loadBalancing)
        healthChecks = try c.decodeIfPresent(HealthChecks.self, forKey: .healthChecks)
        headers = try c.decodeIfPresent(ProxyHeaders.self, forKey: .headers)
        transport = try c.decodeIfPresent(Loaded<ProxyTransports>.self, forKey: .transport)
        flushInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .flushInterval)
        rewrite = try c.decodeIfPresent(RewriteHandler.self, forKey: .rewrite)
        handleResponse = try c.decodeIfPresent([ResponseHandlerConfig].self, forKey: .handleResponse) ?? []
        let maxBuffer = try c.decodeIfPresent(Int.self, forKey: .maxBufferSize) ?? 0
        requestBuffers = try c.decodeIfPresent(Int.self, forKey: .requestBuffers) ?? 0
        responseBuffers = try c.decodeIfPresent(Int.self, forKey: .responseBuffers) ?? 0
        // The deprecated switches mean "buffer", up to max_buffer_size when given.
        if requestBuffers == 0, try c.decodeIfPresent(Bool.self, forKey: .bufferRequests) == true {
            requestBuffers = maxBuffer > 0 ? maxBuffer : -1
        }
        if responseBuffers == 0, try c.decodeIfPresent(Bool.self, forKey: .bufferResponses) == true {
            responseBuffers = maxBuffer > 0 ? maxBuffer : -1
        }
        verboseLogs = try c.decodeIfPresent(Bool.self, forKey: .verboseLogs) ?? false
        // Copies move whatever each read brings; there is no fixed copy buffer to size.
        _ = try c.decodeIfPresent(Int.self, forKey: .streamBufferSize)
        streamTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .streamTimeout)
        streamCloseDelay = try c.decodeIfPresent(ConfigDuration.self, forKey: .streamCloseDelay)
        configKey = decoder.rawJSON ?? .string(UUID().uuidString)
        trustedProxies = []
        for (i, text) in (try c.decodeIfPresent([String].self, forKey: .trustedProxies) ?? []).enumerated() {
            let prefix = text.contains("/") ? IPPrefix(text) : IPAddress(text).map { IPPrefix(address: $0, bits: $0.bitLength) } ?? nil
            guard let prefix else {
                throw ConfigError(path: jsonPathString(c.codingPath + [CodingKeys.trustedProxies, AnyCodingKey(intValue: i)]),
                                  "invalid IP address or range: \(text)")
            }
            trustedProxies.append(prefix)
        }
        if upstreams.isEmpty && dynamicUpstreams == nil { throw c.error(.upstreams, "no upstreams configured") }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await loadBalancing?.provision(context)
        try await transport?.provision(context)
        for i in handleResponse.indices { try await handleResponse[i].routes.provision(context) }
        try await dynamicUpstreams?.provision(context)
        logger = context.logger(for: Self.moduleID)
        countsUpstreamRequests = context.loadValue(HTTPMetrics.self) != nil
        let registry = context.services.service(UpstreamRegistry.self) { UpstreamRegistry() }
        self.registry = registry
        let tunnels = context.services.service(TunnelRegistry.self) { TunnelRegistry() }
        tunnels.retain(configKey)
        self.tunnels = tunnels
        let passive = healthChecks?.passive.flatMap { $0.failDuration.nanoseconds > 0 ? $0 : nil }
        pool = upstreams.map { u in
            let host = registry.acquire(u.dial)
            let health = UpstreamHealth(maxFails: passive?.maxFails ?? 0)
            host.attach(health)
            // unhealthy_request_count is the default limit of upstreams without max_requests, as in Caddy.
            let limit = u.maxRequests > 0 ? u.maxRequests : (healthChecks?.passive?.unhealthyRequestCount ?? 0)
            return Upstream(host: host, maxRequests: limit, health: health)
        }
        if dynamicUpstreams != nil {
            dynamicHosts = DynamicHosts(registry: registry, maxFails: passive?.maxFails ?? 0,
                                        limit: healthChecks?.passive?.unhealthyRequestCount ?? 0)
        }
        let connections = ConnectionPool(transport: (transport?.module as? HTTPTransport) ?? HTTPTransport())
        self.connections = connections
        if let active = healthChecks?.active, active.isEnabled {
            let run = ActiveHealthChecker(config: active, pool: pool, connections: connections,
                                          group: context.eventLoopGroup,
                                          logger: context.logger("http.handlers.reverse_proxy.health_checker.active"))
            checker = CheckerTask(Task { await run.run() })
        }
    }

    public func cleanup() async {
        tunnels?.release(configKey, closeAfter: streamCloseDelay?.duration ?? .zero)
        checker?.task.cancel()
        connections?.closeAll()
        for u in pool { u.host.detach(u.health) }
        dynamicHosts?.releaseAll()
        for u in upstreams { registry?.release(u.dial) }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let connections, let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            throw HandlerError(status: 500, HTTPErrorMessage("reverse_proxy: not running on an event loop"))
        }
        let start = NIODeadline.now()
        let placeholders = ProxyPlaceholders(start: start)
        request.replacer.add(placeholders)
        defer { placeholders.end = NIODeadline.now() }
        let lb = loadBalancing
        let deadline = lb?.tryDuration.flatMap { $0.nanoseconds > 0 ? start + .nanoseconds($0.nanoseconds) : nil }
        let interval = lb?.tryInterval.flatMap { $0.nanoseconds > 0 ? Duration.nanoseconds($0.nanoseconds) : nil } ?? .milliseconds(250)
        var candidates = pool
        if let dynamicUpstreams, let dynamicHosts {
            do {
                candidates = dynamicHosts.upstreams(try await dynamicUpstreams.module.upstreams(request))
            } catch {
                logger?.warning("failed getting dynamic upstreams; falling back to static upstreams",
                                metadata: ["error": .string("\(error)")])
            }
        }
        var prebuffered: PrebufferedBody?
        if requestBuffers != 0, request.body.expectedLength != 0, Self.requestedUpgrade(request) == nil {
            prebuffered = try await PrebufferedBody.read(request.body, limit: requestBuffers)
        }
        var attempt = 0
        var failure: AttemptFailure?
        while true {
            let upstream = lb?.selectionPolicy?.module.select(candidates, request, writer) ?? RandomSelection.pick(candidates)
            if let upstream {
                placeholders.upstream = upstream
                upstream.host.begin()
                do {
                    defer { upstream.host.end() }
                    try await proxy(request, writer, to: upstream, connections: connections, loop: loop,
                                    placeholders: placeholders, next: next, prebuffered: prebuffered)
                    return
                } catch let f as AttemptFailure {
                    countFailure(upstream, loop: loop)
                    failure = f
                    if !f.dial && !(lb?.mayRetrySent(request, bodySent: f.bodySent) ?? false) { break }
                }
            }
            placeholders.retries = attempt + 1
            attempt += 1
            let moreByCount = attempt <= (lb?.retries ?? 0)
            let moreByTime = deadline.map { NIODeadline.now() < $0 } ?? false
            guard moreByCount || moreByTime else { break }
            if upstream == nil || moreByTime { try await Task.sleep(for: interval) }
        }
        guard let failure else {
            throw HandlerError(status: 503, HTTPErrorMessage("no upstreams available"))
        }
        throw HandlerError(status: failure.status, HTTPErrorMessage(failure.message))
    }

    /// Counts a response head from `upstream` in the per-upstream series, when metrics are on.
    func recordUpstreamResponse(_ upstream: Upstream, _ request: Request, status: Int, latency: TimeAmount) {
        guard countsUpstreamRequests else { return }
        ProxyMetrics.shared.recordRequest(upstream: upstream.address, method: request.method.rawValue, status: status,
                                          latency: .nanoseconds(latency.nanoseconds))
    }

    /// Passive health checking: remember a failure for `fail_duration`.
    func countFailure(_ upstream: Upstream, loop: any EventLoop) {
        guard let passive = healthChecks?.passive, passive.failDuration.nanoseconds > 0 else { return }
        let health = upstream.health
        health.countFailure()
        loop.scheduleTask(in: .nanoseconds(passive.failDuration.nanoseconds)) { health.forgetFailure() }
    }

    /// One exchange with one upstream: the request up (head, then body), the response back (head, then body).
    /// Throws ``AttemptFailure`` when the upstream failed before anything was sent to the client.
    private func proxy(_ request: Request, _ writer: any ResponseWriter, to upstream: Upstream,
                       connections: ConnectionPool, loop: any EventLoop, placeholders: ProxyPlaceholders,
                       next: any HTTPHandler, prebuffered: PrebufferedBody? = nil) async throws {
        let upgrade = Self.requestedUpgrade(request)
        if request.method == .CONNECT, WebTransportCodepoint.isWebTransportProtocol(request.connectProtocol) {
            try await proxyWebTransport(request, writer, to: upstream, connections: connections, loop: loop,
                                        placeholders: placeholders)
            return
        }
        if let upgrade, upgrade.extendedConnect, upgrade.type.lowercased() != "websocket" {
            throw HandlerError(status: 501, HTTPErrorMessage("reverse_proxy: extended CONNECT for \(upgrade.type) is not supported"))
        }
        // With proxy_protocol each client connection gets its own upstream connections ("client->upstream").
        var dialKey = upstream.address
        if connections.transport.proxyProtocol != nil, let peer = request.remoteAddress, peer.ipAddress != nil {
            dialKey = peer.hostPortString + "->" + upstream.address
        }
        var conn: any UpstreamExchange
        var reused: Bool
        do {
            (conn, reused) = try await connections.acquire(dialKey, on: loop, upgrade: upgrade != nil)
        } catch let e as UpstreamError {
            throw AttemptFailure(status: e.timedOut ? 504 : 502, message: e.description, dial: true, bodySent: false)
        }
        var target: (method: HTTPMethod, uri: String)?
        var withoutBody = false
        if let rewrite {
            // The rewrite shapes only the request line that goes up; header ops and later handlers see the
            // request as it came.
            let saved = request.saveTarget()
            let changed = rewrite.rewrite(request)
            target = (request.method, request.uri)
            request.restoreTarget(saved)
            // A rewrite to GET or HEAD leaves the body for later handlers (forward_auth relies on it), as Caddy.
            withoutBody = changed && (target?.method == .GET || target?.method == .HEAD)
        }
        var head = upstreamRequestHead(request, upgrade: upgrade, target: target, withoutBody: withoutBody)
        if let prebuffered, prebuffered.complete, !withoutBody {
            head.headers.remove(name: "Transfer-Encoding")
            head.headers.replaceOrAdd(name: "Content-Length", value: String(prebuffered.length))
        }
        do {
            try await conn.write(.head(head), flush: false)
        } catch where reused {
            // A pooled connection the upstream had closed: dial afresh, nothing was sent.
            conn.close()
            do {
                (conn, reused) = try await connections.acquire(dialKey, on: loop, upgrade: upgrade != nil)
            } catch let e as UpstreamError {
                throw AttemptFailure(status: e.timedOut ? 504 : 502, message: e.description, dial: true, bodySent: false)
            }
            try await conn.write(.head(head), flush: false)
        }
        var responseStarted = false
        var bodySent = false
        let sentAt = NIODeadline.now()
        do {
            // An upgrade's body is the tunnel itself, bridged once the upstream switches.
            if upgrade == nil && !withoutBody {
                for chunk in prebuffered?.chunks ?? [] {
                    bodySent = true
                    try await conn.write(.body(.byteBuffer(chunk)), flush: false)
                }
                if prebuffered?.complete != true {
                    for try await chunk in request.body {
                        bodySent = true
                        try await conn.write(.body(.byteBuffer(chunk)), flush: false)
                    }
                }
            }
            try await conn.write(.end(nil), flush: true)
            let headTimer = connections.transport.responseHeaderTimeout.flatMap { t -> Scheduled<Void>? in
                guard t.nanoseconds > 0 else { return nil }
                let bound = NIOLoopBound(conn, eventLoop: loop)
                return loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) { bound.value.timeOut() }
            }
            let head: HTTPResponseHead?
            do {
                head = try await nextHead(conn)
                headTimer?.cancel()
            } catch where conn.timedOut {
                throw AttemptFailure(status: 504, message: "reverse_proxy: timeout awaiting response headers from \(upstream.address)",
                                     dial: false, bodySent: bodySent)
            }
            guard let first = head else {
                throw AttemptFailure(status: 502, message: "upstream closed the connection before responding",
                                     dial: false, bodySent: bodySent)
            }
            let latency = NIODeadline.now() - sentAt
            placeholders.latency = latency
            placeholders.status = Int(first.status.code)
            recordUpstreamResponse(upstream, request, status: Int(first.status.code), latency: latency)
            if let passive = healthChecks?.passive {
                let status = Int(first.status.code)
                for bad in passive.unhealthyStatus where ResponseMatcher.statusMatches(status, bad) {
                    countFailure(upstream, loop: loop)
                }
                if let slow = passive.unhealthyLatency, slow.nanoseconds > 0, latency.nanoseconds >= slow.nanoseconds {
                    countFailure(upstream, loop: loop)
                }
            }
            var responseHeaders = first.headers
            let reusable = !Self.connectionCloses(first)
            Self.removeHopByHop(&responseHeaders)
            if let upgrade, first.status == .switchingProtocols {
                responseStarted = true
                try await switchProtocols(request, writer, conn: conn, upgrade: upgrade, head: first,
                                          headers: responseHeaders, loop: loop)
                return
            }
            placeholders.responseHeaders = first.headers
            var status = first.status
            for rh in handleResponse where rh.match?.matches(status: Int(first.status.code), headers: first.headers) ?? true {
                if let code = rh.statusCode {
                    // Only the status changes; the response is copied as usual.
                    guard let n = Int(request.replacer.replaceAll(code.value)), n > 0 else {
                        throw HandlerError(status: 500, HTTPErrorMessage("reverse_proxy: invalid handle_response status_code \(code.value)"))
                    }
                    status = HTTPResponseStatus(statusCode: n)
                    break
                }
                responseStarted = true
                let pending = PendingResponse(handler: self, head: first, headers: responseHeaders, connection: conn,
                                              reusable: reusable, connections: connections, loop: loop)
                let previous = request.attached(PendingResponse.self)
                request.attach(pending)
                defer { request.attach(previous) }
                // The routes end in what follows this handler (forward_auth's way on to the application).
                try await rh.routes.compile(next: next).serve(request, writer)
                if !pending.copied { conn.close() }
                return
            }
            responseStarted = true
            try await copyResponse(request, writer, head: first, status: status, headers: responseHeaders,
                                   connection: conn, reusable: reusable, connections: connections, loop: loop)
        } catch let f as AttemptFailure {
            conn.close()
            throw f
        } catch {
            conn.close()
            // Once the response is under way, or when the client is the one that failed, nothing can be retried.
            if responseStarted || error is ClientDisconnectedError || error is HandlerError || error is CancellationError {
                throw error
            }
            // The upstream broke the exchange before its response began (a reset, a malformed head).
            throw AttemptFailure(status: 502, message: "reverse_proxy: \(upstream.address): \(error)", dial: false, bodySent: bodySent)
        }
    }

    /// Sends the upstream's response to the client: head (with `headers.response` ops, `Via`, the upstream's
    /// `Server`), then the body, flushed per write when it streams; the connection goes back to the pool if the
    /// body ended cleanly.
    func copyResponse(_ request: Request, _ writer: any ResponseWriter, head first: HTTPResponseHead,
                      status: HTTPResponseStatus, headers upstreamHeaders: HTTPHeaders, connection conn: any UpstreamExchange,
                      reusable: Bool, connections: ConnectionPool, loop: any EventLoop) async throws {
        var responseHeaders = upstreamHeaders
        if let r = headers?.response, let ops = r.ops,
           r.require?.matches(status: Int(status.code), headers: responseHeaders) ?? true {
            ops.apply(to: &responseHeaders, request.replacer)
        }
        // Our Server field gives way to the upstream's, and Via says we passed it on (Caddy since 2.8).
        writer.headers.remove(name: "Server")
        writer.headers.add(name: "Via", value: "\(first.version.major).\(first.version.minor) Usher")
        for (name, value) in responseHeaders { writer.headers.add(name: name, value: value) }
        let eventStream = first.headers.first(name: "Content-Type")?.lowercased().hasPrefix("text/event-stream") ?? false
        var held: [ByteBuffer] = []
        var heldBytes = 0
        var complete = false
        if responseBuffers != 0 && !eventStream {
            // Read ahead up to the limit; a body that ends within it gets a length.
            reading: while responseBuffers < 0 || heldBytes <= responseBuffers {
                guard let part = try await conn.next() else { break }
                switch part {
                case .head: continue
                case .body(let b):
                    held.append(b)
                    heldBytes += b.readableBytes
                case .end:
                    complete = true
                    break reading
                }
            }
            if complete && !responseHeaders.contains(name: "Content-Length") {
                writer.headers.replaceOrAdd(name: "Content-Length", value: String(heldBytes))
            }
        }
        let streaming = !complete && ((flushInterval?.nanoseconds ?? 0) < 0
            || !first.headers.contains(name: "Content-Length") || eventStream)
        try await writer.writeHead(status)
        let flusher = writer.capability((any Flushing).self)
        for b in held { try await writer.write(b) }
        if streaming { try await flusher?.flush() }
        while !complete, let part = try await conn.next() {
            switch part {
            case .head:
                continue
            case .body(let buffer):
                try await writer.write(buffer)
                if streaming { try await flusher?.flush() }
            case .end:
                complete = true
            }
        }
        connections.release(conn, reusable: complete && reusable, loop: loop)
    }

    /// The upstream agreed to switch protocols: answer the client (101, or 200 to an HTTP/2 extended CONNECT),
    /// then bridge bytes both ways until either side closes. The tunnel counts as a request in flight meanwhile.
    private func switchProtocols(_ request: Request, _ writer: any ResponseWriter, conn: any UpstreamExchange,
                                 upgrade: (type: String, extendedConnect: Bool), head: HTTPResponseHead,
                                 headers upstreamHeaders: HTTPHeaders, loop: any EventLoop) async throws {
        let switchedTo = head.headers.first(name: "Upgrade") ?? ""
        guard switchedTo.lowercased() == upgrade.type.lowercased() else {
            conn.close()
            throw HandlerError(status: 502, HTTPErrorMessage("reverse_proxy: upstream switched to \(switchedTo), not \(upgrade.type)"))
        }
        guard let upgrader = writer.capability((any ConnectionUpgrading).self), upgrader.upgradeRequested else {
            conn.close()
            throw HandlerError(status: 502, HTTPErrorMessage("reverse_proxy: this connection cannot switch protocols"))
        }
        var h = upstreamHeaders
        if let r = headers?.response, let ops = r.ops, r.require?.matches(status: 101, headers: h) ?? true {
            ops.apply(to: &h, request.replacer)
        }
        writer.headers.remove(name: "Server")
        for (name, value) in h { writer.headers.add(name: name, value: value) }
        let status: HTTPResponseStatus
        if upgrade.extendedConnect {
            // RFC 8441: the tunnel is accepted with 200 and carries no handshake fields of HTTP/1.1.
            writer.headers.remove(name: "Sec-WebSocket-Accept")
            status = .ok
        } else {
            writer.headers.add(name: "Connection", value: "Upgrade")
            writer.headers.add(name: "Upgrade", value: switchedTo)
            status = .switchingProtocols
        }
        let upstream = try conn.becomeTunnel()
        let client: any UpgradedStream
        do {
            client = try await upgrader.upgrade(status)
        } catch {
            upstream.close(sending: nil)
            throw error
        }
        let websocket = upgrade.type.lowercased() == "websocket"
        let held = HeldTunnel(client: client, upstream: upstream, loop: loop, websocket: websocket)
        tunnels?.add(held, to: configKey)
        defer { tunnels?.remove(held, from: configKey) }
        let timeout = streamTimeout.flatMap { t -> Scheduled<Void>? in
            guard t.nanoseconds > 0 else { return nil }
            return loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) { held.close() }
        }
        defer { timeout?.cancel() }
        let ends = NIOLoopBound((client: client, upstream: upstream), eventLoop: loop)
        // Each direction copies with backpressure: a read waits until the other side took the previous write.
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                let (client, upstream) = ends.value
                do { for try await chunk in client.inbound { try await upstream.write(chunk) } } catch {}
            }
            group.addTask {
                let (client, upstream) = ends.value
                do { while let chunk = try await upstream.next() { try await client.write(chunk) } } catch {}
            }
            await group.next()
            // One side is done: close both, which ends the other copy.
            let (client, upstream) = ends.value
            upstream.close(sending: nil)
            client.close(sending: nil)
            await group.next()
        }
    }

    /// What the request asks to switch to: an HTTP/1.1 `Upgrade` (with `Connection: upgrade`), or the
    /// `:protocol` of an HTTP/2 extended CONNECT.
    static func requestedUpgrade(_ request: Request) -> (type: String, extendedConnect: Bool)? {
        if request.method == .CONNECT, let p = request.connectProtocol { return (p, true) }
        guard request.version.major == 1, let type = request.headers.first(name: "Upgrade"), !type.isEmpty,
              request.headers[canonicalForm: "Connection"].contains(where: { $0.lowercased() == "upgrade" }) else { return nil }
        return (type, false)
    }

    /// The final response head, skipping interim (1xx) ones.
    private func nextHead(_ conn: any UpstreamExchange) async throws -> HTTPResponseHead? {
        while let part = try await conn.next() {
            if case .head(let h) = part {
                if h.status.code >= 100 && h.status.code < 200 && h.status != .switchingProtocols { continue }
                return h
            }
        }
        return nil
    }

    /// The request as it goes up: the (possibly rewritten) method and URI, headers without hop-by-hop fields, the
    /// `X-Forwarded-*` fields, the client's Host, and the configured header ops.
    func upstreamRequestHead(_ request: Request, upgrade: (type: String, extendedConnect: Bool)?,
                                     target: (method: HTTPMethod, uri: String)? = nil, withoutBody: Bool = false) -> HTTPRequestHead {
        var h = request.headers
        let te = h.first(name: "TE")?.lowercased().contains("trailers") ?? false
        Self.removeHopByHop(&h)
        if te { h.add(name: "TE", value: "trailers") }
        // Fields a trusted proxy set are kept (X-Forwarded-For extended); from anyone else they are replaced.
        let trusted = isTrusted(request)
        let priorFor = h[canonicalForm: "X-Forwarded-For"].map(String.init)
        let clientIP = request.remoteHost
        h.replaceOrAdd(name: "X-Forwarded-For", value: trusted && !priorFor.isEmpty
                       ? priorFor.joined(separator: ", ") + ", " + clientIP : clientIP)
        let priorProto = h.first(name: "X-Forwarded-Proto") ?? ""
        h.replaceOrAdd(name: "X-Forwarded-Proto", value: trusted && !priorProto.isEmpty ? priorProto : request.scheme)
        let priorHost = h.first(name: "X-Forwarded-Host") ?? ""
        h.replaceOrAdd(name: "X-Forwarded-Host", value: trusted && !priorHost.isEmpty ? priorHost : request.host)
        if !h.contains(name: "Host") { h.add(name: "Host", value: request.host) }
        h.add(name: "Via", value: "\(request.version.major).\(request.version.minor) Usher")
        var method = request.method
        if let upgrade {
            // Hop-by-hop, but the point of the request: they go up again (as Go's proxy does).
            h.add(name: "Connection", value: "Upgrade")
            h.add(name: "Upgrade", value: upgrade.type)
            if upgrade.extendedConnect {
                // An HTTP/2 WebSocket (RFC 8441) reaches the upstream as an HTTP/1.1 handshake.
                method = .GET
                h.replaceOrAdd(name: "Sec-WebSocket-Key", value: WebSocketFrames.newKey())
                if !h.contains(name: "Sec-WebSocket-Version") { h.add(name: "Sec-WebSocket-Version", value: "13") }
            }
        } else if withoutBody {
            h.remove(name: "Content-Length")
        } else if request.body.expectedLength == nil && request.method != .GET && request.method != .HEAD {
            h.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
        }
        if let ops = headers?.request {
            ops.apply(to: &h, request.replacer)
            // Values made from placeholders may carry what a client sent; none may break the header block.
            for (name, value) in h where value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
                h.replaceOrAdd(name: name, value: String(value.filter { $0 != "\r" && $0 != "\n" && $0 != "\0" }))
            }
        }
        if let target {
            return HTTPRequestHead(version: .http1_1, method: upgrade?.extendedConnect == true ? method : target.method,
                                   uri: target.uri, headers: h)
        }
        var uri = request.escapedPath
        if !request.rawQuery.isEmpty { uri += "?" + request.rawQuery }
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: h)
    }

    /// Whether the peer is a trusted proxy: by the server's `trusted_proxies` or this handler's.
    private func isTrusted(_ request: Request) -> Bool {
        if request.server.hasTrustedProxies && request.isFromTrustedProxy { return true }
        guard !trustedProxies.isEmpty, let ip = request.remoteAddress?.ip else { return false }
        return trustedProxies.contains { $0.contains(ip) }
    }

    static let hopByHop: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade",
    ]

    /// Drops hop-by-hop fields (RFC 9110 7.6.1), including those the Connection field names. One scan finds them;
    /// the common case (just `Connection`, perhaps `Keep-Alive`) is then a removal or two.
    static func removeHopByHop(_ h: inout HTTPHeaders) {
        var fixed: [String] = []
        var named: [String] = []
        for (name, value) in h where isHopByHop(name) {
            if !fixed.contains(name) { fixed.append(name) }
            if name.utf8.count == 10 && name.equalsASCIICaseInsensitive("connection") {
                for token in value.split(separator: ",") {
                    let t = token.trimmedOfSpaces
                    if !t.isEmpty && !isHopByHop(t) && !t.equalsASCIICaseInsensitive("close") { named.append(String(t)) }
                }
            }
        }
        for name in fixed + named { h.remove(name: name) }
    }

    /// Whether `name` is one of the fixed hop-by-hop fields, compared without allocating.
    static func isHopByHop(_ name: some StringProtocol) -> Bool {
        switch name.utf8.count {
        case 2: return name.equalsASCIICaseInsensitive("te")
        case 7: return name.equalsASCIICaseInsensitive("trailer") || name.equalsASCIICaseInsensitive("upgrade")
        case 10: return name.equalsASCIICaseInsensitive("connection") || name.equalsASCIICaseInsensitive("keep-alive")
        case 16: return name.equalsASCIICaseInsensitive("proxy-connection")
        case 17: return name.equalsASCIICaseInsensitive("transfer-encoding")
        case 18: return name.equalsASCIICaseInsensitive("proxy-authenticate")
        case 19: return name.equalsASCIICaseInsensitive("proxy-authorization")
        default: return false
        }
    }

    static func connectionCloses(_ head: HTTPResponseHead) -> Bool {
        if head.version.minor == 0 { return true }
        guard let c = head.headers.first(name: "Connection") else { return false }
        if c.utf8.count == 10 { return false }  // "keep-alive", by far the most common
        return c.split(separator: ",").contains { $0.trimmedOfSpaces.equalsASCIICaseInsensitive("close") }
    }
}

/// An attempt at one upstream failed before any of the response reached the client.
struct AttemptFailure: Error {
    /// The status the client gets if no other upstream serves it: 502, or 504 for timeouts.
    let status: Int
    let message: String
    /// The upstream was never reached (a failed dial), so any request may go to another.
    let dial: Bool
    /// Part of the request body went up; it cannot be sent again.
    let bodySent: Bool
}

/// The running active health checker of a handler, cancelled when the handler is cleaned up.
final class CheckerTask: Sendable {
    let task: Task<Void, Never>
    init(_ task: Task<Void, Never>) { self.task = task }
}

/// Caddy's `{http.reverse_proxy.*}` placeholders for one request, computed only when asked for.
final class ProxyPlaceholders: PlaceholderProvider {
    let start: NIODeadline
    var end: NIODeadline?
    var upstream: Upstream?
    var latency: TimeAmount?
    var status: Int?
    var responseHeaders: HTTPHeaders?
    var retries = 0

    init(start: NIODeadline) { self.start = start }

    func placeholderValue(_ key: String) -> String? {
        guard key.hasPrefix("http.reverse_proxy.") else { return nil }
        switch key.dropFirst(19) {
        case "duration": return formatGoDuration(seconds(start, end))
        case "duration_ms": return String(seconds(start, end) * 1e3)
        case "retries": return String(retries)
        case "status_code": return status.map(String.init)
        case "status_text": return status.map { "\($0) \(HTTPResponseStatusText.text($0))" }
        case "upstream.latency": return latency.map { formatGoDuration(Double($0.nanoseconds) / 1e9) }
        case "upstream.latency_ms": return latency.map { String(Double($0.nanoseconds) / 1e6) }
        default: break
        }
        if key.hasPrefix("http.reverse_proxy.header."), let h = responseHeaders {
            let values = h[String(key.dropFirst(26))]
            return values.isEmpty ? nil : values.joined(separator: ",")
        }
        guard let upstream, key.hasPrefix("http.reverse_proxy.upstream.") else { return nil }
        let address = upstream.address
        switch key.dropFirst(28) {
        case "address", "hostport": return address
        case "host": return splitHostPort(address).host
        case "port": return splitHostPort(address).port
        case "requests": return String(upstream.host.numRequests)
        case "max_requests": return String(upstream.maxRequests)
        case "fails": return String(upstream.health.failures)
        default: return nil
        }
    }

    private func seconds(_ from: NIODeadline, _ to: NIODeadline?) -> Double {
        Double(((to ?? .now()) - from).nanoseconds) / 1e9
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (no Foundation, no copy).
    var trimmedOfSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

/// One of `handle_response`: what to do with upstream responses that `match`.
public struct ResponseHandlerConfig: Decodable, Sendable {
    /// `match`: status codes and header fields; absent matches every response.
    public var match: ResponseMatcher?
    /// `status_code`: only replace the status (placeholders allowed); the response is copied as usual.
    public var statusCode: WeakString?
    /// `routes`: run instead of copying the response; `copy_response` and `copy_response_headers` reach it.
    public var routes: RouteList

    enum CodingKeys: String, CodingKey { case match, statusCode = "status_code", routes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        match = try c.decodeIfPresent(ResponseMatcher.self, forKey: .match)
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
        if statusCode?.value.isEmpty == true { statusCode = nil }
        routes = try c.decodeIfPresent(RouteList.self, forKey: .routes) ?? RouteList()
    }
}

/// An upstream response held while `handle_response` routes run, for `copy_response(_headers)` to use.
final class PendingResponse {
    let handler: ReverseProxyHandler
    let head: HTTPResponseHead
    let headers: HTTPHeaders
    let connection: any UpstreamExchange
    let reusable: Bool
    let connections: ConnectionPool
    let loop: any EventLoop
    /// The body went to the client (or the connection was otherwise finished with).
    var copied = false

    init(handler: ReverseProxyHandler, head: HTTPResponseHead, headers: HTTPHeaders, connection: any UpstreamExchange,
         reusable: Bool, connections: ConnectionPool, loop: any EventLoop) {
        self.handler = handler
        self.head = head
        self.headers = headers
        self.connection = connection
        self.reusable = reusable
        self.connections = connections
        self.loop = loop
    }
}

/// `http.handlers.copy_response`: in `handle_response` routes, sends the upstream's response to the client.
public struct CopyResponseHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.copy_response"
    /// `status_code`: a different status to send (placeholders allowed).
    public var statusCode: WeakString?

    enum CodingKeys: String, CodingKey { case statusCode = "status_code" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let pending = request.attached(PendingResponse.self), !pending.copied else {
            throw HandlerError(status: 500, HTTPErrorMessage("cannot use 'copy_response' outside of reverse_proxy's handle_response routes"))
        }
        var status = pending.head.status
        if let code = statusCode, !code.value.isEmpty {
            guard let n = Int(request.replacer.replaceAll(code.value)) else {
                throw HandlerError(status: 500, HTTPErrorMessage("copy_response: invalid status_code \(code.value)"))
            }
            status = HTTPResponseStatus(statusCode: n)
        }
        pending.copied = true
        try await pending.handler.copyResponse(request, writer, head: pending.head, status: status, headers: pending.headers,
                                               connection: pending.connection, reusable: pending.reusable,
                                               connections: pending.connections, loop: pending.loop)
    }
}

/// `http.handlers.copy_response_headers`: in `handle_response` routes, copies the upstream's header fields to
/// the response (`include` only these, or all but `exclude`).
public struct CopyResponseHeadersHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.copy_response_headers"
    /// `include`: the fields to copy; empty copies all.
    public var include: [String]
    /// `exclude`: fields not to copy.
    public var exclude: [String]

    enum CodingKeys: String, CodingKey { case include, exclude }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        include = try c.decodeIfPresent([String].self, forKey: .include) ?? []
        exclude = try c.decodeIfPresent([String].self, forKey: .exclude) ?? []
        if !include.isEmpty && !exclude.isEmpty { throw c.error(.include, "cannot define both 'exclude' and 'include'") }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let pending = request.attached(PendingResponse.self) else {
            throw HandlerError(status: 500, HTTPErrorMessage("cannot use 'copy_response_headers' outside of reverse_proxy's handle_response routes"))
        }
        let inc = Set(include.map { $0.lowercased() })
        let exc = Set(exclude.map { $0.lowercased() })
        for (name, value) in pending.headers {
            let lower = name.lowercased()
            if !inc.isEmpty && !inc.contains(lower) { continue }
            if exc.contains(lower) { continue }
            writer.headers.add(name: name, value: value)
        }
        try await next.serve(request, writer)
    }
}

/// The upstreams a handler's dynamic source has named so far, kept so their load and passive health carry over
/// from one request to the next.
final class DynamicHosts: Sendable {
    private let known = Mutex<[String: Upstream]>([:])
    private let registry: UpstreamRegistry
    private let maxFails: Int
    private let limit: Int

    init(registry: UpstreamRegistry, maxFails: Int, limit: Int) {
        self.registry = registry
        self.maxFails = maxFails
        self.limit = limit
    }

    func upstreams(_ addresses: [String]) -> [Upstream] {
        known.withLock { k in
            addresses.map { address in
                if let u = k[address] { return u }
                let host = registry.acquire(address)
                let health = UpstreamHealth(maxFails: maxFails)
                host.attach(health)
                let u = Upstream(host: host, maxRequests: limit, health: health)
                k[address] = u
                return u
            }
        }
    }

    func releaseAll() {
        let all = known.withLock { k -> [Upstream] in
            let v = Array(k.values)
            k.removeAll()
            return v
        }
        for u in all {
            u.host.detach(u.health)
            registry.release(u.address)
        }
    }
}

/// The first bytes of a request body, read before it goes up (`request_buffers`).
struct PrebufferedBody {
    var chunks: [ByteBuffer]
    var length: Int
    /// The whole body is here.
    var complete: Bool

    static func read(_ body: RequestBody, limit: Int) async throws -> PrebufferedBody {
        var b = PrebufferedBody(chunks: [], length: 0, complete: false)
        var it = body.makeAsyncIterator()
        while limit < 0 || b.length < limit {
            guard let chunk = try await it.next() else {
                b.complete = true
                break
            }
            b.chunks.append(chunk)
            b.length += chunk.readableBytes
        }
        return b
    }
}
