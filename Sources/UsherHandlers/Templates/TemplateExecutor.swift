import Foundation
import UsherCore

/// A function callable from a template: its arguments already evaluated (the piped value last).
public typealias TemplateFunction = @Sendable ([TemplateValue]) throws -> TemplateValue

/// A function that needs the run it is called from (the request a page is rendered for, its files).
public typealias ContextualTemplateFunction = @Sendable (TemplateEnvironment, [TemplateValue]) throws -> TemplateValue

/// What one run of a template shares with the contextual functions it calls; subclassed by the host.
open class TemplateEnvironment {
    /// Templates defined while running (Caddy's `import`), found by `{{template}}` after the parsed ones.
    var definitions: [String: [TemplateNode]] = [:]

    public init() {}

    /// Adds `other`'s `define`d templates to this run.
    public func define(from other: GoTemplate) {
        for (k, v) in other.set.templates where k != other.name { definitions[k] = v }
    }
}

/// An error a template function throws that should leave the template as it is, not be wrapped in a
/// `template: name:line:` message (an HTTP error a page asks for).
public protocol TemplatePassthroughError: Error {}

/// A template parsed once, run many times: Go's text/template with its built-in functions plus `functions`.
public struct GoTemplate {
    public let name: String
    let set: TemplateSet
    let functions: [String: TemplateFunction]
    let contextual: [String: ContextualTemplateFunction]

    /// Names the executor evaluates itself (short-circuiting `and`/`or`) or provides.
    static let builtinNames: Set<String> = [
        "and", "or", "not", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge", "print", "printf",
        "println", "html", "js", "urlquery", "call",
    ]

    /// Parses `text`; errors are `template: name:line: message`, as Go's.
    public init(
        name: String, text: String, delimiters: (String, String) = ("{{", "}}"),
        functions: [String: TemplateFunction] = [:], contextual: [String: ContextualTemplateFunction] = [:],
        knownNames: Set<String>? = nil
    ) throws {
        self.name = name
        var lexer = TemplateLexer(name: name, text: text, left: delimiters.0, right: delimiters.1)
        let tokens = try lexer.run()
        var parser = TemplateParser(
            name: name, tokens: tokens,
            functions: knownNames ?? Self.builtinNames.union(functions.keys).union(contextual.keys))
        set = try parser.parse()
        self.functions = functions
        self.contextual = contextual
    }

    /// The names of the templates this text defines (itself included).
    public var definedNames: [String] { self.set.templates.keys.sorted() }

    /// Runs the template named `entry` (default: the main one) on `data`.
    public func execute(
        _ data: TemplateValue, entry: String? = nil, environment: TemplateEnvironment = TemplateEnvironment()
    ) throws -> String {
        var state = TemplateState(template: self, dot: data, environment: environment)
        guard let list = set.templates[entry ?? name] else {
            throw TemplateError(name, 0, "no template \"\(entry ?? name)\"")
        }
        try state.walk(list, dot: data)
        return state.out
    }

    /// This template with `other`'s definitions added (Caddy's `import`).
    public func adding(_ other: GoTemplate) -> GoTemplate {
        var merged = self
        var s = set
        for (k, v) in other.set.templates where k != other.name { s.templates[k] = v }
        merged = GoTemplate(name: name, set: s, functions: functions, contextual: contextual)
        return merged
    }

    init(
        name: String, set: TemplateSet, functions: [String: TemplateFunction],
        contextual: [String: ContextualTemplateFunction]
    ) {
        self.name = name
        self.set = set
        self.functions = functions
        self.contextual = contextual
    }
}

/// Control flow out of a range body.
private enum LoopSignal: Error {
    case breakLoop, continueLoop
}

struct TemplateState {
    let template: GoTemplate
    let environment: TemplateEnvironment
    var out = ""
    var vars: [(String, TemplateValue)]
    var depth = 0
    static let maxDepth = 1000
    /// Nodes run so far, and the most one execution may run: a page cannot loop for ever (Go's has no bound).
    var steps = 0
    static let maxSteps = 20_000_000
    /// The most output one execution may write (Go's has no bound).
    static let maxOutput = 64 << 20

