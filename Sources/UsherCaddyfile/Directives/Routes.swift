public import UsherCore

/// A route as Caddy's JSON has it: `group`, `match`, `handle`, `terminal`.
public struct HTTPRoute: Equatable {
    public var group = ""
    /// Matcher sets, each an object of matcher name → matcher JSON (keys sorted).
    public var matcherSets: [JSONObject] = []
    /// Handler module objects.
    public var handlers: [JSONObject] = []
    public var terminal = false

    public init(group: String = "", matcherSets: [JSONObject] = [], handlers: [JSONObject] = [], terminal: Bool = false)
    {
        self.group = group
        self.matcherSets = matcherSets
        self.handlers = handlers
        self.terminal = terminal
    }

    public var json: JSONObject {
        var o = JSONObject()
        o.put(RouteKeys.group, group)
        o.put(RouteKeys.match, matcherSets)
        o.put(RouteKeys.handle, handlers)
        o.put(RouteKeys.terminal, terminal)
        return o
    }

    /// Whether the matcher sets equal `other`'s, ignoring key order inside each set.
    package func sameMatchers(as other: HTTPRoute) -> Bool {
        matcherSets.count == other.matcherSets.count
            && zip(matcherSets, other.matcherSets).allSatisfy { $0.sameMembers(as: $1) }
    }
}

/// The `subroute` handler: routes and optional error routes.
public struct HTTPSubroute {
    public var routes: [HTTPRoute] = []
    /// Error routes; `nil` when there is no `errors` object.
    public var errors: [HTTPRoute]?

    public init(routes: [HTTPRoute] = [], errors: [HTTPRoute]? = nil) {
        self.routes = routes
        self.errors = errors
    }

    /// The handler module object.
    public var handler: JSONObject {
        var o = JSONObject()
        o.put(RouteListKeys.routes, routes.map(\.json))
        if let errors {
            var e = JSONObject()
            e.put(RouteListKeys.routes, errors.map(\.json))
            o[RouteListKeys.errors] = .object(e)
        }
        return handlerObject("subroute", o)
    }
}

/// Sorts (when asked), groups and merges routes from directives into one subroute (Caddy's `buildSubroute`).
package func buildSubroute(_ input: [ConfigValue], context: AdaptContext, needsSorting: Bool) throws -> HTTPSubroute {
    var routes = input
    if needsSorting {
        for v in routes where !context.directiveOrder.contains(v.directive) {
            let message =
                "directive '\(v.directive)' is not an ordered HTTP handler, so it cannot be used here - try placing within a route block or using the order global option"
            if let t = v.token { throw CaddyfileError.at(t, message) }
            throw CaddyfileError(message)
        }
        sortRoutes(&routes, order: context.directiveOrder)
    }

    // Some directives are mutually exclusive: only the first matching instance runs, so their routes share a group.
    // Keys are visited in sorted order so group numbers are stable; `rewrite` always gets its own group so it is
    // never merged with a neighbouring route that happens to have the same matcher.
    var groupNames: [String: String] = [:]
    for dir in ["handle", "rewrite", "root"] {
        let count = routes.filter { $0.directive == dir }.count
        if count > 1 || dir == "rewrite" {
            groupNames[dir] = context.nextGroup()
        } else {
            groupNames[dir] = ""
        }
    }

    var sub = HTTPSubroute()
    for var r in routes {
        if let name = groupNames[r.directive], var route = r.value as? HTTPRoute {
            route.group = name
            r.value = route
        }
        if let s = r.value as? HTTPSubroute {
            sub.routes.append(contentsOf: s.routes)
        } else if let route = r.value as? HTTPRoute {
            sub.routes.append(route)
        }
    }
    sub.routes = consolidateRoutes(sub.routes)
    return sub
}

