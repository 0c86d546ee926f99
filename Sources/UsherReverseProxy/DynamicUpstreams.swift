import CUsherSystem
import Foundation
import NIOCore
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// Sources of upstreams looked up per request (`http.reverse_proxy.upstreams.*`, inline key `source`), as
/// `dynamic_upstreams`.
public protocol UpstreamSource: Module {
    /// The dial addresses (`host:port`) to choose from now.
    func upstreams(_ request: Request) async throws -> [String]
}

public enum UpstreamSources: ModuleNamespace {
    public static let prefix = "http.reverse_proxy.upstreams"
    public static let inlineKey: String? = "source"
    public typealias Instance = any UpstreamSource
}

/// `resolver` of a dynamic source: nameservers to ask instead of the system's.
public struct UpstreamResolver: Decodable, Sendable {
    /// `addresses`: nameservers as `host:port` or `udp/host:port` (IPv4; port 53 by default).
    public var addresses: [(host: String, port: Int)]

    enum CodingKeys: String, CodingKey { case addresses }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let raw = try c.decodeIfPresent([String].self, forKey: .addresses) ?? []
        addresses = try raw.enumerated().map { i, text in
            guard let a = try? NetworkAddress(parsing: text, defaultPort: 53),
                (try? SocketAddress(ipAddress: a.host, port: 0)) != nil, !a.host.contains(":")
            else {
                throw ConfigError(
                    path: c.error(.addresses, "").path + "[\(i)]", "nameserver must be an IPv4 address: \(text)")
            }
            return (a.host, a.startPort)
        }
        if addresses.isEmpty { throw c.error(.addresses, "no nameservers given") }
    }
}

/// Results of a lookup, kept for `refresh`.
final class LookupCache: Sendable {
    private struct Entry {
        var addresses: [String]
        var at: ContinuousClock.Instant
    }
    private let entry = Mutex<Entry?>(nil)
    let refresh: Duration
    let grace: Duration

    init(refresh: Duration, grace: Duration) {
        self.refresh = refresh
        self.grace = grace
    }

    /// Cached addresses while fresh; otherwise a new lookup, falling back to stale ones within `grace`.
    func get(_ lookup: @Sendable () async throws -> [String]) async throws -> [String] {
        let now = ContinuousClock.now
        if let e = entry.withLock({ $0 }), now - e.at < refresh { return e.addresses }
        do {
            let fresh = try await lookup()
            entry.withLock { $0 = Entry(addresses: fresh, at: now) }
            return fresh
        } catch {
            if let e = entry.withLock({ $0 }), now - e.at < refresh + grace { return e.addresses }
            throw error
        }
    }
}

/// `http.reverse_proxy.upstreams.a`: the A/AAAA records of `name`, on `port`.
public struct AUpstreams: UpstreamSource {
    public static let moduleID: ModuleID = "http.reverse_proxy.upstreams.a"
    /// `name`: the domain name (placeholders allowed).
    public var name: String
    /// `port`: the port of every upstream. Default: 80.
    public var port: String
    /// `refresh`: how long results are kept. Default: 1m.
    public var refresh: ConfigDuration?
    /// `versions`: `ipv4`, `ipv6` to ask for. Default: both.
    public var ipv4: Bool
    public var ipv6: Bool
    /// `resolver`: nameservers to ask (else the system resolver, `/etc/hosts` included).
    public var resolver: UpstreamResolver?
    private let cache: LookupCache

    enum CodingKeys: String, CodingKey {
        case name, port, refresh, versions, resolver, dialTimeout = "dial_timeout", dialFallbackDelay =
            "dial_fallback_delay"
    }
    enum VersionKeys: String, CodingKey { case ipv4, ipv6 }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        if name.isEmpty { throw c.error(.name, "name is required") }
        port = try c.decodeIfPresent(WeakString.self, forKey: .port)?.value ?? "80"
        if port.isEmpty { port = "80" }
        refresh = try c.decodeIfPresent(ConfigDuration.self, forKey: .refresh)
        resolver = try c.decodeIfPresent(UpstreamResolver.self, forKey: .resolver)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialFallbackDelay)
        ipv4 = true
        ipv6 = true
        if c.contains(.versions) {
            let v = try c.nestedContainer(keyedBy: VersionKeys.self, forKey: .versions)
            let four = try v.decodeIfPresent(Bool.self, forKey: .ipv4)
            let six = try v.decodeIfPresent(Bool.self, forKey: .ipv6)
            // Naming neither means both, as in Caddy.
            if four != nil || six != nil {
                ipv4 = four ?? false
                ipv6 = six ?? false
            }
        }
        let every = refresh.flatMap { $0.nanoseconds > 0 ? $0.duration : nil } ?? .seconds(60)
        cache = LookupCache(refresh: every, grace: .zero)
    }

    public func upstreams(_ request: Request) async throws -> [String] {
        let host = request.replacer.replaceAll(name)
        let port = request.replacer.replaceAll(self.port)
        let (four, six, resolver) = (ipv4, ipv6, resolver)
        let ips = try await cache.get {
            try await DNSLookup.addresses(host, ipv4: four, ipv6: six, resolver: resolver)
        }
        return ips.map { $0.contains(":") ? "[\($0)]:\(port)" : "\($0):\(port)" }
    }
}

/// `http.reverse_proxy.upstreams.srv`: the targets of the SRV records `_service._proto.name`.
public struct SRVUpstreams: UpstreamSource {
    public static let moduleID: ModuleID = "http.reverse_proxy.upstreams.srv"
    /// `service`, `proto`, `name`: the record is `_service._proto.name`, or just `name` when the others are empty.
    public var service: String
    public var proto: String
    public var name: String
    /// `refresh`: how long results are kept. Default: 1m.
    public var refresh: ConfigDuration?
    /// `grace_period`: how long stale results are used when a lookup fails. Default: 0.
    public var gracePeriod: ConfigDuration?
    /// `resolver`: nameservers to ask (else the system's).
    public var resolver: UpstreamResolver?
    private let cache: LookupCache

