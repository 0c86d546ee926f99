import UsherCaddyfile
import UsherCore

// `rewrite`, `uri`, `method` and `handle_path`: the Caddyfile forms of the `rewrite` handler.

let rewriteParsers = CaddyfileSupport(
    directives: [
        "rewrite": parseRewriteDirective,
        "handle_path": parseHandlePathDirective,
    ],
    handlerDirectives: [
        "method": parseMethodDirective,
        "uri": parseURIDirective,
    ]
)

func parseRewriteDirective(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let count = d.countRemainingArgs()
    if count == 0 { throw d.err("too few arguments; must have at least a rewrite URI") }
    if count > 2 { throw d.err("too many arguments; should only be a matcher and a URI") }
    if count == 1 {
        guard d.nextArg() else { throw d.argErr() }
        return h.newRoute(nil, handlerObject("rewrite", ["uri": .string(d.val)]))
    }
    let matcherSet = try h.extractMatcherSet()
    d.next()
    d.next()
    var o = JSONObject()
    o.put("uri", d.val)
    return h.newRoute(matcherSet, handlerObject("rewrite", o))
}

func parseMethodDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    if d.nextArg() { throw d.argErr() }
    return handlerObject("rewrite", ["method": .string(d.val)])
}

struct QueryOpsJSON {
    var rename: [JSONObject] = []
    var set: [JSONObject] = []
    var add: [JSONObject] = []
    var replace: [JSONObject] = []
    var delete: [String] = []

    var json: JSONObject {
        var o = JSONObject()
        o.put("rename", rename)
        o.put("set", set)
        o.put("add", add)
        o.put("replace", replace)
        o.put("delete", delete)
        return o
    }

    static func keyVal(_ k: String, _ v: String) -> JSONObject {
        var o = JSONObject()
        o.put("key", k)
        o.put("val", v)
        return o
    }

    mutating func apply(_ d: Dispenser, _ args: [String]) throws {
        let key = args[0]
        if key.hasPrefix("-") {
            guard args.count == 1 else { throw d.argErr() }
            delete.append(String(key.drop(while: { $0 == "-" })))
        } else if key.hasPrefix("+") {
            guard args.count == 2 else { throw d.argErr() }
            add.append(Self.keyVal(String(key.drop(while: { $0 == "+" })), args[1]))
        } else if key.contains(">") {
            guard args.count == 1 else { throw d.argErr() }
            let parts = key.split(separator: ">", omittingEmptySubsequences: false).map(String.init)
            rename.append(Self.keyVal(parts[0], parts[1]))
        } else if args.count == 3 {
            var r = JSONObject()
            r.put("key", key)
            r.put("search_regexp", args[1])
            r.put("replace", args[2])
            replace.append(r)
        } else {
            guard args.count == 2 else { throw d.argErr() }
            set.append(Self.keyVal(key, args[1]))
        }
    }
}

func parseURIDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    let args = d.remainingArgs()
    guard !args.isEmpty else { throw d.argErr() }
    var o = JSONObject()
    switch args[0] {
    case "strip_prefix":
        guard args.count == 2 else { throw d.argErr() }
        o.put("strip_path_prefix", args[1])
    case "strip_suffix":
        guard args.count == 2 else { throw d.argErr() }
        o.put("strip_path_suffix", args[1])
    case "replace":
        guard args.count == 3 || args.count == 4 else { throw d.argErr() }
        var limit = 0
        if args.count == 4 && !args[3].isEmpty {
            do { limit = try Go.atoi(args[3]) } catch { throw d.err("limit must be an integer; invalid: \(error)") }
        }
        var r = JSONObject()
        r.put("find", args[1])
        r.put("replace", args[2])
        r.put("limit", limit)
        o["uri_substring"] = .array([.object(r)])
    case "path_regexp":
        guard args.count == 3 else { throw d.argErr() }
        var r = JSONObject()
        r.put("find", args[1])
        r.put("replace", args[2])
        o["path_regexp"] = .array([.object(r)])
    case "query":
        guard args.count <= 4 else { throw d.argErr() }
        var q = QueryOpsJSON()
        var hasArgs = false
        if args.count > 1 {
            hasArgs = true
            try q.apply(d, Array(args[1...]))
        }
        while d.nextBlock(0) {
            if hasArgs { throw d.err("Cannot specify uri query rewrites in both argument and block") }
            try q.apply(d, [d.val] + d.remainingArgs())
        }
        o["query"] = .object(q.json)
    default:
        throw d.err("unrecognized URI manipulation '\(args[0])'")
    }
    return handlerObject("rewrite", o)
}

func parseHandlePathDirective(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let path = d.val
    guard path.hasPrefix("/") else { throw d.err("path matcher must begin with '/', got \(path)") }
    var strip = path
    if path.hasSuffix("/*") {
        strip = String(path.dropLast(2))
    } else if path.hasSuffix("*") {
        strip = String(path.dropLast())
    }
    d.reset()
    d.next()
    var sub = try h.parseSegmentAsSubroute()
    var rewrite = JSONObject()
    rewrite.put("strip_path_prefix", strip)
    sub.routes.insert(HTTPRoute(handlers: [handlerObject("rewrite", rewrite)]), at: 0)
    return h.newRoute(["path": .strings([path])], sub.handler)
}