/// Sorts route values by directive order; within a directive, more specific path matchers first (Caddy's
/// `sortRoutes`, a stable sort).
package func sortRoutes(_ routes: inout [ConfigValue], order: [String]) {
    var positions: [String: Int] = [:]
    for (i, d) in order.enumerated() { positions[d] = i }

    func singlePath(_ v: ConfigValue) -> String? {
        guard let r = v.value as? HTTPRoute, r.matcherSets.count == 1,
            let paths = r.matcherSets[0]["path"]?.stringArray, paths.count == 1
        else { return nil }
        return paths[0]
    }

    func less(_ a: ConfigValue, _ b: ConfigValue) -> Bool {
        if a.directive != b.directive {
            return (positions[a.directive] ?? 0) < (positions[b.directive] ?? 0)
        }
        guard let ar = a.value as? HTTPRoute, let br = b.value as? HTTPRoute else { return false }
        let ap = singlePath(a)
        let bp = singlePath(b)
        var aLen = ap.map { $0.utf8.count } ?? 0
        var bLen = bp.map { $0.utf8.count } ?? 0
        let byPath: Bool
        if aLen > 0 && bLen > 0, let ap, let bp {
            let at = ap.hasSuffix("*") ? String(ap.dropLast()) : ap
            let bt = bp.hasSuffix("*") ? String(bp.dropLast()) : bp
            if at == bt {
                byPath = aLen < bLen
            } else {
                aLen = at.utf8.count
                bLen = bt.utf8.count
                if aLen == bLen {
                    byPath = Array(at.utf8).lexicographicallyPrecedes(Array(bt.utf8))
                } else {
                    byPath = aLen > bLen
                }
            }
        } else {
            byPath = !ar.matcherSets.isEmpty && br.matcherSets.isEmpty
        }
        // `vars` sorts in reverse so the most specific assignment runs last and wins.
        if a.directive == "vars" { return !byPath }
        return byPath
    }

    routes = goStableSort(routes, less)
}

/// Go's `sort.SliceStable` (insertion sort over blocks, then merges): the same result as any stable sort when
/// `less` is a strict weak order, and the same result as Go's when it is not, which matters for Caddy's
/// `sortRoutes` (its `vars` rule is not a strict weak order).
package func goStableSort<T>(_ input: [T], _ less: (T, T) -> Bool) -> [T] {
    var data = input
    let n = data.count
    var blockSize = 20
    var a = 0
    var b = blockSize
    func insertionSort(_ a: Int, _ b: Int) {
        guard b > a + 1 else { return }
        for i in (a + 1)..<b {
            var j = i
            while j > a && less(data[j], data[j - 1]) {
                data.swapAt(j, j - 1)
                j -= 1
            }
        }
    }
    func symMerge(_ a: Int, _ m: Int, _ b: Int) {
        if m - a == 1 {
            var i = m
            var j = b
            while i < j {
                let h = Int(UInt(i + j) >> 1)
                if less(data[h], data[a]) { i = h + 1 } else { j = h }
            }
            var k = a
            while k < i - 1 {
                data.swapAt(k, k + 1)
                k += 1
            }
            return
        }
        if b - m == 1 {
            var i = a
            var j = m
            while i < j {
                let h = Int(UInt(i + j) >> 1)
                if !less(data[m], data[h]) { i = h + 1 } else { j = h }
            }
            var k = m
            while k > i {
                data.swapAt(k, k - 1)
                k -= 1
            }
            return
        }
        let mid = Int(UInt(a + b) >> 1)
        let nn = mid + m
        var start: Int
        var r: Int
        if m > mid {
            start = nn - b
            r = mid
        } else {
            start = a
            r = m
        }
        let p = nn - 1
        while start < r {
            let c = Int(UInt(start + r) >> 1)
            if !less(data[p - c], data[c]) { start = c + 1 } else { r = c }
        }
        let end = nn - start
        if start < m && m < end { rotate(start, m, end) }
        if a < start && start < mid { symMerge(a, start, mid) }
        if mid < end && end < b { symMerge(mid, end, b) }
    }
    func swapRange(_ a: Int, _ b: Int, _ n: Int) {
        for i in 0..<n { data.swapAt(a + i, b + i) }
    }
    func rotate(_ a: Int, _ m: Int, _ b: Int) {
        var i = m - a
        var j = b - m
        while i != j {
            if i > j {
                swapRange(m - i, m, j)
                i -= j
            } else {
                swapRange(m - i, m + j - i, i)
                j -= i
            }
        }
        swapRange(m - i, m, i)
    }
    while b <= n {
        insertionSort(a, b)
        a = b
        b += blockSize
    }
    insertionSort(a, n)
    while blockSize < n {
        a = 0
        b = 2 * blockSize
        while b <= n {
            symMerge(a, a + blockSize, b)
            a = b
            b += 2 * blockSize
        }
        let m = a + blockSize
        if m < n { symMerge(a, m, n) }
        blockSize *= 2
    }
    return data
}

