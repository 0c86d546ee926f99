// Go's text/template: the parse tree and the parser. `define`d and `block` templates go into the set the
// parse returns, keyed by name, beside the main one.

/// A node of a parsed template.
indirect enum TemplateNode {
    case text(String)
    /// `{{pipeline}}`: printed unless it declares or assigns variables.
    case action(line: Int, TemplatePipeline)
    case conditional(kind: BranchKind, line: Int, TemplatePipeline, then: [TemplateNode], otherwise: [TemplateNode]?)
    /// `{{template "name" pipeline}}`.
    case call(line: Int, name: String, TemplatePipeline?)
    case breakLoop(line: Int)
    case continueLoop(line: Int)

    enum BranchKind { case ifBranch, rangeLoop, withScope }
}

/// `$x := cmd | cmd2 arg`.
struct TemplatePipeline {
    var declarations: [String] = []
    /// `=` rather than `:=`.
    var assigns = false
    var commands: [[TemplateArgument]] = []
    /// Where each command is, and each of its arguments (parallel to `commands`), for error messages.
    var commandSpots: [TemplateSpot] = []
    var argumentSpots: [[TemplateSpot]] = []

    /// Go's `PipeNode.String` (without declarations).
    var text: String { commandSpots.map(\.text).joined(separator: " | ") }
}

/// A node's place and Go's printing of it: `template: name:line:col: executing "x" at <text>: …`.
struct TemplateSpot {
    var line: Int
    var col: Int
    var text: String
}

/// An operand of a command.
indirect enum TemplateArgument {
    /// `.A.B` (on dot); an empty list is dot itself.
    case field([String])
    /// `$x.A.B`.
    case variable(String, [String])
    /// A function name.
    case function(String)
    /// `(pipeline).A.B`.
    case pipeline(TemplatePipeline, [String])
    case constant(TemplateValue)
}

/// Parsed templates by name: the main one under its file's name, and each `define`/`block`.
struct TemplateSet {
    var templates: [String: [TemplateNode]] = [:]
}

struct TemplateParser {
    let name: String
    private var tokens: [TemplateToken]
    private var i = 0
    private(set) var set = TemplateSet()
    /// Names `parse` may call: the functions known at parse time (Go checks them then).
    let functions: Set<String>
    private var loopDepth = 0
    /// Nested lists and parentheses: bounded, so a text cannot exhaust the stack (Go allows 10,000 parentheses
    /// on a growable stack; a page from an upstream could otherwise crash the server).
    private var nesting = 0
    static let maxNesting = 1000

    init(name: String, tokens: [TemplateToken], functions: Set<String>) {
        self.name = name
        self.tokens = tokens
        self.functions = functions
    }

    /// Parses the whole input; the main template is stored under `name`.
    mutating func parse() throws -> TemplateSet {
        let (list, end) = try parseList(stopAt: [])
        if let end { throw TemplateError(name, end.line, "unexpected {{\(end.value)}}") }
        // A main template of only spaces does not replace one a `define` gave the same name.
        if set.templates[name] == nil || !list.isEmpty { set.templates[name] = list }
        return set
    }

    private var peek: TemplateToken { tokens[i] }

    private mutating func next() -> TemplateToken {
        let t = tokens[i]
        if i < tokens.count - 1 { i += 1 }
        return t
    }

    private mutating func skipSpace() {
        while peek.kind == .space { i += 1 }
    }

    private mutating func nextNonSpace() -> TemplateToken {
        skipSpace()
        return next()
    }

