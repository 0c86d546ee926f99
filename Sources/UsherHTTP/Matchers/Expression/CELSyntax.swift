// The syntax of CEL (github.com/google/cel-spec, langdef.md): a lexer and a recursive-descent parser producing
// an AST whose operators are calls named as cel-go names them (`_+_`, `@in`, `_?_:_`), so that errors read alike.

/// A parsed CEL expression node; `pos` is its offset in Unicode scalars, for error messages.
struct CELExpr {
    indirect enum Kind {
        case literal(CELValue)
        case ident(String)
        /// `operand.field`; `testOnly` for the `has()` macro.
        case select(CELExpr, String, testOnly: Bool)
        /// A global call (`target == nil`) or a member call `target.name(args)`.
        case call(String, target: CELExpr?, args: [CELExpr])
        case list([CELExpr])
        case map([(key: CELExpr, value: CELExpr)])
    }
    var pos: Int
    var kind: Kind

    init(_ pos: Int, _ kind: Kind) {
        self.pos = pos
        self.kind = kind
    }

    var stringLiteral: String? {
        if case .literal(.string(let s)) = kind { return s }
        return nil
    }
}

/// A compile error at an offset of the expression, printed the way cel-go prints its issues.
struct CELIssue: Error {
    var pos: Int
    var message: String
}

/// Formats issues as cel-go does: `ERROR: <input>:1:5: message`, the line, and a caret under the column.
func formatCELIssue(_ issue: CELIssue, source: String) -> String {
    let scalars = Array(source.unicodeScalars)
    guard issue.pos >= 0 else { return "ERROR: <input>:-1:0: \(issue.message)" }
    var line = 1
    var lineStart = 0
    for i in 0..<min(issue.pos, scalars.count) where scalars[i] == "\n" {
        line += 1
        lineStart = i + 1
    }
    var lineEnd = lineStart
    while lineEnd < scalars.count && scalars[lineEnd] != "\n" { lineEnd += 1 }
    let column = issue.pos - lineStart
    var text = String.UnicodeScalarView()
    text.append(contentsOf: scalars[lineStart..<lineEnd])
    return "ERROR: <input>:\(line):\(column + 1): \(issue.message)\n | \(String(text))\n | "
        + String(repeating: ".", count: column) + "^"
}

enum CELToken: Equatable {
    case ident(String)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    case punct(String)
    case eof

    var display: String {
        switch self {
        case .ident(let s): return s
        case .int(let v): return String(v)
        case .uint(let v): return "\(v)u"
        case .double(let v): return String(v)
        case .string(let s): return "\"\(s)\""
        case .bytes: return "b\"...\""
        case .punct(let p): return p
        case .eof: return "<EOF>"
        }
    }
}

struct CELLexer {
    let s: [Unicode.Scalar]
    var i = 0

    init(_ source: String) { s = Array(source.unicodeScalars) }

    static let reserved: Set<String> = [
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package",
        "namespace", "return", "var", "void", "while",
    ]

    func peek(_ k: Int = 0) -> Unicode.Scalar? { i + k < s.count ? s[i + k] : nil }

