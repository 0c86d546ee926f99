import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// A server block: its keys (site addresses, or the snippet or named-route name) and its segments (directives
/// with their arguments and blocks).
public struct ServerBlock: Sendable {
    public var hasBraces = false
    public var keys: [CaddyfileToken] = []
    public var segments: [[CaddyfileToken]] = []
    /// A named route (`&(name) { ... }`), invoked with `invoke`.
    public var isNamedRoute = false

    public init() {}

    public var keyTexts: [String] { keys.map(\.text) }

    /// A dispenser over every segment whose directive is `name`.
    public func dispense(_ name: String) -> Dispenser {
        Dispenser(segments.filter { $0.first?.text == name }.flatMap { $0 })
    }
}

/// Replaces `{$VAR}` and `{$VAR:default}` with environment values, before tokenizing (as Caddy does).
public func replaceEnvironmentVariables(_ input: String) -> String {
    var bytes = Array(input.utf8)
    var offset = 0
    let open: [UInt8] = [UInt8(ascii: "{"), UInt8(ascii: "$")]
    func find(_ needle: [UInt8], from: Int) -> Int? {
        guard needle.count <= bytes.count else { return nil }
        var i = from
        while i + needle.count <= bytes.count {
            if bytes[i] == needle[0] && (needle.count == 1 || bytes[i + 1] == needle[1]) { return i }
            i += 1
        }
        return nil
    }
    while let begin = find(open, from: offset) {
        guard let end = find([UInt8(ascii: "}")], from: begin + 2) else { break }
        let inner = String(decoding: bytes[(begin + 2)..<end], as: UTF8.self)
        if inner.isEmpty {
            offset = end + 1
            continue
        }
        let parts = inner.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        var value = ProcessEnvironment.get(String(parts[0]))
        if value == nil && parts.count == 2 { value = String(parts[1]) }
        let replacement = Array((value ?? "").utf8)
        bytes.replaceSubrange(begin...end, with: replacement)
        offset = begin + replacement.count
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Parses a Caddyfile into server blocks: addresses, snippets, named routes, imports (of snippets and of files,
/// with arguments and blocks), as Caddy's parser does.
public struct CaddyfileParser {
    private let d: Dispenser
    private var block = ServerBlock()
    private var eof = false
    private var snippets: [String: [CaddyfileToken]] = [:]
    private var nesting = 0
    private var importGraph = ImportGraph()

    /// Parses `input`, read from `filename` (used for errors and to resolve relative imports).
    public static func parse(filename: String, input: String) throws(CaddyfileError) -> [ServerBlock] {
        let tokens = try CaddyfileLexer.tokenize(replaceEnvironmentVariables(input), filename: filename)
        var p = CaddyfileParser(d: Dispenser(tokens))
        return try p.parseAll()
    }

    private init(d: Dispenser) { self.d = d }

    private mutating func parseAll() throws(CaddyfileError) -> [ServerBlock] {
        var blocks: [ServerBlock] = []
        while d.next() {
            block = ServerBlock()
            try begin()
            if !block.keys.isEmpty || !block.segments.isEmpty { blocks.append(block) }
            if nesting > 0 { throw d.eofErr() }
        }
        return blocks
    }

    private mutating func begin() throws(CaddyfileError) {
        if d.tokens.isEmpty { return }
        try addresses()
        if eof { return }
        if let name = namedRouteName() {
            var nameToken = d.token
            nameToken.text = name
            block.keys = [nameToken]
            block.isNamedRoute = true
            let tokens = try blockTokens(retainCurlies: true)
            block.segments = [[nameToken] + tokens]
            return
        }
        if let name = snippetName() {
            if snippets[name] != nil { throw d.err("redeclaration of previously declared snippet \(name)") }
            var tokens = try blockTokens(retainCurlies: false)
            for i in tokens.indices { tokens[i].snippetName = name }
            snippets[name] = tokens
            block.keys = []
            return
        }
        try blockContents()
    }

    private mutating func addresses() throws(CaddyfileError) {
        var expectingAnother = false
        while true {
            var value = d.val
            var token = d.token
            if value.hasPrefix("@") {
                throw d.err(
                    "request matchers may not be defined globally, they must be in a site block; found \(value)")
            }
            if value == "import" && d.isNewLine() {
                try doImport(nesting: 0)
                continue
            }
            if token.isOpenBrace {
                if expectingAnother {
                    throw d.err("Expected another address but had '\(value)' - check for extra comma")
                }
                block.hasBraces = true
                break
            }
            if value.hasSuffix("{") && !token.wasQuoted {
                throw d.err(
                    "Site addresses cannot end with a curly brace: '\(value)' - put a space between the token and the brace"
                )
            }
            if !value.isEmpty {
                if value.hasSuffix(",") {
                    value.removeLast()
                    expectingAnother = true
                } else {
                    expectingAnother = false
                }
                if value.contains(",") {
                    throw d.err(
                        "Site addresses cannot contain a comma ',': '\(value)' - put a space after the comma to separate site addresses"
                    )
                }
                if !value.isEmpty {
                    token.text = value
                    block.keys.append(token)
                }
            }
            let hasNext = d.next()
            if expectingAnother && !hasNext { throw d.eofErr() }
            if !hasNext {
                eof = true
                break
            }
            if !expectingAnother && d.isNewLine() { break }
        }
    }

    private mutating func blockContents() throws(CaddyfileError) {
        let opened = d.token.isOpenBrace
        if !opened {
            if looksLikeGlobalOptionsAfterSnippets() {
                throw d.err(
                    "global options block must appear before import directives; move the global options block to the top of the Caddyfile"
                )
            }
            d.cursor -= 1
        }
        try directives()
        if opened {
            guard d.token.isCloseBrace else { throw d.syntaxErr("}") }
        }
    }

    private func looksLikeGlobalOptionsAfterSnippets() -> Bool {
        guard d.val == "import", !block.keys.isEmpty else { return false }
        return block.keys.allSatisfy { $0.text.hasPrefix("(") && $0.text.hasSuffix(")") }
    }

    private mutating func directives() throws(CaddyfileError) {
        while d.next() {
            if d.token.isCloseBrace { break }
            if d.val == "import" {
                try doImport(nesting: 1)
                d.cursor -= 1
                continue
            }
            try directive()
        }
    }

    private mutating func directive() throws(CaddyfileError) {
        var segment = [d.token]
        while d.next() {
            let t = d.token
            if t.isOpenBrace {
                nesting += 1
                if !d.isNextOnNewLine() { throw d.err("Unexpected next token after '{' on same line") }
                if d.isNewLine() {
                    throw d.err("Unexpected '{' on a new line; did you mean to place the '{' on the previous line?")
                }
            } else if t.text == "{}" && !t.wasQuoted {
                if d.isNextOnNewLine() { throw d.err("Unexpected '{}' at end of line") }
            } else if d.isNewLine() && nesting == 0 {
                d.cursor -= 1
                break
            } else if t.isCloseBrace && nesting > 0 {
                nesting -= 1
            } else if t.isCloseBrace && nesting == 0 {
                throw d.err("Unexpected '}' because no matching opening brace")
            } else if t.text == "import" && d.isNewLine() {
                try doImport(nesting: 1)
                d.cursor -= 1
                continue
            }
            segment.append(d.token)
        }
        block.segments.append(segment)
        if nesting > 0 { throw d.eofErr() }
    }

    private func namedRouteName() -> String? {
        guard block.keys.count == 1 else { return nil }
        let t = block.keys[0].text
        guard t.hasPrefix("&("), t.hasSuffix(")") else { return nil }
        return String(t.dropFirst(2).dropLast())
    }

    private func snippetName() -> String? {
        guard block.keys.count == 1 else { return nil }
        let t = block.keys[0].text
        guard t.hasPrefix("("), t.hasSuffix(")") else { return nil }
        return String(t.dropFirst().dropLast())
    }

    private mutating func blockTokens(retainCurlies: Bool) throws(CaddyfileError) -> [CaddyfileToken] {
        guard d.token.isOpenBrace else {
            if looksLikeGlobalOptionsAfterSnippets() {
                throw d.err(
                    "global options block must appear before import directives; move the global options block to the top of the Caddyfile"
                )
            }
            throw d.syntaxErr("{")
        }
        var level = 1
        var tokens: [CaddyfileToken] = []
        if retainCurlies { tokens.append(d.token) }
        while d.next() {
            if d.token.isCloseBrace {
                level -= 1
                if level == 0 {
                    if retainCurlies { tokens.append(d.token) }
                    break
                }
            }
            if d.token.isOpenBrace { level += 1 }
            tokens.append(d.tokens[d.cursor])
        }
        if level != 0 { throw d.syntaxErr("}") }
        return tokens
    }

    // MARK: - Imports

    private mutating func doImport(nesting initialNesting: Int) throws(CaddyfileError) {
        guard d.nextArg() else { throw d.argErr() }
        let pattern = d.val
        if pattern.isEmpty { throw d.err("Import requires a non-empty filepath") }
        let args = d.remainingArgs()
        let argsReplacer = makeArgsReplacer(args)

        var blockTokens: [CaddyfileToken] = []
        let n = d.nesting
        while d.nextBlock(n) { blockTokens.append(d.token) }

        var blockMapping: [String: [CaddyfileToken]] = [:]
        if !blockTokens.isEmpty {
            let bd = Dispenser(blockTokens)
            while bd.next() {
                let key = bd.val
                if bd.token.isOpenBrace { throw d.err("anonymous blocks are not supported") }
                var mapped = bd.remainingArgsAsTokens()
                let mn = bd.nesting
                while bd.nextBlock(mn) { mapped.append(bd.token) }
                blockMapping[key] = mapped
            }
        }

        let before = Array(d.tokens[..<(d.cursor - 1 - args.count - blockTokens.count)])
        let after = Array(d.tokens[(d.cursor + 1)...])

        var imported: [CaddyfileToken] = []
        var nodes: [String] = []
        if let snippet = snippets[pattern] {
            imported = snippet
            if let first = snippet.first { nodes.append("\(first.file):\(first.snippetName)") }
        } else {
            let absFile = absolutePath(d.file)
            let globPattern = pattern.hasPrefix("/") ? pattern : joinPath(directoryOf(absFile), pattern)
            if globPattern.filter({ $0 == "*" }).count > 1 || globPattern.filter({ $0 == "?" }).count > 1
                || (globPattern.contains("[") && globPattern.contains("]"))
            {
                throw d.err("Glob pattern may only contain one wildcard (*), but has others: \(globPattern)")
            }
            var matches = globFiles(globPattern)
            if matches.isEmpty {
                if !globPattern.contains(where: { "*?[]".contains($0) }) {
                    throw d.err("File to import not found: \(pattern)")
                }
            } else if let lastSegment = globPattern.split(separator: "/").last, lastSegment.hasPrefix("*") {
                matches = matches.filter { !($0.split(separator: "/").last ?? "").hasPrefix(".") }
            }
            for file in matches {
                imported += try singleImport(file)
            }
            nodes = matches
        }

        var nodeName = d.file
        if !d.token.snippetName.isEmpty { nodeName += ":\(d.token.snippetName)" }
        importGraph.addNode(nodeName)
        importGraph.addNodes(nodes)
        do {
            try importGraph.addEdges(from: nodeName, to: nodes)
        } catch {
            importGraph.removeNodes(nodes)
            // Caddy's message has no position; ours names the import that closes the cycle.
            throw d.err(error.description)
        }

        var copied: [CaddyfileToken] = []
        copied.reserveCapacity(imported.count)
        var maybeSnippet = false, maybeSnippetID = false
        var index = 0
        var level = initialNesting
        for (i, original) in imported.enumerated() {
            var token = original
            if !token.snippetName.isEmpty {
                token.imports.append("\(d.file):\(d.line) (import \(token.snippetName))")
            } else {
                token.imports.append("\(d.file):\(d.line) (import)")
            }
            // Snippets defined inside imported files are passed through untouched.
            if !maybeSnippet && level == 0 {
                if i == 0 || tokensOnDifferentLines(copied[copied.count - 1], token) {
                    index = 0
                } else {
                    index += 1
                }
                if index == 0 && token.text.count >= 3 && token.text.hasPrefix("(") && token.text.hasSuffix(")") {
                    maybeSnippetID = true
                }
            }
            if token.isOpenBrace {
                level += 1
                if index == 1 && maybeSnippetID && level == 1 {
                    maybeSnippet = true
                    maybeSnippetID = false
                }
            } else if token.isCloseBrace {
                level -= 1
                if level == 0 && maybeSnippet { maybeSnippet = false }
            }

            var blockReplacement: [CaddyfileToken]?
            if token.text == "{block}" {
                blockReplacement = blockTokens
            } else if token.text.hasPrefix("{blocks."), token.text.hasSuffix("}") {
                let key = String(token.text.dropFirst("{blocks.".count).dropLast())
                blockReplacement = blockMapping[key] ?? []
            }
            if let blockReplacement {
                if maybeSnippet { copied.append(token) } else { copied += blockReplacement }
                continue
            }
            if maybeSnippet {
                copied.append(token)
                continue
            }
            if let (start, end) = parseVariadic(token, argCount: args.count) {
                for arg in args[start..<end] {
                    var t = token
                    t.text = arg
                    copied.append(t)
                }
            } else {
                token.text = argsReplacer.replaceKnown(token.text)
                copied.append(token)
            }
        }
        d.replaceTokens(before + copied + after)
        d.cursor -= args.count + blockTokens.count + 1
    }

    private func singleImport(_ file: String) throws(CaddyfileError) -> [CaddyfileToken] {
        var st = stat()
        guard stat(file, &st) == 0 else {
            throw d.err("Could not import \(file): \(String(cString: strerror(errno)))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw d.err("Could not import \(file): is a directory") }
        let bytes: [UInt8]
        do { bytes = try readWholeFile(file) } catch {
            throw d.err("Could not read imported file \(file): \(error.reason)")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if text.allSatisfy({ $0.isWhitespace }) { return [] }
        var tokens: [CaddyfileToken]
        do {
            tokens = try CaddyfileLexer.tokenize(replaceEnvironmentVariables(text), filename: file)
        } catch {
            throw d.err("Could not read tokens while importing \(file): \(error)")
        }
        let abs = absolutePath(file)
        for i in tokens.indices { tokens[i].file = abs }
        return tokens
    }
}

/// `{args[a:b]}` as a whole token: the range of import arguments it expands to.
func parseVariadic(_ token: CaddyfileToken, argCount: Int) -> (Int, Int)? {
    let t = token.text
    guard t.hasPrefix("{args["), t.hasSuffix("]}") else { return nil }
    let range = String(t.dropFirst(6).dropLast(2))
    guard !range.isEmpty, let colon = range.firstIndex(of: ":") else { return nil }
    let start = String(range[..<colon])
    let end = String(range[range.index(after: colon)...])
    if start.contains("}") || end.contains("{") { return nil }
    var s = 0, e = argCount
    if !start.isEmpty {
        guard let v = Int(start) else { return nil }
        s = v
    }
    if !end.isEmpty {
        guard let v = Int(end) else { return nil }
        e = v
    }
    guard s >= 0, s <= e, e <= argCount else { return nil }
    return (s, e)
}

/// Replaces `{args[N]}` (and the deprecated `{args.N}`) with import arguments.
func makeArgsReplacer(_ args: [String]) -> Replacer {
    struct ArgsProvider: PlaceholderProvider {
        let args: [String]
        func placeholderValue(_ key: String) -> String? {
            if key.hasPrefix("args.") {
                guard let i = Int(key.dropFirst(5)), i >= 0, i < args.count else { return nil }
                return args[i]
            }
            if key.hasPrefix("args["), key.hasSuffix("]") {
                let inner = key.dropFirst(5).dropLast()
                if inner.contains(":") { return nil }
                guard let i = Int(inner), i >= 0, i < args.count else { return nil }
                return args[i]
            }
            return nil
        }
    }
    let r = Replacer(includeGlobals: false)
    r.add(ArgsProvider(args: args))
    return r
}

/// Which files import which, to refuse import cycles.
struct ImportGraph {
    var nodes: Set<String> = []
    var edges: [String: [String]] = [:]

    mutating func addNode(_ n: String) { nodes.insert(n) }
    mutating func addNodes(_ ns: [String]) { for n in ns { nodes.insert(n) } }
    mutating func removeNodes(_ ns: [String]) { for n in ns { nodes.remove(n) } }

    mutating func addEdges(from: String, to: [String]) throws(CaddyfileError) {
        for t in to { try addEdge(from: from, to: t) }
    }

    mutating func addEdge(from: String, to: String) throws(CaddyfileError) {
        guard nodes.contains(from), nodes.contains(to) else { throw CaddyfileError("one of the nodes does not exist") }
        if willCycle(from: to, to: from) { throw CaddyfileError("a cycle of imports exists between \(from) and \(to)") }
        if edges[from]?.contains(to) == true { return }
        edges[from, default: []].append(to)
    }

    func willCycle(from: String, to: String) -> Bool {
        var seen: Set<String> = []
        func visit(_ n: String) {
            if seen.insert(n).inserted {
                for v in edges[n] ?? [] { visit(v) }
            }
        }
        for v in edges[from] ?? [] { visit(v) }
        return seen.contains(to)
    }
}

// MARK: - Files

/// Go's `filepath.Abs` (against the working directory) followed by `Clean`.
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return PathUtil.clean(path) }
    var buf = [CChar](repeating: 0, count: 4096)
    let cwd =
        getcwd(&buf, buf.count) != nil
        ? String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/"
    return PathUtil.clean(cwd + "/" + path)
}

func directoryOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    if slash == path.startIndex { return "/" }
    return String(path[..<slash])
}

func joinPath(_ a: String, _ b: String) -> String { PathUtil.clean(a + "/" + b) }

/// Files matching a glob pattern, sorted (`filepath.Glob`).
func globFiles(_ pattern: String) -> [String] {
    var g = glob_t()
    defer { globfree(&g) }
    guard glob(pattern, 0, nil, &g) == 0 else { return [] }
    var out: [String] = []
    for i in 0..<Int(g.gl_pathc) {
        if let p = g.gl_pathv[i] { out.append(String(cString: p)) }
    }
    return out
}
