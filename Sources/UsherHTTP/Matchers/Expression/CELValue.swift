import Foundation
import UsherCore

/// A CEL type, as the checker sees it. `any` is what Caddy's placeholder function returns (cel-go's
/// `google.protobuf.Any`): it checks like `dyn` but is named differently in messages.
indirect enum CELType: Hashable, Sendable, CustomStringConvertible {
    case dyn, any, null, bool, int, uint, double, string, bytes, type, request, timestamp, duration
    case list(CELType)
    case map(CELType, CELType)

    var description: String {
        switch self {
        case .dyn: return "dyn"
        case .any: return "google.protobuf.Any"
        case .null: return "null"
        case .bool: return "bool"
        case .int: return "int"
        case .uint: return "uint"
        case .double: return "double"
        case .string: return "string"
        case .bytes: return "bytes"
        case .type: return "type"
        case .request: return "http.Request"
        case .timestamp: return "google.protobuf.Timestamp"
        case .duration: return "google.protobuf.Duration"
        case .list(let e): return "list(\(e))"
        case .map(let k, let v): return "map(\(k), \(v))"
        }
    }

    var isDyn: Bool { self == .dyn || self == .any }

    /// Whether a value of type `other` may stand where `self` is expected (either side `dyn` passes).
    func accepts(_ other: CELType) -> Bool {
        if isDyn || other.isDyn || self == other { return true }
        switch (self, other) {
        case (.list(let a), .list(let b)): return a.accepts(b)
        case (.map(let a, let b), .map(let c, let d)): return a.accepts(c) && b.accepts(d)
        default: return false
        }
    }

    /// The type of the values a runtime value belongs to, for matching overloads on `dyn` arguments.
    func admits(_ v: CELValue) -> Bool {
        switch (self, v) {
        case (.dyn, _), (.any, _): return true
        case (.null, .null), (.bool, .bool), (.int, .int), (.uint, .uint), (.double, .double), (.string, .string),
            (.bytes, .bytes), (.type, .type), (.request, .request), (.timestamp, .timestamp),
            (.duration, .duration), (.list, .list), (.map, .map):
            return true
        default: return false
        }
    }
}

/// An ordered map with CEL's key equality (numeric keys compare by value across `int`, `uint` and `double`).
struct CELMap: Sendable {
    var keys: [CELValue] = []
    var values: [CELValue] = []

    func index(of key: CELValue) -> Int? { keys.firstIndex { CELValue.equal($0, key) == true } }
    subscript(key: CELValue) -> CELValue? { index(of: key).map { values[$0] } }
}

