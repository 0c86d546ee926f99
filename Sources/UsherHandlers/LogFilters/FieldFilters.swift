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
        // The common case, one bare address (remote_ip, client_ip), without splitting or joining.
        if !s.utf8.contains(UInt8(ascii: ",")), !s.utf8.contains(UInt8(ascii: "%")), let ip = IPAddress(s) {
            return maskedText(ip)
        }
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
        guard bits > 0, let prefix = IPPrefix(address: address, bits: bits) else { return "<nil>" }
        return prefix.masked.address.description
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

    private enum ListKeys: String, CodingKey { case actions }

    /// The `actions` of a `query`, `cookie` or `set_cookie` filter.
    static func list(from decoder: any Decoder) throws -> [LogFilterAction] {
        try decoder.container(keyedBy: ListKeys.self).decodeIfPresent([LogFilterAction].self, forKey: .actions) ?? []
    }

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

    public init(from decoder: any Decoder) throws { actions = try LogFilterAction.list(from: decoder) }

    public func filter(_ field: LogField) -> LogField? { field.mappingStrings(process) }

    func process(_ s: String) -> String {
        let bytes = Array(s.utf8)
        // Go's url.Parse refuses control characters; the value is then kept as it was.
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return s }
        let end = bytes.firstIndex(of: UInt8(ascii: "#")) ?? bytes.count
        let mark = bytes[..<end].firstIndex(of: UInt8(ascii: "?"))
        let pathEnd = mark ?? end
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        if Self.isValidEncodedPath(bytes[..<pathEnd]) {
            out += bytes[..<pathEnd]
        } else {
            guard let path = URLEscaping.unescape(String(decoding: bytes[..<pathEnd], as: UTF8.self), mode: .path)
            else { return s }
            out += URLEscaping.escapePath(path).utf8
        }
        guard let mark else {
            out += bytes[end...]
            return String(decoding: out, as: UTF8.self)
        }
        var items = Self.parseQuery(bytes[(mark + 1)..<end])
        for a in actions {
            let name = Array(a.name.utf8)
            switch a.type {
            case .replace:
                for i in items.indices where items[i].name == name { items[i].value = Array(a.value.utf8) }
            case .hash:
                for i in items.indices where items[i].name == name {
                    items[i].value = Array(logFilterHash(String(decoding: items[i].value, as: UTF8.self)).utf8)
                }
            case .delete:
                items.removeAll { $0.name == name }
            }
        }
        // url.Values.Encode: sorted by name (stably), each pair escaped.
        if items.count > 1 {
            items = items.enumerated().sorted { a, b in
                a.element.name == b.element.name
                    ? a.offset < b.offset : a.element.name.lexicographicallyPrecedes(b.element.name)
            }.map(\.element)
        }
        // An empty query stays only when it was empty to begin with (Go's ForceQuery).
        if !items.isEmpty || mark + 1 == end { out.append(UInt8(ascii: "?")) }
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: "&")) }
            URLEscaping.queryEscape(item.name, into: &out)
            out.append(UInt8(ascii: "="))
            URLEscaping.queryEscape(item.value, into: &out)
        }
        out += bytes[end...]
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether a raw path is a valid encoding of itself for Go (every `%` starts an escape; only bytes
    /// `validEncoded` allows), so `EscapedPath` gives it back unchanged.
    static func isValidEncodedPath(_ raw: ArraySlice<UInt8>) -> Bool {
        var i = raw.startIndex
        while i < raw.endIndex {
            let b = raw[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < raw.endIndex, isHex(raw[i + 1]), isHex(raw[i + 2]) else { return false }
                i += 3
                continue
            }
            let ok =
                (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
                || Self.pathPunctuation.contains(b)
            if !ok { return false }
            i += 1
        }
        return true
    }

    private static let pathPunctuation = Set("-_.~$&+,/:;=@!'()*[]".utf8)

    private static func isHex(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46)
    }

    /// `url.ParseQuery` on raw bytes: pairs in order, pairs with `;` or a bad escape skipped.
    static func parseQuery(_ raw: ArraySlice<UInt8>) -> [(name: [UInt8], value: [UInt8])] {
        var items: [(name: [UInt8], value: [UInt8])] = []
        for part in raw.split(separator: UInt8(ascii: "&")) {
            if part.contains(UInt8(ascii: ";")) { continue }
            let eq = part.firstIndex(of: UInt8(ascii: "="))
            guard let name = URLEscaping.unescape(part[..<(eq ?? part.endIndex)], mode: .query),
                let value = URLEscaping.unescape(eq.map { part[($0 + 1)...] } ?? [], mode: .query)
            else { continue }
            items.append((name, value))
        }
        return items
    }

}

