import UsherCaddyfile
import UsherCore

/// The settings the `srv` and `a` upstream sources share: refresh, resolvers and dialing.
struct DynamicSourceCommon {
    var refresh: Int64 = 0
    var resolver: JSONObject?
    var dialTimeout: Int64 = 0
    var fallbackDelay: Int64 = 0

    /// Handles the current subdirective if it is one of the shared ones; returns whether it was.
    mutating func parse(_ d: Dispenser) throws -> Bool {
        func duration(_ what: String) throws -> Int64 {
            guard d.nextArg() else { throw d.argErr() }
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("\(what) '\(d.val)': \(error)") }
        }
        switch d.val {
        case "refresh":
            guard d.nextArg() else { throw d.argErr() }
            do { refresh = try Go.caddyDuration(d.val) } catch {
                throw d.err("parsing refresh interval duration: \(error)")
            }
        case "resolvers":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.err("must specify at least one resolver address") }
            resolver = ["addresses": .strings(a)]
        case "dial_timeout":
            dialTimeout = try duration("bad timeout value")
        case "dial_fallback_delay":
            fallbackDelay = try duration("bad delay value")
        default:
            return false
        }
        return true
    }
}

func parseSRVUpstreams(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.count > 1 { throw d.argErr() }
    var service = ""
    var proto = ""
    var name = args.first ?? ""
    var grace: Int64 = 0
    var common = DynamicSourceCommon()
    while d.nextBlock(0) {
        if try common.parse(d) { continue }
        switch d.val {
        case "service":
            try d.setArgOnce(&service, duplicateMessage: "srv service has already been specified")
        case "proto":
            try d.setArgOnce(&proto, duplicateMessage: "srv proto has already been specified")
        case "name":
            try d.setArgOnce(&name, duplicateMessage: "srv name has already been specified")
        case "grace_period":
            guard d.nextArg() else { throw d.argErr() }
            do { grace = try Go.caddyDuration(d.val) } catch {
                throw d.err("bad grace period value '\(d.val)': \(error)")
            }
        default:
            throw d.err("unrecognized srv option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("service", service)
    o.put("proto", proto)
    o.put("name", name)
    o.putDuration("refresh", common.refresh)
    o.putDuration("grace_period", grace)
    o.put("resolver", common.resolver)
    o.putDuration("dial_timeout", common.dialTimeout)
    o.putDuration("dial_fallback_delay", common.fallbackDelay)
    return .object(o)
}

func parseAUpstreams(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    let args = d.remainingArgs()
    if args.count > 2 { throw d.argErr() }
    var name = args.first ?? ""
    var port = args.count == 2 ? args[1] : ""
    var versions: JSONObject?
    var common = DynamicSourceCommon()
    while d.nextBlock(0) {
        if try common.parse(d) { continue }
        switch d.val {
        case "name":
            try d.setArgOnce(&name, duplicateMessage: "a name has already been specified")
        case "port":
            try d.setArgOnce(&port, duplicateMessage: "a port has already been specified")
        case "versions":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.err("must specify at least one version") }
            var v = versions ?? JSONObject()
            for arg in a {
                switch arg {
                case "ipv4": v["ipv4"] = .bool(true)
                case "ipv6": v["ipv6"] = .bool(true)
                default: throw d.err("unsupported version: '\(arg)'")
                }
            }
            versions = ordered(v, ["ipv4", "ipv6"])
        default:
            throw d.err("unrecognized a option '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("name", name)
    o.put("port", port)
    o.putDuration("refresh", common.refresh)
    o.put("resolver", common.resolver)
    o.putDuration("dial_timeout", common.dialTimeout)
    o.putDuration("dial_fallback_delay", common.fallbackDelay)
    o.put("versions", versions)
    return .object(o)
}

func parseMultiUpstreams(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.nextArg() { throw d.argErr() }
    var sources: [JSONObject] = []
    while d.nextBlock(0) {
        let name = d.val
        let fields = try registry.unmarshalModuleObject(d, "http.reverse_proxy.upstreams." + name)
        sources.append(moduleObject(fields, key: "source", name: name))
    }
    var o = JSONObject()
    o.put("sources", sources)
    return .object(o)
}