    enum CodingKeys: String, CodingKey {
        case service, proto, name, refresh, resolver, gracePeriod = "grace_period", dialTimeout = "dial_timeout"
        case dialFallbackDelay = "dial_fallback_delay"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        service = try c.decodeIfPresent(String.self, forKey: .service) ?? ""
        proto = try c.decodeIfPresent(String.self, forKey: .proto) ?? ""
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        if name.isEmpty { throw c.error(.name, "name is required") }
        if (service.isEmpty) != (proto.isEmpty) { throw c.error(.service, "service and proto go together") }
        refresh = try c.decodeIfPresent(ConfigDuration.self, forKey: .refresh)
        gracePeriod = try c.decodeIfPresent(ConfigDuration.self, forKey: .gracePeriod)
        resolver = try c.decodeIfPresent(UpstreamResolver.self, forKey: .resolver)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialFallbackDelay)
        let every = refresh.flatMap { $0.nanoseconds > 0 ? $0.duration : nil } ?? .seconds(60)
        cache = LookupCache(refresh: every, grace: gracePeriod?.duration ?? .zero)
    }

    public func upstreams(_ request: Request) async throws -> [String] {
        let r = request.replacer
        var record = r.replaceAll(name)
        if !service.isEmpty { record = "_\(r.replaceAll(service))._\(r.replaceAll(proto)).\(record)" }
        let (query, resolver) = (record, resolver)
        return try await cache.get {
            try await DNSLookup.srv(query, resolver: resolver).map { target in
                target.host.contains(":") ? "[\(target.host)]:\(target.port)" : "\(target.host):\(target.port)"
            }
        }
    }
}

/// `http.reverse_proxy.upstreams.multi`: the upstreams of several sources together.
public struct MultiUpstreams: UpstreamSource, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.upstreams.multi"
    /// `sources`: the sources, asked in order; one that fails is skipped.
    public var sources: [Loaded<UpstreamSources>]

    enum CodingKeys: String, CodingKey { case sources }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sources = try c.decodeIfPresent([Loaded<UpstreamSources>].self, forKey: .sources) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws { try await sources.provision(context) }

    public func upstreams(_ request: Request) async throws -> [String] {
        var all: [String] = []
        var lastError: (any Error)?
        for s in sources {
            do { all += try await s.module.upstreams(request) } catch { lastError = error }
        }
        if all.isEmpty, let lastError { throw lastError }
        return all
    }
}

/// Name lookups, off the event loops (the system resolver blocks).
enum DNSLookup {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// IP addresses of `host`: from the system resolver (getaddrinfo), or by asking `resolver`'s nameservers.
    static func addresses(_ host: String, ipv4: Bool, ipv6: Bool, resolver: UpstreamResolver?) async throws -> [String]
    {
        try await NIOThreadPool.singleton.runIfActive {
            var out: [String] = []
            if let resolver {
                // A name may well have records of one family only; the other query then finds nothing.
                if ipv4 { out += ((try? query(host, type: 1, resolver)) ?? []).compactMap(\.address) }
                if ipv6 { out += ((try? query(host, type: 28, resolver)) ?? []).compactMap(\.address) }
            } else {
                var hints = addrinfo()
                hints.ai_family = ipv4 && ipv6 ? AF_UNSPEC : (ipv4 ? AF_INET : AF_INET6)
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var res: UnsafeMutablePointer<addrinfo>?
                let rc = getaddrinfo(host, nil, &hints, &res)
                guard rc == 0 else {
                    throw Failure(description: "looking up \(host): \(String(cString: gai_strerror(rc)))")
                }
                defer { freeaddrinfo(res) }
                var p = res
                while let ai = p {
                    var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    // The address sits at a fixed offset: after family and port in `sockaddr_in`, after the flow
                    // label too in `sockaddr_in6`.
                    let family = ai.pointee.ai_family
                    if let sa = ai.pointee.ai_addr, family == AF_INET || family == AF_INET6 {
                        let offset = family == AF_INET ? 4 : 8
                        _ = inet_ntop(family, UnsafeRawPointer(sa) + offset, &buf, socklen_t(buf.count))
                    }
                    let text = String(cString: buf)
                    if !text.isEmpty && !out.contains(text) { out.append(text) }
                    p = ai.pointee.ai_next
                }
            }
            if out.isEmpty { throw Failure(description: "looking up \(host): no addresses") }
            return out
        }
    }

    /// The targets of SRV records `name`, by priority, then (highest) weight.
    static func srv(_ name: String, resolver: UpstreamResolver?) async throws -> [(host: String, port: Int)] {
        try await NIOThreadPool.singleton.runIfActive {
            let records = try query(name, type: 33, resolver).compactMap(\.srv)
            if records.isEmpty { throw Failure(description: "looking up SRV \(name): no records") }
            return records.sorted { ($0.priority, -$0.weight) < ($1.priority, -$1.weight) }.map { ($0.target, $0.port) }
        }
    }

    /// One query, to each of the resolver's nameservers in turn until one answers (or the system's).
    static func query(_ name: String, type: Int32, _ resolver: UpstreamResolver?) throws -> [DNSRecord] {
        let servers: [(host: String?, port: Int)] = resolver?.addresses.map { ($0.host, $0.port) } ?? [(nil, 53)]
        guard let records = DNSClient.query(name, type: type, servers: servers) else {
            throw Failure(description: "looking up \(name): no answer")
        }
        return records
    }
}
