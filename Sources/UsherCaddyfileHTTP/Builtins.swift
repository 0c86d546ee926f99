import UsherCaddyfile
import UsherCore
import UsherTLS

/// The directives built into the HTTP server type (Caddy's `builtins.go`).
let builtinDirectives = CaddyfileSupport(
    directives: [
        "bind": parseBind,
        "tls": parseTLS,
        "root": parseRoot,
        "handle_errors": parseHandleErrors,
        "log": { h in try parseLogHelper(h, globalLogNames: nil) },
    ],
    handlerDirectives: [
        "fs": parseFilesystem,
        "route": parseRoute,
        "handle": { h in try h.parseSegmentAsSubroute().handler },
        "invoke": parseInvoke,
        "skip_log": parseLogSkip,
        "log_skip": parseLogSkip,
        "log_name": { h in
            h.d.next()
            return handlerObject("vars", ["access_logger_names": .strings(h.d.remainingArgs())])
        },
    ]
)

func parseBind(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    return [ConfigValue("bind", try parseBindBlock(d, addresses: d.remainingArgs()))]
}

/// The `protocols` subdirective of `bind` and of the `default_bind` option, after their addresses.
func parseBindBlock(_ d: Dispenser, addresses: [String]) throws -> AddressesWithProtocols {
    var protocols: [String]?
    while d.nextBlock(0) {
        switch d.val {
        case "protocols":
            protocols = d.remainingArgs()
            if protocols!.isEmpty { throw d.err("protocols requires one or more arguments") }
        default:
            throw d.err("unknown subdirective: \(d.val)")
        }
    }
    return AddressesWithProtocols(addresses: addresses, protocols: protocols)
}

func parseRoot(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let count = d.countRemainingArgs()
    if count == 0 { throw d.err("too few arguments; must have at least a root path") }
    if count > 2 { throw d.err("too many arguments; should only be a matcher and a path") }
    if count == 1 {
        guard d.nextArg() else { throw d.argErr() }
        h.blockState["root"] = d.val
        return h.newRoute(nil, handlerObject("vars", ["root": .string(d.val)]))
    }
    let matcherSet = try h.extractMatcherSet()
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    if matcherSet == nil { h.blockState["root"] = d.val }
    return h.newRoute(matcherSet, handlerObject("vars", ["root": .string(d.val)]))
}

func parseFilesystem(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    if d.nextArg() { throw d.argErr() }
    return handlerObject("vars", ["fs": .string(d.val)])
}

func parseRoute(_ h: Helper) throws -> JSONObject {
    let results = try h.parseSegmentAsConfig()
    for r in results where !(r.value is HTTPRoute || r.value is HTTPSubroute) {
        throw h.d.err(
            "\(r.directive) directive returned something other than an HTTP route or subroute: \(r.value) (only handler directives can be used in routes)"
        )
    }
    return try buildSubroute(results, context: h.context, needsSorting: false).handler
}

func parseHandleErrors(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    var expression = ""
    let args = d.remainingArgs()
    if !args.isEmpty {
        var codes: [String] = []
        for val in args {
            if val.utf8.count != 3 { throw d.err("bad status value '\(val)'") }
            if val.hasSuffix("xx") {
                let digit = String(val.prefix(1))
                do { _ = try Go.atoi(digit) } catch { throw d.err("bad status value '\(digit)': \(error)") }
                if !expression.isEmpty { expression += " || " }
                expression += "{http.error.status_code} >= \(digit)00 && {http.error.status_code} <= \(digit)99"
                continue
            }
            do { _ = try Go.atoi(val) } catch { throw d.err("bad status value '\(val)': \(error)") }
            codes.append(val)
        }
        if !codes.isEmpty {
            if !expression.isEmpty { expression += " || " }
            expression += "{http.error.status_code} in [" + codes.joined(separator: ", ") + "]"
        }
        // Rewind to just before the block so the subroute parser sees only it.
        d.reset()
        d.next()
        _ = d.remainingArgs()
        d.prev()
    } else {
        d.prev()
    }
    let sub = try h.parseSegmentAsSubroute()
    var wrapping = HTTPRoute(handlers: [sub.handler])
    if !expression.isEmpty {
        wrapping.matcherSets = [["expression": .string(expression)]]
    }
    return [ConfigValue("error_route", HTTPSubroute(routes: [wrapping]))]
}

func parseInvoke(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let name = d.val
    let nameToken = d.token
    if d.next() || d.nextBlock(0) { throw d.argErr() }
    if h.context.invokeTokens[name] == nil { h.context.invokeTokens[name] = nameToken }
    var invoked = h.state[namedRouteKey] as? [String] ?? []
    if !invoked.contains(name) { invoked.append(name) }
    h.state[namedRouteKey] = invoked
    return handlerObject("invoke", ["name": .string(name)])
}

