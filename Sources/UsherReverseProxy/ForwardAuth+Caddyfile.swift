import UsherCaddyfile
import UsherCore
import UsherHTTP
import UsherHandlers

// `forward_auth`: a `reverse_proxy` that asks an authentication service first (Caddy's forwardauth package).

func parseForwardAuth(_ h: Helper) throws -> [ConfigValue] {
    guard h.d.next() else { throw h.d.argErr() }
    let userMatcherSet = try h.extractMatcherSet()
    let d = h.d.newFromNextSegment()

    var rp = ReverseProxyHandler.Document()
    var reqOps = HeaderOpsJSON()
    try caddyfileHeaderOp(&reqOps, field: "X-Forwarded-Method", value: "{http.request.method}", replacement: nil)
    try caddyfileHeaderOp(&reqOps, field: "X-Forwarded-Uri", value: "{http.request.uri}", replacement: nil)
    rp.requestHeaders = reqOps
    var uri = ""
    var headersToCopy: [String: String] = [:]

    while d.next() {
        while d.nextBlock(0) {
            if d.nesting != 1 { continue }
            switch d.val {
            case "uri":
                guard d.nextArg() else { throw d.argErr() }
                if !uri.isEmpty { throw d.err("cannot re-declare uri: \(d.val)") }
                uri = d.val
                d.deleteN(2)
            case "copy_headers":
                var args = d.remainingArgs()
                var hadBlock = false
                let nesting = d.nesting
                while d.nextBlock(nesting) {
                    hadBlock = true
                    args.append(d.val)
                }
                d.deleteN(args.count + 1)
                if hadBlock { d.deleteN(2) }
                for field in args {
                    if field.contains(">") {
                        let parts = field.split(separator: ">", omittingEmptySubsequences: false).map(String.init)
                        headersToCopy[parts[0]] = parts[1]
                    } else {
                        headersToCopy[field] = field
                    }
                }
                if headersToCopy.isEmpty { throw d.argErr() }
            default:
                break
            }
        }
    }
    d.reset()
    if uri.isEmpty { throw d.err("the 'uri' subdirective is required") }
    rp.rewrite = ["method": "GET", "uri": .string(uri)]

    var routes = [HTTPRoute(handlers: [handlerObject("vars")])]
    for from in headersToCopy.keys.sorted(by: goLess) {
        let to = Go.canonicalHeaderKey(headersToCopy[from]!)
        let placeholder = "http.reverse_proxy.header." + Go.canonicalHeaderKey(from)
        routes.append(HTTPRoute(handlers: [handlerObject("headers", ["request": .object(["delete": .strings([to])])])]))
        let notSet: JSONObject = ["not": .array([.object(["vars": .object(["{\(placeholder)}": .strings([""])])])])]
        routes.append(
            HTTPRoute(
                matcherSets: [notSet],
                handlers: [
                    handlerObject(
                        "headers", ["request": .object(["set": .object([to: .strings(["{\(placeholder)}"])])])])
                ]))
    }
    rp.responses.handlers.append((["status_code": .array([.number(JSONNumber(2))])], "", routes))

    d.next()
    try rp.unmarshal(d, h.registry)
    try rp.finalize(h)
    var route = HTTPRoute(handlers: [rp.handler])
    if let userMatcherSet { route.matcherSets = [userMatcherSet] }
    return [ConfigValue("route", route)]
}