    init(template: GoTemplate, dot: TemplateValue, environment: TemplateEnvironment) {
        self.template = template
        self.environment = environment
        self.executing = template.name
        vars = [("$", dot)]
    }

    /// The node being evaluated, for error messages; and the (defined) template being executed.
    var spot: TemplateSpot?
    var executing: String

    func error(_ line: Int, _ message: String) -> TemplateError {
        guard let spot else { return TemplateError(template.name, line, message) }
        var e = TemplateError(template.name, spot.line, message)
        e.col = spot.col
        e.executing = executing
        e.node = spot.text
        return e
    }

    func checkOutput() throws {
        if out.utf8.count > Self.maxOutput {
            throw TemplateError(template.name, 0, "output over \(Self.maxOutput >> 20) MiB")
        }
    }

    mutating func walk(_ list: [TemplateNode], dot: TemplateValue) throws {
        for node in list { try walk(node, dot: dot) }
    }

    mutating func walk(_ node: TemplateNode, dot: TemplateValue) throws {
        steps += 1
        if steps > Self.maxSteps {
            throw TemplateError(template.name, 0, "execution ran more than \(Self.maxSteps) steps")
        }
        switch node {
        case .text(let s):
            out += s
            try checkOutput()
        case .action(let line, let pipe):
            let v = try evaluate(pipe, dot: dot, line: line)
            if pipe.declarations.isEmpty {
                out += printedForOutput(v)
                try checkOutput()
            }
        case .conditional(let kind, let line, let pipe, let then, let otherwise):
            let mark = vars.count
            defer { vars.removeLast(vars.count - mark) }
            switch kind {
            case .ifBranch:
                let v = try evaluate(pipe, dot: dot, line: line)
                if v.isTrue { try walk(then, dot: dot) } else if let otherwise { try walk(otherwise, dot: dot) }
            case .withScope:
                let v = try evaluate(pipe, dot: dot, line: line)
                if v.isTrue { try walk(then, dot: v) } else if let otherwise { try walk(otherwise, dot: dot) }
            case .rangeLoop:
                var rangePipe = pipe
                let names = pipe.declarations
                rangePipe.declarations = []
                let v = try evaluate(rangePipe, dot: dot, line: line)
                // Keys and elements are made as the loop goes: `range 1000000` allocates nothing up front.
                let count: Int
                var keys: [String] = []
                switch v {
                case .list(let l): count = l.count
                case .map(let m):
                    keys = m.keys.sorted()
                    count = keys.count
                case .int(let n): count = max(0, n)
                case .null: count = 0
                default: throw error(line, "range can't iterate over \(v.printed)")
                }
                if count == 0 {
                    if let otherwise { try walk(otherwise, dot: dot) }
                    return
                }
                for i in 0..<count {
                    steps += 1
                    if steps > Self.maxSteps {
                        throw TemplateError(template.name, line, "execution ran more than \(Self.maxSteps) steps")
                    }
                    let key: TemplateValue
                    let element: TemplateValue
                    switch v {
                    case .list(let l): (key, element) = (.int(i), l[i])
                    case .map(let m): (key, element) = (.string(keys[i]), m[keys[i]]!)
                    default: (key, element) = (.int(i), .int(i))
                    }
                    let inner = vars.count
                    if names.count == 1 { vars.append((names[0], element)) }
                    if names.count == 2 {
                        vars.append((names[0], key))
                        vars.append((names[1], element))
                    }
                    do {
                        try walk(then, dot: element)
                    } catch LoopSignal.continueLoop {
                    } catch LoopSignal.breakLoop {
                        vars.removeLast(vars.count - inner)
                        break
                    }
                    vars.removeLast(vars.count - inner)
                }
            }
        case .call(let line, let name, let pipe):
            guard let list = environment.definitions[name] ?? template.set.templates[name] else {
                throw error(line, "no such template \"\(name)\"")
            }
            let newDot = try pipe.map { try evaluate($0, dot: dot, line: line) } ?? .null
            depth += 1
            defer { depth -= 1 }
            guard depth < Self.maxDepth else { throw error(line, "exceeded maximum template depth (\(Self.maxDepth))") }
            let saved = vars
            let savedName = executing
            vars = [("$", newDot)]
            executing = name
            defer {
                vars = saved
                executing = savedName
            }
            try walk(list, dot: newDot)
        case .breakLoop:
            throw LoopSignal.breakLoop
        case .continueLoop:
            throw LoopSignal.continueLoop
        }
    }

