import UsherCaddyfile
import UsherCore

// `respond`, `abort` and `redir`: the Caddyfile forms of `static_response`.

let staticResponseParsers = CaddyfileSupport(handlerDirectives: [
    "respond": { h in handlerObject("static_response", try parseStaticResponse(h.d)) },
    "abort": parseAbort,
    "redir": parseRedir,
])

/// `respond` (Caddy's `StaticResponse.UnmarshalCaddyfile`).
func parseStaticResponse(_ d: Dispenser) throws -> JSONObject {
    d.next()
    let args = d.remainingArgs()
    var status = ""
    var body = ""
    var close = false
    switch args.count {
    case 1:
        if args[0].utf8.count == 3, let n = try? Go.atoi(args[0]), n > 0 {
            status = args[0]
        } else {
            body = args[0]
        }
    case 2:
        body = args[0]
        status = args[1]
    default:
        throw d.argErr()
    }
    while d.nextBlock(0) {
        switch d.val {
        case "body":
            if !body.isEmpty { throw d.err("body already specified") }
            guard let a = d.allArgs(1) else { throw d.argErr() }
            body = a[0]
        case "close":
            if close { throw d.err("close already specified") }
            close = true
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    if !status.isEmpty { o["status_code"] = weakStringJSON(status) }
    o.put("body", body)
    o.put("close", close)
    return o
}

func parseAbort(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if d.next() || d.nextBlock(0) { throw d.argErr() }
    return handlerObject("static_response", ["abort": true])
}

func parseRedir(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let to = d.val
    var code = ""
    if d.nextArg() { code = d.val }
    var body = ""
    var headers: [(String, [String])] = []
    switch code {
    case "permanent":
        code = "301"
    case "temporary", "":
        code = "302"
    case "html":
        let safe = Go.htmlEscape(to)
        body = """
            <!DOCTYPE html>
            <html>
            \t<head>
            \t\t<title>Redirecting...</title>
            \t\t<script>window.location.replace("\(safe)");</script>
            \t\t<meta http-equiv="refresh" content="0; URL='\(safe)'">
            \t</head>
            \t<body>Redirecting to <a href="\(safe)">\(safe)</a>...</body>
            </html>

            """
        headers = [("Content-Type", ["text/html; charset=utf-8"])]
        code = "200"
    default:
        if code.hasPrefix("{") { break }
        guard let n = try? Go.atoi(code) else {
            throw d.err("Not a supported redir code type or not valid integer: '\(code)'")
        }
        if n < 300 || (n > 399 && n != 401) { throw d.err("Redir code not in the 3xx range or 401: '\(n)'") }
    }
    if code != "200" { headers = [("Location", [to])] }
    var o = JSONObject()
    o["status_code"] = weakStringJSON(code)
    o.putMap("headers", headerMapJSON(headers))
    o.put("body", body)
    return handlerObject("static_response", o)
}
