import UsherCore

/// Walks a list of tokens for a directive's parser: arguments on the same line, blocks, nesting, and errors that
/// name the file and line (Caddy's `Dispenser`).
public final class Dispenser {
    public private(set) var tokens: [CaddyfileToken]
    public var cursor: Int
    public private(set) var nesting = 0
    private var context: [String: String] = [:]

    public init(_ tokens: [CaddyfileToken]) {
        self.tokens = tokens
        self.cursor = -1
    }

    /// A dispenser over `input` tokenized as file `Testfile`, for tests.
    public static func forTesting(_ input: String) throws -> Dispenser {
        Dispenser(try CaddyfileLexer.tokenize(replaceEnvironmentVariables(input), filename: "Testfile"))
    }

    /// Moves to the next token, on any line.
    @discardableResult
    public func next() -> Bool {
        if cursor < tokens.count - 1 {
            cursor += 1
            return true
        }
        return false
    }

    /// Moves back one token.
    @discardableResult
    public func prev() -> Bool {
        if cursor > -1 {
            cursor -= 1
            return cursor > -1
        }
        return false
    }

    /// Moves to the next token if it is on the same line and is not an opening brace.
    public func nextArg() -> Bool {
        guard nextOnSameLine() else { return false }
        if token.isOpenBrace {
            cursor -= 1
            return false
        }
        return true
    }

    func nextOnSameLine() -> Bool {
        if cursor < 0 {
            cursor += 1
            return true
        }
        if cursor >= tokens.count - 1 { return false }
        if !tokensOnDifferentLines(tokens[cursor], tokens[cursor + 1]) {
            cursor += 1
            return true
        }
        return false
    }

    /// Moves to the next token if it is on a new line.
    public func nextLine() -> Bool {
        if cursor < 0 {
            cursor += 1
            return true
        }
        if cursor >= tokens.count - 1 { return false }
        if tokensOnDifferentLines(tokens[cursor], tokens[cursor + 1]) {
            cursor += 1
            return true
        }
        return false
    }

    /// Iterates the lines of a block opened on the current line; pass the nesting level from before the block.
    public func nextBlock(_ initialNesting: Int) -> Bool {
        if nesting > initialNesting {
            guard next() else { return false }
            if token.isCloseBrace && !nextOnSameLine() {
                nesting -= 1
            } else if token.isOpenBrace && !nextOnSameLine() {
                nesting += 1
            }
            return nesting > initialNesting
        }
        guard nextOnSameLine() else { return false }
        guard token.isOpenBrace else {
            cursor -= 1
            return false
        }
        next()
        if token.isCloseBrace { return false }
        nesting += 1
        return true
    }

    /// The current token's text.
    public var val: String {
        guard cursor >= 0, cursor < tokens.count else { return "" }
        return tokens[cursor].text
    }

    /// The current token's text with its quotes, as written.
    public var valRaw: String {
        guard cursor >= 0, cursor < tokens.count else { return "" }
        let t = tokens[cursor]
        if let q = t.quote, q != "<" { return "\(q)\(t.text)\(q)" }
        return t.text
    }

    /// The current token as a JSON scalar: quoted text stays a string; otherwise an integer, a float, a boolean
    /// or a string, in that order (Caddy's `ScalarVal`).
    public var scalarVal: CaddyfileScalar {
        guard cursor >= 0, cursor < tokens.count else { return .string("") }
        let t = tokens[cursor]
        if t.wasQuoted { return .string(t.text) }
        if let i = Int(t.text) { return .int(i) }
        if let d = goParseFloat(t.text) { return .double(d, t.text) }
        if let b = goParseBool(t.text) { return .bool(b) }
        return .string(t.text)
    }

    public var line: Int {
        guard cursor >= 0, cursor < tokens.count else { return 0 }
        return tokens[cursor].line
    }

    public var file: String {
        guard cursor >= 0, cursor < tokens.count else { return "" }
        return tokens[cursor].file
    }

    public var token: CaddyfileToken {
        guard cursor >= 0, cursor < tokens.count else { return CaddyfileToken() }
        return tokens[cursor]
    }

    /// Reads the next arguments into an array of the given size; `nil` if there are fewer.
    public func args(_ count: Int) -> [String]? {
        var out: [String] = []
        for _ in 0..<count {
            guard nextArg() else { return nil }
            out.append(val)
        }
        return out
    }

    /// Like ``args(_:)``, but also requires that no further argument follows.
    public func allArgs(_ count: Int) -> [String]? {
        guard let a = args(count) else { return nil }
        if nextArg() {
            prev()
            return nil
        }
        return a
    }