    /// An action printing nothing there (nil dot, a missing map entry) writes `<no value>`, as Go's does.
    func printedForOutput(_ v: TemplateValue) -> String {
        if case .null = v { return "<no value>" }
        return v.printed
    }

    mutating func evaluate(_ pipe: TemplatePipeline, dot: TemplateValue, line: Int) throws -> TemplateValue {
        var value: TemplateValue?
        for (i, command) in pipe.commands.enumerated() {
            let hasSpots = i < pipe.commandSpots.count
            spot = hasSpots ? pipe.commandSpots[i] : nil
            value = try evaluate(
                command, dot: dot, piped: value, line: line, argumentSpots: hasSpots ? pipe.argumentSpots[i] : [])
        }
        let result = value ?? .null
        if !pipe.declarations.isEmpty {
            let name = pipe.declarations[0]
            if pipe.assigns {
                guard let idx = vars.lastIndex(where: { $0.0 == name }) else {
                    throw error(line, "undefined variable: \(name)")
                }
                vars[idx].1 = result
            } else {
                vars.append((name, result))
            }
        }
        return result
    }

    mutating func evaluate(
        _ command: [TemplateArgument], dot: TemplateValue, piped: TemplateValue?, line: Int,
        argumentSpots: [TemplateSpot] = []
    ) throws -> TemplateValue {
        let first = command[0]
        let rest = Array(command.dropFirst())
        let commandSpot = spot
        // Arguments are evaluated at their own spots; the call itself fails at the command's.
        func arguments(_ state: inout TemplateState) throws -> [TemplateValue] {
            try rest.enumerated().map { k, a in
                if k + 1 < argumentSpots.count { state.spot = argumentSpots[k + 1] }
                return try state.operand(a, dot: dot, line: line)
            }
        }
        switch first {
        case .function(let name):
            if name == "and" || name == "or" {
                // Short-circuit: the first falsy (and) or truthy (or) argument, else the last.
                var last: TemplateValue = .null
                let args = rest.map { Optional($0) } + (piped.map { _ in [nil] } ?? [])
                guard !args.isEmpty else {
                    throw error(line, "wrong number of args for \(name): want at least 1 got 0")
                }
                for (k, a) in args.enumerated() {
                    if k + 1 < argumentSpots.count { spot = argumentSpots[k + 1] }
                    last = try a.map { try operand($0, dot: dot, line: line) } ?? piped!
                    if (name == "and") != last.isTrue { return last }
                }
                return last
            }
            var args = try arguments(&self)
            if let piped { args.append(piped) }
            spot = commandSpot
            do {
                if let f = template.functions[name] { return try f(args) }
                if let f = template.contextual[name] { return try f(environment, args) }
                return try TemplateBuiltins.call(name, args)
            } catch let e as any TemplatePassthroughError {
                throw e
            } catch {
                throw self.error(line, "error calling \(name): \(error)")
            }
        case .field(let fields) where !fields.isEmpty:
            var args = try arguments(&self)
            if let piped { args.append(piped) }
            if !argumentSpots.isEmpty { spot = argumentSpots[0] }
            return try access(dot, fields, args: args, line: line)
        case .variable(let name, let fields) where !fields.isEmpty:
            var args = try arguments(&self)
            if let piped { args.append(piped) }
            if !argumentSpots.isEmpty { spot = argumentSpots[0] }
            return try access(variable(name, line: line), fields, args: args, line: line)
        case .constant(.null):
            throw error(line, "nil is not a command")
        default:
            guard rest.isEmpty, piped == nil else {
                throw error(line, "can't give argument to non-function \(describe(first))")
            }
            if !argumentSpots.isEmpty { spot = argumentSpots[0] }
            return try operand(first, dot: dot, line: line)
        }
    }