/// A CEL runtime value. Errors are values, as in CEL, so that `&&`/`||` can absorb them.
enum CELValue: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    case list([CELValue])
    case map(CELMap)
    case type(CELType)
    /// Nanoseconds since the Unix epoch.
    case timestamp(Int64)
    /// Nanoseconds.
    case duration(Int64)
    case request
    case error(String)

    var runtimeType: CELType {
        switch self {
        case .null: return .null
        case .bool: return .bool
        case .int: return .int
        case .uint: return .uint
        case .double: return .double
        case .string: return .string
        case .bytes: return .bytes
        case .list: return .list(.dyn)
        case .map: return .map(.dyn, .dyn)
        case .type: return .type
        case .timestamp: return .timestamp
        case .duration: return .duration
        case .request: return .request
        case .error: return .dyn
        }
    }

    var isError: Bool {
        if case .error = self { return true }
        return false
    }

    /// Heterogeneous equality (cel-go's default): numbers compare by value across kinds, other kinds differ;
    /// `nil` if either side is an error.
    static func equal(_ a: CELValue, _ b: CELValue) -> Bool? {
        switch (a, b) {
        case (.error, _), (_, .error): return nil
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.bytes(let x), .bytes(let y)): return x == y
        case (.type(let x), .type(let y)): return x == y
        case (.timestamp(let x), .timestamp(let y)), (.duration(let x), .duration(let y)): return x == y
        case (.request, .request): return true
        case (.list(let x), .list(let y)):
            guard x.count == y.count else { return false }
            for (p, q) in zip(x, y) {
                guard let e = equal(p, q) else { return nil }
                if !e { return false }
            }
            return true
        case (.map(let x), .map(let y)):
            guard x.keys.count == y.keys.count else { return false }
            for (k, v) in zip(x.keys, x.values) {
                guard let w = y[k] else { return false }
                guard let e = equal(v, w) else { return nil }
                if !e { return false }
            }
            return true
        default:
            if let c = compareNumbers(a, b) { return c == 0 }
            return false
        }
    }

    /// Orders numbers of any kinds by value; `nil` when either is not a number or a double is NaN.
    static func compareNumbers(_ a: CELValue, _ b: CELValue) -> Int? {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y ? -1 : x > y ? 1 : 0
        case (.uint(let x), .uint(let y)): return x < y ? -1 : x > y ? 1 : 0
        case (.int(let x), .uint(let y)): return x < 0 ? -1 : UInt64(x) < y ? -1 : UInt64(x) > y ? 1 : 0
        case (.uint, .int): return compareNumbers(b, a).map { -$0 }
        default:
            guard let x = a.asDouble, let y = b.asDouble, !x.isNaN, !y.isNaN else { return nil }
            return x < y ? -1 : x > y ? 1 : 0
        }
    }

    var asDouble: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .uint(let v): return Double(v)
        case .double(let v): return v
        default: return nil
        }
    }

    /// CEL's ordering for `<` and friends; an error value when the kinds cannot be ordered.
    static func compare(_ a: CELValue, _ b: CELValue, _ op: String) -> CELValue {
        if case .error = a { return a }
        if case .error = b { return b }
        let c: Int?
        switch (a, b) {
        case (.string(let x), .string(let y)):
            c = x == y ? 0 : (x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : 1)
        case (.bytes(let x), .bytes(let y)): c = x == y ? 0 : (x.lexicographicallyPrecedes(y) ? -1 : 1)
        case (.bool(let x), .bool(let y)): c = x == y ? 0 : (!x ? -1 : 1)
        case (.timestamp(let x), .timestamp(let y)), (.duration(let x), .duration(let y)):
            c = x < y ? -1 : x > y ? 1 : 0
        default:
            c = compareNumbers(a, b)
            if c == nil, a.asDouble != nil, b.asDouble != nil { return .bool(false) }  // NaN
        }
        guard let c else { return .noOverload(op, [a, b]) }
        switch op {
        case "_<_": return .bool(c < 0)
        case "_<=_": return .bool(c <= 0)
        case "_>_": return .bool(c > 0)
        default: return .bool(c >= 0)
        }
    }

    static func noOverload(_ name: String, _ args: [CELValue]) -> CELValue {
        .error("no such overload: \(name)(" + args.map { $0.runtimeType.description }.joined(separator: ", ") + ")")
    }

    /// A placeholder's or a variable's value as CEL sees it: JSON numbers become int or double, objects maps.
    init(json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .string(let s): self = .string(s)
        case .number(let n):
            if let i = Int64(n.text) { self = .int(i) } else { self = .double(n.double ?? .nan) }
        case .array(let a): self = .list(a.map(CELValue.init(json:)))
        case .object(let o):
            var m = CELMap()
            for (k, v) in o {
                m.keys.append(.string(k))
                m.values.append(CELValue(json: v))
            }
            self = .map(m)
        }
    }

    /// The value as JSON, for building matcher configs from constant arguments.
    var json: JSONValue? {
        switch self {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .int(let i): return .number(JSONNumber(literal: String(i)))
        case .uint(let u): return .number(JSONNumber(literal: String(u)))
        case .double(let d): return .number(JSONNumber(d))
        case .list(let l):
            var out: [JSONValue] = []
            for e in l {
                guard let j = e.json else { return nil }
                out.append(j)
            }
            return .array(out)
        case .map(let m):
            var o = JSONObject()
            for (k, v) in zip(m.keys, m.values) {
                guard case .string(let key) = k, let j = v.json else { return nil }
                o[key] = j
            }
            return .object(o)
        default: return nil
        }
    }

    /// `string(x)` for the kinds that convert.
    var stringForm: String? {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .double(let d): return CELValue.formatDouble(d)
        case .bool(let b): return b ? "true" : "false"
        case .bytes(let b): return String(validating: b, as: UTF8.self)
        case .timestamp(let t): return CELTime.format(t)
        case .duration(let d): return CELTime.formatDuration(d)
        default: return nil
        }
    }

    /// Go's `%g` with the shortest digits (cel-go's `string(double)`): exponent form when the decimal exponent is
    /// below -4 or at least 6 (`1e+06`, `1.5e-05`), plain digits otherwise (`123456.7`).
    static func formatDouble(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d > 0 ? "+Inf" : "-Inf" }
        if d == 0 { return d.sign == .minus ? "-0" : "0" }
        // Swift's description has the shortest round-tripping digits; take them and the decimal point's place.
        let text = "\(Swift.abs(d))"
        var mantissa = Substring(text)
        var exp10 = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exp10 = Int(text[text.index(after: e)...]) ?? 0
        }
        var digits = ""
        var point = mantissa.count
        for (i, c) in mantissa.enumerated() {
            if c == "." { point = i } else { digits.append(c) }
        }
        var dp = point + exp10  // value = 0.digits × 10^dp
        while digits.hasPrefix("0") && digits.count > 1 {
            digits.removeFirst()
            dp -= 1
        }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let x = dp - 1
        var out = d < 0 ? "-" : ""
        if x < -4 || x >= 6 {
            out += String(digits.first!)
            if digits.count > 1 { out += "." + digits.dropFirst() }
            let e = Swift.abs(x)
            out += (x < 0 ? "e-" : "e+") + (e < 10 ? "0\(e)" : "\(e)")
        } else if dp <= 0 {
            out += "0." + String(repeating: "0", count: -dp) + digits
        } else if dp >= digits.count {
            out += digits + String(repeating: "0", count: dp - digits.count)
        } else {
            out += digits.prefix(dp) + "." + digits.dropFirst(dp)
        }
        return out
    }
}

