import Logging
import NIOHTTP1
public import UsherCore

/// `http.matchers.expression`: matches requests by a [CEL](https://github.com/google/cel-spec) expression, as
/// Caddy does. `{placeholders}` become `ph(req, "name")` calls before parsing (`\{x}` keeps the braces), and
/// Caddy's matchers are functions: `path('/a*')`, `host(...)`, `method(...)`, `header({'X': 'v'})`,
/// `header_regexp('X', 're')`, `path_regexp('re')`, `query({...})`, `protocol('https')`, `remote_ip(...)`,
/// `client_ip(...)`, `vars({...})`, `vars_regexp(...)`, `file(...)`.
///
/// The expression is parsed and type-checked when the config loads (errors name the position, as cel-go's do) and
/// compiled to closures; matcher functions whose arguments are constant are built and provisioned at load.
/// JSON: a string, or `{"expr": "...", "name": "..."}` where `name` names the regexp captures.
public struct ExpressionMatcher: RequestMatcher, Provisioner {
    public static let moduleID: ModuleID = "http.matchers.expression"
    /// `expr`: the CEL expression.
    public var expr: String
    /// `name`: the default name of regexp matchers in the expression (their `{http.regexp.<name>.*}`).
    public var name: String
    var program: CELProgram?
    var logger: Logger?

    enum CodingKeys: String, CodingKey { case expr, name }

    public init(from decoder: any Decoder) throws {
        if case .string(let s) = decoder.rawJSON ?? .null {
            expr = s
            name = ""
        } else {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            expr = try c.decode(String.self, forKey: .expr)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        let expanded = Self.expandPlaceholders(expr)
        let host = CaddyCELHost(matcherName: name, registry: context.registry)
        let compiled: CELCompiled
        var compiler = CELCompiler(host: host)
        do {
            let ast = try CELParser.parse(expanded)
            compiled = try compiler.compile(ast)
        } catch let issue as CELIssue {
            throw ConfigError("compiling CEL program: " + formatCELIssue(issue, source: expanded))
        }
        guard compiled.type == .bool else {
            throw ConfigError("CEL request matcher expects return type of bool, not \(compiled.type)")
        }
        for pending in host.pending {
            var set = pending.set
            try await set.provision(context)
            pending.box.set = set
        }
        program = CELProgram(eval: compiled.eval, slots: compiler.slotCount)
        logger = context.logger(for: Self.moduleID)
    }

    public func matches(_ request: Request) throws -> Bool {
        guard let program else { throw ConfigError("expression matcher used before provisioning") }
        switch program.eval(request, program.slots == 0 ? .empty : CELFrame(program.slots)) {
        case .bool(let b): return b
        case .error(let message):
            logger?.error("evaluating expression", metadata: ["error": .string(message)])
            throw CELEvaluationError(message: message)
        default: return false
        }
    }

    /// Caddy's textual sugar: `{name}` (a letter, then at least one word character, `.` or `-`) not preceded by a
    /// backslash becomes `ph(req, "name")`; then `\{name}` becomes `{name}`. Like Caddy's regular expression, a
    /// placeholder right after another is left alone.
    static func expandPlaceholders(_ input: String) -> String {
        let s = Array(input.unicodeScalars)
        var out = String.UnicodeScalarView()
        var lastEnd = 0
        var i = 0
        while i < s.count {
            if s[i] == "{", let close = placeholderEnd(s, open: i),
                i == 0 && lastEnd == 0 || (i > 0 && i - 1 >= lastEnd && s[i - 1] != "\\")
            {
                out.append(contentsOf: s[lastEnd..<i])
                out.append(contentsOf: "ph(req, \"".unicodeScalars)
                out.append(contentsOf: s[(i + 1)..<close])
                out.append(contentsOf: "\")".unicodeScalars)
                lastEnd = close + 1
                i = close + 1
                continue
            }
            i += 1
        }
        out.append(contentsOf: s[lastEnd...])
        // Second pass: `\{name}` loses its backslash.
        let t = Array(out)
        var result = String.UnicodeScalarView()
        var k = 0
        while k < t.count {
            if t[k] == "\\", k + 1 < t.count, t[k + 1] == "{", let close = placeholderEnd(t, open: k + 1) {
                result.append(contentsOf: t[(k + 1)...close])
                k = close + 1
                continue
            }
            result.append(t[k])
            k += 1
        }
        return String(result)
    }

    /// Where the `}` of a placeholder opened at `open` is: a letter, then at least one letter, digit, `_`, `.` or
    /// `-` (Caddy's `[a-zA-Z][\w.-]+`); `nil` when what follows the brace is not one.
    static func placeholderEnd(_ s: [Unicode.Scalar], open: Int) -> Int? {
        var j = open + 1
        guard j < s.count, CELLexer.isIdentStart(s[j]) && s[j] != "_" else { return nil }
        j += 1
        while j < s.count, CELLexer.isIdentStart(s[j]) || CELLexer.isDigit(s[j]) || s[j] == "." || s[j] == "-" {
            j += 1
        }
        guard j < s.count, s[j] == "}", j - open - 1 >= 2 else { return nil }
        return j
    }
}

struct CELEvaluationError: UnclassifiedRequestError, CustomStringConvertible {
    var message: String
    var description: String { message }
}

final class CELProgram: @unchecked Sendable {
    // @unchecked: the closure tree is immutable once compiled; per-evaluation state lives in a CELFrame.
    let eval: CELEval
    let slots: Int
    init(eval: @escaping CELEval, slots: Int) {
        self.eval = eval
        self.slots = slots
    }
}

/// A matcher set built from a matcher function's constant arguments, filled in once provisioned.
final class MatcherBox: @unchecked Sendable {
    // @unchecked: written once during provisioning, before any request can read it.
    var set: MatcherSet?
}

/// Caddy's additions to CEL: placeholders with the types Caddy's replacer gives them, and matcher functions.
final class CaddyCELHost: CELHost, @unchecked Sendable {
    // @unchecked: `pending` is only touched while compiling, on one task.
    let matcherName: String
    let registry: ModuleRegistry
    var pending: [(set: MatcherSet, box: MatcherBox)] = []

