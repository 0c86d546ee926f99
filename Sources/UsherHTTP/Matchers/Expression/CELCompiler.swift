// Type-checks a parsed CEL expression and turns it into a tree of closures in one pass. Types are known at load,
// so most calls bind their one overload directly; only `dyn` arguments (placeholders) pick an overload per request.
// Constant sub-expressions are folded at load.

/// Comprehension and `cel.bind` variables of one evaluation.
final class CELFrame: @unchecked Sendable {
    // @unchecked: a frame belongs to one evaluation; the shared empty frame has no slots to write.
    var slots: [CELValue]
    init(_ count: Int) { slots = Array(repeating: .null, count: count) }
    static let empty = CELFrame(0)
}

/// Evaluates a node for a request (`nil` while folding constants at load).
typealias CELEval = (Request?, CELFrame) -> CELValue

struct CELCompiled {
    var type: CELType
    var eval: CELEval
    /// The value, when it is the same for every request.
    var constant: CELValue?

    static func constant(_ v: CELValue, _ type: CELType? = nil) -> CELCompiled {
        CELCompiled(type: type ?? v.runtimeType, eval: { _, _ in v }, constant: v)
    }
}

/// What the host adds to CEL: placeholders, the request variable, and macros (Caddy's matcher functions).
protocol CELHost {
    /// Compiles a macro call such as `path('/a*')`, or returns `nil` if `name` is no macro of the host's.
    func macro(_ name: String, _ call: CELExpr, _ args: [CELExpr], _ compiler: inout CELCompiler) throws
        -> CELCompiled?
    /// The value of placeholder `key` for a request.
    func placeholder(_ key: String) -> (Request?) -> CELValue
}

struct CELCompiler {
    let host: any CELHost
    var scopes: [(name: String, slot: Int, type: CELType)] = []
    var slotCount = 0

    init(host: any CELHost) { self.host = host }

    static let typeNames: [String: CELType] = [
        "int": .int, "uint": .uint, "double": .double, "string": .string, "bytes": .bytes, "bool": .bool,
        "null_type": .null, "type": .type, "dyn": .dyn, "list": .list(.dyn), "map": .map(.dyn, .dyn),
    ]
    static let namespaces: Set<String> = ["math", "strings", "lists", "cel"]

    mutating func compile(_ e: CELExpr) throws -> CELCompiled {
        switch e.kind {
        case .literal(let v):
            return .constant(v)
        case .ident(let name):
            if let s = scopes.last(where: { $0.name == name }) {
                let slot = s.slot
                return CELCompiled(type: s.type, eval: { _, f in f.slots[slot] }, constant: nil)
            }
            if name == "req" { return CELCompiled(type: .request, eval: { _, _ in .request }, constant: nil) }
            if let t = Self.typeNames[name] { return .constant(.type(t), .type) }
            throw CELIssue(pos: e.pos, message: "undeclared reference to '\(name)' (in container '')")
        case .select(let operand, let field, let testOnly):
            return try select(e, operand, field, testOnly)
        case .list(let items):
            let parts = try items.map { try compile($0) }
            let type = CELType.list(unify(parts.map(\.type)))
            if parts.allSatisfy({ $0.constant != nil }) {
                return .constant(.list(parts.map { $0.constant! }), type)
            }
            let evals = parts.map(\.eval)
            return CELCompiled(
                type: type,
                eval: { r, f in
                    var out: [CELValue] = []
                    out.reserveCapacity(evals.count)
                    for ev in evals {
                        let v = ev(r, f)
                        if v.isError { return v }
                        out.append(v)
                    }
                    return .list(out)
                }, constant: nil)
        case .map(let entries):
            var keys: [CELCompiled] = []
            var values: [CELCompiled] = []
            for (k, v) in entries {
                let ck = try compile(k)
                switch ck.type {
                case .int, .uint, .bool, .string, .dyn, .any: break
                default: throw CELIssue(pos: k.pos, message: "unsupported map key type: \(ck.type)")
                }
                keys.append(ck)
                values.append(try compile(v))
            }
            let type = CELType.map(unify(keys.map(\.type)), unify(values.map(\.type)))
            let ke = keys.map(\.eval)
            let ve = values.map(\.eval)
            let eval: CELEval = { r, f in
                var m = CELMap()
                for (kf, vf) in zip(ke, ve) {
                    let k = kf(r, f)
                    if k.isError { return k }
                    let v = vf(r, f)
                    if v.isError { return v }
                    if m.index(of: k) != nil { return .error("Failed with repeated key") }
                    m.keys.append(k)
                    m.values.append(v)
                }
                return .map(m)
            }
            if keys.allSatisfy({ $0.constant != nil }) && values.allSatisfy({ $0.constant != nil }) {
                let v = eval(nil, .empty)
                if !v.isError { return .constant(v, type) }
            }
            return CELCompiled(type: type, eval: eval, constant: nil)
        case .call(let name, let target, let args):
            return try call(e, name, target, args)
        }
    }

