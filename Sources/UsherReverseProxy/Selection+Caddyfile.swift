import UsherCaddyfile
import UsherCore

let noArgPolicy: ModuleParser = { d, _ in
    d.next()
    if d.nextArg() { throw d.argErr() }
    return .object(JSONObject())
}

func parseWeightedRoundRobin(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.isEmpty { throw d.argErr() }
    var weights: [JSONValue] = []
    for w in args {
        let n: Int
        do { n = try Go.atoi(w) } catch { throw d.err("invalid weight value '\(w)': \(error)") }
        if n < 0 { throw d.err("invalid weight value '\(w)': weight should be non-negative") }
        weights.append(.number(JSONNumber(n)))
    }
    return .object(["weights": .array(weights)])
}

func parseRandomChoose(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let n: Int
    do { n = try Go.atoi(d.val) } catch { throw d.err("invalid choice value '\(d.val)': \(error)") }
    var o = JSONObject()
    o.put("choose", n)
    return .object(o)
}

func fallbackPolicy(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    let name = d.val
    let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.selection_policies." + name)
    return moduleObject(fields, key: "policy", name: name)
}

func parseKeyedHashPolicy(_ d: Dispenser, _ registry: CaddyfileRegistry, field: String) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var o = JSONObject()
    o.put(field, d.val)
    while d.nextBlock(0) {
        switch d.val {
        case "fallback":
            guard d.nextArg() else { throw d.argErr() }
            if o["fallback"] != nil { throw d.err("fallback selection policy already specified") }
            o["fallback"] = .object(try fallbackPolicy(d, registry))
        default:
            throw d.err("unrecognized option '\(d.val)'")
        }
    }
    return .object(o)
}

func parseCookiePolicy(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    // Caddy reads the policy name itself as the first argument here.
    let args = d.remainingArgs()
    var name = ""
    var secret = ""
    switch args.count {
    case 1: break
    case 2: name = args[1]
    case 3:
        name = args[1]
        secret = args[2]
    default: throw d.argErr()
    }
    var maxAge: Int64 = 0
    var fallback: JSONObject?
    while d.nextBlock(0) {
        switch d.val {
        case "fallback":
            guard d.nextArg() else { throw d.argErr() }
            if fallback != nil { throw d.err("fallback selection policy already specified") }
            fallback = try fallbackPolicy(d, registry)
        case "max_age":
            guard d.nextArg() else { throw d.argErr() }
            if maxAge != 0 { throw d.err("cookie max_age already specified") }
            guard let v = try? Go.caddyDuration(d.val) else { throw d.err("invalid duration: \(d.val)") }
            if v <= 0 { throw d.err("invalid duration: \(d.val), max_age should be non-zero and positive") }
            if d.nextArg() { throw d.argErr() }
            maxAge = v
        default:
            throw d.err("unrecognized option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("name", name)
    o.put("secret", secret)
    o.putDuration("max_age", maxAge)
    o.put("fallback", fallback)
    return .object(o)
}
