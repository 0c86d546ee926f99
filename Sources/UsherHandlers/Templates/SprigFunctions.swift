import Crypto
import Foundation
import UsherCore

/// The Sprig functions Caddy's templates have (Caddy adds Sprig's text function map), those its docs and sites use:
/// strings, lists and dicts, integer math, conversions, regular expressions, encodings. Each follows Sprig's
/// behaviour as Caddy 2.11.7 shows it (`SprigTests` holds outputs recorded from it).
enum SprigFunctions {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// Sprig's `strval`: strings as they are, everything else as `%v` prints it.
    static func str(_ v: TemplateValue) -> String {
        if case .string(let s) = v { return s }
        if case .null = v { return "" }
        return v.printed
    }

    /// Sprig's `toInt64` for math: ints, floats truncated, numeric strings; anything else 0.
    static func int(_ v: TemplateValue) -> Int {
        switch v {
        case .int(let n): return n
        case .float(let d): return truncating(d)
        case .string(let s): return Int(s) ?? truncating(Double(s) ?? 0)
        case .bool(let b): return b ? 1 : 0
        default: return 0
        }
    }

    /// The most bytes or items one function call may make (Sprig has no bound; a request's numbers could ask for
    /// gigabytes).
    static let maxProduced = 64 << 20

    static func bounded(_ size: (partialValue: Int, overflow: Bool), _ name: String) throws {
        guard !size.overflow, size.partialValue <= maxProduced else {
            throw Failure("\(name): result over \(maxProduced >> 20) Mi")
        }
    }

    /// Go's float64 → int64 conversion on amd64: truncation, and the minimum for NaN and out-of-range values
    /// (Swift's `Int(_:)` would trap).
    static func truncating(_ d: Double) -> Int {
        guard d.isFinite, d > -9.223372036854775808e18, d < 9.223372036854775808e18 else { return .min }
        return Int(d)
    }

    static func args(_ a: [TemplateValue], _ n: Int, _ name: String) throws {
        guard a.count == n else { throw Failure("wrong number of args for \(name): want \(n) got \(a.count)") }
    }

