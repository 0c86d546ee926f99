/// Splits Caddyfile text into tokens: words, quoted strings (`"..."` with `\"` escapes, `` `...` `` raw),
/// heredocs (`<<MARKER`), with `#` comments dropped and `\` line continuations joined.
public struct CaddyfileLexer {
    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var line = 1
    private var skippedLines = 0
    private var token = CaddyfileToken()

    public init(_ text: String) {
        var s = Array(text.unicodeScalars)
        if s.first == "\u{FEFF}" { s.removeFirst() }
        self.scalars = s
    }

    /// Every token of `input`, each labelled with `filename`. Errors start with `filename:line:`, the line where
    /// the offending token starts (Caddy's lexer gives only the line, inside the message).
    public static func tokenize(_ input: String, filename: String) throws(CaddyfileError) -> [CaddyfileToken] {
        var lexer = CaddyfileLexer(input)
        var tokens: [CaddyfileToken] = []
        do {
            while let t = try lexer.next() {
                var t = t
                t.file = filename
                tokens.append(t)
            }
        } catch {
            throw CaddyfileError("\(filename):\(lexer.line): \(error.description)")
        }
        return tokens
    }

    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0: return true
        default: return c.properties.isWhitespace
        }
    }

    static func isHeredocMarker(_ s: String) -> Bool {
        !s.isEmpty
            && s.unicodeScalars.allSatisfy { c in
                (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "_" || c == "-"
            }
    }

    mutating func next() throws(CaddyfileError) -> CaddyfileToken? {
        var val: [Unicode.Scalar] = []
        var comment = false, quoted = false, btQuoted = false, inHeredoc = false, heredocEscaped = false,
            escaped = false
        var heredocMarker = ""

        func make(_ quote: Character?) -> CaddyfileToken {
            var t = token
            t.text = String(String.UnicodeScalarView(val))
            t.quote = quote
            t.heredocMarker = heredocMarker
            return t
        }

        while true {
            guard index < scalars.count else {
                if !val.isEmpty {
                    if inHeredoc {
                        throw CaddyfileError(
                            "incomplete heredoc <<\(heredocMarker) on line #\(line + skippedLines), expected ending marker \(heredocMarker)"
                        )
                    }
                    return make(nil)
                }
                return nil
            }
            let ch = scalars[index]
            index += 1

            if !quoted && !btQuoted && !inHeredoc && !heredocEscaped && val.count > 1 && val[0] == "<" && val[1] == "<"
            {
                if ch == " " { return make(nil) }
                if ch == "\r" { continue }
                if ch == "\n" {
                    if val.count == 2 {
                        throw CaddyfileError(
                            "missing opening heredoc marker on line #\(line); must contain only alphanumeric characters, dashes and underscores; got empty string"
                        )
                    }
                    if val.count >= 3 && val[2] == "<" {
                        throw CaddyfileError(
                            "too many '<' for heredoc on line #\(line); only use two, for example <<END")
                    }
                    heredocMarker = String(String.UnicodeScalarView(val[2...]))
                    if !Self.isHeredocMarker(heredocMarker) {
                        throw CaddyfileError(
                            "heredoc marker on line #\(line) must contain only alphanumeric characters, dashes and underscores; got '\(heredocMarker)'"
                        )
                    }
                    inHeredoc = true
                    skippedLines += 1
                    val = []
                    continue
                }
                val.append(ch)
                continue
            }

            if inHeredoc {
                val.append(ch)
                if ch == "\n" { skippedLines += 1 }
                let marker = Array(heredocMarker.unicodeScalars)
                if val.count >= marker.count && Array(val[(val.count - marker.count)...]) == marker {
                    val = try finalizeHeredoc(val, marker: heredocMarker)
                    line += skippedLines
                    skippedLines = 0
                    return make("<")
                }
                continue
            }

            if !escaped && !btQuoted && ch == "\\" {
                escaped = true
                continue
            }

            if quoted || btQuoted {
                if quoted && escaped {
                    if ch != "\"" { val.append("\\") }
                    escaped = false
                } else if (quoted && ch == "\"") || (btQuoted && ch == "`") {
                    return make(Character(ch))
                }
                if ch == "\n" {
                    line += 1 + skippedLines
                    skippedLines = 0
                }
                val.append(ch)
                continue
            }

            if Self.isSpace(ch) {
                if ch == "\r" { continue }
                if ch == "\n" {
                    if escaped {
                        skippedLines += 1
                        escaped = false
                    } else {
                        line += 1 + skippedLines
                        skippedLines = 0
                    }
                    comment = false
                }
                if !val.isEmpty { return make(nil) }
                continue
            }

            if ch == "#" && val.isEmpty { comment = true }
            if comment { continue }

            if val.isEmpty {
                token = CaddyfileToken(line: line)
                if ch == "\"" {
                    quoted = true
                    continue
                }
                if ch == "`" {
                    btQuoted = true
                    continue
                }
            }

            if escaped {
                if ch == "<" {
                    heredocEscaped = true
                } else {
                    val.append("\\")
                }
                escaped = false
            }
            val.append(ch)
        }
    }

    /// Strips the closing marker's indentation from every heredoc line.
    private func finalizeHeredoc(_ val: [Unicode.Scalar], marker: String) throws(CaddyfileError) -> [Unicode.Scalar] {
        let text = String(String.UnicodeScalarView(val))
        let scalarsText = Array(text.unicodeScalars)
        guard let lastNewline = scalarsText.lastIndex(of: "\n") else { return [] }
        let body = String(String.UnicodeScalarView(scalarsText[...lastNewline]))
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let padding = String(
            String.UnicodeScalarView(scalarsText[(lastNewline + 1)..<(scalarsText.count - marker.unicodeScalars.count)])
        )
        var out = ""
        for (n, lineText) in lines.dropLast().enumerated() {
            if lineText.isEmpty || lineText == "\r" {
                out += "\n"
                continue
            }
            guard lineText.hasPrefix(padding) else {
                var clean = lineText
                while clean.hasSuffix("\r") || clean.hasSuffix("\n") { clean.removeLast() }
                throw CaddyfileError(
                    "mismatched leading whitespace in heredoc <<\(marker) on line #\(line + n + 1) [\(clean)], expected whitespace [\(padding)] to match the closing marker"
                )
            }
            let rest = String(lineText.unicodeScalars.dropFirst(padding.unicodeScalars.count))
            out += String(String.UnicodeScalarView((rest + "\n").unicodeScalars.filter { $0 != "\r" }))
        }
        if out.hasSuffix("\n") { out.removeLast() }
        return Array(out.unicodeScalars)
    }
}