    /// Nodes up to an `{{end}}`/`{{else}}` (returned as the keyword token, positioned after it) or the input's end.
    private mutating func parseList(stopAt: Set<String>) throws -> ([TemplateNode], TemplateToken?) {
        nesting += 1
        defer { nesting -= 1 }
        if nesting > Self.maxNesting { throw TemplateError(name, peek.line, "max nesting depth exceeded") }
        var nodes: [TemplateNode] = []
        while true {
            let t = next()
            switch t.kind {
            case .eof:
                if !stopAt.isEmpty { throw TemplateError(name, t.line, "unexpected EOF") }
                return (nodes, nil)
            case .text:
                nodes.append(.text(t.value))
            case .leftDelim:
                skipSpace()
                let k = peek
                if k.kind == .keyword {
                    _ = next()
                    switch k.value {
                    case "end", "else":
                        guard stopAt.contains(k.value) else {
                            throw TemplateError(name, k.line, "unexpected {{\(k.value)}}")
                        }
                        return (nodes, k)
                    case "if": nodes.append(try parseBranch(.ifBranch, line: k.line))
                    case "range": nodes.append(try parseBranch(.rangeLoop, line: k.line))
                    case "with": nodes.append(try parseBranch(.withScope, line: k.line))
                    case "template": nodes.append(try parseTemplateCall(line: k.line))
                    case "define": try parseDefine(line: k.line)
                    case "block":
                        let call = try parseTemplateCall(line: k.line, block: true)
                        nodes.append(call)
                    case "break", "continue":
                        guard loopDepth > 0 else {
                            throw TemplateError(name, k.line, "{{\(k.value)}} outside {{range}}")
                        }
                        try expectRightDelim()
                        nodes.append(k.value == "break" ? .breakLoop(line: k.line) : .continueLoop(line: k.line))
                    default:
                        throw TemplateError(name, k.line, "unexpected keyword \(k.value)")
                    }
                } else {
                    let p = try parsePipeline(context: "command", allowDeclarations: true)
                    nodes.append(.action(line: k.line, p))
                }
            default:
                throw TemplateError(name, t.line, "unexpected \(t.value)")
            }
        }
    }

    private mutating func expectRightDelim() throws {
        let t = nextNonSpace()
        guard t.kind == .rightDelim else { throw TemplateError(name, t.line, "unexpected \"\(t.value)\" in end") }
    }

    private mutating func parseBranch(_ kind: TemplateNode.BranchKind, line: Int) throws -> TemplateNode {
        let word = kind == .ifBranch ? "if" : kind == .rangeLoop ? "range" : "with"
        let pipe = try parsePipeline(context: word, allowDeclarations: true)
        if kind == .rangeLoop { loopDepth += 1 }
        let (then, stop) = try parseList(stopAt: ["end", "else"])
        if kind == .rangeLoop { loopDepth -= 1 }
        var otherwise: [TemplateNode]?
        if stop?.value == "else" {
            skipSpace()
            // `{{else if ...}}` / `{{else with ...}}`: the rest is a branch of its own inside the else list.
            if peek.kind == .keyword && (peek.value == "if" || peek.value == "with") {
                let k = next()
                otherwise = [try parseBranch(k.value == "if" ? .ifBranch : .withScope, line: k.line)]
                return .conditional(kind: kind, line: line, pipe, then: then, otherwise: otherwise)
            }
            try expectRightDelim()
            let (elseList, _) = try parseList(stopAt: ["end"])
            otherwise = elseList
        }
        try expectRightDelim()
        return .conditional(kind: kind, line: line, pipe, then: then, otherwise: otherwise)
    }

    private mutating func parseTemplateCall(line: Int, block: Bool = false) throws -> TemplateNode {
        let t = nextNonSpace()
        let word = block ? "block" : "template"
        guard t.kind == .string || t.kind == .rawString, let called = TemplateValue.unquote(t.value) else {
            throw TemplateError(name, t.line, "unexpected \"\(t.value)\" in \(word) clause")
        }
        skipSpace()
        var pipe: TemplatePipeline?
        if peek.kind != .rightDelim {
            pipe = try parsePipeline(context: word, allowDeclarations: false)
        } else {
            _ = next()
        }
        if block {
            let (body, _) = try parseList(stopAt: ["end"])
            try expectRightDelim()
            set.templates[called] = body
        }
        return .call(line: line, name: called, pipe)
    }

    private mutating func parseDefine(line: Int) throws {
        let t = nextNonSpace()
        guard t.kind == .string || t.kind == .rawString, let defined = TemplateValue.unquote(t.value) else {
            throw TemplateError(name, t.line, "unexpected \"\(t.value)\" in define clause")
        }
        try expectRightDelim()
        let (body, _) = try parseList(stopAt: ["end"])
        try expectRightDelim()
        set.templates[defined] = body
    }