    /// The common type of list elements, map keys or values: the type all share, else `dyn`.
    func unify(_ types: [CELType]) -> CELType {
        guard let first = types.first else { return .dyn }
        return types.allSatisfy { $0 == first } ? first : .dyn
    }

    mutating func select(_ e: CELExpr, _ operand: CELExpr, _ field: String, _ testOnly: Bool) throws -> CELCompiled {
        let o = try compile(operand)
        let key = CELValue.string(field)
        let resultType: CELType
        switch o.type {
        case .map(let k, let v):
            guard k.accepts(.string) else {
                throw CELIssue(pos: e.pos, message: "type '\(o.type)' does not support field selection")
            }
            resultType = testOnly ? .bool : v
        case .dyn, .any:
            resultType = testOnly ? .bool : .dyn
        case .request:
            throw CELIssue(pos: e.pos, message: "unexpected failed resolution of 'http.Request'")
        default:
            throw CELIssue(pos: e.pos, message: "type '\(o.type)' does not support field selection")
        }
        let oe = o.eval
        let eval: CELEval = { r, f in
            let v = oe(r, f)
            switch v {
            case .error: return v
            case .map(let m):
                if testOnly { return .bool(m.index(of: key) != nil) }
                return m[key] ?? .error("no such key: \(field)")
            default:
                return .error("no such overload: \(v.runtimeType).\(field)")
            }
        }
        return fold(CELCompiled(type: resultType, eval: eval, constant: nil), [o])
    }

    /// Evaluates at load a pure node whose inputs are all constant, unless that gives an error (left to run time,
    /// as cel-go does).
    func fold(_ c: CELCompiled, _ inputs: [CELCompiled]) -> CELCompiled {
        guard inputs.allSatisfy({ $0.constant != nil }) else { return c }
        let v = c.eval(nil, .empty)
        if v.isError { return c }
        return .constant(v, c.type)
    }

