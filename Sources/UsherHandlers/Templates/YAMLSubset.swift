import Foundation

/// The YAML that front matter uses, decoded as yaml.v3 decodes into `map[string]any`: block mappings and
/// sequences by indentation, flow sequences and mappings, plain and quoted scalars (ints, floats, bools and
/// nulls resolved; timestamps as times), literal (`|`) and folded (`>`) blocks. Anchors, tags and
/// multi-document streams are refused with an error.
enum YAMLSubset {
    struct Line {
        var indent: Int
        var text: Substring
        var number: Int
    }

    static func parseDocument(_ text: String) throws -> [String: TemplateValue] {
        var lines: [Line] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let indent = line.prefix { $0 == " " }.count
            let body = line.dropFirst(indent)
            lines.append(Line(indent: indent, text: body, number: n + 1))
        }
        var p = YAMLParser(lines: lines)
        p.skipBlank()
        guard p.position < p.lines.count else { return [:] }
        let v = try p.block(indent: p.lines[p.position].indent)
        p.skipBlank()
        if p.position < p.lines.count {
            throw FrontMatter.Failure("yaml: line \(p.lines[p.position].number): did not find expected key")
        }
        guard case .map(let m) = v else {
            if case .null = v { return [:] }
            throw FrontMatter.Failure("yaml: unmarshal errors: cannot unmarshal into map[string]interface {}")
        }
        return m
    }

    struct YAMLParser {
        var lines: [Line]
        var position = 0
        var depth = 0

        static func stripComment(_ s: Substring) -> Substring {
            var quote: Character?
            var prev: Character = " "
            for i in s.indices {
                let c = s[i]
                if let q = quote {
                    if c == q { quote = nil }
                } else if c == "\"" || c == "'" {
                    if prev == " " || prev == "[" || prev == "," || prev == ":" || i == s.startIndex { quote = c }
                } else if c == "#" && (prev == " " || prev == "\t" || i == s.startIndex) {
                    return s[..<i]
                }
                prev = c
            }
            return s
        }

        func isBlank(_ l: Line) -> Bool { Self.stripComment(l.text).allSatisfy { $0 == " " || $0 == "\t" } }

        mutating func skipBlank() {
            while position < lines.count && isBlank(lines[position]) { position += 1 }
        }

        func error(_ message: String) -> FrontMatter.Failure {
            let n = position < lines.count ? lines[position].number : (lines.last?.number ?? 0)
            return FrontMatter.Failure("yaml: line \(n): \(message)")
        }

        mutating func block(indent: Int) throws -> TemplateValue {
            depth += 1
            defer { depth -= 1 }
            if depth > FrontMatter.maxNesting { throw error("exceeded max depth of 1000") }
            skipBlank()
            guard position < lines.count else { return .null }
            let text = Self.stripComment(lines[position].text)
            if text == "-" || text.hasPrefix("- ") { return try sequence(indent: indent) }
            return try mapping(indent: indent)
        }

        mutating func sequence(indent: Int) throws -> TemplateValue {
            var items: [TemplateValue] = []
            while true {
                skipBlank()
                guard position < lines.count, lines[position].indent == indent else { break }
                let text = Self.stripComment(lines[position].text)
                guard text == "-" || text.hasPrefix("- ") else { break }
                let rest = text.dropFirst(1).drop { $0 == " " }
                if rest.isEmpty {
                    position += 1
                    skipBlank()
                    if position < lines.count, lines[position].indent > indent {
                        items.append(try block(indent: lines[position].indent))
                    } else {
                        items.append(.null)
                    }
                } else if Self.mappingKey(rest) != nil {
                    // `- key: value` starts a mapping indented where the key is.
                    let keyIndent = indent + (text.count - rest.count)
                    lines[position].indent = keyIndent
                    lines[position].text = rest
                    items.append(try mapping(indent: keyIndent))
                } else {
                    position += 1
                    items.append(try scalarOrBlock(rest, indent: indent))
                }
            }
            return .list(items)
        }

        /// `key: …` → the key and what follows the colon.
        static func mappingKey(_ text: Substring) -> (key: String, rest: Substring)? {
            if text.hasPrefix("\"") || text.hasPrefix("'") {
                let q = text.first!
                guard let close = text.dropFirst().firstIndex(of: q) else { return nil }
                let after = text[text.index(after: close)...]
                guard after.hasPrefix(":"), after.count == 1 || after.dropFirst().first == " " else { return nil }
                let key = String(text[text.index(after: text.startIndex)..<close])
                return (key, after.dropFirst())
            }
            var i = text.startIndex
            while i < text.endIndex {
                if text[i] == ":" {
                    let next = text.index(after: i)
                    if next == text.endIndex || text[next] == " " || text[next] == "\t" {
                        let key = text[..<i].trimmingCharacters(in: .whitespaces)
                        return key.isEmpty || key.hasPrefix("[") || key.hasPrefix("{") ? nil : (key, text[next...])
                    }
                }
                i = text.index(after: i)
            }
            return nil
        }

        mutating func mapping(indent: Int) throws -> TemplateValue {
            var m: [String: TemplateValue] = [:]
            while true {
                skipBlank()
                guard position < lines.count else { break }
                let line = lines[position]
                if line.indent < indent { break }
                if line.indent > indent { throw error("mapping values are not allowed in this context") }
                let text = Self.stripComment(line.text)
                if text.hasPrefix("- ") || text == "-" { break }
                if text.hasPrefix("&") || text.hasPrefix("*") || text.hasPrefix("!") || text.hasPrefix("?") {
                    throw error("anchors, aliases, tags and complex keys are not supported in front matter")
                }
                guard let (key, rest) = Self.mappingKey(text) else {
                    throw error("could not find expected ':'")
                }
                position += 1
                let value = rest.trimmingCharacters(in: .whitespaces)
                if value.isEmpty {
                    skipBlank()
                    if position < lines.count {
                        let next = lines[position]
                        let nextText = Self.stripComment(next.text)
                        if next.indent > indent
                            || (next.indent == indent && (nextText.hasPrefix("- ") || nextText == "-"))
                        {
                            m[key] = try block(indent: next.indent)
                            continue
                        }
                    }
                    m[key] = .null
                } else {
                    m[key] = try scalarOrBlock(Substring(value), indent: indent)
                }
            }
            return .map(m)
        }

        mutating func scalarOrBlock(_ text: Substring, indent: Int) throws -> TemplateValue {
            let t = text.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("|") || t.hasPrefix(">") {
                return .string(blockScalar(folded: t.hasPrefix(">"), chomp: t.dropFirst(), parent: indent))
            }
            if t.hasPrefix("&") || t.hasPrefix("*") || t.hasPrefix("!") {
                throw error("anchors, aliases and tags are not supported in front matter")
            }
            var s = Substring(t)
            // A plain or quoted scalar may continue on more-indented lines.
            if !(t.hasPrefix("[") || t.hasPrefix("{")) {
                var joined = String(t)
                while position < lines.count, !isBlank(lines[position]), lines[position].indent > indent,
                    Self.mappingKey(Self.stripComment(lines[position].text)) == nil
                {
                    joined += " " + Self.stripComment(lines[position].text).trimmingCharacters(in: .whitespaces)
                    position += 1
                }
                s = Substring(joined)
            }
            var flow = FlowScanner(text: s)
            let v = try flow.value(topLevel: true)
            flow.skipSpaces()
            guard flow.atEnd else { throw error("did not find expected key") }
            return v
        }

        mutating func blockScalar(folded: Bool, chomp: Substring, parent: Int) -> String {
            var contentLines: [String] = []
            var contentIndent: Int?
            while position < lines.count {
                let l = lines[position]
                if l.text.isEmpty {
                    contentLines.append("")
                    position += 1
                    continue
                }
                if contentIndent == nil { contentIndent = l.indent }
                guard l.indent >= contentIndent!, l.indent > parent else { break }
                contentLines.append(String(repeating: " ", count: l.indent - contentIndent!) + l.text)
                position += 1
            }
            var trailingBlank = 0
            while contentLines.last == "" {
                contentLines.removeLast()
                trailingBlank += 1
            }
            var s: String
            if folded {
                s = ""
                for (i, line) in contentLines.enumerated() {
                    if i > 0 {
                        let prevBlank = contentLines[i - 1].isEmpty
                        s += line.isEmpty || prevBlank || line.hasPrefix(" ") ? "\n" : " "
                    }
                    s += line
                }
            } else {
                s = contentLines.joined(separator: "\n")
            }
            if contentLines.isEmpty { return "" }
            if chomp.hasPrefix("-") { return s }
            if chomp.hasPrefix("+") { return s + "\n" + String(repeating: "\n", count: trailingBlank) }
            return s + "\n"
        }
    }

    /// Scalars and flow collections on one line.
    struct FlowScanner {
        let chars: [Character]
        var i = 0
        var depth = 0
        init(text: Substring) { chars = Array(text) }
        var atEnd: Bool { i >= chars.count }

        mutating func skipSpaces() { while i < chars.count && (chars[i] == " " || chars[i] == "\t") { i += 1 } }

        mutating func value(topLevel: Bool) throws -> TemplateValue {
            skipSpaces()
            guard i < chars.count else { return .null }
            depth += 1
            defer { depth -= 1 }
            if depth > FrontMatter.maxNesting { throw FrontMatter.Failure("yaml: exceeded max depth of 1000") }
            switch chars[i] {
            case "[":
                i += 1
                var items: [TemplateValue] = []
                while true {
                    skipSpaces()
                    guard i < chars.count else { throw FrontMatter.Failure("yaml: did not find expected ',' or ']'") }
                    if chars[i] == "]" {
                        i += 1
                        return .list(items)
                    }
                    items.append(try value(topLevel: false))
                    skipSpaces()
                    if i < chars.count && chars[i] == "," { i += 1 }
                }
            case "{":
                i += 1
                var m: [String: TemplateValue] = [:]
                while true {
                    skipSpaces()
                    guard i < chars.count else { throw FrontMatter.Failure("yaml: did not find expected ',' or '}'") }
                    if chars[i] == "}" {
                        i += 1
                        return .map(m)
                    }
                    guard case .string(let key) = try value(topLevel: false, stopAtColon: true) else {
                        throw FrontMatter.Failure("yaml: invalid map key")
                    }
                    skipSpaces()
                    guard i < chars.count, chars[i] == ":" else {
                        throw FrontMatter.Failure("yaml: did not find expected ':'")
                    }
                    i += 1
                    m[key] = try value(topLevel: false)
                    skipSpaces()
                    if i < chars.count && chars[i] == "," { i += 1 }
                }
            case "\"", "'":
                return .string(try quoted())
            default:
                return try plain(topLevel: topLevel)
            }
        }

        mutating func value(topLevel: Bool, stopAtColon: Bool) throws -> TemplateValue {
            skipSpaces()
            if i < chars.count, chars[i] == "\"" || chars[i] == "'" { return .string(try quoted()) }
            var s = ""
            while i < chars.count, chars[i] != ":", chars[i] != ",", chars[i] != "}" {
                s.append(chars[i])
                i += 1
            }
            return .string(s.trimmingCharacters(in: .whitespaces))
        }

        mutating func quoted() throws -> String {
            let q = chars[i]
            i += 1
            var s = ""
            while i < chars.count {
                let c = chars[i]
                i += 1
                if q == "'" {
                    if c == "'" {
                        if i < chars.count && chars[i] == "'" {
                            s.append("'")
                            i += 1
                            continue
                        }
                        return s
                    }
                    s.append(c)
                } else {
                    if c == "\"" { return s }
                    if c == "\\", i < chars.count {
                        let e = chars[i]
                        i += 1
                        switch e {
                        case "n": s += "\n"
                        case "t": s += "\t"
                        case "r": s += "\r"
                        case "0": s += "\0"
                        case "\\": s += "\\"
                        case "\"": s += "\""
                        case "/": s += "/"
                        case " ": s += " "
                        case "x", "u", "U":
                            let count = e == "x" ? 2 : e == "u" ? 4 : 8
                            guard i + count <= chars.count, let v = UInt32(String(chars[i..<(i + count)]), radix: 16),
                                let scalar = Unicode.Scalar(v)
                            else { throw FrontMatter.Failure("yaml: found invalid escape character") }
                            s.unicodeScalars.append(scalar)
                            i += count
                        default: throw FrontMatter.Failure("yaml: found unknown escape character")
                        }
                    } else {
                        s.append(c)
                    }
                }
            }
            throw FrontMatter.Failure("yaml: found unexpected end of stream")
        }

        mutating func plain(topLevel: Bool) throws -> TemplateValue {
            var s = ""
            while i < chars.count {
                let c = chars[i]
                if !topLevel && (c == "," || c == "]" || c == "}") { break }
                if !topLevel && c == ":" && (i + 1 == chars.count || chars[i + 1] == " ") { break }
                s.append(c)
                i += 1
            }
            return resolve(s.trimmingCharacters(in: .whitespaces))
        }

        /// A YAML timestamp yaml.v3 decodes into `time.Time`: a date (`2006-1-2`, midnight UTC) or a date and time
        /// in UTC (`2006-1-2T15:4:5Z`).
        static func timestamp(_ s: String) -> Date? {
            guard let first = s.first, first.isNumber, s.contains("-") else { return nil }
            if let d = GoTime.parse(s, layout: "2006-1-2") { return d }
            if let d = GoTime.parse(s, layout: "2006-1-2T15:4:5Z07:00") { return d }
            return GoTime.parse(s, layout: "2006-1-2 15:4:5")
        }

        /// yaml.v3's resolution of a plain scalar into `any`.
        func resolve(_ s: String) -> TemplateValue {
            switch s {
            case "", "~", "null", "Null", "NULL": return .null
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .float(.infinity)
            case "-.inf", "-.Inf", "-.INF": return .float(-.infinity)
            case ".nan", ".NaN", ".NAN": return .float(.nan)
            default: break
            }
            if let date = Self.timestamp(s) { return .object(TimeObject(date: date)) }
            let body = s.hasPrefix("-") || s.hasPrefix("+") ? s.dropFirst() : Substring(s)
            let negative = s.hasPrefix("-")
            if !body.isEmpty, body.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "_") }), body.first!.isNumber {
                if let n = Int(body.replacingOccurrences(of: "_", with: "")) { return .int(negative ? -n : n) }
            }
            if body.hasPrefix("0x"), let n = Int(body.dropFirst(2), radix: 16) { return .int(negative ? -n : n) }
            if body.hasPrefix("0o"), let n = Int(body.dropFirst(2), radix: 8) { return .int(negative ? -n : n) }
            if !body.isEmpty,
                body.allSatisfy({
                    $0.isASCII && ($0.isNumber || $0 == "." || $0 == "e" || $0 == "E" || $0 == "-" || $0 == "+")
                }),
                body.contains(where: \.isNumber), let d = Double(body)
            {
                return .float(negative ? -d : d)
            }
            return .string(s)
        }
    }
}