    static let all: [String: TemplateFunction] = {
        var f: [String: TemplateFunction] = [:]
        func s1(_ name: String, _ body: @escaping @Sendable (String) -> String) {
            f[name] = { a in
                try args(a, 1, name)
                return .string(body(str(a[0])))
            }
        }
        s1("upper") { $0.uppercased() }
        s1("lower") { $0.lowercased() }
        s1("title") { s in
            var out = ""
            var start = true
            for ch in s {
                out += start ? ch.uppercased() : String(ch)
                start = ch.isWhitespace || ch.isPunctuation
            }
            return out
        }
        s1("untitle") { s in
            var out = ""
            var start = true
            for ch in s {
                out += start ? ch.lowercased() : String(ch)
                start = ch.isWhitespace
            }
            return out
        }
        s1("trim") { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        s1("nospace") { $0.filter { !$0.isWhitespace } }
        s1("swapcase") { s in String(s.map { $0.isUppercase ? Character($0.lowercased()) : Character($0.uppercased()) })
        }
        s1("squote") { "'" + $0 + "'" }
        s1("b64enc") { Data($0.utf8).base64EncodedString() }
        s1("b64dec") { s in Data(base64Encoded: s).map { String(decoding: $0, as: UTF8.self) } ?? "" }
        s1("sha256sum") { s in SHA256.hash(data: Data(s.utf8)).map { String(format: "%02x", $0) }.joined() }
        s1("initials") { s in String(s.split(whereSeparator: \.isWhitespace).compactMap(\.first)) }
        s1("snakecase") { words($0).map { $0.lowercased() }.joined(separator: "_") }
        s1("kebabcase") { words($0).map { $0.lowercased() }.joined(separator: "-") }
        s1("camelcase") { s in
            s.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
        }
        f["trimPrefix"] = { a in
            try args(a, 2, "trimPrefix")
            let p = str(a[0]), s = str(a[1])
            return .string(s.hasPrefix(p) ? String(s.dropFirst(p.count)) : s)
        }
        f["trimSuffix"] = { a in
            try args(a, 2, "trimSuffix")
            let p = str(a[0]), s = str(a[1])
            return .string(s.hasSuffix(p) ? String(s.dropLast(p.count)) : s)
        }
        f["trimAll"] = { a in
            try args(a, 2, "trimAll")
            return .string(str(a[1]).trimmingCharacters(in: CharacterSet(charactersIn: str(a[0]))))
        }
        f["replace"] = { a in
            try args(a, 3, "replace")
            return .string(str(a[2]).replacingOccurrences(of: str(a[0]), with: str(a[1])))
        }
        f["contains"] = { a in
            try args(a, 2, "contains")
            let needle = str(a[0])
            return .bool(needle.isEmpty || str(a[1]).contains(needle))
        }
        f["hasPrefix"] = { a in
            try args(a, 2, "hasPrefix")
            return .bool(str(a[1]).hasPrefix(str(a[0])))
        }
        f["hasSuffix"] = { a in
            try args(a, 2, "hasSuffix")
            return .bool(str(a[1]).hasSuffix(str(a[0])))
        }
        f["repeat"] = { a in
            try args(a, 2, "repeat")
            let unit = str(a[1]), count = max(0, int(a[0]))
            try bounded(count.multipliedReportingOverflow(by: max(unit.utf8.count, 1)), "repeat")
            return .string(String(repeating: unit, count: count))
        }
        f["substr"] = { a in
            try args(a, 3, "substr")
            let s = Array(str(a[2]).utf8)
            var start = int(a[0]), end = int(a[1])
            if start < 0 { return .string(String(decoding: s[..<min(max(end, 0), s.count)], as: UTF8.self)) }
            if end < 0 || end > s.count { end = s.count }
            start = min(start, end)
            return .string(String(decoding: s[start..<end], as: UTF8.self))
        }
        f["trunc"] = { a in
            try args(a, 2, "trunc")
            let s = Array(str(a[1]).utf8), n = int(a[0])
            if n < 0 && n > -s.count { return .string(String(decoding: s[(s.count + n)...], as: UTF8.self)) }
            if n >= 0 && s.count > n { return .string(String(decoding: s[..<n], as: UTF8.self)) }
            return .string(String(decoding: s, as: UTF8.self))
        }
        f["abbrev"] = { a in
            try args(a, 2, "abbrev")
            let s = str(a[1]), width = int(a[0])
            if width < 4 || s.count <= width { return .string(s) }
            return .string(String(s.prefix(width - 3)) + "...")
        }
        f["quote"] = { a in .string(a.map { Go.quote(str($0)) }.joined(separator: " ")) }
        f["cat"] = { a in
            .string(a.filter { if case .null = $0 { false } else { true } }.map(str).joined(separator: " "))
        }
        f["wrap"] = { a in
            try args(a, 2, "wrap")
            return .string(wrapWords(str(a[1]), width: int(a[0])))
        }
        f["indent"] = { a in
            try args(a, 2, "indent")
            let n = max(0, int(a[0]))
            let lines = str(a[1]).utf8.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            try bounded(n.multipliedReportingOverflow(by: lines), "indent")
            let pad = String(repeating: " ", count: n)
            return .string(pad + str(a[1]).replacingOccurrences(of: "\n", with: "\n" + pad))
        }
        f["nindent"] = { a in
            try args(a, 2, "nindent")
            let n = max(0, int(a[0]))
            let lines = str(a[1]).utf8.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            try bounded(n.multipliedReportingOverflow(by: lines), "nindent")
            let pad = String(repeating: " ", count: n)
            return .string("\n" + pad + str(a[1]).replacingOccurrences(of: "\n", with: "\n" + pad))
        }
        f["plural"] = { a in
            try args(a, 3, "plural")
            return .string(int(a[2]) == 1 ? str(a[0]) : str(a[1]))
        }
        f["splitList"] = { a in
            try args(a, 2, "splitList")
            return .list(str(a[1]).components(separatedBy: str(a[0])).map { .string(String($0)) })
        }
        f["join"] = { a in
            try args(a, 2, "join")
            guard case .list(let l) = a[1] else { return .string(str(a[1])) }
            return .string(l.map(str).joined(separator: str(a[0])))
        }
        f["default"] = { a in
            guard !a.isEmpty else { throw Failure("wrong number of args for default: want 2 got 0") }
            if a.count < 2 || !a[1].isTrue { return a[0] }
            return a[1]
        }
        f["empty"] = { a in
            try args(a, 1, "empty")
            return .bool(!a[0].isTrue)
        }
        f["ternary"] = { a in
            try args(a, 3, "ternary")
            return a[2].isTrue ? a[0] : a[1]
        }
        f["list"] = { a in .list(a) }
        f["first"] = { a in
            try args(a, 1, "first")
            guard case .list(let l) = a[0] else { return .null }
            return l.first ?? .null
        }
        f["last"] = { a in
            try args(a, 1, "last")
            guard case .list(let l) = a[0] else { return .null }
            return l.last ?? .null
        }
        f["dict"] = { a in
            var m: [String: TemplateValue] = [:]
            var i = 0
            while i < a.count {
                m[str(a[i])] = i + 1 < a.count ? a[i + 1] : .string("")
                i += 2
            }
            return .map(m)
        }
        func math(_ name: String, _ op: @escaping @Sendable (Int, Int) throws -> Int) {
            f[name] = { a in
                try args(a, 2, name)
                return .int(try op(int(a[0]), int(a[1])))
            }
        }
        math("add") { $0 &+ $1 }
        math("sub") { $0 &- $1 }
        math("mul") { $0 &* $1 }
        math("div") { a, b in
            guard b != 0 else { throw Failure("runtime error: integer divide by zero") }
            return a.dividedReportingOverflow(by: b).partialValue
        }
        math("mod") { a, b in
            guard b != 0 else { throw Failure("runtime error: integer divide by zero") }
            return a.remainderReportingOverflow(dividingBy: b).partialValue
        }
        f["add1"] = { a in
            try args(a, 1, "add1")
            return .int(int(a[0]) &+ 1)
        }
        f["max"] = { a in .int(a.map(int).max() ?? 0) }
        f["min"] = { a in .int(a.map(int).min() ?? 0) }
        f["atoi"] = { a in
            try args(a, 1, "atoi")
            return .int(Int(str(a[0])) ?? 0)
        }
        f["int"] = { a in
            try args(a, 1, "int")
            return .int(int(a[0]))
        }
        f["toString"] = { a in
            try args(a, 1, "toString")
            return .string(str(a[0]))
        }
        f["until"] = { a in
            try args(a, 1, "until")
            let n = int(a[0])
            try bounded((n.magnitude > UInt(maxProduced >> 6) ? Int.max : 0, false), "until")
            return .list(n >= 0 ? (0..<n).map { .int($0) } : (n + 1...0).reversed().map { .int($0) })
        }
        f["seq"] = { a in
            let n = a.map(int)
            let (start, step, end): (Int, Int, Int) =
                n.count == 1 ? (1, 1, n[0]) : n.count == 2 ? (n[0], n[0] <= n[1] ? 1 : -1, n[1]) : (n[0], n[1], n[2])
            guard step != 0 else { return .string("") }
            var out: [String] = []
            var i = start
            while step > 0 ? i <= end : i >= end {
                out.append(String(i))
                if out.count > maxProduced >> 6 { throw Failure("seq: more than \(maxProduced >> 6) numbers") }
                let (next, overflow) = i.addingReportingOverflow(step)
                if overflow { break }
                i = next
            }
            return .string(out.joined(separator: " "))
        }
        f["regexMatch"] = { a in
            try args(a, 2, "regexMatch")
            return .bool(try regex(str(a[0])).firstMatch(in: str(a[1]), range: whole(str(a[1]))) != nil)
        }
        f["regexFind"] = { a in
            try args(a, 2, "regexFind")
            let s = str(a[1])
            guard let m = try regex(str(a[0])).firstMatch(in: s, range: whole(s)) else { return .string("") }
            return .string((s as NSString).substring(with: m.range))
        }
        f["regexReplaceAll"] = { a in
            try args(a, 3, "regexReplaceAll")
            let s = str(a[1])
            // Go's $1 expansion matches NSRegularExpression's template syntax for the common forms.
            return .string(
                try regex(str(a[0])).stringByReplacingMatches(in: s, range: whole(s), withTemplate: str(a[2])))
        }
        f["regexSplit"] = { a in
            try args(a, 3, "regexSplit")
            let s = str(a[1]), n = int(a[2])
            let ns = s as NSString
            var parts: [TemplateValue] = []
            var last = 0
            for m in try regex(str(a[0])).matches(in: s, range: whole(s)) {
                if n > 0 && parts.count == n - 1 { break }
                parts.append(.string(ns.substring(with: NSRange(location: last, length: m.range.location - last))))
                last = m.range.location + m.range.length
            }
            parts.append(.string(ns.substring(from: last)))
            return .list(parts)
        }
        f["toJson"] = { a in
            try args(a, 1, "toJson")
            return .string(json(a[0]).serialized(.init(escapeHTML: true)))
        }
        f["toPrettyJson"] = { a in
            try args(a, 1, "toPrettyJson")
            return .string(json(a[0]).serialized(.init(indent: "  ", escapeHTML: true)))
        }
        return f
    }()

    static func whole(_ s: String) -> NSRange { NSRange(location: 0, length: (s as NSString).length) }

    static func regex(_ pattern: String) throws -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern) } catch {
            throw Failure("error parsing regexp: \(pattern)")
        }
    }

    /// Words of an identifier for `snakecase`/`kebabcase`: split before capitals and at `_`, `-` and spaces.
    static func words(_ s: String) -> [String] {
        var out: [String] = []
        var current = ""
        for ch in s {
            if ch == "_" || ch == "-" || ch == " " {
                if !current.isEmpty { out.append(current) }
                current = ""
            } else if ch.isUppercase && !current.isEmpty && !(current.last?.isUppercase ?? false) {
                out.append(current)
                current = String(ch)
            } else {
                current.append(ch)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Sprig's `wrap` (goutils `Wrap`): break at spaces so lines are at most `width` long where words allow.
    static func wrapWords(_ s: String, width: Int) -> String {
        var lines: [String] = []
        var line = ""
        for word in s.split(separator: " ", omittingEmptySubsequences: true) {
            if line.isEmpty {
                line = String(word)
            } else if line.count + 1 + word.count <= width {
                line += " " + word
            } else {
                lines.append(line)
                line = String(word)
            }
        }
        lines.append(line)
        return lines.joined(separator: "\n")
    }

    /// A template value as JSON (maps with sorted keys, as Go's encoder writes them).
    static func json(_ v: TemplateValue) -> JSONValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .int(let n): return .number(JSONNumber(n))
        case .float(let d): return .number(JSONNumber(literal: TemplateValue.formatFloat(d)))
        case .string(let s): return .string(s)
        case .list(let l): return .array(l.map(json))
        case .map(let m):
            var o = JSONObject()
            for k in m.keys.sorted() { o[k] = json(m[k]!) }
            return .object(o)
        case .object: return .object(JSONObject())
        }
    }
}
