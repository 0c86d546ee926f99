import UsherCore

/// Formats Caddyfile text as `caddy fmt` does: one tab per nesting level, a space before an opening brace, closing
/// braces on their own lines, a blank line between top-level blocks, at most one blank line anywhere, comments,
/// quotes and heredocs kept as written.
public enum CaddyfileFormatter {
    private enum HeredocState { case closed, opening, opened }

    public static func format(_ input: String) -> String {
        let trimmed = trimSpace(Array(input.unicodeScalars))
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(trimmed.count + 64)

        var last: Unicode.Scalar = "\0"
        var space = true
        var beginningOfLine = true
        var openBrace = false
        var openBraceWritten = false
        var openBraceSpace = false
        var newLines = 0
        var comment = false
        var quotes = ""
        var escaped = false
        var heredoc = HeredocState.closed
        var heredocEscaped = false
        var heredocMarker: [Unicode.Scalar] = []
        var heredocClosingMarker: [Unicode.Scalar] = []
        var nesting = 0
        var currentToken: [Unicode.Scalar] = []
        var currentLineFirstToken = ""
        var previousLineWasTopLevelImport = false
        var openBraceOwnLine = false

        func finishToken() {
            if currentToken.isEmpty { return }
            if currentLineFirstToken.isEmpty {
                currentLineFirstToken = String(String.UnicodeScalarView(currentToken))
            }
            currentToken.removeAll(keepingCapacity: true)
        }
        func finishLine() {
            finishToken()
            if !currentLineFirstToken.isEmpty {
                previousLineWasTopLevelImport = nesting == 0 && currentLineFirstToken == "import"
            } else if !openBrace || !openBraceOwnLine || openBraceWritten {
                previousLineWasTopLevelImport = false
            }
            currentLineFirstToken = ""
        }
        func write(_ ch: Unicode.Scalar) {
            out.append(ch)
            last = ch
        }
        func indent() {
            for _ in 0..<nesting { write("\t") }
        }
        func nextLine() {
            write("\n")
            beginningOfLine = true
        }
        /// Writes a pending opening brace and starts the block it opens.
        func flushOpenBrace() {
            if nesting == 0 && last == "}" {
                nextLine()
                nextLine()
            }
            openBrace = false
            if openBraceOwnLine && previousLineWasTopLevelImport {
                if last != "\n" { nextLine() }
                indent()
            } else if beginningOfLine {
                indent()
            } else if !openBraceSpace || !CaddyfileLexer.isSpace(last) {
                write(" ")
            }
            write("{")
            openBraceWritten = true
            openBraceOwnLine = false
            nextLine()
            newLines = 0
            if nesting < 10 { nesting += 1 }
        }

        for ch in trimmed {
            // Heredoc opening: "<<" after white space.
            if quotes.isEmpty && heredoc == .closed && !heredocEscaped && space && last == "<" && ch == "<" {
                write(ch)
                heredoc = .opening
                space = false
                continue
            }
            if heredoc == .opening {
                if ch == "\n" {
                    if !heredocMarker.isEmpty
                        && CaddyfileLexer.isHeredocMarker(String(String.UnicodeScalarView(heredocMarker)))
                    {
                        heredoc = .opened
                    } else {
                        heredocMarker = []
                        heredoc = .closed
                        nextLine()
                        continue
                    }
                    write(ch)
                    continue
                }
                if CaddyfileLexer.isSpace(ch) {
                    heredocMarker = []
                    heredoc = .closed
                } else {
                    heredocMarker.append(ch)
                    write(ch)
                    continue
                }
            }
            if heredoc == .opened {
                heredocClosingMarker.append(ch)
                if heredocClosingMarker.count > heredocMarker.count + 1 {
                    heredocClosingMarker.removeFirst()
                }
                if CaddyfileLexer.isSpace(ch) && Array(heredocClosingMarker.dropLast()) == heredocMarker {
                    heredocMarker = []
                    heredocClosingMarker = []
                    heredoc = .closed
                } else {
                    write(ch)
                    if ch == "\n" { heredocClosingMarker.removeAll() }
                    continue
                }
            }

            if last == "<" && space { space = false }

            if comment {
                if ch == "\n" {
                    comment = false
                    space = true
                    nextLine()
                } else {
                    write(ch)
                }
                continue
            }

            if !escaped && ch == "\\" {
                if space {
                    write(" ")
                    space = false
                }
                write(ch)
                escaped = true
                continue
            }
            if escaped {
                if ch == "<" { heredocEscaped = true }
                write(ch)
                escaped = false
                continue
            }

            if ch == "`" {
                switch quotes {
                case "\"`": quotes = "\""
                case "`": quotes = ""
                case "\"": quotes = "\"`"
                default: quotes = "`"
                }
            }
            if quotes == "\"" {
                if ch == "\"" { quotes = "" }
                write(ch)
                continue
            }
            if ch == "\"" {
                switch quotes {
                case "": if space { quotes = "\"" }
                case "`\"": quotes = "`"
                case "\"`": quotes = ""
                default: break
                }
            }
            if quotes.contains("`") {
                if ch == "`" && space && !beginningOfLine { write(" ") }
                write(ch)
                space = false
                continue
            }

            if CaddyfileLexer.isSpace(ch) {
                finishToken()
                space = true
                heredocEscaped = false
                if ch == "\n" {
                    finishLine()
                    newLines += 1
                }
                continue
            }
            let spacePrior = space
            space = false

            if ch == "#" { comment = true }

            if openBrace && spacePrior && !openBraceWritten { flushOpenBrace() }

            if ch == "{" {
                // A brace right after a pending one (`{{`) opens a block too, as current Caddy formats it.
                if openBrace && !openBraceWritten { flushOpenBrace() }
                finishToken()
                openBrace = true
                openBraceSpace = spacePrior && !beginningOfLine
                openBraceOwnLine = newLines > 0
                if openBraceSpace && newLines == 0 { write(" ") }
                openBraceWritten = false
                if quotes == "`" {
                    write("{")
                    openBraceWritten = true
                    openBraceOwnLine = false
                }
                continue
            }
            if ch == "}" && (spacePrior || !openBrace) {
                finishToken()
                if quotes == "`" {
                    write("}")
                    continue
                }
                if last != "\n" { nextLine() }
                if nesting > 0 { nesting -= 1 }
                indent()
                write("}")
                newLines = 0
                continue
            }

            if newLines > 2 { newLines = 2 }
            for _ in 0..<newLines { nextLine() }
            newLines = 0

            if beginningOfLine { indent() }
            if nesting == 0 && last == "}" && beginningOfLine {
                nextLine()
                nextLine()
            }
            if !beginningOfLine && spacePrior { write(" ") }
            if openBrace && !openBraceWritten {
                write("{")
                openBraceWritten = true
            }
            if spacePrior && ch == "<" { space = true }
            currentToken.append(ch)
            write(ch)
            beginningOfLine = false
        }
        // A brace still pending at the end of input is written, not dropped.
        if openBrace && !openBraceWritten { flushOpenBrace() }
        var result = trimSpace(out)
        result.append("\n")
        return String(String.UnicodeScalarView(result))
    }

    private static func trimSpace(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var start = 0
        var end = s.count
        while start < end && CaddyfileLexer.isSpace(s[start]) { start += 1 }
        while end > start && CaddyfileLexer.isSpace(s[end - 1]) { end -= 1 }
        return Array(s[start..<end])
    }

    /// Whether `input` differs from its formatted form, and the first line where it does (Caddy's warning).
    public static func formattingDifference(filename: String, input: String) -> (line: Int, message: String)? {
        let normalized = input.replacingAll("\r\n", with: "\n")
        let formatted = format(normalized)
        if formatted == normalized { return nil }
        let a = Array(normalized.utf8), b = Array(formatted.utf8)
        var line = 1
        for (i, ch) in a.enumerated() {
            if i >= b.count || ch != b[i] { break }
            if ch == UInt8(ascii: "\n") { line += 1 }
        }
        return (line, "Caddyfile input is not formatted; run 'usher fmt --overwrite' to fix inconsistencies")
    }
}
