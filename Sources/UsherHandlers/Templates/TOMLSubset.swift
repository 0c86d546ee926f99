import Foundation

/// The TOML that front matter uses, as BurntSushi/toml decodes into `map[string]any`: `key = value` pairs,
/// `[table]` and `[dotted.table]` headers, dotted keys, strings (basic, literal, multi-line), integers,
/// floats, booleans, arrays and inline tables. Dates and times are refused with an error.
enum TOMLSubset {
    static func parseDocument(_ text: String) throws -> [String: TemplateValue] {
        var root: [String: TemplateValue] = [:]
        var table: [String] = []
        var scanner = TOMLScanner(chars: Array(text))
        while true {
            scanner.skipWhitespaceAndComments(newlines: true)
            guard !scanner.atEnd else { break }
            if scanner.peek == "[" {
                scanner.i += 1
                let isArray = scanner.peek == "["
                if isArray { throw scanner.error("arrays of tables are not supported in front matter") }
                table = try scanner.key()
                scanner.skipSpaces()
                guard scanner.peek == "]" else { throw scanner.error("expected ']' after table name") }
                scanner.i += 1
                try set(&root, path: table, value: .map([:]), replace: false)
                continue
            }
            let key = try scanner.key()
            scanner.skipSpaces()
            guard scanner.peek == "=" else { throw scanner.error("expected '=' after key") }
            scanner.i += 1
            let v = try scanner.value()
            try set(&root, path: table + key, value: v, replace: true)
            scanner.skipWhitespaceAndComments(newlines: false)
            guard scanner.atEnd || scanner.peek == "\n" || scanner.peek == "\r" else {
                throw scanner.error("expected a newline after a value")
            }
        }
        return root
    }

    static func set(_ m: inout [String: TemplateValue], path: [String], value: TemplateValue, replace: Bool) throws {
        guard let first = path.first else { return }
        if path.count == 1 {
            if m[first] != nil && replace { throw FrontMatter.Failure("toml: key \(first) is already defined") }
            if m[first] == nil { m[first] = value }
            return
        }
        var inner: [String: TemplateValue]
        switch m[first] {
        case .map(let existing): inner = existing
        case nil: inner = [:]
        default: throw FrontMatter.Failure("toml: key \(first) is not a table")
        }
        try set(&inner, path: Array(path.dropFirst()), value: value, replace: replace)
        m[first] = .map(inner)
    }

    struct TOMLScanner {
        let chars: [Character]
        var i = 0
        var depth = 0
        var atEnd: Bool { i >= chars.count }
        var peek: Character? { i < chars.count ? chars[i] : nil }

        func error(_ message: String) -> FrontMatter.Failure {
            let line = chars[..<min(i, chars.count)].filter { $0 == "\n" }.count + 1
            return FrontMatter.Failure("toml: line \(line): \(message)")
        }

        mutating func skipSpaces() { while let c = peek, c == " " || c == "\t" { i += 1 } }

        mutating func skipWhitespaceAndComments(newlines: Bool) {
            while let c = peek {
                if c == " " || c == "\t" || (newlines && (c == "\n" || c == "\r")) {
                    i += 1
                } else if c == "#" {
                    while let d = peek, d != "\n" { i += 1 }
                } else {
                    break
                }
            }
        }

        mutating func key() throws -> [String] {
            var parts: [String] = []
            while true {
                skipSpaces()
                if peek == "\"" || peek == "'" {
                    parts.append(try string())
                } else {
                    var s = ""
                    while let c = peek, c.isLetter || c.isNumber || c == "_" || c == "-" {
                        s.append(c)
                        i += 1
                    }
                    guard !s.isEmpty else { throw error("expected a key") }
                    parts.append(s)
                }
                skipSpaces()
                guard peek == "." else { return parts }
                i += 1
            }
        }

