// Go's text/template, the language Caddy's `templates` handler runs: the lexer. Tokens keep their line, so
// errors name `file:line` as Go's do.

/// One token of a template.
struct TemplateToken: Equatable {
    enum Kind: Equatable {
        case text, leftDelim, rightDelim
        case identifier, field, variable, keyword
        case string, rawString, char, number, bool, nil_
        case pipe, leftParen, rightParen, comma, declare, assign, dot
        case space, eof
    }
    var kind: Kind
    var value: String
    var line: Int
    /// Byte column of the token's first byte in its line, from 0 (Go's error positions).
    var col = 0
}

/// An error in a template's text, with where it is.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    public var name: String
    public var line: Int
    public var message: String
    /// For errors while executing: the column, the template being executed and the node, as Go writes them.
    var col: Int?
    var executing: String?
    var node: String?
    public var description: String {
        if let col, let executing, let node, line > 0 {
            return "template: \(name):\(line):\(col): executing \"\(executing)\" at <\(node)>: \(message)"
        }
        return line > 0 ? "template: \(name):\(line): \(message)" : "template: \(name): \(message)"
    }

    init(_ name: String, _ line: Int, _ message: String) {
        self.name = name
        self.line = line
        self.message = message
    }
}

struct TemplateLexer {
    let name: String
    let input: [UInt8]
    let leftDelim: [UInt8]
    let rightDelim: [UInt8]
    private var pos = 0
    private var line = 1
    private(set) var tokens: [TemplateToken] = []

    static let keywords: Set<String> = [
        "if", "else", "end", "range", "with", "define", "block", "template", "break", "continue",
    ]

    init(name: String, text: String, left: String = "{{", right: String = "}}") {
        self.name = name
        self.input = Array(text.utf8)
        self.leftDelim = Array((left.isEmpty ? "{{" : left).utf8)
        self.rightDelim = Array((right.isEmpty ? "}}" : right).utf8)
    }

    private func hasPrefix(_ p: [UInt8], at i: Int) -> Bool {
        guard i + p.count <= input.count else { return false }
        for k in 0..<p.count where input[i + k] != p[k] { return false }
        return true
    }

    private func string(_ from: Int, _ to: Int) -> String { String(decoding: input[from..<to], as: UTF8.self) }

    private func isSpace(_ b: UInt8) -> Bool { b == 32 || b == 9 || b == 13 || b == 10 }

    private mutating func emit(_ kind: TemplateToken.Kind, _ value: String, line: Int? = nil) {
        var token = TemplateToken(kind: kind, value: value, line: line ?? self.line)
        if kind != .text && kind != .leftDelim && kind != .rightDelim && kind != .space {
            // The value is the source bytes just scanned, so the token starts that far back.
            let start = max(0, pos - value.utf8.count)
            var lineStart = start
            while lineStart > 0 && input[lineStart - 1] != 10 { lineStart -= 1 }
            token.col = start - lineStart
        }
        tokens.append(token)
    }

    mutating func run() throws -> [TemplateToken] {
        while pos < input.count {
            // Text up to the next left delimiter.
            var i = pos
            while i < input.count && !hasPrefix(leftDelim, at: i) { i += 1 }
            var textEnd = i
            var trimLeft = false
            if i < input.count {
                let after = i + leftDelim.count
                // "{{- " trims the text before it.
                if after + 1 < input.count && input[after] == UInt8(ascii: "-") && isSpace(input[after + 1]) {
                    trimLeft = true
                }
            }
            if trimLeft { while textEnd > pos && isSpace(input[textEnd - 1]) { textEnd -= 1 } }
            if textEnd > pos {
                let startLine = line
                emit(.text, string(pos, textEnd), line: startLine)
            }
            line += input[pos..<i].reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            pos = i
            if pos >= input.count { break }
            try lexAction(trimmedLeft: trimLeft)
        }
        emit(.eof, "")
        return tokens
    }

