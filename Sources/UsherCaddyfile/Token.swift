/// A Caddyfile token: its text and where it came from.
public struct CaddyfileToken: Sendable, Equatable {
    /// The file the token was read from.
    public var file: String
    /// The import chain that brought the token in (`Caddyfile:3 (import snippet)`), innermost last.
    public var imports: [String]
    public var line: Int
    public var text: String
    /// The quote that enclosed the token: `"`, `` ` ``, `<` for a heredoc, or `nil`.
    public var quote: Character?
    public var heredocMarker: String
    /// The snippet the token was defined in, if any.
    public var snippetName: String

    public init(
        file: String = "", imports: [String] = [], line: Int = 0, text: String = "", quote: Character? = nil,
        heredocMarker: String = "", snippetName: String = ""
    ) {
        self.file = file
        self.imports = imports
        self.line = line
        self.text = text
        self.quote = quote
        self.heredocMarker = heredocMarker
        self.snippetName = snippetName
    }

    /// Whether the token was quoted (or was a heredoc).
    public var wasQuoted: Bool { quote != nil }

    public var isOpenBrace: Bool { text == "{" && quote == nil }
    public var isCloseBrace: Bool { text == "}" && quote == nil }

    /// Line breaks inside the token, counting a heredoc's opening and closing lines.
    var lineBreaks: Int {
        var n = 0
        for c in text.unicodeScalars where c == "\n" { n += 1 }
        if quote == "<" { n += 2 }
        return n
    }
}

/// Whether `next` starts a new line relative to `current` (different file or import chain, or a later line).
func tokensOnDifferentLines(_ current: CaddyfileToken, _ next: CaddyfileToken) -> Bool {
    if current.file != next.file { return true }
    if current.imports != next.imports { return true }
    return current.line + current.lineBreaks < next.line
}

/// A Caddyfile syntax or usage error; its message ends with the position (`, at Caddyfile:12`), as Caddy's do.
public struct CaddyfileError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension CaddyfileError {
    /// `message` with the token's position appended, as the dispenser words it (`..., at Caddyfile:12`).
    public static func at(_ token: CaddyfileToken, _ message: String) -> CaddyfileError {
        if !token.imports.isEmpty {
            return CaddyfileError(
                "\(message), at \(token.file):\(token.line) import chain ['\(token.imports.joined(separator: "','"))']")
        }
        return CaddyfileError("\(message), at \(token.file):\(token.line)")
    }
}