    func describe(_ a: TemplateArgument) -> String {
        switch a {
        case .constant(let v): return v.printed
        case .field: return "."
        case .variable(let n, _): return n
        default: return "operand"
        }
    }

    func variable(_ name: String, line: Int) throws -> TemplateValue {
        guard let v = vars.last(where: { $0.0 == name }) else { throw error(line, "undefined variable \"\(name)\"") }
        return v.1
    }

    mutating func operand(_ a: TemplateArgument, dot: TemplateValue, line: Int) throws -> TemplateValue {
        switch a {
        case .field(let fields): return try access(dot, fields, args: [], line: line)
        case .variable(let name, let fields):
            return try access(variable(name, line: line), fields, args: [], line: line)
        case .function(let name): return try evaluate([.function(name)], dot: dot, piped: nil, line: line)
        case .pipeline(let p, let fields):
            // Go reports a failed `(p).Field` at the last node evaluated inside the parentheses.
            let v = try evaluate(p, dot: dot, line: line)
            return try access(v, fields, args: [], line: line)
        case .constant(let v): return v
        }
    }

    /// `.A.B.C args`: arguments go to the last element, a method.
    func access(_ base: TemplateValue, _ fields: [String], args: [TemplateValue], line: Int) throws -> TemplateValue {
        var v = base
        for (n, name) in fields.enumerated() {
            let isLast = n == fields.count - 1
            switch v {
            case .map(let m):
                if !args.isEmpty && isLast { throw error(line, "\(name) is not a method but has arguments") }
                v = m[name] ?? .null
            case .object(let o):
                do {
                    guard let r = try o.member(name, isLast ? args : []) else {
                        throw error(line, "can't evaluate field \(name) in type \(o.goTypeName)")
                    }
                    v = r
                } catch let e as TemplateError {
                    throw e
                } catch {
                    throw self.error(line, "error calling \(name): \(error)")
                }
            case .null:
                throw error(line, "nil pointer evaluating .\(name)")
            default:
                throw error(line, "can't evaluate field \(name) in type \(TemplateBuiltins.typeName(v))")
            }
        }
        return v
    }
}

/// Go's predefined template functions.
enum TemplateBuiltins {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func typeName(_ v: TemplateValue) -> String {
        switch v {
        case .null: return "nil"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float64"
        case .string: return "string"
        case .list: return "[]interface {}"
        case .map: return "map[string]interface {}"
        case .object: return "object"
        }
    }

