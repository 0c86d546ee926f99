import Crypto
import Logging
import UsherACME
public import UsherCore

/// `challenges.dns`: DNS-01 through a `dns.providers` module. When configured, it is the only challenge the
/// issuer uses (as certmagic does), since it is usually set where the others cannot work.
public struct DNSChallengeConfig: Decodable, Sendable {
    /// `provider`: the DNS provider module. Default: the TLS app's `dns`.
    public var provider: Loaded<DNSProviderModules>?
    /// `ttl`: the challenge record's TTL. Default: the provider's choice.
    public var ttl: ConfigDuration?
    /// `propagation_delay`: how long to wait before checking that the record is visible. Default: 0.
    public var propagationDelay: ConfigDuration?
    /// `propagation_timeout`: how long to keep checking (every 2 s) before giving up; `-1` skips the checks.
    /// Default: 2m.
    public var propagationTimeout: ConfigDuration?
    /// `resolvers`: servers (`host[:port]`, IPv4) to find the zone and check propagation with. Default: the TLS
    /// app's `resolvers`, else the system's resolver for the zone and its authoritative servers for the check.
    public var resolvers: [String]
    /// `override_domain`: where to put the TXT record instead of `_acme-challenge.<name>` (a delegated name).
    public var overrideDomain: String?

    package enum CodingKeys: String, CodingKey {
        case provider, ttl, propagationDelay = "propagation_delay", propagationTimeout = "propagation_timeout"
        case resolvers, overrideDomain = "override_domain"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        provider = try c.decodeIfPresent(Loaded<DNSProviderModules>.self, forKey: .provider)
        ttl = try c.decodeIfPresent(ConfigDuration.self, forKey: .ttl)
        propagationDelay = try c.decodeIfPresent(ConfigDuration.self, forKey: .propagationDelay)
        propagationTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .propagationTimeout)
        resolvers = try c.decodeIfPresent([String].self, forKey: .resolvers) ?? []
        for (i, r) in resolvers.enumerated() where DNSResolvers.parse(r) == nil {
            throw c.error(.resolvers, "resolver \(i): \(r) is not an IPv4 address with an optional port")
        }
        overrideDomain = try c.decodeIfPresent(String.self, forKey: .overrideDomain).flatMap {
            $0.isEmpty ? nil : $0
        }
    }

    /// The solver this config describes, with the TLS app's defaults filled in.
    func solver(_ context: ProvisionContext, logger: Logger) async throws -> DNS01Solver {
        var p = provider
        try await p?.provision(context)
        let defaults = context.loadValue(DNSDefaults.self)
        guard let module = p?.module ?? defaults?.provider else {
            throw ConfigError("challenges.dns: DNS challenge enabled, but no DNS provider configured")
        }
        let servers = (resolvers.isEmpty ? defaults?.resolvers ?? [] : resolvers).compactMap(DNSResolvers.parse)
        return DNS01Solver(
            provider: module, ttl: ttl?.duration ?? .zero, delay: propagationDelay?.duration ?? .zero,
            timeout: propagationTimeout.map { $0.nanoseconds < 0 ? nil : $0.duration } ?? .seconds(120),
            resolvers: servers, overrideDomain: overrideDomain, logger: logger)
    }
}

extension DNSChallengeConfig {
    /// `caddytls.DNSChallengeConfig` as the Caddyfile adapter builds it.
    package struct Document: Equatable {
        package init() {}
        package var provider: JSONObject?
        package var ttl: Int64 = 0
        package var propagationDelay: Int64 = 0
        package var propagationTimeout: Int64 = 0
        package var resolvers: [String]?
        package var overrideDomain = ""
        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.provider, provider)
            o.putDuration(CodingKeys.ttl.stringValue, ttl)
            o.putDuration(CodingKeys.propagationDelay.stringValue, propagationDelay)
            o.putDuration(CodingKeys.propagationTimeout.stringValue, propagationTimeout)
            o.put(CodingKeys.resolvers, resolvers ?? [])
            o.put(CodingKeys.overrideDomain, overrideDomain)
            return o
        }
    }
}

/// Resolver addresses as the DNS client takes them.
enum DNSResolvers {
    /// `host[:port]` with an IPv4 host (the system resolver library takes only IPv4 overrides).
    static func parse(_ s: String) -> (host: String?, port: Int)? {
        let (host, port) = splitHostPort(s)
        guard let ip = IPAddress(host), ip.isIPv4, let p = port.isEmpty ? 53 : Int(port), (1...65535).contains(p)
        else { return nil }
        return (host, p)
    }