    mutating func call(_ e: CELExpr, _ name: String, _ target: CELExpr?, _ args: [CELExpr]) throws -> CELCompiled {
        // Macros.
        if target == nil {
            if name == "has" {
                guard args.count == 1, case .select(let o, let f, _) = args[0].kind else {
                    throw CELIssue(pos: args.first?.pos ?? e.pos, message: "invalid argument to has() macro")
                }
                return try select(args[0], o, f, true)
            }
            if let m = try host.macro(name, e, args, &self) { return m }
        } else if let target {
            if case .ident("cel") = target.kind, name == "bind", args.count == 3,
                !scopes.contains(where: { $0.name == "cel" })
            {
                return try bind(e, args)
            }
            if ["all", "exists", "exists_one", "map", "filter"].contains(name),
                args.count == 2 || args.count == 3 && name == "map"
            {
                return try comprehension(e, name, target, args)
            }
        }
        // Namespaced functions: math.greatest(...), strings.quote(...), lists.range(...).
        var function = name
        var receiver = target
        if let t = target, case .ident(let ns) = t.kind, Self.namespaces.contains(ns),
            !scopes.contains(where: { $0.name == ns })
        {
            function = ns + "." + name
            receiver = nil
        }
        switch function {
        case "_&&_", "_||_": return try logical(e, function, args)
        case "_?_:_": return try conditional(e, args)
        case "_==_", "_!=_": return try equality(e, function, args)
        case "@in": return try membership(e, args)
        case "_[_]": return try index(e, args)
        case "ph": return try placeholder(e, args)
        case "matches": return try matches(e, receiver, args)
        case "math.greatest", "math.least": return try extremum(e, function, args)
        default: break
        }
        guard let overloads = CELLibrary.functions[function] else {
            throw CELIssue(pos: e.pos, message: "undeclared reference to '\(function)' (in container '')")
        }
        var parts: [CELCompiled] = []
        if let receiver { parts.append(try compile(receiver)) }
        for a in args { parts.append(try compile(a)) }
        let member = receiver != nil
        let types = parts.map(\.type)
        let candidates = overloads.filter { o in
            o.member == member && o.params.count == types.count && zip(o.params, types).allSatisfy { $0.accepts($1) }
        }
        guard !candidates.isEmpty else {
            let shown =
                member
                ? "\(types[0]).(" + types.dropFirst().map(\.description).joined(separator: ", ") + ")"
                : "(" + types.map(\.description).joined(separator: ", ") + ")"
            throw CELIssue(pos: e.pos, message: "found no matching overload for '\(function)' applied to '\(shown)'")
        }
        let results = candidates.map { $0.result(types) }
        let resultType = unify(results)
        let evals = parts.map(\.eval)
        let eval: CELEval
        if candidates.count == 1 && !types.contains(where: { $0.isDyn }) {
            eval = Self.bind(candidates[0].impl, evals)
        } else {
            // Chosen per request by the arguments' runtime kinds (without an argument array for one or two).
            let options = candidates
            let shownName = function
            if evals.count == 1 {
                let a = evals[0]
                eval = { r, f in
                    let x = a(r, f)
                    if x.isError { return x }
                    for o in options where o.params[0].admits(x) {
                        if case .unary(let fn) = o.impl { return fn(x) }
                        return o.impl.call([x])
                    }
                    return .noOverload(shownName, [x])
                }
                return fold(CELCompiled(type: resultType, eval: eval, constant: nil), parts)
            }
            if evals.count == 2 {
                let a = evals[0]
                let b = evals[1]
                eval = { r, f in
                    let x = a(r, f)
                    if x.isError { return x }
                    let y = b(r, f)
                    if y.isError { return y }
                    for o in options where o.params[0].admits(x) && o.params[1].admits(y) {
                        if case .binary(let fn) = o.impl { return fn(x, y) }
                        return o.impl.call([x, y])
                    }
                    return .noOverload(shownName, [x, y])
                }
                return fold(CELCompiled(type: resultType, eval: eval, constant: nil), parts)
            }
            eval = { r, f in
                var values: [CELValue] = []
                values.reserveCapacity(evals.count)
                for ev in evals {
                    let v = ev(r, f)
                    if v.isError { return v }
                    values.append(v)
                }
                for o in options where zip(o.params, values).allSatisfy({ $0.admits($1) }) {
                    return o.impl.call(values)
                }
                return .noOverload(shownName, values)
            }
        }
        return fold(CELCompiled(type: resultType, eval: eval, constant: nil), parts)
    }

    /// A direct call of one implementation, without an argument array for one or two arguments.
    static func bind(_ impl: CELImpl, _ evals: [CELEval]) -> CELEval {
        switch (impl, evals.count) {
        case (.unary(let fn), 1):
            let a = evals[0]
            return { r, f in
                let x = a(r, f)
                if x.isError { return x }
                return fn(x)
            }
        case (.binary(let fn), 2):
            let a = evals[0]
            let b = evals[1]
            return { r, f in
                let x = a(r, f)
                if x.isError { return x }
                let y = b(r, f)
                if y.isError { return y }
                return fn(x, y)
            }
        default:
            return { r, f in
                var values: [CELValue] = []
                values.reserveCapacity(evals.count)
                for ev in evals {
                    let v = ev(r, f)
                    if v.isError { return v }
                    values.append(v)
                }
                return impl.call(values)
            }
        }
    }

