import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP
import UsherHTTP3
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
    var pool: [Upstream] = []
    var dynamicHosts: DynamicHosts?
    var logger: Logger?
    var connections: ConnectionPool?
    var registry: UpstreamRegistry?
    /// Whether the `http` app has `metrics`, so responses are counted per upstream.
    var countsUpstreamRequests = false
    var checker: CheckerTask?

    enum CodingKeys: String, CodingKey {
        case upstreams, loadBalancing = "load_balancing", headers, transport, flushInterval = "flush_interval"
        case healthChecks = "health_checks", dynamicUpstreams = "dynamic_upstreams", handleResponse = "handle_response"
        case circuitBreaker = "circuit_breaker", rewrite, requestBuffers = "request_buffers"
        case responseBuffers = "response_buffers", streamTimeout = "stream_timeout", streamCloseDelay =
            "stream_close_delay"
        case trustedProxies = "trusted_proxies", verboseLogs = "verbose_logs", bufferRequests = "buffer_requests"
        case bufferResponses = "buffer_responses", maxBufferSize = "max_buffer_size", streamBufferSize =
            "stream_buffer_size"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([
            .circuitBreaker
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
            let prefix =
                text.contains("/")
                ? IPPrefix(text) : IPAddress(text).map { IPPrefix(address: $0, bits: $0.bitLength) } ?? nil
            guard let prefix else {
                throw ConfigError(
                    path: jsonPathString(c.codingPath + [CodingKeys.trustedProxies, AnyCodingKey(intValue: i)]),
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
            dynamicHosts = DynamicHosts(
                registry: registry, maxFails: passive?.maxFails ?? 0,
                limit: healthChecks?.passive?.unhealthyRequestCount ?? 0)
        }
        let fastCGI = transport?.module as? FastCGITransport
        // FastCGI needs CONTENT_LENGTH: small chunked bodies are read first to learn it (Caddy's 4 KiB default).
        if fastCGI != nil && requestBuffers == 0 { requestBuffers = 4096 }
        let connections = ConnectionPool(
            transport: (transport?.module as? HTTPTransport) ?? fastCGI?.poolSettings ?? HTTPTransport())
        self.connections = connections
        if let active = healthChecks?.active, active.isEnabled {
            let run = ActiveHealthChecker(
                config: active, pool: pool, connections: connections,
                group: context.eventLoopGroup,
                logger: context.logger("http.handlers.reverse_proxy.health_checker.active"),
                events: try await context.app("events") as? any EventEmitter)
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
        let interval =
            lb?.tryInterval.flatMap { $0.nanoseconds > 0 ? Duration.nanoseconds($0.nanoseconds) : nil }
            ?? .milliseconds(250)
        var candidates = pool
        if let dynamicUpstreams, let dynamicHosts {
            do {
                candidates = dynamicHosts.upstreams(try await dynamicUpstreams.module.upstreams(request))
            } catch {
                logger?.warning(
                    "failed getting dynamic upstreams; falling back to static upstreams",
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
            let upstream =
                lb?.selectionPolicy?.module.select(candidates, request, writer) ?? RandomSelection.pick(candidates)
            if let upstream {
                placeholders.upstream = upstream
                upstream.host.begin()
                do {
                    defer { upstream.host.end() }
                    try await proxy(
                        request, writer, to: upstream, connections: connections, loop: loop,
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
        ProxyMetrics.shared.recordRequest(
            upstream: upstream.address, method: request.method.rawValue, status: status,
            latency: .nanoseconds(latency.nanoseconds))
    }

    /// Passive health checking: remember a failure for `fail_duration`.
    func countFailure(_ upstream: Upstream, loop: any EventLoop) {
        guard let passive = healthChecks?.passive, passive.failDuration.nanoseconds > 0 else { return }
        let health = upstream.health
        health.countFailure()
        loop.scheduleTask(in: .nanoseconds(passive.failDuration.nanoseconds)) { health.forgetFailure() }
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

/// The upstreams a handler's dynamic source has named so far, kept so their load and passive health carry over
/// from one request to the next.
final class DynamicHosts: Sendable {
    let known = Mutex<[String: Upstream]>([:])
    let registry: UpstreamRegistry
    let maxFails: Int
    let limit: Int

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