    init(matcherName: String, registry: ModuleRegistry) {
        self.matcherName = matcherName
        self.registry = registry
    }

    static let intPlaceholders: Set<String> = [
        "http.request.port", "http.request.local.port", "http.request.remote.port", "http.error.status_code",
        "time.now.unix", "time.now.unix_ms", "time.now.year", "http.reverse_proxy.status_code",
        "http.reverse_proxy.upstream.port", "http.reverse_proxy.upstream.requests",
        "http.reverse_proxy.upstream.max_requests", "http.reverse_proxy.upstream.fails",
    ]
    static let boolPlaceholders: Set<String> = ["http.request.tls.resumed", "http.request.tls.proto_mutual"]

    func placeholder(_ key: String) -> (Request?) -> CELValue {
        // The request's own fields, read directly rather than through the replacer's lookup by name (the values
        // are the replacer's: see HTTPPlaceholderProvider).
        switch key {
        case "http.request.method": return { r in r.map { .string($0.method.rawValue) } ?? .null }
        case "http.request.uri.path": return { r in r.map { .string($0.path) } ?? .null }
        case "http.request.uri.query": return { r in r.map { .string($0.rawQuery) } ?? .null }
        case "http.request.host": return { r in r.map { .string($0.hostWithoutPort) } ?? .null }
        default: break
        }
        if key.hasPrefix("http.request.header.") {
            let name = String(key.dropFirst("http.request.header.".count))
            return { r in r.map { .string($0.headerPlaceholder(name)) } ?? .null }
        }
        if key.hasPrefix("http.request.uri.query.") {
            let name = String(key.dropFirst("http.request.uri.query.".count))
            return { r in r.map { .string($0.queryPlaceholder(name)) } ?? .null }
        }
        if key == "time.now" {
            return { _ in
                .timestamp(
                    {
                        let w = WallTime.now(); return Int64(w.seconds) * 1_000_000_000 + Int64(w.nanoseconds)
                    }())
            }
        }
        if key.hasPrefix("http.vars.") {
            let name = String(key.dropFirst("http.vars.".count))
            return { r in r?.vars[name].map(CELValue.init(json:)) ?? .null }
        }
        if Self.intPlaceholders.contains(key) {
            return { r in
                guard let s = r?.replacer.get(key) else { return .null }
                return Int64(s).map { .int($0) } ?? .string(s)
            }
        }
        if Self.boolPlaceholders.contains(key) {
            return { r in
                guard let s = r?.replacer.get(key) else { return .null }
                return .bool(s == "true")
            }
        }
        if key == "http.request.duration_ms" {
            return { r in
                guard let s = r?.replacer.get(key) else { return .null }
                return Double(s).map { .double($0) } ?? .string(s)
            }
        }
        return { r in r?.replacer.get(key).map { .string($0) } ?? .null }
    }

