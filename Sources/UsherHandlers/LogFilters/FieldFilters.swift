import Crypto
public import UsherCore
import UsherHTTP

// The field filters of Caddy's `filter` encoder. Each follows Caddy's (modules/logging/filters.go) on the values
// Usher logs: a string, or an array of strings for a header's values.

extension LogField {
    /// The field with `transform` applied to its string, or to each string of an array of strings; any other
    /// value unchanged.
    func mappingStrings(_ transform: (String) -> String) -> LogField {
        switch value {
        case .string(let s): return LogField(key, .string(transform(s)))
        case .array(let items):
            guard let strings = Self.strings(items) else { return self }
            return LogField(key, .array(strings.map { .string(transform($0)) }))
        default: return self
        }
    }

    /// The array's strings, if every element is one.
    static func strings(_ items: [LogValue]) -> [String]? {
        var out: [String] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard case .string(let s) = item else { return nil }
            out.append(s)
        }
        return out
    }
}

/// Caddy's short hash: the first 4 bytes of the SHA-256 digest, in hex.
func logFilterHash(_ s: String) -> String {
    let digest = SHA256.hash(data: Array(s.utf8))
    let hex = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in digest.prefix(4) {
        out.append(hex[Int(b >> 4)])
        out.append(hex[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// `caddy.logging.encoders.filter.delete`: leaves the field out.
public struct DeleteLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.delete"
    public init(from decoder: any Decoder) throws {}
    public func filter(_ field: LogField) -> LogField? { nil }
}

/// `caddy.logging.encoders.filter.hash`: replaces a string (or each of an array's) with the first 8 hex digits of
/// its SHA-256.
public struct HashLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.hash"
    public init(from decoder: any Decoder) throws {}
    public func filter(_ field: LogField) -> LogField? { field.mappingStrings(logFilterHash) }
}

/// `caddy.logging.encoders.filter.replace`: the field becomes the string `value`, whatever it was.
public struct ReplaceLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.replace"
    /// `value`: the replacement. Default: empty.
    public var value: String

    enum CodingKeys: String, CodingKey { case value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
    }

    public func filter(_ field: LogField) -> LogField? { LogField(field.key, .string(value)) }
}

/// `caddy.logging.encoders.filter.rename`: logs the field under another key.
public struct RenameLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.rename"
    /// `name`: the new key.
    public var name: String

    enum CodingKeys: String, CodingKey { case name }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
    }

    public func filter(_ field: LogField) -> LogField? { LogField(name, field.value) }
}

/// `caddy.logging.encoders.filter.ip_mask`: masks IP addresses to a prefix length. The value may be a list
/// separated by commas (`X-Forwarded-For`) and addresses may carry ports; what is not an address is kept.
public struct IPMaskLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.ip_mask"
    /// `ipv4_cidr`: prefix length kept of IPv4 addresses. 0 (the default) masks nothing and, as Caddy's does,
    /// logs such an address as `<nil>`.
    public var ipv4CIDR: Int
    /// `ipv6_cidr`: prefix length kept of IPv6 addresses; 0 as for IPv4.
    public var ipv6CIDR: Int

    enum CodingKeys: String, CodingKey {
        case ipv4CIDR = "ipv4_cidr", ipv6CIDR = "ipv6_cidr"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ipv4CIDR = try c.decodeIfPresent(Int.self, forKey: .ipv4CIDR) ?? 0
        ipv6CIDR = try c.decodeIfPresent(Int.self, forKey: .ipv6CIDR) ?? 0
    }

    public func filter(_ field: LogField) -> LogField? { field.mappingStrings(mask) }

    func mask(_ s: String) -> String {
        var parts: [String] = []
        for raw in s.split(separator: ",", omittingEmptySubsequences: false) {
            let value = String(raw).trimmingWhitespace()
            var host = value
            var port = ""
            if let hp = try? Go.splitHostPort(value) { (host, port) = hp }
            // Go's ParseIP takes no zone.
            guard !host.contains("%"), let ip = IPAddress(host) else {
                parts.append(value)
                continue
            }
            let masked = maskedText(ip)
            parts.append(port.isEmpty ? masked : Go.joinHostPort(masked, port))
        }
        return parts.joined(separator: ", ")
    }

    private func maskedText(_ ip: IPAddress) -> String {
        let address = ip.unmapped
        let bits = address.isIPv4 ? ipv4CIDR : ipv6CIDR
        // Go's CIDRMask gives no mask for 0 or an out-of-range length, and masking with none gives a nil IP.
        guard bits > 0, bits <= address.bitLength else { return "<nil>" }
        var bytes = address.bytes
        for i in bytes.indices {
            let keep = max(0, min(8, bits - i * 8))
            bytes[i] &= keep == 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return IPAddress(bytes: bytes)!.description
    }
}

