import UsherCaddyfile
import UsherCore
import UsherTLS

// Handler directives of the standard distribution whose modules are not in this build yet: timeouts, tracing,
// acme_server.

let otherHandlerParsers = CaddyfileSupport(
    directives: ["acme_server": parseACMEServer],
    handlerDirectives: [
        "timeouts": parseTimeouts,
        "tracing": parseTracing,
    ]
)

private func parseTimeouts(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var o = JSONObject()
    while d.nextBlock(0) {
        switch d.val {
        case "read_timeout", "write_timeout":
            let which = d.val
            let args = d.remainingArgs()
            guard args.count == 1 || args.count == 2 else { throw d.argErr() }
            let t: Int64
            do { t = try Go.timeDuration(args[0]) } catch { throw d.err("parsing \(which): \(error)") }
            o.putDuration(which, t)
            if args.count == 2 {
                let rate: Int
                do { rate = try Go.parseInt(args[1]) } catch { throw d.err("parsing \(which) min_rate: \(error)") }
                o.put(which == "read_timeout" ? "read_min_rate" : "write_min_rate", rate)
            }
        case "max_write_chunk":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            do { o.put("max_write_chunk", Int(try Go.parseBytes(a[0]))) } catch {
                throw d.err("parsing max_write_chunk: \(error)")
            }
        default:
            throw d.err("unrecognized timeouts subdirective '\(d.val)'")
        }
    }
    var ordered = JSONObject()
    for k in ["read_timeout", "read_min_rate", "write_timeout", "write_min_rate", "max_write_chunk"] {
        if let v = o[k] { ordered[k] = v }
    }
    return handlerObject("timeouts", ordered)
}

private func parseTracing(_ h: Helper) throws -> JSONObject {
    let d = h.d
    var span = ""
    var attributes: JSONObject?
    d.next()
    if d.nextArg() { throw d.argErr() }
    while d.nextBlock(0) {
        switch d.val {
        case "span_attributes":
            if attributes == nil { attributes = JSONObject() }
            while d.nextBlock(1) {
                let key = d.val
                guard d.nextArg() else { throw d.argErr() }
                let value = d.val
                if d.nextArg() { throw d.argErr() }
                attributes![key] = .string(value)
            }
        case "span":
            guard d.nextArg() else { throw d.argErr() }
            span = d.val
            if d.nextArg() { throw d.argErr() }
        default:
            throw d.argErr()
        }
    }
    var o = JSONObject()
    o["span"] = .string(span)
    o.putMap("span_attributes", attributes?.sortedByKey() ?? JSONObject())
    return handlerObject("tracing", o)
}

private func parseACMEServer(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let matcherSet = try h.extractMatcherSet()
    d.next()
    if d.nextArg() { throw d.argErr() }
    var ca = ""
    var caValue: CAConfig.Document?
    var lifetime: Int64 = 0
    var resolvers: [String] = []
    var challenges: [String] = []
    var policy: JSONObject?
    var signWithRoot = false
    func ruleSet(_ kind: String) throws -> JSONObject {
        var domains: [String] = []
        var ranges: [String] = []
        let nesting = d.nesting
        while d.nextBlock(nesting) {
            if d.countRemainingArgs() == 0 { throw d.argErr() }
            switch d.val {
            case "domains": domains += d.remainingArgs()
            case "ip_ranges": ranges += d.remainingArgs()
            default: throw d.err("unrecognized '\(kind)' subdirective: \(d.val)")
            }
        }
        var r = JSONObject()
        r.put("domains", domains)
        r.put("ip_ranges", ranges)
        return r
    }
    while d.nextBlock(0) {
        switch d.val {
        case "ca":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            ca = a[0]
            if caValue == nil { caValue = CAConfig.Document() }
            caValue!.id = ca
        case "lifetime":
            guard d.nextArg() else { throw d.argErr() }
            lifetime = try Go.caddyDuration(d.val)
        case "resolvers":
            resolvers = d.remainingArgs()
            if resolvers.isEmpty { throw d.err("must specify at least one resolver address") }
        case "challenges":
            challenges += d.remainingArgs()
        case "allow_wildcard_names":
            var p = policy ?? JSONObject()
            p["allow_wildcard_names"] = .bool(true)
            policy = p
        case "allow", "deny":
            let which = d.val
            let r = try ruleSet(which)
            var p = policy ?? JSONObject()
            p[which] = .object(r)
            policy = p
        case "sign_with_root":
            if d.nextArg() { throw d.argErr() }
            signWithRoot = true
        default:
            throw d.err("unrecognized ACME server directive: \(d.val)")
        }
    }
    var o = JSONObject()
    o.put("ca", ca)
    o.putDuration("lifetime", lifetime)
    o.put("sign_with_root", signWithRoot)
    o.put("resolvers", resolvers)
    o.put("challenges", challenges)
    if let policy {
        var p = JSONObject()
        for k in ["allow", "deny", "allow_wildcard_names"] { if let v = policy[k] { p[k] = v } }
        o["policy"] = .object(p)
    }
    var values = h.newRoute(matcherSet, handlerObject("acme_server", o))
    if let caValue { values.append(ConfigValue("pki.ca", caValue)) }
    return values
}
