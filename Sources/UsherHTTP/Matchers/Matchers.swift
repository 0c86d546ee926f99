import NIOHTTP1
public import UsherCore

/// `http.matchers.host`: the request's host, case-insensitively; `*` matches one label (`*.example.com`).
/// Placeholders are replaced per request.
public struct HostMatcher: RequestMatcher, Validator {
    public static let moduleID: ModuleID = "http.matchers.host"
    public var hosts: [String]

    public init(from decoder: any Decoder) throws {
        hosts = try [String](from: decoder).map { h in
            h.contains("*") || h.contains("{") ? h : h.lowercased()
        }
    }

    public func validate() throws {
        var seen: [String: Int] = [:]
        for (i, h) in hosts.enumerated() {
            if let first = seen[h.lowercased()] {
                throw ConfigError("host at index \(first) is repeated at index \(i): \(h)")
            }
            seen[h.lowercased()] = i
        }
    }

    public func matches(_ request: Request) throws -> Bool {
        var reqHost = request.host
        let (h, p) = splitHostPort(reqHost)
        if !p.isEmpty || reqHost.hasPrefix("[") { reqHost = h }
        let lowered = reqHost.lowercased()
        for pattern in hosts {
            let host = Replacer.mayContainPlaceholders(pattern) ? request.replacer.replaceAll(pattern) : pattern
            if host.contains("*") {
                let pp = host.split(separator: ".", omittingEmptySubsequences: false)
                let ip = lowered.split(separator: ".", omittingEmptySubsequences: false)
                guard pp.count == ip.count else { continue }
                var ok = true
                for (a, b) in zip(pp, ip) where a != "*" && a.lowercased() != b {
                    ok = false
                    break
                }
                if ok { return true }
            } else if host.lowercased() == lowered {
                return true
            }
        }
        return false
    }
}

/// `http.matchers.path`: case-insensitive path patterns with Caddy's rules: `*` alone matches all, a leading or
/// trailing `*` is a suffix or prefix match, `*x*` a substring match, otherwise a glob (`path.Match`); the
/// request path is cleaned first, and `%xx` in a pattern matches the escaped form.
public struct PathMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.path"
    public var patterns: [String]
    /// The patterns classified once; those with placeholders are classified per request.
    let compiled: [Pattern]

    enum Kind {
        case all
        case substring(String)
        case suffix(String)
        case prefix(String)
        case glob
        /// `%xx` in the pattern: matched against the escaped path.
        case escaped
    }

    struct Pattern {
        var text: String
        var kind: Kind
        var mergeSlashes: Bool
        var dynamic: Bool
    }

    public init(from decoder: any Decoder) throws {
        patterns = try [String](from: decoder).map { $0.lowercased() }
        compiled = patterns.map { p in
            Replacer.mayContainPlaceholders(p)
                ? Pattern(text: p, kind: .glob, mergeSlashes: true, dynamic: true) : Self.classify(p)
        }
    }

    /// The path lowercased, without a copy when it has no capital (or non-ASCII) letter.
    static func lowercased(_ path: String) -> String {
        path.utf8.contains { $0 >= 0x41 && $0 <= 0x5A || $0 >= 0x80 } ? path.lowercased() : path
    }

    static func classify(_ pattern: String) -> Pattern {
        let merge = !pattern.contains("//")
        if pattern == "*" { return Pattern(text: pattern, kind: .all, mergeSlashes: merge, dynamic: false) }
        if pattern.contains("%") { return Pattern(text: pattern, kind: .escaped, mergeSlashes: merge, dynamic: false) }
        let stars = pattern.reduce(0) { $0 + ($1 == "*" ? 1 : 0) }
        let kind: Kind
        if stars == 2 && pattern.hasPrefix("*") && pattern.hasSuffix("*") && pattern.count >= 2 {
            kind = .substring(String(pattern.dropFirst().dropLast()))
        } else if stars == 1 && pattern.hasPrefix("*") {
            kind = .suffix(String(pattern.dropFirst()))
        } else if stars == 1 && pattern.hasSuffix("*") {
            kind = .prefix(String(pattern.dropLast()))
        } else {
            kind = .glob
        }
        return Pattern(text: pattern, kind: kind, mergeSlashes: merge, dynamic: false)
    }

    public func matches(_ request: Request) throws -> Bool {
        var lowered: String?
        var cleanedMerged: String?
        var cleanedKept: String?
        for var p in compiled {
            if p.dynamic { p = Self.classify(request.replacer.replaceAll(p.text)) }
            if case .all = p.kind { return true }
            if case .escaped = p.kind {
                let cleaned = PathMatching.cleanPath(request.escapedPath, collapseSlashes: p.mergeSlashes)
                if PathMatching.matchWithEscapes(cleaned, p.text) { return true }
                continue
            }
            let reqPath = lowered ?? Self.lowercased(request.path)
            lowered = reqPath
            let cleaned: String
            if p.mergeSlashes {
                cleaned = cleanedMerged ?? PathMatching.cleanPath(reqPath, collapseSlashes: true)
                cleanedMerged = cleaned
            } else {
                cleaned = cleanedKept ?? PathMatching.cleanPath(reqPath, collapseSlashes: false)
                cleanedKept = cleaned
            }
            switch p.kind {
            case .substring(let s): if cleaned.contains(s) { return true }
            case .suffix(let s): if cleaned.hasSuffix(s) { return true }
            case .prefix(let s): if cleaned.hasPrefix(s) { return true }
            default: if PathMatching.globMatch(p.text, cleaned) { return true }
            }
        }
        return false
    }
}