    func noOverload(_ e: CELExpr, _ name: String, _ types: [CELType]) -> CELIssue {
        CELIssue(
            pos: e.pos,
            message: "found no matching overload for '\(name)' applied to '("
                + types.map(\.description).joined(separator: ", ") + ")'")
    }

    mutating func logical(_ e: CELExpr, _ op: String, _ args: [CELExpr]) throws -> CELCompiled {
        let a = try compile(args[0])
        let b = try compile(args[1])
        for (side, arg) in [(a, args[0]), (b, args[1])] where !CELType.bool.accepts(side.type) {
            throw CELIssue(pos: arg.pos, message: "expected type 'bool' but found '\(side.type)'")
        }
        let isAnd = op == "_&&_"
        // A constant side that decides the result makes the other side moot.
        for side in [a, b] {
            if case .bool(let v) = side.constant, v != isAnd { return .constant(.bool(v)) }
        }
        if case .bool = a.constant { return b.type == .bool ? b : b.asBool }
        if case .bool = b.constant { return a.type == .bool ? a : a.asBool }
        let ae = a.eval
        let be = b.eval
        // CEL's commutative logic: a deciding value on either side wins over an error on the other.
        let eval: CELEval =
            isAnd
            ? { r, f in
                let x = ae(r, f)
                if case .bool(false) = x { return x }
                let y = be(r, f)
                if case .bool(false) = y { return y }
                if x.isError { return x }
                if y.isError { return y }
                if case .bool = x, case .bool = y { return .bool(true) }
                return .noOverload("_&&_", [x, y])
            }
            : { r, f in
                let x = ae(r, f)
                if case .bool(true) = x { return x }
                let y = be(r, f)
                if case .bool(true) = y { return y }
                if x.isError { return x }
                if y.isError { return y }
                if case .bool = x, case .bool = y { return .bool(false) }
                return .noOverload("_||_", [x, y])
            }
        return CELCompiled(type: .bool, eval: eval, constant: nil)
    }

    mutating func conditional(_ e: CELExpr, _ args: [CELExpr]) throws -> CELCompiled {
        let c = try compile(args[0])
        let a = try compile(args[1])
        let b = try compile(args[2])
        guard CELType.bool.accepts(c.type), a.type.accepts(b.type) else {
            throw noOverload(e, "_?_:_", [c.type, a.type, b.type])
        }
        let type: CELType = a.type == b.type ? a.type : .dyn
        if case .bool(let v) = c.constant {
            var chosen = v ? a : b
            chosen.type = type
            return chosen
        }
        let ce = c.eval
        let ae = a.eval
        let be = b.eval
        return CELCompiled(
            type: type,
            eval: { r, f in
                switch ce(r, f) {
                case .bool(true): return ae(r, f)
                case .bool(false): return be(r, f)
                case .error(let m): return .error(m)
                case let other: return .noOverload("_?_:_", [other])
                }
            }, constant: nil)
    }

    mutating func equality(_ e: CELExpr, _ op: String, _ args: [CELExpr]) throws -> CELCompiled {
        let a = try compile(args[0])
        let b = try compile(args[1])
        guard a.type.accepts(b.type) else { throw noOverload(e, op, [a.type, b.type]) }
        let ae = a.eval
        let be = b.eval
        let negate = op == "_!=_"
        let eval: CELEval = { r, f in
            let x = ae(r, f)
            if x.isError { return x }
            let y = be(r, f)
            if y.isError { return y }
            guard let eq = CELValue.equal(x, y) else { return .error("comparing values") }
            return .bool(eq != negate)
        }
        return fold(CELCompiled(type: .bool, eval: eval, constant: nil), [a, b])
    }