/// Merges adjacent routes with the same matchers, group and terminal flag.
package func consolidateRoutes(_ input: [HTTPRoute]) -> [HTTPRoute] {
    var routes = input
    var i = 0
    while i < routes.count - 1 {
        if routes[i].sameMatchers(as: routes[i + 1]) && routes[i].terminal == routes[i + 1].terminal
            && routes[i].group == routes[i + 1].group
        {
            routes[i].handlers.append(contentsOf: routes[i + 1].handlers)
            routes.remove(at: i + 1)
        } else {
            i += 1
        }
    }
    return routes
}

// MARK: - Matchers

/// A matcher token: `*` (no matcher), `/path`, or `@name`. Returns nil and `false` for anything else.
package func matcherSetFromMatcherToken(_ token: CaddyfileToken, _ defs: [String: JSONObject]) throws -> (
    JSONObject?, Bool
) {
    if token.text == "*" { return (nil, true) }
    if token.text.hasPrefix("/") {
        return (["path": .strings([token.text])], true)
    }
    if token.text.hasPrefix("@") {
        guard let m = defs[token.text] else {
            throw CaddyfileError.at(token, "unrecognized matcher name: \(token.text)")
        }
        return (m, true)
    }
    return (nil, false)
}

/// The context key under which a matcher's parser finds its definition's name (without `@`).
public let matcherNameContextKey = "matcher_name"

/// Parses a named matcher definition (`@name ...` one-line or block) into `defs`.
package func parseMatcherDefinitions(_ d: Dispenser, _ defs: inout [String: JSONObject], registry: CaddyfileRegistry)
    throws
{
    d.next()
    let name = d.val
    guard defs[name] == nil else { throw d.err("matcher is defined more than once: \(name)") }
    var set = JSONObject()

    func makeMatcher(_ matcherName: String, _ tokens: [CaddyfileToken]) throws {
        let dispenser = Dispenser(tokens)
        dispenser.setContext(matcherNameContextKey, String(name.dropFirst()))
        guard let parser = registry.modules["http.matchers." + matcherName] else {
            let message = "getting matcher module '\(matcherName)': module not registered: http.matchers.\(matcherName)"
            if let t = tokens.first { throw CaddyfileError.at(t, message) }
            throw CaddyfileError(message)
        }
        set[matcherName] = try parser(dispenser, registry)
    }

    // A quoted first argument is a CEL expression without the matcher name.
    if d.nextArg() {
        if d.token.wasQuoted {
            var exprToken = d.token
            exprToken.text = "expression"
            exprToken.quote = nil
            try makeMatcher("expression", [exprToken, d.token])
            defs[name] = set.sortedByKey()
            return
        }
        d.prev()
    }

    // Several instances of one matcher are concatenated so the matcher's parser sees them all.
    var tokensByName: [String: [CaddyfileToken]] = [:]
    var names: [String] = []
    let nesting = d.nesting
    while d.nextArg() || d.nextBlock(nesting) {
        let m = d.val
        if tokensByName[m] == nil { names.append(m) }
        tokensByName[m, default: []].append(contentsOf: d.nextSegment())
    }
    for m in names { try makeMatcher(m, tokensByName[m]!) }
    defs[name] = set.sortedByKey()
}

/// A matcher set written inline in a block (Caddy's `ParseCaddyfileNestedMatcherSet`), as used by `not`. A quoted
/// token stands for an `expression` matcher.
public func parseNestedMatcherSet(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    var tokensByName: [String: [CaddyfileToken]] = [:]
    var names: [String] = []
    let nesting = d.nesting
    while d.nextArg() || d.nextBlock(nesting) {
        if d.token.wasQuoted {
            var expr = d.token
            expr.text = "expression"
            expr.quote = nil
            if tokensByName["expression"] == nil { names.append("expression") }
            tokensByName["expression", default: []].append(contentsOf: [expr, d.token])
            continue
        }
        let name = d.val
        if tokensByName[name] == nil { names.append(name) }
        tokensByName[name, default: []].append(contentsOf: d.nextSegment())
    }
    var set = JSONObject()
    for name in names {
        guard let parser = registry.modules["http.matchers." + name] else {
            throw d.err("getting matcher module '\(name)': module not registered: http.matchers.\(name)")
        }
        set[name] = try parser(Dispenser(tokensByName[name]!), registry)
    }
    return set.sortedByKey()
}
