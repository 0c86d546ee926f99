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
        maxRequests = try c.decodeIfPresent(Int.self, forKey: .maxRequests) ?? 0
    }
}

/// What all configs know of one upstream address: requests in flight and recent failures. Shared by address, as
/// Caddy's upstream pool is, so `GET /reverse_proxy/upstreams` sees every handler's load.
public final class UpstreamHost: Sendable {
    public let address: String
    private let inFlight = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)

    init(address: String) { self.address = address }

    public var numRequests: Int { inFlight.load(ordering: .relaxed) }
    public var fails: Int { failures.load(ordering: .relaxed) }

    func begin() { inFlight.add(1, ordering: .relaxed) }
    func end() { inFlight.subtract(1, ordering: .relaxed) }
    func countFailure() { failures.add(1, ordering: .relaxed) }
}

/// Every upstream host in use, by address; hosts no config uses any more are dropped when configs are unloaded.
public final class UpstreamRegistry: Sendable {
    private struct Entry {
        let host: UpstreamHost
        var users: Int
    }
    private let hosts = Mutex<[String: Entry]>([:])

    public init() {}

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
        return .json(.array(registry.all.map { h in
            .object([
                "address": .string(h.address),
                "num_requests": .number(JSONNumber(h.numRequests)),
                "fails": .number(JSONNumber(h.fails)),
            ])
        }))
    }
}
