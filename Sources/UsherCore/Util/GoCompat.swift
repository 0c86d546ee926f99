/// The few Go standard-library behaviours whose results and error texts users see: number and duration parsing,
/// host:port splitting, quoting. Kept exact so that config values mean what they mean to Caddy, and our messages
/// read like Caddy's. The JSON decoder and the Caddyfile adapter both use these.
public enum Go {
    /// An error worded as the Go function that would have failed.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    // MARK: strconv

    /// `strconv.Quote` for the text a config holds.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\u{07}": out += "\\a"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{0B}": out += "\\v"
            default:
                if u.value < 0x20 || u.value == 0x7f {
                    out += "\\x" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// `strconv.Atoi`.
    public static func atoi(_ s: String) throws(Failure) -> Int {
        try parseInt(s, function: "Atoi", bits: 64)
    }

    /// `strconv.ParseInt(s, 10, bits)`.
    public static func parseInt(_ s: String, bits: Int = 64) throws(Failure) -> Int {
        try parseInt(s, function: "ParseInt", bits: bits)
    }

    private static func parseInt(_ s: String, function: String, bits: Int) throws(Failure) -> Int {
        var digits = Substring(s)
        var negative = false
        if let f = digits.first, f == "+" || f == "-" {
            negative = f == "-"
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw Failure("strconv.\(function): parsing \(quote(s)): invalid syntax")
        }
        let limit = bits >= 64 ? UInt64(Int64.max) : (UInt64(1) << UInt64(bits - 1)) - 1
        var value: UInt64 = 0
        for c in digits.utf8 {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(c - 48))
            if o1 || o2 || a > limit + (negative ? 1 : 0) {
                throw Failure("strconv.\(function): parsing \(quote(s)): value out of range")
            }
            value = a
        }
        if negative { return value == limit + 1 ? Int(truncatingIfNeeded: 0 &- value) : -Int(value) }
        return Int(value)
    }

