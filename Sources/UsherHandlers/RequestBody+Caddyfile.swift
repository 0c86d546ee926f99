import UsherCaddyfile
import UsherCore

let requestBodyParsers = CaddyfileSupport(handlerDirectives: ["request_body": parseRequestBodyDirective])

func parseRequestBodyDirective(_ h: Helper) throws -> JSONObject {
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
