// The parts of the compiler that bind variables (comprehension macros, `cel.bind`) or check their arguments
// beyond overload tables (`matches` with a pattern compiled at load, `math.greatest`/`least`).

extension CELCompiler {
    /// `matches`, with the pattern compiled at load when it is constant.
    mutating func matches(_ e: CELExpr, _ receiver: CELExpr?, _ args: [CELExpr]) throws -> CELCompiled {
        var exprs = args
        if let receiver { exprs.insert(receiver, at: 0) }
        let parts = try exprs.map { try compile($0) }
        guard parts.count == 2, CELType.string.accepts(parts[0].type), CELType.string.accepts(parts[1].type) else {
            let types = parts.map(\.type)
            let shown =
                receiver != nil
                ? "\(types[0]).(" + types.dropFirst().map(\.description).joined(separator: ", ") + ")"
                : "(" + types.map(\.description).joined(separator: ", ") + ")"
            throw CELIssue(pos: e.pos, message: "found no matching overload for 'matches' applied to '\(shown)'")
        }
        let se = parts[0].eval
        if case .string(let pattern) = parts[1].constant {
            let regex: CompiledRegex
            do { regex = try CompiledRegex(pattern) } catch {
                throw CELIssue(pos: args.last!.pos, message: "invalid regular expression '\(pattern)': \(error)")
            }
            return fold(
                CELCompiled(
                    type: .bool,
                    eval: { r, f in
                        switch se(r, f) {
                        case .string(let s): return .bool(regex.matches(s))
                        case .error(let m): return .error(m)
                        case let v: return .noOverload("matches", [v])
                        }
                    }, constant: nil), parts)
        }
        let pe = parts[1].eval
        return CELCompiled(
            type: .bool,
            eval: { r, f in
                let s = se(r, f)
                let p = pe(r, f)
                guard case .string(let text) = s, case .string(let pattern) = p else {
                    return s.isError ? s : p.isError ? p : .noOverload("matches", [s, p])
                }
                guard let regex = try? CompiledRegex(pattern) else { return .error("invalid regular expression") }
                return .bool(regex.matches(text))
            }, constant: nil)
    }

    mutating func extremum(_ e: CELExpr, _ name: String, _ args: [CELExpr]) throws -> CELCompiled {
        let parts = try args.map { try compile($0) }
        guard !parts.isEmpty else {
            throw CELIssue(pos: e.pos, message: "\(name)() requires at least one argument")
        }
        var types = parts.map(\.type)
        if parts.count == 1, case .list(let t) = types[0] { types = [t] }
        let numeric: Set<CELType> = [.int, .uint, .double, .dyn, .any]
        guard types.allSatisfy({ numeric.contains($0) }) else {
            throw CELIssue(
                pos: e.pos,
                message: "\(name)() invalid argument types: " + types.map(\.description).joined(separator: ", "))
        }
        let greatest = name == "math.greatest"
        let evals = parts.map(\.eval)
        let eval: CELEval = { r, f in
            var values: [CELValue] = []
            for ev in evals {
                let v = ev(r, f)
                if v.isError { return v }
                values.append(v)
            }
            if values.count == 1, case .list(let l) = values[0] { values = l }
            guard var best = values.first else { return .error("\(name)() requires at least one argument") }
            for v in values {
                guard let c = CELValue.compareNumbers(v, best) else { return .noOverload(name, [v]) }
                if greatest ? c > 0 : c < 0 { best = v }
            }
            return best
        }
        return fold(CELCompiled(type: unify(types), eval: eval, constant: nil), parts)
    }

    mutating func variable(_ arg: CELExpr) throws -> String {
        guard case .ident(let name) = arg.kind else {
            throw CELIssue(pos: arg.pos, message: "argument must be a simple name")
        }
        return name
    }

    mutating func bind(_ e: CELExpr, _ args: [CELExpr]) throws -> CELCompiled {
        let name = try variable(args[0])
        let initial = try compile(args[1])
        let slot = slotCount
        slotCount += 1
        scopes.append((name, slot, initial.type))
        let body = try compile(args[2])
        scopes.removeLast()
        let ie = initial.eval
        let be = body.eval
        return CELCompiled(
            type: body.type,
            eval: { r, f in
                f.slots[slot] = ie(r, f)
                return be(r, f)
            }, constant: nil)
    }