func parseLogSkip(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if d.val == "skip_log" {
        h.warn("the 'skip_log' directive is deprecated, please use 'log_skip' instead!")
    }
    if d.nextArg() { throw d.argErr() }
    if d.nextBlock(0) { throw d.err("log_skip directive does not accept blocks") }
    return handlerObject("vars", ["log_skip": true])
}

/// `log` as a directive (`globalLogNames == nil`) or as a global option.
func parseLogHelper(_ h: Helper, globalLogNames: Set<String>?) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let asGlobal = globalLogNames != nil
    var logName = ""
    if asGlobal {
        if d.nextArg() {
            logName = d.val
            if d.nextArg() { throw d.argErr() }
        } else {
            logName = "default"
        }
        if globalLogNames!.contains(logName) { throw d.err("duplicate global log option for: " + logName) }
    } else if d.nextArg() {
        logName = d.val
        if d.nextArg() { throw d.argErr() }
    }

    let cl = CustomLogConfig.Document()
    var hostnames: [String] = []
    var noHostname = false
    var seen = Set<String>()
    func assertUnique(_ s: String) throws {
        if seen.contains(s) { throw d.err("'\(s)' subdirective specified more than once in the same log block") }
        seen.insert(s)
    }
    while d.nextBlock(0) {
        switch d.val {
        case "hostnames":
            if asGlobal { throw d.err("hostnames is not allowed in the log global options") }
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            hostnames.append(contentsOf: args)
        case "output":
            try assertUnique(d.val)
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            var fields = JSONObject()
            switch name {
            case "stdout", "stderr", "discard": break
            default: fields = try h.registry.unmarshalModuleObject(d, "caddy.logging.writers." + name)
            }
            cl.writer = moduleObject(fields, key: "output", name: name)
        case "sampling":
            try assertUnique(d.val)
            let sd = d.newFromNextSegment()
            while sd.nextArg() {}
            var sampling = JSONObject()
            var sseen = Set<String>()
            var interval: Int64 = 0
            var first = 0
            var thereafter = 0
            let nesting = sd.nesting
            while sd.nextBlock(nesting) {
                let sub = sd.val
                if sseen.contains(sub) { throw sd.err("'\(sub)' specified more than once in the same sampling block") }
                sseen.insert(sub)
                switch sub {
                case "interval":
                    guard sd.nextArg() else { throw sd.argErr() }
                    do { interval = try Go.caddyDuration(sd.val) } catch {
                        throw sd.err("failed to parse interval: \(error)")
                    }
                case "first":
                    guard sd.nextArg() else { throw sd.argErr() }
                    do { first = try Go.atoi(sd.val) } catch { throw sd.err("failed to parse first: \(error)") }
                case "thereafter":
                    guard sd.nextArg() else { throw sd.argErr() }
                    do { thereafter = try Go.atoi(sd.val) } catch {
                        throw sd.err("failed to parse thereafter: \(error)")
                    }
                default:
                    throw sd.err("unrecognized subdirective: \(sub)")
                }
            }
            sampling.putDuration("interval", interval)
            sampling.put("first", first)
            sampling.put("thereafter", thereafter)
            cl.sampling = sampling
        case "core":
            try assertUnique(d.val)
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try h.registry.unmarshalModuleObject(d, "caddy.logging.cores." + name)
            cl.core = moduleObject(fields, key: "module", name: name)
        case "format":
            try assertUnique(d.val)
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try h.registry.unmarshalModuleObject(d, "caddy.logging.encoders." + name)
            cl.encoder = moduleObject(fields, key: "format", name: name)
        case "level":
            try assertUnique(d.val)
            guard d.nextArg() else { throw d.argErr() }
            cl.level = d.val
            if d.nextArg() { throw d.argErr() }
        case "include":
            if !asGlobal { throw d.err("include is not allowed in the log directive") }
            while d.nextArg() { cl.include.append(d.val) }
        case "exclude":
            if !asGlobal { throw d.err("exclude is not allowed in the log directive") }
            while d.nextArg() { cl.exclude.append(d.val) }
        case "no_hostname":
            try assertUnique(d.val)
            if d.nextArg() { throw d.argErr() }
            noHostname = true
        default:
            throw d.err("unrecognized subdirective: \(d.val)")
        }
    }

    var val = NamedCustomLog(hostnames: hostnames, noHostname: noHostname)
    let isEmpty = cl.isEmpty
    if asGlobal {
        val.name = logName
    } else {
        if !logName.isEmpty {
            val.name = logName
        } else if !isEmpty {
            let counter = h.state["logCounter"] as? Int ?? 0
            val.name = "log\(counter)"
            h.state["logCounter"] = counter + 1
        }
        if !val.name.isEmpty { cl.include = ["http.log.access." + val.name] }
    }
    if !isEmpty { val.log = cl }
    return [ConfigValue("custom_log", val)]
}