/// Timestamps and durations as cel-go reads and prints them (RFC 3339; Go duration strings).
enum CELTime {
    static func parse(_ s: String) -> Int64? {
        guard let t = WallTime.parseRFC3339(s) else { return nil }
        return Int64(t.seconds) * 1_000_000_000 + Int64(t.nanoseconds)
    }

    /// Calendar fields of a timestamp in UTC shifted by `offset` seconds.
    static func fields(_ t: Int64, offset: Int = 0) -> CalendarTime {
        var secs = t / 1_000_000_000
        var nanos = t % 1_000_000_000
        if nanos < 0 {
            nanos += 1_000_000_000
            secs -= 1
        }
        return CalendarTime(WallTime(seconds: Int(secs) + offset, nanoseconds: Int(nanos)))
    }

    /// RFC 3339 with the fraction's trailing zeros dropped, as Go's `time.RFC3339Nano`.
    static func format(_ t: Int64) -> String {
        let f = fields(t)
        return GoTimeLayout.format(
            WallTime(seconds: Int((t - Int64(f.nanosecond)) / 1_000_000_000), nanoseconds: f.nanosecond),
            layout: GoTimeLayout.rfc3339Nano)
    }

    static let units: [(String, Int64)] = [
        ("ns", 1), ("us", 1_000), ("µs", 1_000), ("μs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000),
        ("m", 60_000_000_000), ("h", 3_600_000_000_000),
    ]

    /// Go's `time.ParseDuration`.
    static func parseDuration(_ text: String) -> Int64? {
        var s = Substring(text)
        var negative = false
        if s.hasPrefix("-") || s.hasPrefix("+") {
            negative = s.hasPrefix("-")
            s = s.dropFirst()
        }
        if s == "0" { return 0 }
        guard !s.isEmpty else { return nil }
        var total: Double = 0
        while !s.isEmpty {
            let numEnd = s.firstIndex { !($0.isASCII && ($0.isNumber || $0 == ".")) } ?? s.endIndex
            guard numEnd > s.startIndex, let v = Double(s[..<numEnd]) else { return nil }
            s = s[numEnd...]
            let unitEnd = s.firstIndex { $0.isASCII && ($0.isNumber || $0 == ".") } ?? s.endIndex
            guard let unit = units.first(where: { $0.0 == s[..<unitEnd] }) else { return nil }
            total += v * Double(unit.1)
            s = s[unitEnd...]
        }
        guard total < 9.2e18 else { return nil }
        return Int64(negative ? -total : total)
    }

    static func formatDuration(_ d: Int64) -> String {
        // cel-go prints durations as seconds with a fraction: "1.5s".
        let s = Double(d) / 1e9
        return CELValue.formatDouble(s) + "s"
    }
}
