public import UsherCore

/// Reads `ranges` (and `not_ranges`) as Caddy's TLS matchers do: CIDR prefixes or single addresses, global
/// placeholders replaced.
private func parseRanges(_ texts: [String], key: some CodingKey, in c: KeyedDecodingContainer<some CodingKey>) throws
    -> [IPPrefix]
{
    try texts.enumerated().map { i, raw in
        let text = Replacer().replaceAll(raw)
        // A bare address is a full-length prefix.
        guard let p = IPPrefix(text) else {
            throw ConfigError(
                path: c.codingPathString + ".\(key.stringValue)[\(i)]",
                text.contains("/")
                    ? "parsing CIDR expression: netip.ParsePrefix(\(Go.quote(text))): invalid prefix"
                    : "invalid IP address: '\(text)'")
        }
        return p
    }
}

extension KeyedDecodingContainer {
    fileprivate var codingPathString: String { jsonPathString(codingPath) }
}

/// `tls.handshake_match.remote_ip`: the client's address (the one a PROXY header gave, behind `proxy_protocol`)
/// is in `ranges` and not in `not_ranges`.
public struct RemoteIPHandshakeMatcher: HandshakeMatcher {
    public static let moduleID: ModuleID = "tls.handshake_match.remote_ip"
    /// `ranges`: CIDR prefixes or addresses; empty matches any.
    public var ranges: [IPPrefix]
    /// `not_ranges`: prefixes that must not match.
    public var notRanges: [IPPrefix]

    enum CodingKeys: String, CodingKey { case ranges, notRanges = "not_ranges" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ranges = try parseRanges(c.decodeIfPresent([String].self, forKey: .ranges) ?? [], key: CodingKeys.ranges, in: c)
        notRanges = try parseRanges(
            c.decodeIfPresent([String].self, forKey: .notRanges) ?? [], key: CodingKeys.notRanges, in: c)
    }

    public func matches(_ hello: HandshakeInfo) -> Bool {
        guard let ip = hello.remoteAddress?.ip else { return false }
        return (ranges.isEmpty || ranges.contains { $0.contains(ip) }) && !notRanges.contains { $0.contains(ip) }
    }
}

/// `tls.handshake_match.local_ip`: the address the client connected to is in `ranges`.
public struct LocalIPHandshakeMatcher: HandshakeMatcher {
    public static let moduleID: ModuleID = "tls.handshake_match.local_ip"
    /// `ranges`: CIDR prefixes or addresses; empty matches any.
    public var ranges: [IPPrefix]

    enum CodingKeys: String, CodingKey { case ranges }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ranges = try parseRanges(c.decodeIfPresent([String].self, forKey: .ranges) ?? [], key: CodingKeys.ranges, in: c)
    }

    public func matches(_ hello: HandshakeInfo) -> Bool {
        guard let ip = hello.localAddress?.ip else { return false }
        return ranges.isEmpty || ranges.contains { $0.contains(ip) }
    }
}

/// `tls.handshake_match.sni_regexp`: the server name matches `pattern` (Go's syntax; no server name is the empty
/// string). The `tls.regexp.*` placeholders Caddy sets from the groups are not set here.
public struct SNIRegexpHandshakeMatcher: HandshakeMatcher, @unchecked Sendable {
    // @unchecked: the compiled Regex is immutable and only matched against.
    public static let moduleID: ModuleID = "tls.handshake_match.sni_regexp"
    /// `pattern`: the regular expression.
    public var pattern: String
    /// `name`: the name for placeholders (word characters only).
    public var name: String
    let regex: Regex<AnyRegexOutput>

    enum CodingKeys: String, CodingKey { case pattern, name }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pattern = try c.decodeIfPresent(String.self, forKey: .pattern) ?? ""
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        do { regex = try Regex(Replacer().replaceAll(pattern)) } catch {
            throw c.error(.pattern, "compiling matcher regexp \(pattern): \(error)")
        }
        if !name.isEmpty,
            !name.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" })
        {
            throw c.error(.name, "invalid regexp name (must contain only word characters): \(name)")
        }
    }

    public func matches(_ hello: HandshakeInfo) -> Bool {
        (try? regex.firstMatch(in: hello.serverName ?? "")) != nil
    }
}
