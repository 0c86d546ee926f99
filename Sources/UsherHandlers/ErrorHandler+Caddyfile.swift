import UsherCaddyfile
import UsherCore

let errorParsers = CaddyfileSupport(handlerDirectives: [
    "error": { h in handlerObject("error", try parseStaticError(h.d)) }
])

/// `error` (Caddy's `StaticError.UnmarshalCaddyfile`).
func parseStaticError(_ d: Dispenser) throws -> JSONObject {
    d.next()
    let args = d.remainingArgs()
    var status = ""
    var message = ""
    switch args.count {
    case 1:
        if args[0].utf8.count == 3, let n = try? Go.atoi(args[0]), n > 0 {
            status = args[0]
        } else {
            message = args[0]
        }
    case 2:
        message = args[0]
        status = args[1]
    default:
        throw d.argErr()
    }
    while d.nextBlock(0) {
        switch d.val {
        case "message":
            if !message.isEmpty { throw d.err("message already specified") }
            guard let a = d.allArgs(1) else { throw d.argErr() }
            message = a[0]
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("error", message)
    if !status.isEmpty { o["status_code"] = weakStringJSON(status) }
    return o
}