    static func isIdentStart(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
    }
    static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    /// The next token and its offset.
    mutating func next() throws -> (CELToken, Int) {
        // Whitespace and `//` comments.
        while let c = peek() {
            if c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0C}" {
                i += 1
            } else if c == "/" && peek(1) == "/" {
                while let d = peek(), d != "\n" { i += 1 }
            } else {
                break
            }
        }
        let start = i
        guard let c = peek() else { return (.eof, start) }
        if Self.isIdentStart(c) {
            // String prefixes: r, b, and both in either order.
            var raw = false
            var bytes = false
            var j = i
            while j < s.count && j - i < 2, let q = Optional(s[j]) {
                if q == "r" || q == "R" { raw = true } else if q == "b" || q == "B" { bytes = true } else { break }
                j += 1
            }
            if j > i && j < s.count && (s[j] == "\"" || s[j] == "'") && (j - i == 1 || raw && bytes) {
                i = j
                return (try string(start: start, raw: raw, bytes: bytes), start)
            }
            var name = String.UnicodeScalarView()
            while let d = peek(), Self.isIdentStart(d) || Self.isDigit(d) {
                name.append(d)
                i += 1
            }
            return (.ident(String(name)), start)
        }
        if Self.isDigit(c) || (c == "." && peek(1).map(Self.isDigit) == true) {
            return (try number(start: start), start)
        }
        if c == "\"" || c == "'" { return (try string(start: start, raw: false, bytes: false), start) }
        for op in ["==", "!=", "<=", ">=", "&&", "||"] where matches(op) {
            i += 2
            return (.punct(op), start)
        }
        if "<>!+-*/%?:.,[](){}".unicodeScalars.contains(c) {
            i += 1
            return (.punct(String(c)), start)
        }
        throw CELIssue(pos: start, message: "Syntax error: token recognition error at: '\(c)'")
    }

    func matches(_ op: String) -> Bool {
        var k = 0
        for u in op.unicodeScalars {
            if peek(k) != u { return false }
            k += 1
        }
        return true
    }

    mutating func number(start: Int) throws -> CELToken {
        if peek() == "0" && (peek(1) == "x" || peek(1) == "X") {
            i += 2
            var digits = ""
            while let d = peek(), d.properties.isASCIIHexDigit {
                digits.unicodeScalars.append(d)
                i += 1
            }
            if peek() == "u" || peek() == "U" {
                i += 1
                guard let v = UInt64(digits, radix: 16) else { throw rangeError(start) }
                return .uint(v)
            }
            guard let v = Int64(digits, radix: 16) else { throw rangeError(start) }
            return .int(v)
        }
        var text = ""
        var isFloat = false
        while let d = peek(), Self.isDigit(d) {
            text.unicodeScalars.append(d)
            i += 1
        }
        if peek() == ".", let n = peek(1), Self.isDigit(n) {
            isFloat = true
            text += "."
            i += 1
            while let d = peek(), Self.isDigit(d) {
                text.unicodeScalars.append(d)
                i += 1
            }
        }
        if peek() == "e" || peek() == "E" {
            var k = 1
            if peek(k) == "+" || peek(k) == "-" { k += 1 }
            if let d = peek(k), Self.isDigit(d) {
                isFloat = true
                for _ in 0..<k {
                    text.unicodeScalars.append(peek()!)
                    i += 1
                }
                while let d = peek(), Self.isDigit(d) {
                    text.unicodeScalars.append(d)
                    i += 1
                }
            }
        }
        if isFloat {
            guard let v = Double(text.hasPrefix(".") ? "0" + text : text) else { throw rangeError(start) }
            return .double(v)
        }
        if peek() == "u" || peek() == "U" {
            i += 1
            guard let v = UInt64(text) else { throw rangeError(start) }
            return .uint(v)
        }
        // 9223372036854775808 is only valid negated; the parser folds the sign in.
        if text == "9223372036854775808" { return .double(9_223_372_036_854_775_808) }
        guard let v = Int64(text) else { throw rangeError(start) }
        return .int(v)
    }

    func rangeError(_ start: Int) -> CELIssue {
        CELIssue(pos: start, message: "invalid int literal")
    }

    mutating func string(start: Int, raw: Bool, bytes: Bool) throws -> CELToken {
        let quote = s[i]
        let triple = peek(1) == quote && peek(2) == quote
        i += triple ? 3 : 1
        var out: [UInt8] = []
        func appendScalar(_ u: Unicode.Scalar) { out.append(contentsOf: Array(String(u).utf8)) }
        while true {
            guard let c = peek() else {
                throw CELIssue(pos: start, message: "Syntax error: token recognition error at: unterminated string")
            }
            if triple {
                if c == quote && peek(1) == quote && peek(2) == quote {
                    i += 3
                    break
                }
            } else if c == quote {
                i += 1
                break
            } else if c == "\n" || c == "\r" {
                throw CELIssue(pos: start, message: "Syntax error: token recognition error at: newline in string")
            }
            if c == "\\" && !raw {
                guard let e = peek(1) else { continue }
                i += 2
                switch e {
                case "a": out.append(7)
                case "b": out.append(8)
                case "f": out.append(12)
                case "n": out.append(10)
                case "r": out.append(13)
                case "t": out.append(9)
                case "v": out.append(11)
                case "\\", "'", "\"", "`", "?": appendScalar(e)
                case "x", "X", "u", "U":
                    let count = e == "u" ? 4 : e == "U" ? 8 : 2
                    var v: UInt32 = 0
                    for _ in 0..<count {
                        guard let h = peek(), let d = UInt32(String(h), radix: 16) else {
                            throw CELIssue(pos: i, message: "Syntax error: invalid escape sequence")
                        }
                        v = v * 16 + d
                        i += 1
                    }
                    if (e == "x" || e == "X") && bytes {
                        out.append(UInt8(v))
                    } else {
                        guard let u = Unicode.Scalar(v) else {
                            throw CELIssue(pos: start, message: "Syntax error: invalid unicode code point")
                        }
                        appendScalar(u)
                    }
                case "0"..."3":
                    var v = UInt32(e.value - 48)
                    for _ in 0..<2 {
                        guard let d = peek(), d >= "0" && d <= "7" else {
                            throw CELIssue(pos: i, message: "Syntax error: invalid escape sequence")
                        }
                        v = v * 8 + (d.value - 48)
                        i += 1
                    }
                    if bytes { out.append(UInt8(v)) } else { appendScalar(Unicode.Scalar(v)!) }
                default:
                    throw CELIssue(
                        pos: start, message: "Syntax error: token recognition error at: '\\\(e)'")
                }
                continue
            }
            appendScalar(c)
            i += 1
        }
        if bytes { return .bytes(out) }
        return .string(String(decoding: out, as: UTF8.self))
    }
}