    private mutating func lexAction(trimmedLeft: Bool) throws {
        let actionLine = line
        pos += leftDelim.count
        if trimmedLeft { pos += 2 }
        // A comment: {{/* ... */}} with optional trim markers.
        if hasPrefix(Array("/*".utf8), at: pos) {
            guard let close = find(Array("*/".utf8), from: pos + 2) else {
                throw TemplateError(name, actionLine, "unclosed comment")
            }
            line += input[pos..<close].reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            pos = close + 2
            var trimRight = false
            if pos + 1 < input.count && isSpace(input[pos]) && input[pos + 1] == UInt8(ascii: "-")
                && hasPrefix(rightDelim, at: pos + 2)
            {
                trimRight = true
                pos += 2
            }
            guard hasPrefix(rightDelim, at: pos) else {
                throw TemplateError(name, actionLine, "comment ends before closing delimiter")
            }
            pos += rightDelim.count
            if trimRight { skipSpaceAfterAction() }
            return
        }
        emit(.leftDelim, "", line: actionLine)
        var parenDepth = 0
        while true {
            guard pos < input.count else { throw TemplateError(name, actionLine, "unclosed action") }
            // " -}}" ends the action and trims what follows.
            if isSpace(input[pos]) && pos + 1 < input.count && input[pos + 1] == UInt8(ascii: "-")
                && hasPrefix(rightDelim, at: pos + 2)
            {
                pos += 2 + rightDelim.count
                if parenDepth > 0 { throw TemplateError(name, line, "unclosed left paren") }
                emit(.rightDelim, "")
                skipSpaceAfterAction()
                return
            }
            if hasPrefix(rightDelim, at: pos) {
                if parenDepth > 0 { throw TemplateError(name, line, "unclosed left paren") }
                pos += rightDelim.count
                emit(.rightDelim, "")
                return
            }
            let c = input[pos]
            switch c {
            case 32, 9, 13, 10:
                let start = pos
                while pos < input.count && isSpace(input[pos]) && !hasPrefix(rightDelim, at: pos) {
                    if pos + 1 < input.count && input[pos + 1] == UInt8(ascii: "-")
                        && hasPrefix(rightDelim, at: pos + 2)
                    {
                        break
                    }
                    if input[pos] == 10 { line += 1 }
                    pos += 1
                }
                if pos == start { pos += 1 }
                emit(.space, " ")
            case UInt8(ascii: "|"):
                pos += 1
                emit(.pipe, "|")
            case UInt8(ascii: "("):
                pos += 1
                parenDepth += 1
                emit(.leftParen, "(")
            case UInt8(ascii: ")"):
                pos += 1
                parenDepth -= 1
                if parenDepth < 0 { throw TemplateError(name, line, "unexpected right paren") }
                emit(.rightParen, ")")
            case UInt8(ascii: ","):
                pos += 1
                emit(.comma, ",")
            case UInt8(ascii: ":"):
                guard pos + 1 < input.count, input[pos + 1] == UInt8(ascii: "=") else {
                    throw TemplateError(name, line, "expected :=")
                }
                pos += 2
                emit(.declare, ":=")
            case UInt8(ascii: "="):
                pos += 1
                emit(.assign, "=")
            case UInt8(ascii: "\""):
                let start = pos
                pos += 1
                while pos < input.count && input[pos] != UInt8(ascii: "\"") {
                    if input[pos] == UInt8(ascii: "\\") { pos += 1 }
                    if pos < input.count && input[pos] == 10 {
                        throw TemplateError(name, line, "unterminated quoted string")
                    }
                    pos += 1
                }
                guard pos < input.count else { throw TemplateError(name, line, "unterminated quoted string") }
                pos += 1
                emit(.string, string(start, pos))
            case UInt8(ascii: "`"):
                let start = pos
                pos += 1
                while pos < input.count && input[pos] != UInt8(ascii: "`") {
                    if input[pos] == 10 { line += 1 }
                    pos += 1
                }
                guard pos < input.count else { throw TemplateError(name, line, "unterminated raw quoted string") }
                pos += 1
                emit(.rawString, string(start, pos))
            case UInt8(ascii: "'"):
                let start = pos
                pos += 1
                while pos < input.count && input[pos] != UInt8(ascii: "'") {
                    if input[pos] == UInt8(ascii: "\\") { pos += 1 }
                    pos += 1
                }
                guard pos < input.count else { throw TemplateError(name, line, "unterminated character constant") }
                pos += 1
                emit(.char, string(start, pos))
            case UInt8(ascii: "$"):
                let start = pos
                pos += 1
                while pos < input.count && isIdentifierByte(input[pos]) { pos += 1 }
                emit(.variable, string(start, pos))
                lexFieldChain()
            case UInt8(ascii: "."):
                if pos + 1 < input.count && isDigit(input[pos + 1]) {
                    lexNumber()
                    break
                }
                let start = pos
                pos += 1
                if pos < input.count && isIdentifierByte(input[pos]) {
                    while pos < input.count && isIdentifierByte(input[pos]) { pos += 1 }
                    emit(.field, string(start, pos))
                    lexFieldChain()
                } else {
                    emit(.dot, ".")
                }
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                lexNumber()
            default:
                guard isIdentifierByte(c) else {
                    // Go lexes a stray printable character as itself and its parser rejects it as an operand.
                    throw TemplateError(name, line, "unexpected \"\(Character(Unicode.Scalar(c)))\" in operand")
                }
                let start = pos
                while pos < input.count && isIdentifierByte(input[pos]) { pos += 1 }
                let word = string(start, pos)
                if word == "true" || word == "false" {
                    emit(.bool, word)
                } else if word == "nil" {
                    emit(.nil_, word)
                } else if Self.keywords.contains(word) {
                    emit(.keyword, word)
                } else {
                    emit(.identifier, word)
                }
                lexFieldChain()
            }
        }
    }

    /// `.Field` directly after an operand (`$x.A.B`, `(pipe).A`, `fn.A` is not Go, but `.A.B` is one field chain).
    private mutating func lexFieldChain() {
        while pos + 1 < input.count && input[pos] == UInt8(ascii: ".") && isIdentifierByte(input[pos + 1])
            && !isDigit(input[pos + 1])
        {
            let start = pos
            pos += 1
            while pos < input.count && isIdentifierByte(input[pos]) { pos += 1 }
            emit(.field, string(start, pos))
        }
    }

    private mutating func lexNumber() {
        let start = pos
        if input[pos] == UInt8(ascii: "+") || input[pos] == UInt8(ascii: "-") { pos += 1 }
        while pos < input.count,
            isIdentifierByte(input[pos]) || input[pos] == UInt8(ascii: ".")
                || ((input[pos] == UInt8(ascii: "+") || input[pos] == UInt8(ascii: "-"))
                    && (input[pos - 1] | 0x20) == UInt8(ascii: "e"))
        {
            pos += 1
        }
        emit(.number, string(start, pos))
    }

    private mutating func skipSpaceAfterAction() {
        while pos < input.count && isSpace(input[pos]) {
            if input[pos] == 10 { line += 1 }
            pos += 1
        }
    }

    private func find(_ needle: [UInt8], from: Int) -> Int? {
        var i = from
        while i + needle.count <= input.count {
            if hasPrefix(needle, at: i) { return i }
            i += 1
        }
        return nil
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
    private func isIdentifierByte(_ b: UInt8) -> Bool {
        (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || isDigit(b) || b == 95 || b >= 0x80
    }
}