/// A regular expression with an optional name, whose captures become `{http.regexp.*}` placeholders
/// (Caddy's `MatchRegexp`).
public struct NamedRegexp: Decodable, Sendable {
    /// `name`: prefixes the capture placeholders (`{http.regexp.name.1}`).
    public var name: String?
    /// `pattern`: the regular expression.
    public var pattern: String
    let regex: CompiledRegex

    enum CodingKeys: String, CodingKey { case name, pattern }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        if name?.isEmpty == true { name = nil }
        pattern = try c.decode(String.self, forKey: .pattern)
        if let name, !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            throw c.error(.name, "invalid regexp name (must contain only word characters): \(name)")
        }
        do {
            regex = try CompiledRegex(pattern)
        } catch {
            throw c.error(.pattern, "compiling matcher regexp \(pattern): \(error)")
        }
    }

    /// Matches `input`, setting capture placeholders on success.
    public func match(_ input: String, _ request: Request) -> Bool {
        guard let groups = regex.firstMatch(in: input) else { return false }
        let repl = request.replacer
        for (i, g) in groups.enumerated() {
            let value = g.value ?? ""
            if let name { repl.set("http.regexp.\(name).\(i)", value) }
            repl.set("http.regexp.\(i)", value)
            if let groupName = g.name, i > 0 {
                if let name { repl.set("http.regexp.\(name).\(groupName)", value) }
                repl.set("http.regexp.\(groupName)", value)
            }
        }
        return true
    }
}

/// `http.matchers.path_regexp`: a regular expression against the cleaned path.
public struct PathRegexpMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.path_regexp"
    public var regexp: NamedRegexp

    public init(from decoder: any Decoder) throws { regexp = try NamedRegexp(from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        regexp.match(PathMatching.cleanPath(request.path, collapseSlashes: true), request)
    }
}

/// `http.matchers.method`: one of the listed methods (exact, upper case).
public struct MethodMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.method"
    public var methods: [String]

    public init(from decoder: any Decoder) throws { methods = try [String](from: decoder) }

    public func matches(_ request: Request) throws -> Bool { methods.contains(request.method.rawValue) }
}

