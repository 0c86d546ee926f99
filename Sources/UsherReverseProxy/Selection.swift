import Crypto
import Foundation
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
    /// The upstream for `request`, or `nil` when none is available. `writer` is the client's response, for
    /// policies that tell the client something (the `cookie` policy's `Set-Cookie`).
    func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream?
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
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        Self.pick(pool)
    }

    /// A random available upstream, by reservoir sampling (no array built, no system call).
    static func pick(_ pool: [Upstream]) -> Upstream? {
        var rng = FastRandom()
        var chosen: Upstream?
        var seen = 0
        for u in pool where u.available {
            seen += 1
            if seen == 1 || Int.random(in: 0..<seen, using: &rng) == 0 { chosen = u }
        }
        return chosen
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

    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        var rng = FastRandom()
        let drawn = pool.filter(\.available).shuffled(using: &rng).prefix(choose)
        return drawn.min { $0.host.numRequests < $1.host.numRequests }
    }
}

/// `least_conn`: the upstream with the fewest requests in flight (ties broken at random).
public struct LeastConnSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.least_conn"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        let available = pool.filter(\.available)
        guard let least = available.map(\.host.numRequests).min() else { return nil }
        return RandomSelection.pick(available.filter { $0.host.numRequests == least })
    }
}

/// `round_robin`: each upstream in turn.
public struct RoundRobinSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.round_robin"
    private let counter = RoundRobinCounter()
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        guard !pool.isEmpty else { return nil }
        for _ in pool.indices {
            let i = counter.next() % pool.count
            if pool[i].available { return pool[i] }
        }
        return nil
    }
}

/// A fast generator for load balancing (wyrand over a shared atomic counter): the system generator makes a
/// getrandom(2) call per draw, which costs as much as a proxied request's own system calls.
struct FastRandom: RandomNumberGenerator {
    private static let state: Atomic<UInt64> = {
        var system = SystemRandomNumberGenerator()
        return Atomic<UInt64>(system.next() | 1)
    }()

    mutating func next() -> UInt64 {
        let s: UInt64 = Self.state.wrappingAdd(0xA076_1D64_78BD_642F, ordering: .relaxed).newValue
        let m = s.multipliedFullWidth(by: s ^ 0xE703_7ED1_A0B4_28DB)
        return m.high ^ m.low
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

    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
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
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        pool.first(where: \.available)
    }
}

/// The upstream that a key hashes to, by rendezvous hashing (the key hashed with each upstream's address; the
/// highest wins), so most keys keep their upstream when others come or go. Same hash (xxHash64) and input as
/// Caddy's `hostByHashing`, so a key picks the same upstream under both.
func upstream(byHashing key: String, in pool: [Upstream]) -> Upstream? {
    var best: (hash: UInt64, upstream: Upstream)?
    for u in pool where u.available {
        let h = xxHash64(Array((u.address + key).utf8))
        if best == nil || h > best!.hash { best = (h, u) }
    }
    return best?.upstream
}

/// xxHash64 with seed 0 (the `cespare/xxhash` Caddy uses).
public func xxHash64(_ input: [UInt8]) -> UInt64 {
    let p1: UInt64 = 11_400_714_785_074_694_791, p2: UInt64 = 14_029_467_366_897_019_727
    let p3: UInt64 = 1_609_587_929_392_839_161, p4: UInt64 = 9_650_029_242_287_828_579
    let p5: UInt64 = 2_870_177_450_012_600_261
    func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
    func round(_ acc: UInt64, _ lane: UInt64) -> UInt64 { rotl(acc &+ lane &* p2, 31) &* p1 }
    func read64(_ i: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(input[i + $1]) << (8 * UInt64($1)) } }
    func read32(_ i: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(input[i + $1]) << (8 * UInt64($1)) } }
    let n = input.count
    var i = 0
    var h: UInt64
    if n >= 32 {
        var v1 = p1 &+ p2, v2 = p2, v3: UInt64 = 0, v4 = 0 &- p1
        while i + 32 <= n {
            v1 = round(v1, read64(i)); v2 = round(v2, read64(i + 8))
            v3 = round(v3, read64(i + 16)); v4 = round(v4, read64(i + 24))
            i += 32
        }
        h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        for v in [v1, v2, v3, v4] { h = (h ^ round(0, v)) &* p1 &+ p4 }
    } else {
        h = p5
    }
    h = h &+ UInt64(n)
    while i + 8 <= n {
        h = rotl(h ^ round(0, read64(i)), 27) &* p1 &+ p4
        i += 8
    }
    if i + 4 <= n {
        h = rotl(h ^ (read32(i) &* p1), 23) &* p2 &+ p3
        i += 4
    }
    while i < n {
        h = rotl(h ^ (UInt64(input[i]) &* p5), 11) &* p1
        i += 1
    }
    h ^= h >> 33; h = h &* p2
    h ^= h >> 29; h = h &* p3
    h ^= h >> 32
    return h
}

