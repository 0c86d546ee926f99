import UsherCaddyfile
import UsherCore

let metricsParsers = CaddyfileSupport(handlerDirectives: ["metrics": parseMetricsHandler])

func parseMetricsHandler(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if !d.remainingArgs().isEmpty { throw d.argErr() }
    var o = JSONObject()
    while d.nextBlock(0) {
        switch d.val {
        case "disable_openmetrics": o["disable_openmetrics"] = .bool(true)
        default: throw d.err("unrecognized subdirective \(Go.quote(d.val))")
        }
    }
    return handlerObject("metrics", o)
}
