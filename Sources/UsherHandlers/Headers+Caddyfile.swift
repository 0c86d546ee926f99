import UsherCaddyfile
import UsherCore
import UsherHTTP

let headerParsers = CaddyfileSupport(directives: [
    "header": parseHeaderDirective,
    "request_header": parseRequestHeaderDirective,
])

func headersHandler(request: HeaderOpsJSON?, response: ResponseHeaderOpsJSON?) -> JSONObject {
    var o = JSONObject()
    if let request { o["request"] = .object(request.json) }
    if let response { o["response"] = .object(response.json) }
    return handlerObject("headers", o)
}

func parseHeaderDirective(_ h: Helper) throws -> [ConfigValue] {
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

func parseRequestHeaderDirective(_ h: Helper) throws -> [ConfigValue] {
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