    /// A pipeline up to the closing delimiter (or `)` when `context` is "parenthesized pipeline").
    private mutating func parsePipeline(context: String, allowDeclarations: Bool) throws -> TemplatePipeline {
        var pipe = TemplatePipeline()
        skipSpace()
        if allowDeclarations && peek.kind == .variable {
            // `$x :=`, `$i, $e :=` (range), `$x =`.
            let save = i
            var names = [next().value]
            skipSpace()
            if peek.kind == .comma {
                _ = next()
                skipSpace()
                if peek.kind == .variable { names.append(next().value) }
                skipSpace()
            }
            if peek.kind == .declare || peek.kind == .assign {
                pipe.assigns = next().kind == .assign
                pipe.declarations = names
            } else {
                i = save
            }
        }
        let closing: TemplateToken.Kind = context == "parenthesized pipeline" ? .rightParen : .rightDelim
        while true {
            skipSpace()
            let t = peek
            if t.kind == closing {
                _ = next()
                break
            }
            if t.kind == .eof || t.kind == .rightDelim || t.kind == .rightParen {
                throw TemplateError(name, t.line, "unclosed \(context)")
            }
            var command: [TemplateArgument] = []
            var spots: [TemplateSpot] = []
            while true {
                skipSpace()
                let a = peek
                if a.kind == .pipe || a.kind == closing || a.kind == .rightDelim || a.kind == .rightParen
                    || a.kind == .eof
                {
                    break
                }
                let (operand, spot) = try parseOperand()
                command.append(operand)
                spots.append(spot)
            }
            if command.isEmpty { throw TemplateError(name, t.line, "missing command") }
            pipe.commands.append(command)
            pipe.argumentSpots.append(spots)
            pipe.commandSpots.append(
                TemplateSpot(line: t.line, col: t.col, text: spots.map(\.text).joined(separator: " ")))
            skipSpace()
            if peek.kind == .pipe {
                _ = next()
                continue
            }
        }
        if pipe.commands.isEmpty { throw TemplateError(name, peek.line, "missing value for \(context)") }
        return pipe
    }

    private mutating func fieldChain() -> [String] {
        var fields: [String] = []
        while peek.kind == .field { fields.append(String(next().value.dropFirst())) }
        return fields
    }

    /// An operand and its spot: a chain (`.A.B`, `$x.A`, `(p).A`) is placed at its first chained field, as Go's.
    private mutating func parseOperand() throws -> (TemplateArgument, TemplateSpot) {
        let t = next()
        let chainStart = peek
        func spot(_ text: String, chained: [String]) -> TemplateSpot {
            let at = chained.isEmpty ? t : chainStart
            return TemplateSpot(line: at.line, col: at.col, text: text + chained.map { "." + $0 }.joined())
        }
        switch t.kind {
        case .dot: return (.field([]), spot(".", chained: []))
        case .field:
            let chain = fieldChain()
            let s = chain.isEmpty ? spot(t.value, chained: []) : spot(t.value, chained: chain)
            return (.field([String(t.value.dropFirst())] + chain), s)
        case .variable:
            let chain = fieldChain()
            return (.variable(t.value, chain), spot(t.value, chained: chain))
        case .leftParen:
            nesting += 1
            defer { nesting -= 1 }
            if nesting > Self.maxNesting { throw TemplateError(name, t.line, "max expression depth exceeded") }
            let p = try parsePipeline(context: "parenthesized pipeline", allowDeclarations: false)
            let chainAt = peek
            let chain = fieldChain()
            let at = chain.isEmpty ? t : chainAt
            let text = "(" + p.text + ")" + chain.map { "." + $0 }.joined()
            return (.pipeline(p, chain), TemplateSpot(line: at.line, col: at.col, text: text))
        default:
            return (try parseSimpleOperand(t), TemplateSpot(line: t.line, col: t.col, text: t.value))
        }
    }

    private mutating func parseSimpleOperand(_ t: TemplateToken) throws -> TemplateArgument {
        switch t.kind {
        case .identifier:
            guard functions.contains(t.value) else {
                throw TemplateError(name, t.line, "function \"\(t.value)\" not defined")
            }
            return .function(t.value)
        case .string, .rawString:
            guard let s = TemplateValue.unquote(t.value) else {
                throw TemplateError(name, t.line, "bad string \(t.value)")
            }
            return .constant(.string(s))
        case .char:
            guard let s = TemplateValue.unquote("\"" + t.value.dropFirst().dropLast() + "\""),
                let u = s.unicodeScalars.first
            else { throw TemplateError(name, t.line, "malformed character constant: \(t.value)") }
            return .constant(.int(Int(u.value)))
        case .number:
            guard let v = TemplateValue.number(t.value) else {
                throw TemplateError(name, t.line, "bad number syntax: \"\(t.value)\"")
            }
            return .constant(v)
        case .bool: return .constant(.bool(t.value == "true"))
        case .nil_: return .constant(.null)
        default:
            throw TemplateError(name, t.line, "unexpected \"\(t.value)\" in operand")
        }
    }
}
