import UsherCaddyfile
import UsherCore

// `intercept`: `reverse_proxy`'s response handling for any handler's response. Its runtime is not in this build
// yet; its syntax lives beside the `handle_response` parsing it shares.

func parseIntercept(_ h: Helper) throws -> JSONObject {
    let d = h.d
    var responses = ResponseHandlers()
    d.next()
    while d.nextBlock(0) {
        if try !responses.parse(d) { throw d.err("unrecognized subdirective \(d.val)") }
    }
    try responses.finalize(h)
    var o = JSONObject()
    o.put("handle_response", responses.json)
    return handlerObject("intercept", o)
}