    static let system: [(host: String?, port: Int)] = [(nil, 53)]
}

/// Puts DNS-01 answers in place through a provider, waits until they are visible, and removes them.
struct DNS01Solver: Sendable {
    let provider: any DNSProvider
    let ttl: Duration
    let delay: Duration
    /// `nil`: do not check propagation.
    let timeout: Duration?
    let resolvers: [(host: String?, port: Int)]
    let overrideDomain: String?
    let logger: Logger

    struct Presented: Sendable {
        let zone: String
        let record: DNSProviderRecord
        let fqdn: String
    }

    /// The TXT record's value: the key authorization's SHA-256, base64url (RFC 8555 §8.4).
    static func recordValue(_ keyAuthorization: String) -> String {
        Base64URL.encode(Array(SHA256.hash(data: Array(keyAuthorization.utf8))))
    }

    func present(identifier: String, keyAuthorization: String) async throws -> Presented {
        let fqdn = overrideDomain ?? "_acme-challenge." + identifier
        let zone = try await findZone(fqdn)
        let record = DNSProviderRecord(
            name: DNSProviderRecord.relativeName(fqdn, zone: zone), type: "TXT",
            data: Self.recordValue(keyAuthorization), ttl: ttl)
        logger.debug("creating DNS record", metadata: ["zone": "\(zone)", "record": "\(record)"])
        let added: [DNSProviderRecord]
        do {
            added = try await provider.appendRecords(zone: zone, records: [record])
        } catch {
            throw ACMEError.failed("adding temporary record for zone \"\(zone)\": \(error)", nil)
        }
        return Presented(zone: zone, record: added.first ?? record, fqdn: fqdn)
    }

    /// Waits `propagation_delay`, then until the record is visible, checking every 2 seconds.
    func wait(_ p: Presented) async throws {
        if delay > .zero { try await Task.sleep(for: delay) }
        guard let timeout else { return }
        let start = ContinuousClock.now
        var last = "record not found"
        while ContinuousClock.now - start < timeout {
            try await Task.sleep(for: .seconds(2))
            let servers = resolvers.isEmpty ? await authoritativeServers(p.zone) : resolvers
            if servers.isEmpty {
                last = "no authoritative name servers found for \(p.zone)"
                continue
            }
            var everywhere = true
            for server in servers {
                let texts = await DNSClient.lookup(p.fqdn, type: 16, servers: [server]) ?? []
                if !texts.contains(where: { ($0.text ?? []).joined() == p.record.data }) {
                    everywhere = false
                    last = "\(p.fqdn) TXT not yet \(p.record.data) at \(server.host ?? "the system resolver")"
                    break
                }
            }
            if everywhere { return }
        }
        throw ACMEError.failed(
            "timed out waiting for record to fully propagate; verify DNS provider configuration is correct - "
                + "last error: \(last)", nil)
    }

    func cleanUp(_ p: Presented) async {
        do {
            _ = try await provider.deleteRecords(zone: p.zone, records: [p.record])
        } catch {
            logger.error(
                "deleting temporary DNS record",
                metadata: [
                    "zone": "\(p.zone)", "record": "\(p.record)",
                    "error": "\(error)",
                ])
        }
    }

    /// The zone holding `fqdn`: the closest enclosing name with an SOA record.
    func findZone(_ fqdn: String) async throws -> String {
        let servers = resolvers.isEmpty ? DNSResolvers.system : resolvers
        var labels = fqdn.lowercased().split(separator: ".").map(String.init)
        while !labels.isEmpty {
            let candidate = labels.joined(separator: ".")
            if let answers = await DNSClient.lookup(candidate, type: 6, servers: servers),
                answers.contains(where: { $0.type == 6 && $0.name.lowercased() == candidate })
            {
                return candidate + "."
            }
            labels.removeFirst()
        }
        throw ACMEError.failed("could not determine zone for domain \"\(fqdn)\": no SOA record found", nil)
    }

    /// The zone's name servers, by address, on port 53 (certmagic checks each authoritative server).
    private func authoritativeServers(_ zone: String) async -> [(host: String?, port: Int)] {
        let ns = await DNSClient.lookup(zone, type: 2, servers: DNSResolvers.system) ?? []
        var out: [(host: String?, port: Int)] = []
        for record in ns where record.type == 2 {
            guard let target = record.target else { continue }
            for a in await DNSClient.lookup(target, type: 1, servers: DNSResolvers.system) ?? [] {
                if let address = a.address { out.append((address, 53)) }
            }
        }
        return out
    }
}