    enum Shape { case strings, string, regexp, fieldRegexp, map, file }

    static let macros: [String: (id: String, shape: Shape)] = [
        "path": ("path", .strings), "host": ("host", .strings), "method": ("method", .strings),
        "remote_ip": ("remote_ip", .strings), "client_ip": ("client_ip", .strings),
        "protocol": ("protocol", .string), "path_regexp": ("path_regexp", .regexp),
        "header_regexp": ("header_regexp", .fieldRegexp), "vars_regexp": ("vars_regexp", .fieldRegexp),
        "header": ("header", .map), "query": ("query", .map), "vars": ("vars", .map), "file": ("file", .file),
    ]

    /// A string argument: a literal, a placeholder, or `+` of those; its parts, each literal or placeholder key.
    enum Part { case literal(String), placeholder(String) }

    static func stringParts(_ e: CELExpr) -> [Part]? {
        switch e.kind {
        case .literal(.string(let s)): return [.literal(s)]
        case .call("ph", nil, let args) where args.count == 2:
            guard case .ident("req") = args[0].kind, let key = args[1].stringLiteral else { return nil }
            return [.placeholder(key)]
        case .call("_+_", nil, let args):
            guard let a = stringParts(args[0]), let b = stringParts(args[1]) else { return nil }
            return a + b
        default: return nil
        }
    }

    static func isLiteralOrPlaceholder(_ e: CELExpr) -> Bool {
        guard let p = stringParts(e), p.count == 1 else { return false }
        if case .call("_+_", _, _) = e.kind { return false }
        return true
    }