/// The cookie grammar Go's `net/http` applies when it reads `Cookie` and `Set-Cookie` headers.
enum GoCookies {
    static func isTokenByte(_ b: UInt8) -> Bool { tokenBytes[Int(b)] }

    /// RFC 7230 token characters, by byte.
    private static let tokenBytes: [Bool] = (0..<256).map { b in
        b > 0x20 && b < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains(UInt8(b))
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
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        for line in lines {
            let b = Array(line.utf8)
            var i = 0
            while i < b.count {
                let semi = b[i...].firstIndex(of: UInt8(ascii: ";")) ?? b.count
                var lo = i
                var hi = semi
                i = semi + 1
                while lo < hi, isSpace(b[lo]) { lo += 1 }
                while hi > lo, isSpace(b[hi - 1]) { hi -= 1 }
                if lo == hi { continue }
                let eq = b[lo..<hi].firstIndex(of: UInt8(ascii: "=")) ?? hi
                var nlo = lo
                var nhi = eq
                while nlo < nhi, isSpace(b[nlo]) { nlo += 1 }
                while nhi > nlo, isSpace(b[nhi - 1]) { nhi -= 1 }
                guard nlo < nhi, b[nlo..<nhi].allSatisfy(isTokenByte) else { continue }
                var vlo = eq < hi ? eq + 1 : hi
                var vhi = hi
                var quoted = false
                if vhi - vlo > 1, b[vlo] == UInt8(ascii: "\""), b[vhi - 1] == UInt8(ascii: "\"") {
                    vlo += 1
                    vhi -= 1
                    quoted = true
                }
                guard b[vlo..<vhi].allSatisfy(isValueByte) else { continue }
                out.append(
                    (
                        String(decoding: b[nlo..<nhi], as: UTF8.self), String(decoding: b[vlo..<vhi], as: UTF8.self),
                        quoted
                    ))
            }
        }
        return out
    }

    /// `name=value` as `Request.AddCookie` writes it: invalid bytes dropped, quoted when asked or when the value
    /// holds a space or a comma.
    static func appendPair(_ name: String, _ value: String, quoted: Bool, to out: inout [UInt8]) {
        out += name.utf8
        out.append(UInt8(ascii: "="))
        let v = value.utf8
        let clean = v.allSatisfy(isValueByte)
        let count = clean ? v.count : v.filter(isValueByte).count
        let quote = count > 0 && (quoted || v.contains(0x20) || v.contains(0x2C))
        if quote { out.append(UInt8(ascii: "\"")) }
        if clean { out += v } else { out += v.filter(isValueByte) }
        if quote { out.append(UInt8(ascii: "\"")) }
    }
}

/// `caddy.logging.encoders.filter.cookie`: replaces, hashes or deletes cookies in a `Cookie` header's values,
/// which are written again as one header.
public struct CookieLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.cookie"
    /// `actions`: the first naming a cookie applies to it.
    public var actions: [LogFilterAction]

    public init(from decoder: any Decoder) throws { actions = try LogFilterAction.list(from: decoder) }

    public func filter(_ field: LogField) -> LogField? {
        guard case .array(let items) = field.value, let lines = LogField.strings(items) else { return field }
        var out: [UInt8] = []
        var any = false
        cookies: for var cookie in GoCookies.read(lines) {
            for a in actions where a.name == cookie.name {
                switch a.type {
                case .replace: cookie.value = a.value
                case .hash: cookie.value = logFilterHash(cookie.value)
                case .delete: continue cookies
                }
                break
            }
            if any {
                out.append(UInt8(ascii: ";"))
                out.append(UInt8(ascii: " "))
            }
            any = true
            GoCookies.appendPair(cookie.name, cookie.value, quoted: cookie.quoted, to: &out)
        }
        return LogField(field.key, .array(any ? [.string(String(decoding: out, as: UTF8.self))] : []))
    }
}

/// `caddy.logging.encoders.filter.set_cookie`: replaces, hashes or deletes cookies in `Set-Cookie` values,
/// keeping each line's attributes as they were.
public struct SetCookieLogFilter: LogFieldFilterModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter.set_cookie"
    /// `actions`: the first naming a cookie applies to it.
    public var actions: [LogFilterAction]

    public init(from decoder: any Decoder) throws { actions = try LogFilterAction.list(from: decoder) }

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