    mutating func comprehension(_ e: CELExpr, _ name: String, _ target: CELExpr, _ args: [CELExpr]) throws
        -> CELCompiled
    {
        let range = try compile(target)
        let v = try variable(args[0])
        let elementType: CELType
        switch range.type {
        case .list(let t): elementType = t
        case .map(let k, _): elementType = k
        case .dyn, .any: elementType = .dyn
        default:
            throw CELIssue(
                pos: target.pos,
                message:
                    "expression of type '\(range.type)' cannot be range of a comprehension (must be list, map, or dynamic)"
            )
        }
        let slot = slotCount
        slotCount += 1
        scopes.append((v, slot, elementType))
        defer { scopes.removeLast() }
        let first = try compile(args[1])
        let second = args.count == 3 ? try compile(args[2]) : nil
        let re = range.eval
        func elements(_ value: CELValue) -> [CELValue]? {
            switch value {
            case .list(let l): return l
            case .map(let m): return m.keys
            default: return nil
            }
        }
        let pe = first.eval
        switch name {
        case "all", "exists", "exists_one":
            guard CELType.bool.accepts(first.type) else {
                throw CELIssue(pos: args[1].pos, message: "expected type 'bool' but found '\(first.type)'")
            }
            let mode = name
            return CELCompiled(
                type: .bool,
                eval: { r, f in
                    let rv = re(r, f)
                    if rv.isError { return rv }
                    guard let items = elements(rv) else { return .noOverload(mode, [rv]) }
                    var error: CELValue? = nil
                    var count = 0
                    for item in items {
                        f.slots[slot] = item
                        let p = pe(r, f)
                        switch p {
                        case .bool(let b):
                            if mode == "all" && !b { return .bool(false) }
                            if mode == "exists" && b { return .bool(true) }
                            if b { count += 1 }
                        case .error:
                            if mode == "exists_one" { return p }
                            if error == nil { error = p }
                        default:
                            if error == nil { error = .noOverload(mode, [p]) }
                        }
                    }
                    if let error { return error }
                    switch mode {
                    case "all": return .bool(true)
                    case "exists": return .bool(false)
                    default: return .bool(count == 1)
                    }
                }, constant: nil)
        case "filter":
            guard CELType.bool.accepts(first.type) else {
                throw CELIssue(pos: args[1].pos, message: "expected type 'bool' but found '\(first.type)'")
            }
            return CELCompiled(
                type: .list(elementType),
                eval: { r, f in
                    let rv = re(r, f)
                    if rv.isError { return rv }
                    guard let items = elements(rv) else { return .noOverload("filter", [rv]) }
                    var out: [CELValue] = []
                    for item in items {
                        f.slots[slot] = item
                        switch pe(r, f) {
                        case .bool(true): out.append(item)
                        case .bool(false): break
                        case .error(let m): return .error(m)
                        case let other: return .noOverload("filter", [other])
                        }
                    }
                    return .list(out)
                }, constant: nil)
        default:  // map, with an optional filter
            let transform = second ?? first
            let te = transform.eval
            let filtered = second != nil
            if filtered && !CELType.bool.accepts(first.type) {
                throw CELIssue(pos: args[1].pos, message: "expected type 'bool' but found '\(first.type)'")
            }
            return CELCompiled(
                type: .list(transform.type),
                eval: { r, f in
                    let rv = re(r, f)
                    if rv.isError { return rv }
                    guard let items = elements(rv) else { return .noOverload("map", [rv]) }
                    var out: [CELValue] = []
                    for item in items {
                        f.slots[slot] = item
                        if filtered {
                            switch pe(r, f) {
                            case .bool(true): break
                            case .bool(false): continue
                            case .error(let m): return .error(m)
                            case let other: return .noOverload("map", [other])
                            }
                        }
                        let t = te(r, f)
                        if t.isError { return t }
                        out.append(t)
                    }
                    return .list(out)
                }, constant: nil)
        }
    }
}