/// Recursive descent over CEL's grammar, with cel-go's limit on nesting.
struct CELParser {
    var lexer: CELLexer
    var token: CELToken = .eof
    var pos = 0
    var depth = 0
    static let maxDepth = 250

    init(_ source: String) throws {
        lexer = CELLexer(source)
        try advance()
    }

    static func parse(_ source: String) throws -> CELExpr {
        var p = try CELParser(source)
        let e = try p.expr()
        guard p.token == .eof else { throw p.unexpected("<EOF>") }
        return e
    }

    mutating func advance() throws { (token, pos) = try lexer.next() }

    func unexpected(_ expecting: String) -> CELIssue {
        CELIssue(pos: pos, message: "Syntax error: mismatched input '\(token.display)' expecting \(expecting)")
    }

    func isPunct(_ p: String) -> Bool { token == .punct(p) }

    mutating func expect(_ p: String) throws {
        guard isPunct(p) else {
            throw CELIssue(pos: pos, message: "Syntax error: missing '\(p)' at '\(token.display)'")
        }
        try advance()
    }

    mutating func nest() throws {
        depth += 1
        if depth > Self.maxDepth {
            throw CELIssue(pos: pos, message: "expression recursion limit exceeded: \(Self.maxDepth)")
        }
    }

    mutating func expr() throws -> CELExpr {
        try nest()
        defer { depth -= 1 }
        let cond = try binary(0)
        guard isPunct("?") else { return cond }
        let at = pos
        try advance()
        let a = try binary(0)
        try expect(":")
        let b = try expr()
        return CELExpr(at, .call("_?_:_", target: nil, args: [cond, a, b]))
    }

    static let levels: [[String: String]] = [
        ["||": "_||_"],
        ["&&": "_&&_"],
        ["==": "_==_", "!=": "_!=_", "<": "_<_", "<=": "_<=_", ">": "_>_", ">=": "_>=_", "in": "@in"],
        ["+": "_+_", "-": "_-_"],
        ["*": "_*_", "/": "_/_", "%": "_%_"],
    ]

    func operatorName(_ level: Int) -> String? {
        switch token {
        case .punct(let p): return Self.levels[level][p]
        case .ident("in"): return Self.levels[level]["in"]
        default: return nil
        }
    }

    mutating func binary(_ level: Int) throws -> CELExpr {
        if level == Self.levels.count { return try unary() }
        var lhs = try binary(level + 1)
        while let op = operatorName(level) {
            let at = pos
            try advance()
            try nest()
            let rhs = try binary(level + 1)
            depth -= 1
            lhs = CELExpr(at, .call(op, target: nil, args: [lhs, rhs]))
        }
        return lhs
    }