/// An action of the `query`, `cookie` and `set_cookie` filters.
public struct LogFilterAction: Decodable, Sendable {
    public enum Kind: String, Sendable { case replace, hash, delete }
    /// `type`: `replace`, `hash` or `delete`.
    public var type: Kind
    /// `parameter` (query) or `name` (cookies): what the action applies to.
    public var name: String
    /// `value`: the replacement, for `replace`.
    public var value: String

    enum CodingKeys: String, CodingKey { case type, parameter, name, value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let t = try c.decodeIfPresent(String.self, forKey: .type) ?? ""
        guard let kind = Kind(rawValue: t) else { throw c.error(.type, "invalid action type \"\(t)\"") }
        type = kind
        name =
            try c.decodeIfPresent(String.self, forKey: .parameter) ?? c.decodeIfPresent(String.self, forKey: .name)
            ?? ""
        value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
    }
}

/// `caddy.logging.encoders.filter.query`: replaces, hashes or deletes query parameters of a URI. As in Caddy the
/// URI is written again as Go's `net/url` writes it, so parameters come out sorted by name and re-escaped.
public struct QueryLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.query"
    /// `actions`: applied in order.
    public var actions: [LogFilterAction]

    enum CodingKeys: String, CodingKey { case actions }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        actions = try c.decodeIfPresent([LogFilterAction].self, forKey: .actions) ?? []
    }

    public func filter(_ field: LogField) -> LogField? { field.mappingStrings(process) }

    func process(_ s: String) -> String {
        let bytes = Array(s.utf8)
        // Go's url.Parse refuses control characters; the value is then kept as it was.
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return s }
        var rest = Substring(s)
        var fragment = ""
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[hash...])
            rest = rest[..<hash]
        }
        var rawQuery = ""
        var forceQuery = false
        var rawPath = rest
        if let q = rest.firstIndex(of: "?") {
            rawPath = rest[..<q]
            rawQuery = String(rest[rest.index(after: q)...])
            forceQuery = rawQuery.isEmpty
        }
        guard let path = URLEscaping.unescape(String(rawPath), mode: .path) else { return s }
        var items = URLEscaping.parseQuery(rawQuery)
        for a in actions {
            switch a.type {
            case .replace:
                for i in items.indices where items[i].name == a.name { items[i].value = a.value }
            case .hash:
                for i in items.indices where items[i].name == a.name { items[i].value = logFilterHash(items[i].value) }
            case .delete:
                items.removeAll { $0.name == a.name }
            }
        }
        let query = URLEscaping.encodeQuery(items)
        var out = Self.escapedPath(raw: rawPath, decoded: path)
        if !query.isEmpty || forceQuery { out += "?" + query }
        return out + fragment
    }

    /// Go's `URL.EscapedPath`: the path as it came when that is a valid encoding of it, else escaped afresh.
    static func escapedPath(raw: Substring, decoded: String) -> String {
        let valid = raw.utf8.allSatisfy { b in
            (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
                || "-_.~$&+,/:;=@!'()*[]%".utf8.contains(b)
        }
        return valid ? String(raw) : URLEscaping.escapePath(decoded)
    }
}

/// The cookie grammar Go's `net/http` applies when it reads `Cookie` and `Set-Cookie` headers.
enum GoCookies {
    static func isTokenByte(_ b: UInt8) -> Bool {
        guard b > 0x20, b < 0x7F else { return false }
        return !"()<>@,;:\\\"/[]?={}".utf8.contains(b)
    }

    static func isValidName(_ s: Substring) -> Bool { !s.isEmpty && s.utf8.allSatisfy(isTokenByte) }