    /// `strconv.ParseUint(s, 10, bits)`.
    public static func parseUint(_ s: String, bits: Int = 64) throws(Failure) -> UInt64 {
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw Failure("strconv.ParseUint: parsing \(quote(s)): invalid syntax")
        }
        guard let v = UInt64(s), bits >= 64 || v < (UInt64(1) << UInt64(bits)) else {
            throw Failure("strconv.ParseUint: parsing \(quote(s)): value out of range")
        }
        return v
    }

    /// `strconv.ParseBool`.
    public static func parseBool(_ s: String) throws(Failure) -> Bool {
        switch s {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: throw Failure("strconv.ParseBool: parsing \(quote(s)): invalid syntax")
        }
    }

    /// `strconv.ParseFloat(s, 64)` for decimal and exponent notation, `inf` and `nan`.
    public static func parseFloat(_ s: String) throws(Failure) -> Double {
        let lower = s.lowercased()
        if ["inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"].contains(lower) {
            return lower == "nan" ? .nan : (lower.hasPrefix("-") ? -.infinity : .infinity)
        }
        let allowed = s.unicodeScalars.allSatisfy {
            ($0 >= "0" && $0 <= "9") || $0 == "." || $0 == "e" || $0 == "E" || $0 == "+" || $0 == "-"
        }
        guard !s.isEmpty, allowed, let d = Double(s) else {
            throw Failure("strconv.ParseFloat: parsing \(quote(s)): invalid syntax")
        }
        if d.isInfinite { throw Failure("strconv.ParseFloat: parsing \(quote(s)): value out of range") }
        return d
    }

    /// A float as Go's `encoding/json` writes it: shortest digits, positional unless very small or very large.
    public static func jsonFloat(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        let a = abs(d)
        var s = "\(d)"
        if a < 1e-6 || a >= 1e21 {
            // Go writes e-07 as e-7.
            if let e = s.firstIndex(of: "e") {
                var exp = String(s[s.index(after: e)...])
                var sign = "+"
                if exp.hasPrefix("-") || exp.hasPrefix("+") { sign = String(exp.removeFirst()) }
                while exp.count > 1 && exp.hasPrefix("0") { exp.removeFirst() }
                s = String(s[..<e]) + "e" + sign + exp
            }
            return s
        }
        guard let e = s.firstIndex(of: "e") else { return s }
        // Swift used an exponent where Go would not: shift the decimal point.
        let mantissa = String(s[..<e])
        let exp = Int(s[s.index(after: e)...])!
        let negative = mantissa.hasPrefix("-")
        let digitsPart = negative ? String(mantissa.dropFirst()) : mantissa
        let parts = digitsPart.split(separator: ".", omittingEmptySubsequences: false)
        var digits = String(parts[0]) + (parts.count > 1 ? String(parts[1]) : "")
        var point = parts[0].count + exp
        if point <= 0 {
            digits = String(repeating: "0", count: -point + 1) + digits
            point = 1
        }
        while digits.count < point { digits += "0" }
        var out = String(digits.prefix(point))
        let frac = String(digits.dropFirst(point))
        if !frac.isEmpty { out += "." + frac }
        return (negative ? "-" : "") + out
    }

    /// `fmt.Sprint` of a string slice: `[a b c]`.
    public static func list(_ items: [String]) -> String { "[" + items.joined(separator: " ") + "]" }

    // MARK: time

    /// Caddy's `ParseDuration`: Go's `time.ParseDuration` plus `d` for days. Returns nanoseconds.
    public static func caddyDuration(_ input: String) throws(Failure) -> Int64 {
        guard input.utf8.count <= 1024 else { throw Failure("parsing duration: input string too long") }
        var s = Array(input.utf8)
        var inNumber = false
        var numStart = 0
        var i = 0
        while i < s.count {
            let ch = s[i]
            if ch == UInt8(ascii: "d") {
                let daysText = String(decoding: s[numStart..<i], as: UTF8.self)
                let days = try parseFloat(daysText)
                let hours = days * 24
                var hoursText = hours == hours.rounded() && abs(hours) < 1e15 ? String(Int64(hours)) : "\(hours)"
                if hoursText.hasSuffix(".0") { hoursText.removeLast(2) }
                s = Array(s[..<numStart]) + Array(hoursText.utf8) + [UInt8(ascii: "h")] + Array(s[(i + 1)...])
                i -= 1
                continue
            }
            if !inNumber { numStart = i }
            inNumber =
                (ch >= 48 && ch <= 57) || ch == UInt8(ascii: ".") || ch == UInt8(ascii: "-") || ch == UInt8(ascii: "+")
            i += 1
        }
        return try timeDuration(String(decoding: s, as: UTF8.self))
    }

    /// Go's `time.ParseDuration`, in nanoseconds.
    public static func timeDuration(_ orig: String) throws(Failure) -> Int64 {
        let invalid = Failure("time: invalid duration \(quote(orig))")
        var s = Array(orig.utf8)[...]
        var neg = false
        if let c = s.first, c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
            neg = c == UInt8(ascii: "-")
            s = s.dropFirst()
        }
        if s.count == 1 && s.first == UInt8(ascii: "0") { return 0 }
        if s.isEmpty { throw invalid }
        let isDigit = { (c: UInt8) in c >= 48 && c <= 57 }
        var d: UInt64 = 0
        while !s.isEmpty {
            guard s.first == UInt8(ascii: ".") || isDigit(s.first!) else { throw invalid }
            var v: UInt64 = 0
            var pre = false
            while let c = s.first, isDigit(c) {
                guard v <= (UInt64(1) << 63) / 10 else { throw invalid }
                v = v * 10 + UInt64(c - 48)
                guard v <= UInt64(1) << 63 else { throw invalid }
                s = s.dropFirst()
                pre = true
            }
            var f: UInt64 = 0
            var scale: Double = 1
            var post = false
            if s.first == UInt8(ascii: ".") {
                s = s.dropFirst()
                var overflow = false
                while let c = s.first, isDigit(c) {
                    post = true
                    if !overflow {
                        if f > (UInt64(1) << 63 - 1) / 10 {
                            overflow = true
                        } else {
                            let y = f * 10 + UInt64(c - 48)
                            if y > UInt64(1) << 63 { overflow = true } else { f = y; scale *= 10 }
                        }
                    }
                    s = s.dropFirst()
                }
            }
            guard pre || post else { throw invalid }
            var unitBytes: [UInt8] = []
            while let c = s.first, c != UInt8(ascii: "."), !isDigit(c) {
                unitBytes.append(c)
                s = s.dropFirst()
            }
            guard !unitBytes.isEmpty else { throw Failure("time: missing unit in duration \(quote(orig))") }
            let unitText = String(decoding: unitBytes, as: UTF8.self)
            let unit: UInt64
            switch unitText {
            case "ns": unit = 1
            case "us", "\u{00B5}s", "\u{03BC}s": unit = 1_000
            case "ms": unit = 1_000_000
            case "s": unit = 1_000_000_000
            case "m": unit = 60_000_000_000
            case "h": unit = 3_600_000_000_000
            default: throw Failure("time: unknown unit \(quote(unitText)) in duration \(quote(orig))")
            }
            guard v <= (UInt64(1) << 63) / unit else { throw invalid }
            v *= unit
            if f > 0 {
                v += UInt64(Double(f) * (Double(unit) / scale))
                guard v <= UInt64(1) << 63 else { throw invalid }
            }
            d += v
            guard d <= UInt64(1) << 63 else { throw invalid }
        }
        if neg { return d == UInt64(1) << 63 ? Int64.min : -Int64(d) }
        guard d <= UInt64(Int64.max) else { throw invalid }
        return Int64(d)
    }

    // MARK: net

    /// `net.SplitHostPort`.
    public static func splitHostPort(_ hostport: String) throws(Failure) -> (host: String, port: String) {
        func fail(_ why: String) -> Failure { Failure("address \(hostport): \(why)") }
        let b = Array(hostport.utf8)
        guard let i = b.lastIndex(of: UInt8(ascii: ":")) else { throw fail("missing port in address") }
        var host: [UInt8]
        var j = 0
        var k = 0
        if b.first == UInt8(ascii: "[") {
            guard let end = b.firstIndex(of: UInt8(ascii: "]")) else { throw fail("missing ']' in address") }
            if end + 1 == b.count {
                throw fail("missing port in address")
            } else if end + 1 != i {
                if b[end + 1] == UInt8(ascii: ":") { throw fail("too many colons in address") }
                throw fail("missing port in address")
            }
            host = Array(b[1..<end])
            j = 1
            k = end + 1
        } else {
            host = Array(b[..<i])
            if host.contains(UInt8(ascii: ":")) { throw fail("too many colons in address") }
        }
        if b[j...].firstIndex(of: UInt8(ascii: "[")) != nil { throw fail("unexpected '[' in address") }
        if b[k...].firstIndex(of: UInt8(ascii: "]")) != nil { throw fail("unexpected ']' in address") }
        return (String(decoding: host, as: UTF8.self), String(decoding: b[(i + 1)...], as: UTF8.self))
    }

    /// `net.JoinHostPort`.
    public static func joinHostPort(_ host: String, _ port: String) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    // MARK: misc

    /// `textproto.CanonicalMIMEHeaderKey`: `content-type` → `Content-Type`; keys with bytes that are not token
    /// characters are returned unchanged.
    public static func canonicalHeaderKey(_ s: String) -> String {
        let bytes = Array(s.utf8)
        let tokenSymbols = Array("!#$%&'*+-.^_`|~".utf8)
        for b in bytes {
            let alnum = (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
            if !alnum && !tokenSymbols.contains(b) { return s }
        }
        var out: [UInt8] = []
        var upper = true
        for b in bytes {
            if upper && b >= 97 && b <= 122 {
                out.append(b - 32)
            } else if !upper && b >= 65 && b <= 90 {
                out.append(b + 32)
            } else {
                out.append(b)
            }
            upper = b == UInt8(ascii: "-")
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `html.EscapeString`.
    public static func htmlEscape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "'": out += "&#39;"
            case "\"": out += "&#34;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// go-humanize's `ParseBytes`: `1.5MB`, `10KiB`, `512`.
    public static func parseBytes(_ s: String) throws(Failure) -> UInt64 {
        var lastDigit = s.startIndex
        var hasComma = false
        for c in s.unicodeScalars {
            if !(("0"..."9").contains(c) || c == "." || c == ",") { break }
            if c == "," { hasComma = true }
            lastDigit = s.unicodeScalars.index(after: lastDigit)
        }
        var num = String(s[..<lastDigit])
        if hasComma { num = num.replacingAll(",", with: "") }
        let f = try parseFloat(num)
        let extra = String(s[lastDigit...]).trimmingWhitespace().lowercased()
        let table: [String: Double] = [
            "b": 1, "": 1,
            "kib": 1024, "ki": 1024, "kb": 1000, "k": 1000,
            "mib": 1_048_576, "mi": 1_048_576, "mb": 1e6, "m": 1e6,
            "gib": 1_073_741_824, "gi": 1_073_741_824, "gb": 1e9, "g": 1e9,
            "tib": 1_099_511_627_776, "ti": 1_099_511_627_776, "tb": 1e12, "t": 1e12,
            "pib": 1_125_899_906_842_624, "pi": 1_125_899_906_842_624, "pb": 1e15, "p": 1e15,
            "eib": 1_152_921_504_606_846_976, "ei": 1_152_921_504_606_846_976, "eb": 1e18, "e": 1e18,
        ]
        guard let m = table[extra] else { throw Failure("unhandled size name: \(extra)") }
        let v = f * m
        guard v < 18_446_744_073_709_551_616.0 else { throw Failure("too large: \(s)") }
        return UInt64(v)
    }
}

extension String {
    /// Replaces the first `limit` occurrences of `target` (all when negative), without Foundation (Go's
    /// `strings.Replace`; an empty `target` changes nothing).
    public func replacingAll(_ target: String, with replacement: String, limit: Int = -1) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = self[...]
        var count = 0
        while limit < 0 || count < limit, let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
            count += 1
        }
        out += rest
        return out
    }

    /// Drops every leading and trailing character found in `set` (Go's `strings.Trim`).
    package func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }

    /// The string without leading and trailing spaces, tabs and line breaks.
    public func trimmingWhitespace() -> String {
        let ws: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !ws($0) }) else { return "" }
        let end = lastIndex(where: { !ws($0) })!
        return String(self[start...end])
    }
}

/// Go's `<` on strings: byte-wise order, as `sort.Strings` sorts.
package func goLess(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }

/// Go's `strconv.ParseBool`, as an optional.
package func goParseBool(_ s: String) -> Bool? { try? Go.parseBool(s) }

/// Go's `strconv.ParseFloat`, as an optional.
package func goParseFloat(_ s: String) -> Double? { try? Go.parseFloat(s) }
