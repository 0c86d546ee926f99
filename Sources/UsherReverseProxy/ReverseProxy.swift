import Foundation
public import NIOCore
import NIOHTTP1
import NIOPosix
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

    enum CodingKeys: String, CodingKey {
        case selectionPolicy = "selection_policy", retries, tryDuration = "try_duration", tryInterval = "try_interval"
        case retryMatch = "retry_match"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.retryMatch])
        selectionPolicy = try c.decodeIfPresent(Loaded<SelectionPolicies>.self, forKey: .selectionPolicy)
        retries = try c.decodeIfPresent(Int.self, forKey: .retries) ?? 0
        tryDuration = try c.decodeIfPresent(ConfigDuration.self, forKey: .tryDuration)
        tryInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .tryInterval)
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
/// bodies both ways, choosing upstreams by a selection policy and trying others when one cannot be dialled.
///
/// Built so far: static `upstreams` (`dial`, `max_requests`), `load_balancing` (policies, `retries`,
/// `try_duration`, `try_interval`), `headers`, `transport` `http` (HTTP/1.1, keep-alive pool, timeouts),
/// `flush_interval`. Everything else of Caddy's handler is refused by name until it exists.
public struct ReverseProxyHandler: MiddlewareHandler, Provisioner, CleanerUpper {
    public static let moduleID: ModuleID = "http.handlers.reverse_proxy"

    /// `upstreams`: the backends.
    public var upstreams: [UpstreamConfig]
    /// `load_balancing`.
    public var loadBalancing: LoadBalancing?
    /// `headers`.
    public var headers: ProxyHeaders?
    /// `transport`. Default: `http`.
    public var transport: Loaded<ProxyTransports>?
    /// `flush_interval`: negative flushes every write at once. Default: 0 (flush per write when the body has no
    /// known length or is an event stream, as Caddy does).
    public var flushInterval: ConfigDuration?