    func macro(_ name: String, _ call: CELExpr, _ args: [CELExpr], _ compiler: inout CELCompiler) throws
        -> CELCompiled?
    {
        guard let (id, shape) = Self.macros[name], registry.module(ModuleID("http.matchers." + id)) != nil else {
            return nil
        }
        // The matcher's arguments as a JSON template whose strings may hold placeholder parts.
        var template: Template
        switch shape {
        case .strings:
            guard !args.isEmpty else { throw CELIssue(pos: -1, message: "matcher requires at least one argument") }
            var items: [Template] = []
            for a in args {
                guard let p = Self.stringParts(a) else {
                    throw CELIssue(pos: a.pos, message: "matcher arguments must be string constants")
                }
                items.append(.string(p))
            }
            template = .array(items)
            if id == "remote_ip" || id == "client_ip" { template = .object([("ranges", template)]) }
        case .string:
            guard args.count == 1 else { throw CELIssue(pos: -1, message: "matcher requires one argument") }
            guard let p = Self.stringParts(args[0]) else {
                throw CELIssue(pos: args[0].pos, message: "matcher argument must be a string literal")
            }
            template = .string(p)
        case .regexp, .fieldRegexp:
            let counts = shape == .regexp ? [1, 2] : [2, 3]
            guard counts.contains(args.count) else { return nil }
            var parts: [[Part]] = []
            for a in args {
                guard let p = Self.stringParts(a) else {
                    throw CELIssue(
                        pos: a.pos,
                        message: args.count == 1
                            ? "matcher argument must be a string literal" : "matcher arguments must be string constants"
                    )
                }
                parts.append(p)
            }
            let named = args.count == counts[1]
            var regexp: [(String, Template)] = [("pattern", .string(parts.last!))]
            let nameParts = named ? parts[0] : [Part.literal(matcherName)]
            regexp.insert(("name", .string(nameParts, orDefault: matcherName)), at: 0)
            if shape == .regexp {
                template = .object(regexp)
            } else {
                template = .keyed(parts[named ? 1 : 0], .object(regexp))
            }
        case .map:
            guard args.count == 1 else { throw CELIssue(pos: -1, message: "matcher requires a map literal argument") }
            guard case .map(let entries) = args[0].kind else {
                throw CELIssue(pos: args[0].pos, message: "matcher requires a map literal argument")
            }
            var members: [([Part], Template)] = []
            for (k, v) in entries {
                guard let key = Self.stringParts(k) else {
                    throw CELIssue(pos: k.pos, message: "matcher map keys must be string literals")
                }
                members.append((key, try Self.stringOrList(v)))
            }
            template = .keyedMany(members)
        case .file:
            if args.isEmpty {
                template = .object([])
            } else if args.count == 1, Self.isLiteralOrPlaceholder(args[0]) {
                template = .object([("try_files", .array([.string(Self.stringParts(args[0])!)]))])
            } else if args.count == 1, case .map(let entries) = args[0].kind, let t = try? Self.tryFiles(entries) {
                template = t
            } else if args.count == 1 {
                throw CELIssue(pos: args[0].pos, message: "matcher requires either a map or string literal argument")
            } else {
                var items: [Template] = []
                for a in args {
                    guard Self.isLiteralOrPlaceholder(a) else {
                        throw CELIssue(pos: a.pos, message: "matcher only supports repeated string literal arguments")
                    }
                    items.append(.string(Self.stringParts(a)!))
                }
                template = .object([("try_files", .array(items))])
            }
        }
        let matcherID = id
        // The file matcher expands placeholders itself (and needs provisioning), so they stay in its config as
        // text; other matchers whose arguments hold placeholders are built per request, as Caddy does.
        if shape == .file || !template.hasPlaceholders {
            let json = template.json(embedPlaceholders: true)
            let set = try buildSet(matcherID, json, at: call)
            let box = MatcherBox()
            pending.append((set, box))
            return CELCompiled(
                type: .bool,
                eval: { r, _ in
                    guard let r, let set = box.set else { return .error("matcher not provisioned") }
                    do { return .bool(try set.matches(r)) } catch { return .error("\(error)") }
                }, constant: nil)
        }
        let registry = self.registry
        let tpl = template
        return CELCompiled(
            type: .bool,
            eval: { r, _ in
                guard let r else { return .error("no request") }
                let json = tpl.json(embedPlaceholders: false, request: r)
                do {
                    let set = try ConfigDecoder(registry: registry).decode(
                        MatcherSet.self, from: .object(JSONObject([(key: matcherID, value: json)])))
                    return .bool(try set.matches(r))
                } catch {
                    return .error("\(error)")
                }
            }, constant: nil)
    }

    func buildSet(_ id: String, _ json: JSONValue, at call: CELExpr) throws -> MatcherSet {
        do {
            return try ConfigDecoder(registry: registry).decode(
                MatcherSet.self, from: .object(JSONObject([(key: id, value: json)])))
        } catch {
            throw CELIssue(pos: call.pos, message: "\(error)")
        }
    }

    static func stringOrList(_ v: CELExpr) throws -> Template {
        if let p = stringParts(v) { return .array([.string(p)]) }
        if case .list(let items) = v.kind {
            var out: [Template] = []
            for i in items {
                guard let p = stringParts(i) else { break }
                out.append(.string(p))
            }
            if out.count == items.count { return .array(out) }
        }
        throw CELIssue(pos: v.pos, message: "matcher map values must be string or list literals")
    }