    static func isValueByte(_ b: UInt8) -> Bool {
        b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\"") && b != UInt8(ascii: ";") && b != UInt8(ascii: "\\")
    }

    /// `parseCookieValue(raw, allowDoubleQuote: true)`: the value without its quotes, and whether it had them.
    static func parseValue(_ raw: Substring) -> (value: Substring, quoted: Bool)? {
        var v = raw
        var quoted = false
        if v.utf8.count > 1, v.hasPrefix("\""), v.hasSuffix("\"") {
            v = v.dropFirst().dropLast()
            quoted = true
        }
        guard v.utf8.allSatisfy(isValueByte) else { return nil }
        return (v, quoted)
    }

    /// Trims spaces and tabs, as `textproto.TrimString` does (and CR, LF).
    static func trim(_ s: Substring) -> Substring {
        var t = s
        while let f = t.utf8.first, f == 0x20 || f == 0x09 || f == 0x0A || f == 0x0D { t = t.dropFirst() }
        while let l = t.utf8.last, l == 0x20 || l == 0x09 || l == 0x0A || l == 0x0D { t = t.dropLast() }
        return t
    }

    /// The cookies of `Cookie` header lines, as `Request.Cookies` reads them.
    static func read(_ lines: [String]) -> [(name: String, value: String, quoted: Bool)] {
        var out: [(name: String, value: String, quoted: Bool)] = []
        for line in lines {
            for part in trim(Substring(line)).split(separator: ";", omittingEmptySubsequences: false) {
                let p = trim(part)
                if p.isEmpty { continue }
                let eq = p.firstIndex(of: "=")
                let name = trim(eq.map { p[..<$0] } ?? p)
                guard isValidName(name) else { continue }
                guard let (value, quoted) = parseValue(eq.map { p[p.index(after: $0)...] } ?? "") else { continue }
                out.append((String(name), String(value), quoted))
            }
        }
        return out
    }

    /// `name=value` as `Request.AddCookie` writes it: invalid bytes dropped, quoted when asked or when the value
    /// holds a space or a comma.
    static func pair(_ name: String, _ value: String, quoted: Bool) -> String {
        var v = String(decoding: value.utf8.filter(isValueByte), as: UTF8.self)
        if !v.isEmpty, quoted || v.contains(" ") || v.contains(",") { v = "\"" + v + "\"" }
        return name + "=" + v
    }
}

/// `caddy.logging.encoders.filter.cookie`: replaces, hashes or deletes cookies in a `Cookie` header's values,
/// which are written again as one header.
public struct CookieLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.cookie"
    /// `actions`: the first naming a cookie applies to it.
    public var actions: [LogFilterAction]

    enum CodingKeys: String, CodingKey { case actions }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        actions = try c.decodeIfPresent([LogFilterAction].self, forKey: .actions) ?? []
    }

    public func filter(_ field: LogField) -> LogField? {
        guard case .array(let items) = field.value, let lines = LogField.strings(items) else { return field }
        var pairs: [String] = []
        cookies: for var cookie in GoCookies.read(lines) {
            for a in actions where a.name == cookie.name {
                switch a.type {
                case .replace: cookie.value = a.value
                case .hash: cookie.value = logFilterHash(cookie.value)
                case .delete: continue cookies
                }
                break
            }
            pairs.append(GoCookies.pair(cookie.name, cookie.value, quoted: cookie.quoted))
        }
        return LogField(field.key, .array(pairs.isEmpty ? [] : [.string(pairs.joined(separator: "; "))]))
    }
}