    mutating func unary() throws -> CELExpr {
        if isPunct("!") || isPunct("-") {
            let op = isPunct("!") ? "!_" : "-_"
            var positions: [Int] = []
            while token == .punct(op == "!_" ? "!" : "-") {
                positions.append(pos)
                try advance()
            }
            var operand = try member()
            // A negated numeric literal is one literal, so that the least Int64 is expressible.
            if op == "-_", positions.count % 2 == 1, case .literal(let v) = operand.kind {
                switch v {
                case .int(let n):
                    operand = CELExpr(positions.last!, .literal(.int(-n)))
                    positions.removeLast()
                case .double(let d) where d == 9_223_372_036_854_775_808:
                    operand = CELExpr(positions.last!, .literal(.int(Int64.min)))
                    positions.removeLast()
                case .double(let d):
                    operand = CELExpr(positions.last!, .literal(.double(-d)))
                    positions.removeLast()
                default: break
                }
            }
            for p in positions.reversed() { operand = CELExpr(p, .call(op, target: nil, args: [operand])) }
            return operand
        }
        return try member()
    }

    mutating func member() throws -> CELExpr {
        var e = try primary()
        while true {
            if isPunct(".") {
                try advance()
                guard case .ident(let name) = token else { throw unexpected("IDENTIFIER") }
                let at = pos
                try advance()
                if isPunct("(") {
                    let callAt = pos
                    try advance()
                    let args = try list(until: ")")
                    e = CELExpr(callAt, .call(name, target: e, args: args))
                } else {
                    e = CELExpr(at - 1, .select(e, name, testOnly: false))
                }
            } else if isPunct("[") {
                let at = pos
                try advance()
                let index = try expr()
                try expect("]")
                e = CELExpr(at, .call("_[_]", target: nil, args: [e, index]))
            } else {
                return e
            }
        }
    }

    /// Comma-separated expressions up to `close` (consumed); a trailing comma is allowed.
    mutating func list(until close: String) throws -> [CELExpr] {
        var items: [CELExpr] = []
        while !isPunct(close) {
            items.append(try expr())
            if isPunct(",") { try advance() } else if !isPunct(close) { throw unexpected("{',', '\(close)'}") }
        }
        try advance()
        return items
    }

    mutating func primary() throws -> CELExpr {
        let at = pos
        switch token {
        case .int(let v):
            try advance()
            return CELExpr(at, .literal(.int(v)))
        case .uint(let v):
            try advance()
            return CELExpr(at, .literal(.uint(v)))
        case .double(let v):
            try advance()
            return CELExpr(at, .literal(.double(v)))
        case .string(let v):
            try advance()
            return CELExpr(at, .literal(.string(v)))
        case .bytes(let v):
            try advance()
            return CELExpr(at, .literal(.bytes(v)))
        case .ident(let name):
            if CELLexer.reserved.contains(name) || name == "in" {
                throw CELIssue(pos: at, message: "Syntax error: reserved identifier: \(name)")
            }
            try advance()
            switch name {
            case "true": return CELExpr(at, .literal(.bool(true)))
            case "false": return CELExpr(at, .literal(.bool(false)))
            case "null": return CELExpr(at, .literal(.null))
            default: break
            }
            if isPunct("(") {
                let callAt = pos
                try advance()
                return CELExpr(callAt, .call(name, target: nil, args: try list(until: ")")))
            }
            return CELExpr(at, .ident(name))
        case .punct("."):
            // A leading dot names the root scope; there is one scope here.
            try advance()
            return try primary()
        case .punct("("):
            try advance()
            let e = try expr()
            try expect(")")
            return e
        case .punct("["):
            try advance()
            return CELExpr(at, .list(try list(until: "]")))
        case .punct("{"):
            try advance()
            var entries: [(key: CELExpr, value: CELExpr)] = []
            while !isPunct("}") {
                let k = try expr()
                try expect(":")
                let v = try expr()
                entries.append((k, v))
                if isPunct(",") { try advance() } else if !isPunct("}") { throw unexpected("{',', '}'}") }
            }
            try advance()
            return CELExpr(at, .map(entries))
        default:
            throw unexpected(
                "{'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"
            )
        }
    }
}
