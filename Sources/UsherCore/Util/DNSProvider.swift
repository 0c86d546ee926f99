/// A DNS record as provider modules exchange them (libdns's `RR`): `name` relative to the zone (`@` for the
/// apex), `type` such as `TXT`, `data` the record's value in presentation form (a TXT record's text unquoted).
public struct DNSProviderRecord: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var type: String
    public var data: String
    /// Time to live; zero lets the provider choose.
    public var ttl: Duration

    public init(name: String, type: String, data: String, ttl: Duration = .zero) {
        self.name = name
        self.type = type
        self.data = data
        self.ttl = ttl
    }

    public var description: String { "\(name) \(type) \(data)" }

    /// `name` relative to `zone` (both may end in a dot): libdns's `RelativeName`.
    public static func relativeName(_ fqdn: String, zone: String) -> String {
        let name = fqdn.hasSuffix(".") ? String(fqdn.dropLast()) : fqdn
        let z = zone.hasSuffix(".") ? String(zone.dropLast()) : zone
        if name.lowercased() == z.lowercased() { return "@" }
        if name.lowercased().hasSuffix("." + z.lowercased()) { return String(name.dropLast(z.count + 1)) }
        return name
    }

    /// `name` made absolute in `zone`, with a trailing dot: libdns's `AbsoluteName`.
    public static func absoluteName(_ name: String, zone: String) -> String {
        let z = zone.hasSuffix(".") ? zone : zone + "."
        if name.isEmpty || name == "@" { return z }
        if name.hasSuffix(".") { return name }
        return name + "." + z
    }
}

/// Modules under `dns.providers` (inline key `name`): they change records in a zone, for DNS-01 challenges and
/// anything else that publishes DNS records. `zone` is the zone's name with a trailing dot (`example.com.`).
public protocol DNSProvider: Module {
    /// Adds `records` to `zone`, keeping records already there; returns the records added.
    func appendRecords(zone: String, records: [DNSProviderRecord]) async throws -> [DNSProviderRecord]
    /// Removes exactly `records` (name, type and data) from `zone`; returns the records removed.
    func deleteRecords(zone: String, records: [DNSProviderRecord]) async throws -> [DNSProviderRecord]
}

public enum DNSProviderModules: ModuleNamespace {
    public static let prefix = "dns.providers"
    public static let inlineKey: String? = "name"
    public typealias Instance = any DNSProvider
}

/// The TLS app's `dns` provider and `resolvers` for one config load: what DNS challenges use when their own
/// config names none.
public final class DNSDefaults: Sendable {
    public let provider: (any DNSProvider)?
    public let resolvers: [String]
    public init(provider: (any DNSProvider)?, resolvers: [String]) {
        self.provider = provider
        self.resolvers = resolvers
    }
}
