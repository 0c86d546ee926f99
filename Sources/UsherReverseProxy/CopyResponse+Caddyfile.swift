import UsherCaddyfile
import UsherCore

func parseCopyResponse(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    let args = d.remainingArgs()
    var o = JSONObject()
    if args.count == 1, let n = try? Go.atoi(args[0]), n > 0 {
        o["status_code"] = weakStringJSON(args[0])
        return handlerObject("copy_response", o)
    }
    while d.nextBlock(0) {
        switch d.val {
        case "status":
            guard d.nextArg() else { throw d.argErr() }
            o["status_code"] = weakStringJSON(d.val)
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    return handlerObject("copy_response", o)
}

func parseCopyResponseHeaders(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if !d.remainingArgs().isEmpty { throw d.argErr() }
    var include: [String] = []
    var exclude: [String] = []
    while d.nextBlock(0) {
        switch d.val {
        case "include": include += d.remainingArgs()
        case "exclude": exclude += d.remainingArgs()
        default: throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("include", include)
    o.put("exclude", exclude)
    return handlerObject("copy_response_headers", o)
}