/// `http.matchers.header`: header fields with allowed values (`*` wildcards at either end; an empty list means
/// "present"; `null` means "absent").
public struct HeaderMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.header"
    /// Field name → allowed values; `nil` requires the field to be absent.
    public var fields: [(name: String, values: [String]?)]

    public init(from decoder: any Decoder) throws {
        guard case .object(let o) = decoder.rawJSON ?? .null else { throw decoder.configError("expected an object") }
        fields = try o.map { m in
            switch m.value {
            case .null: return (m.key, nil)
            case .array(let a):
                return (
                    m.key,
                    try a.map { v in
                        guard case .string(let s) = v else {
                            throw decoder.configError("\(m.key): values must be strings")
                        }
                        return s
                    }
                )
            default: throw decoder.configError("\(m.key): expected a list of values or null")
            }
        }
    }

    public func matches(_ request: Request) throws -> Bool {
        try HeaderMatcher.match(fields, request.headers, request: request)
    }

    static func fieldValues(_ headers: HTTPHeaders, _ name: String, _ request: Request?) -> [String]? {
        if let request, name.lowercased() == "host", !request.host.isEmpty { return [request.host] }
        let v = headers[name]
        return v.isEmpty ? nil : v
    }

    static func match(_ fields: [(name: String, values: [String]?)], _ headers: HTTPHeaders, request: Request?) throws
        -> Bool
    {
        for (name, allowed) in fields {
            let actual = fieldValues(headers, name, request)
            if let allowed, allowed.isEmpty, actual != nil { continue }
            if allowed == nil && actual == nil { continue }
            var matched = false
            outer: for value in actual ?? [] {
                for var pattern in allowed ?? [] {
                    if let request, Replacer.mayContainPlaceholders(pattern) {
                        pattern = request.replacer.replaceAll(pattern)
                    }
                    if valueMatches(value, pattern) {
                        matched = true
                        break outer
                    }
                }
            }
            if !matched { return false }
        }
        return true
    }

    static func valueMatches(_ value: String, _ pattern: String) -> Bool {
        if pattern == "*" { return true }
        if pattern.count >= 2 && pattern.hasPrefix("*") && pattern.hasSuffix("*") {
            return value.contains(String(pattern.dropFirst().dropLast()))
        }
        if pattern.hasPrefix("*") { return value.hasSuffix(String(pattern.dropFirst())) }
        if pattern.hasSuffix("*") { return value.hasPrefix(String(pattern.dropLast())) }
        return value == pattern
    }
}

/// `http.matchers.header_regexp`: header field values against regular expressions.
public struct HeaderRegexpMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.header_regexp"
    public var fields: [String: NamedRegexp]

    public init(from decoder: any Decoder) throws { fields = try [String: NamedRegexp](from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        for name in fields.keys.sorted() {
            let re = fields[name]!
            let values = HeaderMatcher.fieldValues(request.headers, name, request) ?? []
            guard values.contains(where: { re.match($0, request) }) else { return false }
        }
        return true
    }
}

/// `http.matchers.query`: query parameters with allowed values (`*` for any value); an empty object matches
/// requests without a query.
public struct QueryMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.query"
    public var params: [String: [String]]

    public init(from decoder: any Decoder) throws { params = try [String: [String]](from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        let items = request.queryItems
        if params.isEmpty { return items.isEmpty }
        for (rawParam, values) in params {
            let param = Replacer.mayContainPlaceholders(rawParam) ? request.replacer.replaceAll(rawParam) : rawParam
            let actual = items.filter { $0.name == param }.map(\.value)
            if actual.isEmpty && !items.contains(where: { $0.name == param }) { return false }
            let ok = values.contains { v in
                let value = Replacer.mayContainPlaceholders(v) ? request.replacer.replaceAll(v) : v
                return value == "*" || actual.contains(value)
            }
            if !ok { return false }
        }
        return true
    }
}

/// `http.matchers.protocol`: `http`, `https`, `grpc`, `http/1.0`, `http/1.1`, `http/2`, `http/3`, with `+` for
/// "this version or later".
/// `http.matchers.tls`: the request came over TLS; with `handshake_complete`, only when the handshake's state is
/// that. Usher takes no TLS early data (0-RTT), so every TLS request has completed its handshake, and
/// `handshake_complete: false` (the Caddyfile's `tls early_data`) never matches.
public struct TLSRequestMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.tls"
    /// `handshake_complete`: match only requests whose handshake has (true) or has not (false) completed.
    public var handshakeComplete: Bool?

    enum CodingKeys: String, CodingKey { case handshakeComplete = "handshake_complete" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        handshakeComplete = try c.decodeIfPresent(Bool.self, forKey: .handshakeComplete)
    }

    public func matches(_ request: Request) throws -> Bool {
        guard request.tls != nil else { return false }
        return handshakeComplete ?? true
    }
}

public struct ProtocolMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.protocol"
    public var name: String

    public init(from decoder: any Decoder) throws {
        name = try String(from: decoder)
        let known = [
            "grpc", "https", "http", "http/1.0", "http/1.0+", "http/1.1", "http/1.1+", "http/2", "http/2+", "http/3",
            "http/3+",
        ]
        guard known.contains(name) else { throw decoder.configError("unknown protocol \"\(name)\"") }
    }

    public func matches(_ request: Request) throws -> Bool {
        let v = request.version
        switch name {
        case "grpc": return (request.headers.first(name: "Content-Type") ?? "").hasPrefix("application/grpc")
        case "https": return request.scheme == "https"
        case "http": return request.scheme == "http"
        case "http/1.0": return v.major == 1 && v.minor == 0
        case "http/1.0+": return v.major >= 1
        case "http/1.1": return v.major == 1 && v.minor == 1
        case "http/1.1+": return v.major > 1 || (v.major == 1 && v.minor >= 1)
        case "http/2": return v.major == 2
        case "http/2+": return v.major >= 2
        case "http/3": return v.major == 3
        case "http/3+": return v.major >= 3
        default: return false
        }
    }
}

