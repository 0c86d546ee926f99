import UsherCaddyfile
import UsherCore
import UsherTLS

// Request matchers whose Caddyfile syntax is kept here: `expression` (CEL) and `url_pattern`, whose runtime is not
// in this build yet, and `tls`. (`file` is with the file server.)

let extraMatcherParsers = CaddyfileSupport(modules: [
    "http.matchers.expression": { d, _ in
        d.next()
        // Several tokens are rejoined as written, quotes included, since the user may have quoted strings inside
        // the expression; a single token is the expression itself.
        if d.countRemainingArgs() > 1 {
            return .string(d.remainingArgsRaw().joined(separator: " "))
        }
        guard d.nextArg() else { throw d.argErr() }
        let expr = d.val
        let name = d.context(matcherNameContextKey)
        if name.isEmpty { return .string(expr) }
        return .object(["expr": .string(expr), "name": .string(name)])
    },
    "http.matchers.tls": { d, _ in
        var o = JSONObject()
        while d.next() {
            if d.nextArg() {
                switch d.val {
                case "early_data": o["handshake_complete"] = .bool(false)
                default: throw d.err("unrecognized option '\(d.val)'")
                }
            }
            if d.nextArg() { throw d.argErr() }
            if d.nextBlock(0) { throw d.err("malformed tls matcher: blocks are not supported yet") }
        }
        return .object(o)
    },
    "http.matchers.url_pattern": { d, _ in
        var pattern = ""
        var baseURL = ""
        var ignoreCase = false
        while d.next() {
            guard let a = d.args(1) else { throw d.err("expected exactly one URL pattern") }
            pattern = a[0]
            while d.nextBlock(0) {
                switch d.val {
                case "base_url":
                    guard let b = d.args(1) else { throw d.argErr() }
                    baseURL = b[0]
                case "ignore_case":
                    if d.nextArg() { throw d.argErr() }
                    ignoreCase = true
                default:
                    throw d.err("unrecognized url_pattern option '\(d.val)'")
                }
            }
        }
        var o = JSONObject()
        o.put("pattern", pattern)
        o.put("base_url", baseURL)
        o.put("ignore_case", ignoreCase)
        return .object(o)
    },
])