    static func call(_ name: String, _ a: [TemplateValue]) throws -> TemplateValue {
        func want(_ n: Int) throws {
            guard a.count == n else { throw Failure("wrong number of args for \(name): want \(n) got \(a.count)") }
        }
        switch name {
        case "not":
            try want(1)
            return .bool(!a[0].isTrue)
        case "len":
            try want(1)
            switch a[0] {
            case .string(let s): return .int(s.utf8.count)
            case .list(let l): return .int(l.count)
            case .map(let m): return .int(m.count)
            default: throw Failure("len of type \(typeName(a[0]))")
            }
        case "index":
            guard !a.isEmpty else { throw Failure("wrong number of args for index: want at least 1 got 0") }
            var v = a[0]
            for key in a.dropFirst() {
                switch (v, key) {
                case (.list(let l), .int(let i)):
                    guard i >= 0 && i < l.count else { throw Failure("index out of range: \(i)") }
                    v = l[i]
                case (.string(let s), .int(let i)):
                    let b = Array(s.utf8)
                    guard i >= 0 && i < b.count else { throw Failure("index out of range: \(i)") }
                    v = .int(Int(b[i]))
                case (.map(let m), .string(let k)): v = m[k] ?? .null
                case (.null, _): throw Failure("index of untyped nil")
                default: throw Failure("can't index item of type \(typeName(v))")
                }
            }
            return v
        case "slice":
            guard !a.isEmpty else { throw Failure("wrong number of args for slice: want at least 1 got 0") }
            let idx = try a.dropFirst().map { v -> Int in
                guard case .int(let i) = v else { throw Failure("cannot index slice/array with type \(typeName(v))") }
                return i
            }
            switch a[0] {
            case .string(let s):
                let b = Array(s.utf8)
                let lo = idx.first ?? 0, hi = idx.count > 1 ? idx[1] : b.count
                guard idx.count <= 2, 0 <= lo, lo <= hi, hi <= b.count else {
                    throw Failure("slice index out of range")
                }
                return .string(String(decoding: b[lo..<hi], as: UTF8.self))
            case .list(let l):
                let lo = idx.first ?? 0, hi = idx.count > 1 ? idx[1] : l.count
                guard idx.count <= 3, 0 <= lo, lo <= hi, hi <= l.count else {
                    throw Failure("slice index out of range")
                }
                return .list(Array(l[lo..<hi]))
            default: throw Failure("can't slice item of type \(typeName(a[0]))")
            }
        case "eq":
            guard a.count >= 2 else { throw Failure("missing argument for comparison") }
            for other in a.dropFirst() where try compare(a[0], other) == 0 { return .bool(true) }
            return .bool(false)
        case "ne":
            try want(2)
            return .bool(try compare(a[0], a[1]) != 0)
        case "lt", "le", "gt", "ge":
            try want(2)
            let c = try compare(a[0], a[1], ordered: true)
            switch name {
            case "lt": return .bool(c < 0)
            case "le": return .bool(c <= 0)
            case "gt": return .bool(c > 0)
            default: return .bool(c >= 0)
            }
        case "print": return .string(sprint(a))
        case "println": return .string(a.map(\.printed).joined(separator: " ") + "\n")
        case "printf":
            guard case .string(let format) = a.first else { throw Failure("printf needs a format string") }
            return .string(GoFormat.sprintf(format, Array(a.dropFirst())))
        case "html": return .string(htmlEscape(sprint(a)))
        case "js": return .string(jsEscape(sprint(a)))
        case "urlquery": return .string(URLEscaping.queryEscape(sprint(a)))
        default: throw Failure("function \"\(name)\" not defined")
        }
    }

    /// Go's `fmt.Sprint`: spaces only between operands when neither is a string.
    static func sprint(_ a: [TemplateValue]) -> String {
        var out = ""
        for (i, v) in a.enumerated() {
            if i > 0, !isString(a[i - 1]), !isString(v) { out += " " }
            out += v.printed
        }
        return out
    }

    static func isString(_ v: TemplateValue) -> Bool { if case .string = v { return true } else { return false } }

    /// -1, 0, 1; ints and floats compare by value, strings by bytes; `ordered` refuses what has no order.
    static func compare(_ x: TemplateValue, _ y: TemplateValue, ordered: Bool = false) throws -> Int {
        switch (x, y) {
        case (.int(let a), .int(let b)): return a < b ? -1 : a > b ? 1 : 0
        case (.float(let a), .float(let b)): return a < b ? -1 : a > b ? 1 : 0
        case (.string(let a), .string(let b)):
            let l = Array(a.utf8), r = Array(b.utf8)
            return l.lexicographicallyPrecedes(r) ? -1 : l == r ? 0 : 1
        case (.bool(let a), .bool(let b)) where !ordered: return a == b ? 0 : 1
        case (.null, .null) where !ordered: return 0
        case (.null, _) where !ordered, (_, .null) where !ordered: return 1
        default:
            // Go compares only values of one basic kind: 1 and 1.0 are "incompatible types".
            throw Failure("incompatible types for comparison: \(typeName(x)) and \(typeName(y))")
        }
    }

    /// text/template's `HTMLEscapeString`: html's escaping, and NUL as U+FFFD.
    static func htmlEscape(_ s: String) -> String {
        Go.htmlEscape(s.contains("\0") ? s.replacingOccurrences(of: "\0", with: "\u{FFFD}") : s)
    }

    static func jsEscape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\"": out += "\\\""
            case "<": out += "\\u003C"
            case ">": out += "\\u003E"
            case "&": out += "\\u0026"
            case "=": out += "\\u003D"
            default:
                if c.value < 0x20 || c.value == 0x7F {
                    out += String(format: "\\u%04X", c.value)
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out
    }
}
