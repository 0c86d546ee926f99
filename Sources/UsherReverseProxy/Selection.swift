import NIOHTTP1
import Synchronization
public import UsherCore
public import UsherHTTP

/// An upstream as a handler holds it: the shared host state plus this handler's limits and view of its health.
public struct Upstream: Sendable {
    public let host: UpstreamHost
    public let maxRequests: Int
    public let health: UpstreamHealth

    /// Whether it may take another request: healthy, and below `max_requests`.
    public var available: Bool { health.healthy && (maxRequests <= 0 || host.numRequests < maxRequests) }
    public var address: String { host.address }
}

/// Load-balancing selection policies (`http.reverse_proxy.selection_policies.*`, inline key `policy`).
public protocol SelectionPolicy: Module {
    /// The upstream for `request`, or `nil` when none is available.
    func select(_ pool: [Upstream], _ request: Request) -> Upstream?
}

public enum SelectionPolicies: ModuleNamespace {
    public static let prefix = "http.reverse_proxy.selection_policies"
    public static let inlineKey: String? = "policy"
    public typealias Instance = any SelectionPolicy
}

/// `random`: any available upstream.
public struct RandomSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.random"
    public init() {}
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        pool.filter(\.available).randomElement()
    }
}

/// `random_choose`: the least loaded of `choose` random upstreams (the power of two choices).
public struct RandomChooseSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.random_choose"
    /// `choose`: how many to draw. Default: 2.
    public var choose: Int

    enum CodingKeys: String, CodingKey { case choose }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        choose = try c.decodeIfPresent(Int.self, forKey: .choose) ?? 2
        if choose == 0 { choose = 2 }
        if choose < 2 { throw c.error(.choose, "choose must be at least 2") }
    }

    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        let drawn = pool.filter(\.available).shuffled().prefix(choose)
        return drawn.min { $0.host.numRequests < $1.host.numRequests }
    }
}

/// `least_conn`: the upstream with the fewest requests in flight (ties broken at random).
public struct LeastConnSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.least_conn"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        let available = pool.filter(\.available)
        guard let least = available.map(\.host.numRequests).min() else { return nil }
        return available.filter { $0.host.numRequests == least }.randomElement()
    }
}

/// `round_robin`: each upstream in turn.
public struct RoundRobinSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.round_robin"
    private let counter = RoundRobinCounter()
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        guard !pool.isEmpty else { return nil }
        for _ in pool.indices {
            let i = counter.next() % pool.count
            if pool[i].available { return pool[i] }
        }
        return nil
    }
}

final class RoundRobinCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max }
}

/// `weighted_round_robin`: round robin where upstream *i* gets `weights[i]` turns per round.
public struct WeightedRoundRobinSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.weighted_round_robin"
    /// `weights`: one per upstream, in order.
    public var weights: [Int]
    private let counter = RoundRobinCounter()

    enum CodingKeys: String, CodingKey { case weights }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        weights = try c.decodeIfPresent([Int].self, forKey: .weights) ?? []
        if weights.contains(where: { $0 < 0 }) { throw c.error(.weights, "weights must not be negative") }
    }

    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        let total = pool.indices.reduce(0) { $0 + weight($1) }
        guard total > 0 else { return nil }
        for _ in 0..<total {
            var slot = counter.next() % total
            for (i, u) in pool.enumerated() {
                let w = weight(i)
                if slot < w {
                    if u.available { return u }
                    break
                }
                slot -= w
            }
        }
        return nil
    }

    private func weight(_ i: Int) -> Int { i < weights.count ? weights[i] : 0 }
}

/// `first`: the first available upstream, in order (failover).
public struct FirstSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.first"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? { pool.first(where: \.available) }
}

/// The upstream that a key hashes to, by rendezvous hashing (the key hashed with each upstream's address; the
/// highest wins), so most keys keep their upstream when others come or go — Caddy's `hostByHashing`.
func upstream(byHashing key: String, in pool: [Upstream]) -> Upstream? {
    var best: (hash: UInt64, upstream: Upstream)?
    for u in pool where u.available {
        let h = fnv1a64(u.address + key)
        if best == nil || h > best!.hash { best = (h, u) }
    }
    return best?.upstream
}

func fnv1a64(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01b3
    }
    return h
}

/// `ip_hash`: by the remote IP address of the connection.
public struct IPHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.ip_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        upstream(byHashing: request.remoteHost, in: pool)
    }
}

/// `client_ip_hash`: by the client IP (after `trusted_proxies`).
public struct ClientIPHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.client_ip_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        upstream(byHashing: request.clientIP, in: pool)
    }
}

/// `uri_hash`: by the request URI.
public struct URIHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.uri_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        upstream(byHashing: request.original.uri, in: pool)
    }
}

/// A policy for requests that lack what a hashing policy hashes (`fallback`; default `random`).
struct FallbackPolicy: Sendable {
    let policy: Loaded<SelectionPolicies>?

    func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        policy?.module.select(pool, request) ?? pool.filter(\.available).randomElement()
    }
}

/// `header`: by the value of a request header field.
public struct HeaderHashSelection: SelectionPolicy, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.header"
    /// `field`: the header field.
    public var field: String
    /// `fallback`: the policy when the field is absent. Default: `random`.
    public var fallback: Loaded<SelectionPolicies>?

    enum CodingKeys: String, CodingKey { case field, fallback }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        field = try c.decodeIfPresent(String.self, forKey: .field) ?? ""
        if field.isEmpty { throw c.error(.field, "header field is required") }
        fallback = try c.decodeIfPresent(Loaded<SelectionPolicies>.self, forKey: .fallback)
    }

    public mutating func provision(_ context: ProvisionContext) async throws { try await fallback?.provision(context) }

    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        // Caddy hashes on the Host for a `Host` field, which is not in the header map.
        let value = field.lowercased() == "host" ? request.host : request.headers[field].joined(separator: ",")
        if value.isEmpty { return FallbackPolicy(policy: fallback).select(pool, request) }
        return upstream(byHashing: value, in: pool)
    }
}

/// `query`: by the value of a query parameter.
public struct QueryHashSelection: SelectionPolicy, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.query"
    /// `key`: the query parameter.
    public var key: String
    /// `fallback`: the policy when the parameter is absent. Default: `random`.
    public var fallback: Loaded<SelectionPolicies>?

    enum CodingKeys: String, CodingKey { case key, fallback }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
        if key.isEmpty { throw c.error(.key, "query key is required") }
        fallback = try c.decodeIfPresent(Loaded<SelectionPolicies>.self, forKey: .fallback)
    }

    public mutating func provision(_ context: ProvisionContext) async throws { try await fallback?.provision(context) }

    public func select(_ pool: [Upstream], _ request: Request) -> Upstream? {
        let values = request.queryItems.filter { $0.name == key }.map(\.value)
        if values.isEmpty { return FallbackPolicy(policy: fallback).select(pool, request) }
        return upstream(byHashing: values.joined(separator: ","), in: pool)
    }
}
