import Synchronization
public import UsherCore

/// One of `upstreams`: a backend to proxy to.
public struct UpstreamConfig: Decodable, Sendable {
    /// `dial`: the network address (`host:port`, `unix//path`).
    public var dial: String
    /// `max_requests`: most requests in flight to this upstream at once; 0 means no limit.
    public var maxRequests: Int

    enum CodingKeys: String, CodingKey { case dial, maxRequests = "max_requests" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dial = try c.decode(String.self, forKey: .dial)
        if dial.isEmpty { throw c.error(.dial, "upstream dial address is required") }
        if !Replacer.mayContainPlaceholders(dial) {
            let parsed: NetworkAddress
            do { parsed = try NetworkAddress(parsing: dial) } catch {
                throw c.error(.dial, "invalid dial address \(dial): \(error)")
            }
            if !parsed.isUnixNetwork && parsed.startPort != parsed.endPort {
                throw c.error(.dial, "dial address must represent precisely one socket: \(dial)")
            }
            if !parsed.isUnixNetwork && parsed.startPort == 0 {
                throw c.error(.dial, "invalid dial address \(dial): missing port")
            }
        }
        maxRequests = try c.decodeIfPresent(Int.self, forKey: .maxRequests) ?? 0
    }
}

/// What all configs know of one upstream address: requests in flight (counted across handlers, as Caddy's
/// upstream pool is, so `GET /reverse_proxy/upstreams` sees every handler's load) and each handler's view of
/// its health.
public final class UpstreamHost: Sendable {
    public let address: String
    private let inFlight = Atomic<Int>(0)
    private let views = Mutex<[ObjectIdentifier: UpstreamHealth]>([:])

    init(address: String) { self.address = address }

    public var numRequests: Int { inFlight.load(ordering: .relaxed) }
    /// Passive failures remembered, summed over the handlers that proxy here.
    public var fails: Int { views.withLock { $0.values.reduce(0) { $0 + $1.failures } } }
    /// Healthy in the eyes of every handler that proxies here.
    public var healthy: Bool { views.withLock { $0.values.allSatisfy(\.healthy) } }
    /// The most recent active health check by any handler.
    public var lastCheck: HealthCheckRecord? {
        views.withLock { $0.values.compactMap(\.lastCheck).max { $0.time < $1.time } }
    }

    func begin() { inFlight.add(1, ordering: .relaxed) }
    func end() { inFlight.subtract(1, ordering: .relaxed) }

    func attach(_ health: UpstreamHealth) { views.withLock { $0[ObjectIdentifier(health)] = health } }
    func detach(_ health: UpstreamHealth) { views.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(health)) } }
}

/// Every upstream host in use, by address; hosts no config uses any more are dropped when configs are unloaded.
public final class UpstreamRegistry: Sendable {
    private struct Entry {
        let host: UpstreamHost
        var users: Int
    }
    private let hosts = Mutex<[String: Entry]>([:])

    public init() {
        // The registry lives as long as the process's shared services; each scrape reads health from it.
        _ = UsherMetrics.addRefresher { [weak self] in
            guard let self else { return }
            ProxyMetrics.shared.refreshHealth(self.all)
        }
    }

    func acquire(_ address: String) -> UpstreamHost {
        hosts.withLock { h in
            if var e = h[address] {
                e.users += 1
                h[address] = e
                return e.host
            }
            let host = UpstreamHost(address: address)
            h[address] = Entry(host: host, users: 1)
            return host
        }
    }

    func release(_ address: String) {
        hosts.withLock { h in
            guard var e = h[address] else { return }
            e.users -= 1
            h[address] = e.users > 0 ? e : nil
        }
    }

    public var all: [UpstreamHost] { hosts.withLock { $0.values.map(\.host).sorted { $0.address < $1.address } } }
}

/// `GET /reverse_proxy/upstreams`: each upstream's address, requests in flight and failures, as Caddy reports them.
public struct UpstreamsAdminEndpoint: AdminEndpoint {
    public init() {}
    public var path: String { "/reverse_proxy/upstreams" }

    public func handle(_ request: AdminRequest, runtime: ServerRuntime) async throws -> AdminResponse {
        guard request.method == "GET" else {
            return .json(.object(["error": .string("method not allowed")]), status: 405)
        }
        let registry = runtime.environment.services.service(UpstreamRegistry.self) { UpstreamRegistry() }
        return .json(
            .array(
                registry.all.map { h in
                    var o: JSONObject = [
                        "address": .string(h.address),
                        "num_requests": .number(JSONNumber(h.numRequests)),
                        "fails": .number(JSONNumber(h.fails)),
                        "healthy": .bool(h.healthy),
                    ]
                    if let check = h.lastCheck {
                        var c: JSONObject = [
                            "time": .string(GoTimeLayout.format(check.time, layout: GoTimeLayout.rfc3339Nano)),
                            "passed": .bool(check.passed),
                        ]
                        if let status = check.status { c["status"] = .number(JSONNumber(status)) }
                        if let error = check.error { c["error"] = .string(error) }
                        o["last_check"] = .object(c)
                    }
                    return .object(o)
                }))
    }
}