    private var pool: [Upstream] = []
    private var connections: ConnectionPool?
    private var registry: UpstreamRegistry?

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
            .healthChecks, .dynamicUpstreams, .handleResponse, .circuitBreaker, .rewrite, .requestBuffers,
            .responseBuffers, .streamTimeout, .streamCloseDelay, .trustedProxies, .verboseLogs, .bufferRequests,
            .bufferResponses, .maxBufferSize, .streamBufferSize,
        ])
        upstreams = try c.decodeIfPresent([UpstreamConfig].self, forKey: .upstreams) ?? []
        loadBalancing = try c.decodeIfPresent(LoadBalancing.self, forKey: .loadBalancing)
        headers = try c.decodeIfPresent(ProxyHeaders.self, forKey: .headers)
        transport = try c.decodeIfPresent(Loaded<ProxyTransports>.self, forKey: .transport)
        flushInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .flushInterval)
        if upstreams.isEmpty { throw c.error(.upstreams, "no upstreams configured") }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await loadBalancing?.selectionPolicy?.provision(context)
        try await transport?.provision(context)
        let registry = context.services.service(UpstreamRegistry.self) { UpstreamRegistry() }
        self.registry = registry
        pool = upstreams.map { Upstream(host: registry.acquire($0.dial), maxRequests: $0.maxRequests) }
        connections = ConnectionPool(transport: (transport?.module as? HTTPTransport) ?? HTTPTransport())
    }

    public func cleanup() async {
        connections?.closeAll()
        for u in upstreams { registry?.release(u.dial) }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let connections, let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            throw HandlerError(status: 500, HTTPErrorMessage("reverse_proxy: not running on an event loop"))
        }
        let lb = loadBalancing
        let deadline = lb?.tryDuration.flatMap { $0.nanoseconds > 0 ? NIODeadline.now() + .nanoseconds($0.nanoseconds) : nil }
        let interval = lb?.tryInterval.flatMap { $0.nanoseconds > 0 ? Duration.nanoseconds($0.nanoseconds) : nil } ?? .milliseconds(250)
        var attempt = 0
        var lastError = "no upstreams available"
        while true {
            let upstream = lb?.selectionPolicy?.module.select(pool, request) ?? pool.filter(\.available).randomElement()
            if let upstream {
                setUpstreamPlaceholders(request, upstream)
                upstream.host.begin()
                do {
                    defer { upstream.host.end() }
                    try await proxy(request, writer, to: upstream, connections: connections, loop: loop)
                    return
                } catch let e as UpstreamError where e.retryable {
                    upstream.host.countFailure()
                    lastError = e.description
                }
            }
            attempt += 1
            let moreByCount = attempt <= (lb?.retries ?? 0)
            let moreByTime = deadline.map { NIODeadline.now() < $0 } ?? false
            guard moreByCount || moreByTime else { break }
            if upstream == nil || moreByTime { try await Task.sleep(for: interval) }
        }
        throw HandlerError(status: 502, HTTPErrorMessage(lastError))
    }

    /// One exchange with one upstream: the request up (head, then body), the response back (head, then body).
    private func proxy(_ request: Request, _ writer: any ResponseWriter, to upstream: Upstream,
                       connections: ConnectionPool, loop: any EventLoop) async throws {
        var (conn, reused) = try await connections.acquire(upstream.address, on: loop)
        let head = upstreamRequestHead(request)
        do {
            try await conn.write(.head(head), flush: false)
        } catch where reused {
            // A pooled connection the upstream had closed: dial afresh, nothing was sent.
            conn.close()
            (conn, reused) = try await connections.acquire(upstream.address, on: loop)
            try await conn.write(.head(head), flush: false)
        }
        var responseStarted = false
        do {
            for try await chunk in request.body {
                try await conn.write(.body(.byteBuffer(chunk)), flush: false)
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
                throw HandlerError(status: 504, HTTPErrorMessage("reverse_proxy: timeout awaiting response headers from \(upstream.address)"))
            }
            guard let first = head else {
                throw UpstreamError(description: "upstream closed the connection before responding", retryable: false)
            }
            var responseHeaders = first.headers
            let reusable = !Self.connectionCloses(first)
            Self.removeHopByHop(&responseHeaders)
            if let r = headers?.response, let ops = r.ops,
               r.require?.matches(status: Int(first.status.code), headers: responseHeaders) ?? true {
                ops.apply(to: &responseHeaders, request.replacer)
            }
            // Our Server field gives way to the upstream's, and Via says we passed it on (Caddy since 2.8).
            writer.headers.remove(name: "Server")
            writer.headers.add(name: "Via", value: "\(first.version.major).\(first.version.minor) Usher")
            for (name, value) in responseHeaders { writer.headers.add(name: name, value: value) }
            let streaming = (flushInterval?.nanoseconds ?? 0) < 0
                || !first.headers.contains(name: "Content-Length")
                || (first.headers.first(name: "Content-Type")?.lowercased().hasPrefix("text/event-stream") ?? false)
            responseStarted = true
            try await writer.writeHead(first.status)
            let flusher = writer.capability((any Flushing).self)
            if streaming { try await flusher?.flush() }
            var complete = false
            while let part = try await conn.next() {
                switch part {
                case .head:
                    continue
                case .body(let buffer):
                    try await writer.write(buffer)
                    if streaming { try await flusher?.flush() }
                case .end:
                    complete = true
                }
                if complete { break }
            }
            connections.release(conn, reusable: complete && reusable, loop: loop)
        } catch {
            conn.close()
            if responseStarted || error is UpstreamError == false { throw error }
            throw HandlerError(status: 502, HTTPErrorMessage("\(error)"))
        }
    }

    /// Caddy's `{http.reverse_proxy.upstream.*}` placeholders for the upstream chosen, before the request goes up.
    private func setUpstreamPlaceholders(_ request: Request, _ upstream: Upstream) {
        let r = request.replacer
        let address = upstream.address
        var host = address
        var port = ""
        if let colon = address.lastIndex(of: ":"), !address.hasPrefix("unix/") {
            host = String(address[..<colon])
            port = String(address[address.index(after: colon)...])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        r.set("http.reverse_proxy.upstream.address", address)
        r.set("http.reverse_proxy.upstream.hostport", address)
        r.set("http.reverse_proxy.upstream.host", host)
        r.set("http.reverse_proxy.upstream.port", port)
        r.set("http.reverse_proxy.upstream.requests", String(upstream.host.numRequests))
        r.set("http.reverse_proxy.upstream.max_requests", String(upstream.maxRequests))
        r.set("http.reverse_proxy.upstream.fails", String(upstream.host.fails))
    }

    /// The final response head, skipping interim (1xx) ones.
    private func nextHead(_ conn: UpstreamConnection) async throws -> HTTPResponseHead? {
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
    private func upstreamRequestHead(_ request: Request) -> HTTPRequestHead {
        var h = request.headers
        let te = h[canonicalForm: "TE"].contains { $0.lowercased().contains("trailers") }
        Self.removeHopByHop(&h)
        if te { h.add(name: "TE", value: "trailers") }
        // Nothing is trusted to have set these before us (no trusted_proxies), so they are replaced, as Caddy does.
        h.replaceOrAdd(name: "X-Forwarded-For", value: request.remoteHost)
        h.replaceOrAdd(name: "X-Forwarded-Proto", value: request.scheme)
        h.replaceOrAdd(name: "X-Forwarded-Host", value: request.host)
        if !h.contains(name: "Host") { h.add(name: "Host", value: request.host) }
        h.add(name: "Via", value: "\(request.version.major).\(request.version.minor) Usher")
        if request.body.expectedLength == nil && request.method != .GET && request.method != .HEAD {
            h.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
        }
        if let ops = headers?.request { ops.apply(to: &h, request.replacer) }
        var uri = request.escapedPath
        if !request.rawQuery.isEmpty { uri += "?" + request.rawQuery }
        return HTTPRequestHead(version: .http1_1, method: request.method, uri: uri, headers: h)
    }

    static let hopByHop: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade",
    ]

    /// Drops hop-by-hop fields (RFC 9110 7.6.1), including those the Connection field names.
    static func removeHopByHop(_ h: inout HTTPHeaders) {
        let named = h[canonicalForm: "Connection"].map { $0.lowercased() }
        for name in Set(named).union(hopByHop) { h.remove(name: name) }
    }

    static func connectionCloses(_ head: HTTPResponseHead) -> Bool {
        head.headers[canonicalForm: "Connection"].contains { $0.lowercased() == "close" } || head.version.minor == 0
    }
}