    static func tryFiles(_ entries: [(key: CELExpr, value: CELExpr)]) throws -> Template {
        var members: [(String, Template)] = []
        for (k, v) in entries {
            guard let key = k.stringLiteral else { throw CELIssue(pos: k.pos, message: "") }
            switch key {
            case "try_files", "split_path":
                let t = try stringOrList(v)
                guard case .list = v.kind else { throw CELIssue(pos: v.pos, message: "") }
                members.append((key, t))
            case "try_policy", "root":
                guard let p = stringParts(v) else { throw CELIssue(pos: v.pos, message: "") }
                members.append((key, .string(p)))
            default: throw CELIssue(pos: k.pos, message: "")
            }
        }
        return .object(members)
    }
}

/// A matcher's config with strings that may hold placeholders, made concrete at load or per request.
indirect enum Template {
    case string([CaddyCELHost.Part], orDefault: String? = nil)
    case array([Template])
    case object([(String, Template)])
    /// An object whose one key is a string expression (`header_regexp`'s field).
    case keyed([CaddyCELHost.Part], Template)
    /// An object keyed by string expressions, each value a list (`header`, `query`, `vars`).
    case keyedMany([([CaddyCELHost.Part], Template)])

    var hasPlaceholders: Bool {
        func has(_ p: [CaddyCELHost.Part]) -> Bool {
            p.contains { if case .placeholder = $0 { true } else { false } }
        }
        switch self {
        case .string(let p, _): return has(p)
        case .array(let a): return a.contains { $0.hasPlaceholders }
        case .object(let o): return o.contains { $0.1.hasPlaceholders }
        case .keyed(let k, let t): return has(k) || t.hasPlaceholders
        case .keyedMany(let m): return m.contains { has($0.0) || $0.1.hasPlaceholders }
        }
    }

    static func text(_ parts: [CaddyCELHost.Part], embed: Bool, _ request: Request?) -> String {
        var s = ""
        for p in parts {
            switch p {
            case .literal(let l): s += l
            case .placeholder(let key):
                if embed {
                    s += "{\(key)}"
                } else if let r = request {
                    s += CaddyCELHost.placeholderText(key, r)
                }
            }
        }
        return s
    }

    func json(embedPlaceholders embed: Bool, request: Request? = nil) -> JSONValue {
        switch self {
        case .string(let p, let fallback):
            let t = Self.text(p, embed: embed, request)
            return .string(t.isEmpty ? fallback ?? "" : t)
        case .array(let a): return .array(a.map { $0.json(embedPlaceholders: embed, request: request) })
        case .object(let o):
            return .object(
                JSONObject(o.map { (key: $0.0, value: $0.1.json(embedPlaceholders: embed, request: request)) }))
        case .keyed(let k, let t):
            return .object(
                JSONObject([
                    (
                        key: Self.text(k, embed: embed, request),
                        value: t.json(embedPlaceholders: embed, request: request)
                    )
                ]))
        case .keyedMany(let m):
            var o = JSONObject()
            for (k, t) in m {
                let key = Self.text(k, embed: embed, request)
                // Repeated keys in a map literal add values, as the list of a Caddyfile matcher would.
                var values = o[key]?.arrayValue ?? []
                values += t.json(embedPlaceholders: embed, request: request).arrayValue ?? []
                o[key] = .array(values)
            }
            return .object(o)
        }
    }
}

extension CaddyCELHost {
    /// A placeholder's value as text, as Caddy's matcher factories receive it.
    static func placeholderText(_ key: String, _ r: Request) -> String {
        if key.hasPrefix("http.vars.") {
            guard let v = r.vars[String(key.dropFirst("http.vars.".count))] else { return "" }
            return varString(v)
        }
        return r.replacer.get(key) ?? ""
    }
}
