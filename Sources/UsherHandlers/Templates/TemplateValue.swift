import Foundation

/// Something a template can reach into: `.Name` and `.Method arg...` on it.
public protocol TemplateObject: AnyObject {
    /// The field or zero-argument method `name`; nil when there is none.
    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue?
    /// The Go type Caddy's value has, for error messages (`*http.Request`).
    var goTypeName: String { get }
}

extension TemplateObject {
    public var goTypeName: String { "struct" }
}

/// A value in a template: what Go's `any` holds when Caddy's templates run.
public indirect enum TemplateValue {
    case null
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case list([TemplateValue])
    /// A map; `range` and printing go in key order, as Go's do.
    case map([String: TemplateValue])
    case object(any TemplateObject)

    /// Go's truth: false, zero, empty and nil are false.
    var isTrue: Bool {
        switch self {
        case .null: return false
        case .bool(let b): return b
        case .int(let n): return n != 0
        case .float(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .map(let m): return !m.isEmpty
        case .object: return true
        }
    }

    /// Go's `%v`.
    public var printed: String {
        switch self {
        case .null: return "<nil>"
        case .bool(let b): return b ? "true" : "false"
        case .int(let n): return String(n)
        case .float(let d): return Self.formatFloat(d)
        case .string(let s): return s
        case .list(let l): return "[" + l.map(\.printed).joined(separator: " ") + "]"
        case .map(let m): return "map[" + m.keys.sorted().map { "\($0):\(m[$0]!.printed)" }.joined(separator: " ") + "]"
        case .object(let o):
            if let s = try? o.member("String", []), case .string(let text) = s { return text }
            return "{}"
        }
    }

    /// Go's `%v` for a float64 (`strconv.FormatFloat(d, 'g', -1, 64)`): the shortest digits that round-trip, in
    /// exponent form when the decimal exponent is below -4 or at least 6 (Go's rule for shortest `%g`).
    static func formatFloat(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Inf" : "+Inf" }
        if d == 0 { return d.sign == .minus ? "-0" : "0" }
        // Swift's description has the same shortest digits; only their layout differs.
        let text = "\(abs(d))"
        var digits: [Character]
        var exp: Int
        if let e = text.firstIndex(of: "e") {
            let mantissa = text[..<e]
            exp = Int(text[text.index(after: e)...]) ?? 0
            digits = Array(mantissa.filter { $0 != "." })
        } else {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            let whole = Array(parts[0]), frac = parts.count > 1 ? Array(parts[1]) : []
            if whole != ["0"] {
                exp = whole.count - 1
                digits = whole + frac
            } else {
                let zeros = frac.prefix { $0 == "0" }.count
                exp = -(zeros + 1)
                digits = Array(frac.dropFirst(zeros))
            }
        }
        while digits.count > 1 && digits.last == "0" { digits.removeLast() }
        var out = d < 0 ? "-" : ""
        if exp < -4 || exp >= 6 {
            out.append(digits[0])
            if digits.count > 1 { out += "." + String(digits[1...]) }
            out += exp < 0 ? "e-" : "e+"
            let e = String(abs(exp))
            out += (e.count < 2 ? "0" : "") + e
        } else if exp < 0 {
            out += "0." + String(repeating: "0", count: -exp - 1) + String(digits)
        } else if digits.count <= exp + 1 {
            out += String(digits) + String(repeating: "0", count: exp + 1 - digits.count)
        } else {
            out += String(digits[...exp]) + "." + String(digits[(exp + 1)...])
        }
        return out
    }

    /// A Go string or raw string literal's value.
    static func unquote(_ literal: String) -> String? {
        if literal.hasPrefix("`") { return literal.count >= 2 ? String(literal.dropFirst().dropLast()) : nil }
        guard literal.hasPrefix("\""), literal.hasSuffix("\""), literal.count >= 2 else { return nil }
        var out = ""
        var it = literal.dropFirst().dropLast().unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "\\" else {
                out.unicodeScalars.append(c)
                continue
            }
            guard let e = it.next() else { return nil }
            switch e {
            case "n": out += "\n"
            case "t": out += "\t"
            case "r": out += "\r"
            case "\\": out += "\\"
            case "\"": out += "\""
            case "'": out += "'"
            case "a": out += "\u{07}"
            case "b": out += "\u{08}"
            case "f": out += "\u{0C}"
            case "v": out += "\u{0B}"
            case "x", "u", "U":
                let count = e == "x" ? 2 : e == "u" ? 4 : 8
                var hex = ""
                for _ in 0..<count {
                    guard let h = it.next() else { return nil }
                    hex.unicodeScalars.append(h)
                }
                guard let v = UInt32(hex, radix: 16), let s = Unicode.Scalar(v) else { return nil }
                out.unicodeScalars.append(s)
            default: return nil
            }
        }
        return out
    }

    /// A Go number literal: decimal, hex, octal, binary integers (underscores allowed) or a float.
    static func number(_ text: String) -> TemplateValue? {
        var t = text.replacingOccurrences(of: "_", with: "")
        var negative = false
        if t.hasPrefix("-") || t.hasPrefix("+") {
            negative = t.hasPrefix("-")
            t.removeFirst()
        }
        let lower = t.lowercased()
        var int: Int?
        if lower.hasPrefix("0x") {
            int = Int(lower.dropFirst(2), radix: 16)
        } else if lower.hasPrefix("0b") {
            int = Int(lower.dropFirst(2), radix: 2)
        } else if lower.hasPrefix("0o") {
            int = Int(lower.dropFirst(2), radix: 8)
        } else if lower.count > 1 && lower.hasPrefix("0") && lower.allSatisfy(\.isNumber) {
            int = Int(lower.dropFirst(), radix: 8)
        } else {
            int = Int(lower)
        }
        if let int { return .int(negative ? -int : int) }
        guard let d = Double(lower), !lower.hasPrefix("0x") else { return nil }
        return .float(negative ? -d : d)
    }
}