    public func countRemainingArgs() -> Int {
        var count = 0
        while nextArg() { count += 1 }
        for _ in 0..<count { prev() }
        return count
    }

    public func remainingArgs() -> [String] {
        var out: [String] = []
        while nextArg() { out.append(val) }
        return out
    }

    public func remainingArgsRaw() -> [String] {
        var out: [String] = []
        while nextArg() { out.append(valRaw) }
        return out
    }

    public func remainingArgsAsTokens() -> [CaddyfileToken] {
        var out: [CaddyfileToken] = []
        while nextArg() { out.append(token) }
        return out
    }

    /// A dispenser over the current segment: this token, its arguments and its block.
    public func newFromNextSegment() -> Dispenser { Dispenser(nextSegment()) }

    /// The current token, its arguments, and its block (braces included).
    public func nextSegment() -> [CaddyfileToken] {
        var tkns = [token]
        while nextArg() { tkns.append(token) }
        var openedBlock = false
        let n = nesting
        while nextBlock(n) {
            if !openedBlock {
                prev()
                tkns.append(token)
                next()
                openedBlock = true
            }
            tkns.append(token)
        }
        if openedBlock { tkns.append(token) }
        return tkns
    }

    public func reset() {
        cursor = -1
        nesting = 0
    }

    /// Removes the current token; the cursor moves back one.
    @discardableResult
    public func delete() -> [CaddyfileToken] {
        if cursor >= 0 && cursor <= tokens.count - 1 {
            tokens.remove(at: cursor)
            cursor -= 1
        }
        return tokens
    }

    /// Removes the `amount` tokens ending at the cursor.
    @discardableResult
    public func deleteN(_ amount: Int) -> [CaddyfileToken] {
        if amount > 0 && cursor >= amount - 1 && cursor <= tokens.count - 1 {
            tokens.removeSubrange((cursor - (amount - 1))...cursor)
            cursor -= amount
        }
        return tokens
    }

    public func setContext(_ key: String, _ value: String) { context[key] = value }
    public func context(_ key: String) -> String { context[key] ?? "" }

    /// Whether the current token starts a line.
    public func isNewLine() -> Bool {
        if cursor < 1 { return true }
        if cursor > tokens.count - 1 { return false }
        return tokensOnDifferentLines(tokens[cursor - 1], tokens[cursor])
    }

    /// Whether the token after the current one is on a new line.
    public func isNextOnNewLine() -> Bool {
        if cursor < 0 { return false }
        if cursor >= tokens.count - 1 { return true }
        return tokensOnDifferentLines(tokens[cursor], tokens[cursor + 1])
    }

    var currentTokenIsOpenBrace: Bool { token.isOpenBrace }
    var currentTokenIsCloseBrace: Bool { token.isCloseBrace }

    func replaceTokens(_ new: [CaddyfileToken]) { tokens = new }

    /// Reads the next argument on the line into `value`, which must still be empty: a subdirective given twice
    /// fails with `duplicateMessage`, a missing argument with the usual argument error.
    public func setArgOnce(_ value: inout String, duplicateMessage: String) throws {
        guard nextArg() else { throw argErr() }
        if !value.isEmpty { throw err(duplicateMessage) }
        value = val
    }

    // MARK: - Errors

    public func argErr() -> CaddyfileError {
        if val == "{" { return err("unexpected token '{', expecting argument") }
        return err("wrong argument count or unexpected line ending after '\(val)'")
    }

    public func syntaxErr(_ expected: String) -> CaddyfileError {
        CaddyfileError(
            "syntax error: unexpected token '\(val)', expecting '\(expected)', at \(file):\(line) import chain: ['\(token.imports.joined(separator: "','"))']"
        )
    }

    public func eofErr() -> CaddyfileError { err("unexpected EOF") }

    /// An error with the current position appended (`..., at Caddyfile:12`).
    public func err(_ message: String) -> CaddyfileError {
        if !token.imports.isEmpty {
            return CaddyfileError(
                "\(message), at \(file):\(line) import chain ['\(token.imports.joined(separator: "','"))']")
        }
        return CaddyfileError("\(message), at \(file):\(line)")
    }

    /// Wraps another error with the current position.
    public func wrap(_ error: any Error) -> CaddyfileError {
        if let c = error as? CaddyfileError, c.description.contains(", at ") { return c }
        return err("\(error)")
    }
}

/// A value as `Dispenser.scalarVal` reads it.
public enum CaddyfileScalar: Equatable, Sendable {
    case string(String)
    case int(Int)
    /// A float, with its text (Go prints floats in their shortest form).
    case double(Double, String)
    case bool(Bool)
}