    mutating func membership(_ e: CELExpr, _ args: [CELExpr]) throws -> CELCompiled {
        let a = try compile(args[0])
        let b = try compile(args[1])
        switch b.type {
        case .list(let t) where t.accepts(a.type): break
        case .map(let k, _) where k.accepts(a.type): break
        case .dyn, .any: break
        default: throw noOverload(e, "@in", [a.type, b.type])
        }
        let ae = a.eval
        // A constant list of strings becomes a set lookup.
        if case .list(let items) = b.constant, a.type == .string || a.type.isDyn,
            items.allSatisfy({ if case .string = $0 { true } else { false } })
        {
            let set = Set(items.map { if case .string(let s) = $0 { s } else { "" } })
            return fold(
                CELCompiled(
                    type: .bool,
                    eval: { r, f in
                        let x = ae(r, f)
                        guard case .string(let s) = x else { return x.isError ? x : .bool(false) }
                        return .bool(set.contains(s))
                    }, constant: nil), [a, b])
        }
        let be = b.eval
        let eval: CELEval = { r, f in
            let x = ae(r, f)
            if x.isError { return x }
            let y = be(r, f)
            switch y {
            case .error: return y
            case .list(let items):
                for i in items where CELValue.equal(i, x) == true { return .bool(true) }
                return .bool(false)
            case .map(let m): return .bool(m.index(of: x) != nil)
            default: return .noOverload("@in", [x, y])
            }
        }
        return fold(CELCompiled(type: .bool, eval: eval, constant: nil), [a, b])
    }

    mutating func index(_ e: CELExpr, _ args: [CELExpr]) throws -> CELCompiled {
        let a = try compile(args[0])
        let b = try compile(args[1])
        let type: CELType
        switch a.type {
        case .list(let t) where CELType.int.accepts(b.type): type = t
        case .map(let k, let v) where k.accepts(b.type): type = v
        case .dyn, .any: type = .dyn
        default: throw noOverload(e, "_[_]", [a.type, b.type])
        }
        let ae = a.eval
        let be = b.eval
        let eval: CELEval = { r, f in
            let x = ae(r, f)
            if x.isError { return x }
            let y = be(r, f)
            if y.isError { return y }
            switch x {
            case .list(let items):
                let i: Int64?
                switch y {
                case .int(let v): i = v
                case .uint(let v): i = Int64(exactly: v)
                case .double(let d): i = d.rounded() == d ? Int64(exactly: d) : nil
                default: return .noOverload("_[_]", [x, y])
                }
                guard let i, i >= 0, i < items.count else {
                    return .error("index out of range: \(y.stringForm ?? "?")")
                }
                return items[Int(i)]
            case .map(let m):
                return m[y] ?? .error("no such key: \(y.stringForm ?? "?")")
            default:
                return .noOverload("_[_]", [x, y])
            }
        }
        return fold(CELCompiled(type: type, eval: eval, constant: nil), [a, b])
    }

    mutating func placeholder(_ e: CELExpr, _ args: [CELExpr]) throws -> CELCompiled {
        guard args.count == 2, case .ident("req") = args[0].kind else {
            throw CELIssue(pos: e.pos, message: "found no matching overload for 'ph' applied to the arguments given")
        }
        if let key = args[1].stringLiteral {
            let get = host.placeholder(key)
            return CELCompiled(type: .any, eval: { r, _ in get(r) }, constant: nil)
        }
        let k = try compile(args[1])
        guard CELType.string.accepts(k.type) else { throw noOverload(e, "ph", [.request, k.type]) }
        let ke = k.eval
        let host = self.host
        return CELCompiled(
            type: .any,
            eval: { r, f in
                guard case .string(let key) = ke(r, f) else { return .error("invalid placeholder variable name") }
                return host.placeholder(key)(r)
            }, constant: nil)
    }
}

extension CELCompiled {
    /// The same node, its result checked to be a bool at run time.
    var asBool: CELCompiled {
        let ev = eval
        return CELCompiled(
            type: .bool,
            eval: { r, f in
                let v = ev(r, f)
                if case .bool = v { return v }
                return v.isError ? v : .noOverload("bool", [v])
            }, constant: nil)
    }
}

extension CompiledRegex {
    /// Whether the pattern matches anywhere in `input` (RE2's partial match, as CEL's `matches`).
    func matches(_ input: String) -> Bool { (try? regex.firstMatch(in: input)) != nil }
}
