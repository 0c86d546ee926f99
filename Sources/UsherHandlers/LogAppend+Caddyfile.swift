import UsherCaddyfile
import UsherCore

let logAppendParsers = CaddyfileSupport(handlerDirectives: ["log_append": parseLogAppend])

/// `log_append [<matcher>] [<]<key> <value>`.
func parseLogAppend(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var key = d.val
    guard d.nextArg() else { throw d.argErr() }
    var early = false
    if key.hasPrefix("<") && key.count > 1 {
        early = true
        key.removeFirst()
    }
    var o = JSONObject()
    o.put("key", key)
    o.put("value", d.val)
    o.put("early", early)
    return handlerObject("log_append", o)
}
