import UsherCaddyfile
import UsherCore

let mapParsers = CaddyfileSupport(handlerDirectives: ["map": parseMapDirective])

func parseMapDirective(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let source = d.val
    let destinations = d.remainingArgs()
    if destinations.isEmpty { throw d.err("missing destination argument(s)") }
    for dest in destinations {
        let shorthand = wasReplacedPlaceholderShorthand(dest)
        if !shorthand.isEmpty {
            throw d.err("destination \(shorthand) conflicts with a Caddyfile placeholder shorthand")
        }
    }
    var defaults: [String] = []
    var mappings: [JSONObject] = []
    while d.nextBlock(0) {
        if d.val == "default" {
            if !defaults.isEmpty { throw d.err("defaults already defined") }
            defaults = d.remainingArgs()
            while defaults.count < destinations.count { defaults.append("") }
            continue
        }
        let input = d.val
        var outs: [JSONValue] = []
        while d.nextArg() {
            let v = d.scalarVal
            outs.append(v == .string("-") ? .null : scalarJSON(v))
        }
        if outs.count > destinations.count { throw d.err("too many outputs") }
        while outs.count < destinations.count { outs.append(.null) }
        var m = JSONObject()
        if input.hasPrefix("~") { m.put("input_regexp", String(input.dropFirst())) } else { m.put("input", input) }
        m.put("outputs", outs)
        mappings.append(m)
    }
    var o = JSONObject()
    o.put("source", source)
    o.put("destinations", destinations)
    o.put("mappings", mappings)
    o.put("defaults", defaults)
    return handlerObject("map", o)
}