        mutating func string() throws -> String {
            let q = chars[i]
            let multi = i + 2 < chars.count && chars[i + 1] == q && chars[i + 2] == q
            i += multi ? 3 : 1
            if multi, peek == "\n" { i += 1 }
            var s = ""
            while let c = peek {
                if c == q {
                    if !multi {
                        i += 1
                        return s
                    }
                    if i + 2 < chars.count && chars[i + 1] == q && chars[i + 2] == q {
                        i += 3
                        return s
                    }
                }
                if !multi && c == "\n" { throw error("strings cannot contain newlines") }
                i += 1
                if q == "\"" && c == "\\" {
                    guard let e = peek else { break }
                    i += 1
                    switch e {
                    case "n": s += "\n"
                    case "t": s += "\t"
                    case "r": s += "\r"
                    case "b": s += "\u{08}"
                    case "f": s += "\u{0C}"
                    case "\\": s += "\\"
                    case "\"": s += "\""
                    case "u", "U":
                        let count = e == "u" ? 4 : 8
                        guard i + count <= chars.count, let v = UInt32(String(chars[i..<(i + count)]), radix: 16),
                            let scalar = Unicode.Scalar(v)
                        else { throw error("invalid escape") }
                        s.unicodeScalars.append(scalar)
                        i += count
                    case "\n" where multi:
                        while let d = peek, d == " " || d == "\t" || d == "\n" || d == "\r" { i += 1 }
                    default: throw error("invalid escape in string: '\\\(e)'")
                    }
                } else {
                    s.append(c)
                }
            }
            throw error("unexpected EOF; expected a closing quote")
        }

        mutating func value() throws -> TemplateValue {
            skipSpaces()
            guard let c = peek else { throw error("expected a value") }
            depth += 1
            defer { depth -= 1 }
            if depth > FrontMatter.maxNesting { throw error("exceeded max depth of 1000") }
            switch c {
            case "\"", "'": return .string(try string())
            case "[":
                i += 1
                var items: [TemplateValue] = []
                while true {
                    skipWhitespaceAndComments(newlines: true)
                    if peek == "]" {
                        i += 1
                        return .list(items)
                    }
                    items.append(try value())
                    skipWhitespaceAndComments(newlines: true)
                    if peek == "," {
                        i += 1
                    } else if peek != "]" {
                        throw error("expected ',' or ']' in an array")
                    }
                }
            case "{":
                i += 1
                var m: [String: TemplateValue] = [:]
                skipSpaces()
                if peek == "}" {
                    i += 1
                    return .map(m)
                }
                while true {
                    let k = try key()
                    skipSpaces()
                    guard peek == "=" else { throw error("expected '=' in an inline table") }
                    i += 1
                    try TOMLSubset.set(&m, path: k, value: try value(), replace: true)
                    skipSpaces()
                    if peek == "," {
                        i += 1
                    } else if peek == "}" {
                        i += 1
                        return .map(m)
                    } else {
                        throw error("expected ',' or '}' in an inline table")
                    }
                }
            default:
                var s = ""
                while let d = peek,
                    !(d == " " || d == "\t" || d == "\n" || d == "\r" || d == "," || d == "]" || d == "}" || d == "#")
                {
                    s.append(d)
                    i += 1
                }
                switch s {
                case "true": return .bool(true)
                case "false": return .bool(false)
                case "inf", "+inf": return .float(.infinity)
                case "-inf": return .float(-.infinity)
                case "nan", "+nan", "-nan": return .float(.nan)
                default: break
                }
                let digits = s.replacingOccurrences(of: "_", with: "")
                if let n = Int(digits) { return .int(n) }
                if digits.hasPrefix("0x"), let n = Int(digits.dropFirst(2), radix: 16) { return .int(n) }
                if digits.hasPrefix("0o"), let n = Int(digits.dropFirst(2), radix: 8) { return .int(n) }
                if digits.hasPrefix("0b"), let n = Int(digits.dropFirst(2), radix: 2) { return .int(n) }
                if let d = Double(digits), digits.first.map({ $0.isNumber || $0 == "-" || $0 == "+" }) == true {
                    return .float(d)
                }
                if s.count >= 8, s.first?.isNumber == true, s.contains("-") || s.contains(":") {
                    throw error("dates and times are not supported in front matter")
                }
                throw error("expected a value, found \(s.isEmpty ? "nothing" : "'\(s)'")")
            }
        }
    }
}