/// `ip_hash`: by the remote IP address of the connection.
public struct IPHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.ip_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        upstream(byHashing: request.remoteHost, in: pool)
    }
}

/// `client_ip_hash`: by the client IP (after `trusted_proxies`).
public struct ClientIPHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.client_ip_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        upstream(byHashing: request.clientIP, in: pool)
    }
}

/// `uri_hash`: by the request URI.
public struct URIHashSelection: SelectionPolicy {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.uri_hash"
    public init(from decoder: any Decoder) throws {}
    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        upstream(byHashing: request.original.uri, in: pool)
    }
}

/// A policy for requests that lack what a hashing policy hashes (`fallback`; default `random`).
struct FallbackPolicy: Sendable {
    let policy: Loaded<SelectionPolicies>?

    func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        policy?.module.select(pool, request, writer) ?? RandomSelection.pick(pool)
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

    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        // Caddy hashes on the Host for a `Host` field, which is not in the header map.
        let value = field.lowercased() == "host" ? request.host : request.headers[field].joined(separator: ",")
        if value.isEmpty { return FallbackPolicy(policy: fallback).select(pool, request, writer) }
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

    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        let values = request.queryItems.filter { $0.name == key }.map(\.value)
        if values.isEmpty { return FallbackPolicy(policy: fallback).select(pool, request, writer) }
        return upstream(byHashing: values.joined(separator: ","), in: pool)
    }
}

/// `cookie`: sticky sessions. A client with the cookie `name` goes to the upstream whose keyed hash it holds;
/// others are placed by `fallback` and get the cookie for next time.
public struct CookieHashSelection: SelectionPolicy, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.selection_policies.cookie"
    /// `name`: the cookie. Default: `lb`.
    public var name: String
    /// `secret`: HMAC-SHA256 key for the cookie value. Default: empty.
    public var secret: String
    /// `max_age`: the cookie's lifetime; 0 makes it a session cookie.
    public var maxAge: ConfigDuration?
    /// `fallback`: places clients without a valid cookie. Default: `random`.
    public var fallback: Loaded<SelectionPolicies>?

    enum CodingKeys: String, CodingKey { case name, secret, maxAge = "max_age", fallback }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        if name.isEmpty { name = "lb" }
        secret = try c.decodeIfPresent(String.self, forKey: .secret) ?? ""
        maxAge = try c.decodeIfPresent(ConfigDuration.self, forKey: .maxAge)
        fallback = try c.decodeIfPresent(Loaded<SelectionPolicies>.self, forKey: .fallback)
    }

    public mutating func provision(_ context: ProvisionContext) async throws { try await fallback?.provision(context) }

    /// The value of cookie `name` in the request's `Cookie` fields (quotes removed, as Go does).
    static func cookie(_ name: String, in request: Request) -> String? {
        for field in request.headers["Cookie"] {
            for pair in field.split(separator: ";") {
                let p = pair.trimmingCharacters(in: .whitespaces)
                guard let eq = p.firstIndex(of: "="), p[..<eq] == name else { continue }
                var v = p[p.index(after: eq)...]
                if v.count >= 2, v.first == "\"", v.last == "\"" { v = v.dropFirst().dropLast() }
                return String(v)
            }
        }
        return nil
    }

    /// Hex HMAC-SHA256 of `address` under `secret`, as Caddy computes it.
    func hash(_ address: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array(address.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    public func select(_ pool: [Upstream], _ request: Request, _ writer: any ResponseWriter) -> Upstream? {
        if let value = Self.cookie(name, in: request) {
            if let u = pool.first(where: { $0.available && hash($0.address) == value }) { return u }
        }
        guard let chosen = FallbackPolicy(policy: fallback).select(pool, request, writer) else { return nil }
        var cookie = "\(name)=\(hash(chosen.address)); Path=/"
        if let maxAge, maxAge.nanoseconds > 0 { cookie += "; Max-Age=\(maxAge.nanoseconds / 1_000_000_000)" }
        cookie += "; HttpOnly"
        let proxiedHTTPS = request.isFromTrustedProxy && request.headers["X-Forwarded-Proto"].last == "https"
        cookie += request.tls != nil || proxiedHTTPS ? "; Secure; SameSite=None" : "; SameSite=Lax"
        writer.headers.add(name: "Set-Cookie", value: cookie)
        return chosen
    }
}
