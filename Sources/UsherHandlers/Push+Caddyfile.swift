import UsherCaddyfile
import UsherCore

// `push` (HTTP/2 server push). Its runtime is not in this build yet; its syntax lives here, beside the header
// operations it shares with `header`.

let pushParsers = CaddyfileSupport(handlerDirectives: ["push": parsePush])

func parsePush(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var resources: [JSONObject] = []
    var headers: HeaderOpsJSON?
    func resource(_ method: String, _ target: String) -> JSONObject {
        var r = JSONObject()
        r.put("method", method)
        r.put("target", target)
        return r
    }
    if d.nextArg() { resources.append(resource("", d.val)) }
    while d.nextBlock(0) {
        switch d.val {
        case "headers":
            if d.nextArg() { throw d.argErr() }
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                let args = [d.val] + d.remainingArgs()
                var ops = headers ?? HeaderOpsJSON()
                try applyHeaderArgs(&ops, args, d)
                headers = ops
            }
        case "GET", "HEAD":
            let method = d.val
            guard d.nextArg() else { throw d.argErr() }
            resources.append(resource(method, d.val))
        default:
            resources.append(resource("", d.val))
        }
    }
    var o = JSONObject()
    o.put("resources", resources)
    o.put("headers", headers?.json)
    return handlerObject("push", o)
}

/// `intercept`: response matchers, `handle_response` routes and `replace_status`.
