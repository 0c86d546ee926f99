public import UsherCaddyfile
import UsherCore

/// Caddyfile directives for the handlers in this module: `header`, `request_header`, `rewrite`, `method`, `uri`,
/// `handle_path`, `map`, `request_body`.
public enum HandlerCaddyfile {
    public static let support = CaddyfileSupport(
        directives: [
            "header": parseHeaderDirective,
            "request_header": parseRequestHeaderDirective,
            "rewrite": parseRewriteDirective,
            "handle_path": parseHandlePathDirective,
        ],
        handlerDirectives: [
            "method": parseMethodDirective,
            "uri": parseURIDirective,
            "map": parseMapDirective,
            "request_body": parseRequestBodyDirective,
        ]
    )
}

private func headersHandler(request: HeaderOpsJSON?, response: ResponseHeaderOpsJSON?) -> JSONObject {
    var o = JSONObject()
    if let request { o["request"] = .object(request.json) }
    if let response { o["response"] = .object(response.json) }
    return handlerObject("headers", o)
}

private func parseHeaderDirective(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let matcherSet = try h.extractMatcherSet()
    d.next()
    var handler = ResponseHeaderOpsJSON()
    var withRequire = ResponseHeaderOpsJSON()
    var hasArgs = false
    if d.nextArg() {
        hasArgs = true
        let field = d.val
        var value = ""
        var replacement: String?
        if d.nextArg() { value = d.val }
        if d.nextArg() { replacement = d.val }
        do { try applyResponseHeaderOp(&handler, field: field, value: value, replacement: replacement) } catch {
            throw d.err("\(error)")
        }
        if !handler.ops.delete.isEmpty { handler.deferred = true }
    }
    while d.nextBlock(0) {
        var field = d.val
        if field == "defer" {
            handler.deferred = true
            continue
        }
        if field == "match" {
            var matchers: [String: JSONObject] = [:]
            try parseNamedResponseMatcher(d.newFromNextSegment(), &matchers)
            handler.require = matchers["match"]
            continue
        }
        if hasArgs { throw d.err("cannot specify headers in both arguments and block") }
        if field.hasSuffix(":") { field.removeLast() }
        var value = ""
        var replacement: String?
        if d.nextArg() { value = d.val }
        if d.nextArg() { replacement = d.val }
        do {
            if field.hasPrefix("?") {
                try applyResponseHeaderOp(&withRequire, field: field, value: value, replacement: replacement)
            } else {
                try applyResponseHeaderOp(&handler, field: field, value: value, replacement: replacement)
            }
        } catch {
            throw d.err("\(error)")
        }
    }
    var values: [ConfigValue] = []
    // A handler is emitted only if it does something (Caddy compares with an empty one).
    if !handler.isEmpty { values += h.newRoute(matcherSet, headersHandler(request: nil, response: handler)) }
    if !withRequire.isEmpty { values += h.newRoute(matcherSet, headersHandler(request: nil, response: withRequire)) }
    return values
}

private func parseRequestHeaderDirective(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let matcherSet = try h.extractMatcherSet()
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var field = d.val
    if field.hasSuffix(":") { field.removeLast() }
    var value = ""
    var replacement: String?
    if d.nextArg() { value = d.val }
    if d.nextArg() {
        replacement = d.val
        if d.nextArg() { throw d.argErr() }
    }
    var ops = HeaderOpsJSON()
    do { try caddyfileHeaderOp(&ops, field: field, value: value, replacement: replacement) } catch {
        throw d.err("\(error)")
    }
    let values = h.newRoute(matcherSet, headersHandler(request: ops, response: nil))
    if d.nextArg() { throw d.argErr() }
    return values
}

private func parseRewriteDirective(_ h: Helper) throws -> [ConfigValue] {
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

private func parseMethodDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    if d.nextArg() { throw d.argErr() }
    return handlerObject("rewrite", ["method": .string(d.val)])
}

private struct QueryOpsJSON {
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

private func parseURIDirective(_ h: Helper) throws -> JSONObject {
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

private func parseHandlePathDirective(_ h: Helper) throws -> [ConfigValue] {
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

private func parseMapDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let source = d.val
    let destinations = d.remainingArgs()
    if destinations.isEmpty { throw d.err("missing destination argument(s)") }
    for dest in destinations {
        let shorthand = wasReplacedPlaceholderShorthand(dest)
        if !shorthand.isEmpty { throw d.err("destination \(shorthand) conflicts with a Caddyfile placeholder shorthand") }
    }
    var defaults: [String] = []
    var mappings: [JSONObject] = []
    while d.nextBlock(0) {
        if d.val == "default" {
            if !defaults.isEmpty { throw d.err("defaults already defined") }
            defaults = d.remainingArgs()
            while defaults.count < destinations.count { defaults.append("") }
            continue
        }
        let input = d.val
        var outs: [JSONValue] = []
        while d.nextArg() {
            let v = d.scalarVal
            outs.append(v == .string("-") ? .null : scalarJSON(v))
        }
        if outs.count > destinations.count { throw d.err("too many outputs") }
        while outs.count < destinations.count { outs.append(.null) }
        var m = JSONObject()
        if input.hasPrefix("~") { m.put("input_regexp", String(input.dropFirst())) } else { m.put("input", input) }
        m.put("outputs", outs)
        mappings.append(m)
    }
    var o = JSONObject()
    o.put("source", source)
    o.put("destinations", destinations)
    o.put("mappings", mappings)
    o.put("defaults", defaults)
    return handlerObject("map", o)
}

private func parseRequestBodyDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var o = JSONObject()
    while d.nextBlock(0) {
        switch d.val {
        case "max_size":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            do { o["max_size"] = .number(JSONNumber(Int(try Go.parseBytes(a[0])))) } catch {
                throw d.err("parsing max_size: \(error)")
            }
        case "set":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            o.put("set", a[0])
        default:
            throw d.err("unrecognized request_body subdirective '\(d.val)'")
        }
    }
    return handlerObject("request_body", o)
}