/// `http.matchers.not`: matches when none of its matcher sets match.
public struct NotMatcher: RequestMatcher, Provisioner {
    public static let moduleID: ModuleID = "http.matchers.not"
    public var sets: [MatcherSet]

    public init(from decoder: any Decoder) throws {
        // Caddy accepts a list of matcher sets; a single object is one set.
        if case .object = decoder.rawJSON ?? .null {
            sets = [try MatcherSet(from: decoder)]
        } else {
            sets = try [MatcherSet](from: decoder)
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        for i in sets.indices { try await sets[i].provision(context) }
    }

    public func matches(_ request: Request) throws -> Bool {
        for set in sets where try set.matches(request) { return false }
        return true
    }
}

/// IP ranges with optional IPv6 zones, for `remote_ip` and `client_ip`.
public struct IPRangeList: Decodable, Sendable {
    public var ranges: [(prefix: IPPrefix, zone: String)]

    enum CodingKeys: String, CodingKey { case ranges }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let texts = try c.decodeIfPresent([String].self, forKey: .ranges) ?? []
        ranges = try texts.map { raw in
            var s = raw
            var zone = ""
            if let pct = s.firstIndex(of: "%") {
                zone = String(s[s.index(after: pct)...])
                s = String(s[..<pct])
                if let slash = zone.firstIndex(of: "/") {
                    s += String(zone[slash...])
                    zone = String(zone[..<slash])
                }
            }
            guard let p = IPPrefix(s) else {
                throw c.error(
                    .ranges, s.contains("/") ? "parsing CIDR expression '\(raw)'" : "invalid IP address: '\(raw)'")
            }
            return (p, zone)
        }
    }

    func contains(_ ip: IPAddress) -> Bool {
        ranges.contains { $0.prefix.contains(ip) }
    }
}

/// `http.matchers.remote_ip`: the connection's peer address.
public struct RemoteIPMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.remote_ip"
    public var list: IPRangeList

    public init(from decoder: any Decoder) throws { list = try IPRangeList(from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        guard let ip = request.remoteAddress?.ip else { return false }
        return list.contains(ip)
    }
}

/// `http.matchers.client_ip`: the client address after trusted proxies.
public struct ClientIPMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.client_ip"
    public var list: IPRangeList

    public init(from decoder: any Decoder) throws { list = try IPRangeList(from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        guard let ip = IPAddress(request.clientIP) else { return false }
        return list.contains(ip)
    }
}

/// `http.matchers.vars`: variables (or `{placeholders}` used as keys) against values; any key matching suffices.
public struct VarsMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.vars"
    public var vars: [String: [String]]

    public init(from decoder: any Decoder) throws { vars = try [String: [String]](from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        if vars.isEmpty { return true }
        for (key, values) in vars {
            let actual = VarsMatcher.value(of: key, request)
            for v in values where request.replacer.replaceAll(v) == actual { return true }
        }
        return false
    }

    static func value(of key: String, _ request: Request) -> String {
        if key.hasPrefix("{") && key.hasSuffix("}") && key.filter({ $0 == "{" }).count == 1 {
            return request.replacer.get(String(key.dropFirst().dropLast())) ?? ""
        }
        return request.vars[key].map(varString) ?? ""
    }
}

/// `http.matchers.vars_regexp`: variables against regular expressions; any key matching suffices.
public struct VarsRegexpMatcher: RequestMatcher {
    public static let moduleID: ModuleID = "http.matchers.vars_regexp"
    public var vars: [String: NamedRegexp]

    public init(from decoder: any Decoder) throws { vars = try [String: NamedRegexp](from: decoder) }

    public func matches(_ request: Request) throws -> Bool {
        for key in vars.keys.sorted() where vars[key]!.match(VarsMatcher.value(of: key, request), request) {
            return true
        }
        return false
    }
}