/// `caddy.logging.encoders.filter.set_cookie`: replaces, hashes or deletes cookies in `Set-Cookie` values,
/// keeping each line's attributes as they were.
public struct SetCookieLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.set_cookie"
    /// `actions`: the first naming a cookie applies to it.
    public var actions: [LogFilterAction]

    enum CodingKeys: String, CodingKey { case actions }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        actions = try c.decodeIfPresent([LogFilterAction].self, forKey: .actions) ?? []
    }

    public func filter(_ field: LogField) -> LogField? {
        guard case .array(let items) = field.value, let lines = LogField.strings(items) else { return field }
        return LogField(field.key, .array(lines.compactMap { filterLine($0).map(LogValue.string) }))
    }

    func filterLine(_ line: String) -> String? {
        // `http.ParseSetCookie`: a line it cannot read is kept as it is.
        let first = GoCookies.trim(GoCookies.trim(Substring(line)).split(separator: ";", maxSplits: 1).first ?? "")
        guard let eq = first.firstIndex(of: "=") else { return line }
        let name = GoCookies.trim(first[..<eq])
        guard GoCookies.isValidName(name),
            let (value, quoted) = GoCookies.parseValue(first[first.index(after: eq)...])
        else { return line }
        for a in actions where a.name == name {
            switch a.type {
            case .replace: return Self.replacingValue(line, name: name, quoted: quoted, with: a.value)
            case .hash: return Self.replacingValue(line, name: name, quoted: quoted, with: logFilterHash(String(value)))
            case .delete: return nil
            }
        }
        return line
    }

    /// The line with its cookie's value replaced and everything else — spacing, quotes, attributes — kept.
    static func replacingValue(_ line: String, name: Substring, quoted: Bool, with newValue: String) -> String {
        let headEnd = line.firstIndex(of: ";") ?? line.endIndex
        let head = line[..<headEnd]
        guard let eq = head.firstIndex(of: "=") else { return line }
        guard String(head[..<eq]).trimmingWhitespace() == name else { return line }
        let raw = head[head.index(after: eq)...]
        let trimmed = String(raw).trimmingWhitespace()
        let lead = raw.prefix { $0.isWhitespace }
        let trail = String(raw.reversed().prefix { $0.isWhitespace }.reversed())
        var replacement = newValue
        if quoted, trimmed.utf8.count >= 2, trimmed.hasPrefix("\""), trimmed.hasSuffix("\"") {
            replacement = "\"" + newValue + "\""
        }
        return String(line[...eq]) + lead + replacement + trail + line[headEnd...]
    }
}

/// `caddy.logging.encoders.filter.regexp`: replaces every match of a regular expression (Go's syntax; `$1` and
/// `${name}` insert groups).
public struct RegexpLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.regexp"
    /// `regexp`: the pattern.
    public var regexp: String
    /// `value`: the replacement.
    public var value: String
    let compiled: CompiledRegex

    enum CodingKeys: String, CodingKey { case regexp, value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        regexp = try c.decodeIfPresent(String.self, forKey: .regexp) ?? ""
        value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
        do { compiled = try CompiledRegex(regexp) } catch {
            throw c.error(.regexp, "error parsing regexp \(Go.quote(regexp)): \(error)")
        }
    }

    public func filter(_ field: LogField) -> LogField? {
        field.mappingStrings { compiled.replaceAll(in: $0, with: value) }
    }
}

/// `caddy.logging.encoders.filter.multi_regexp`: several regexp replacements in order (at most 50 patterns of at
/// most 1000 characters; values are cut at 1 MB, as in Caddy).
public struct MultiRegexpLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.multi_regexp"

    struct Operation: Decodable, Sendable {
        var regexp: String
        var value: String
        enum CodingKeys: String, CodingKey { case regexp, value }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            regexp = try c.decodeIfPresent(String.self, forKey: .regexp) ?? ""
            value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
        }
    }

    /// `operations`: `{regexp, value}` pairs, applied in order.
    let operations: [(CompiledRegex, String)]

    enum CodingKeys: String, CodingKey { case operations }

    static let maxOperations = 50
    static let maxPatternLength = 1000
    static let maxInputLength = 1_000_000

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let ops = try c.decodeIfPresent([Operation].self, forKey: .operations) ?? []
        if ops.isEmpty { throw c.error(.operations, "multi_regexp filter requires at least one operation") }
        if ops.count > Self.maxOperations {
            throw c.error(
                .operations, "too many regexp operations: \(ops.count) (maximum \(Self.maxOperations) allowed)")
        }
        var compiled: [(CompiledRegex, String)] = []
        for (i, op) in ops.enumerated() {
            if op.regexp.isEmpty { throw c.error(.operations, "regexp pattern \(i) cannot be empty") }
            if op.regexp.utf8.count > Self.maxPatternLength {
                throw c.error(
                    .operations,
                    "regexp pattern \(i) too long: \(op.regexp.utf8.count) characters (maximum \(Self.maxPatternLength))"
                )
            }
            do { compiled.append((try CompiledRegex(op.regexp), op.value)) } catch {
                throw c.error(.operations, "compiling regexp pattern \(i) (\(op.regexp)): \(error)")
            }
        }
        operations = compiled
    }

    public func filter(_ field: LogField) -> LogField? {
        field.mappingStrings { s in
            var result = Self.cut(s)
            for (re, value) in operations { result = Self.cut(re.replaceAll(in: result, with: value)) }
            return result
        }
    }

    private static func cut(_ s: String) -> String {
        s.utf8.count > maxInputLength ? String(decoding: s.utf8.prefix(maxInputLength), as: UTF8.self) : s
    }
}
