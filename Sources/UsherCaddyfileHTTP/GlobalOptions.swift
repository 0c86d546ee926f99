import UsherCaddyfile
import UsherCore
import UsherHTTP
import UsherTLS

/// The global options of the HTTP server type (Caddy's `options.go`, `pkiapp.go` and the options registered by
/// the events and filesystem apps).
let builtinGlobalOptions = CaddyfileSupport(globalOptions: [
    "debug": { _ in true },
    "http_port": { i in try parsePortOption(i.d) },
    "https_port": { i in try parsePortOption(i.d) },
    "default_bind": parseDefaultBindOption,
    "grace_period": parseDurationOption,
    "shutdown_delay": parseDurationOption,
    "default_sni": parseSingleStringOption,
    "fallback_sni": parseSingleStringOption,
    "order": parseOrderOption,
    "storage": parseStorageOption,
    "storage_check": { i in try parseOffOption(i.d, "storage_check must be 'off'") },
    "storage_clean_interval": parseStorageCleanInterval,
    "renew_interval": parseDurationOption,
    "ocsp_interval": parseDurationOption,
    "acme_ca": parseSingleStringOption,
    "acme_ca_root": parseSingleStringOption,
    "acme_dns": parseDNSOption,
    "acme_eab": parseACMEEABOption,
    "cert_issuer": parseCertIssuerOption,
    "skip_install_trust": { _ in true },
    "email": parseSingleStringOption,
    "admin": parseAdminOption,
    "on_demand_tls": parseOnDemandOption,
    "local_certs": { _ in true },
    "key_type": parseSingleStringOption,
    "auto_https": parseAutoHTTPSOption,
    "metrics": parseMetricsOption,
    "servers": parseServerOptions,
    "ocsp_stapling": parseOCSPStaplingOption,
    "cert_lifetime": parseDurationOption,
    "log": parseLogOption,
    "preferred_chains": { i in
        i.d.next()
        return try parsePreferredChains(i.d)
    },
    "persist_config": { i in try parseOffOption(i.d, "persist_config must be 'off'") },
    "dns": parseDNSOption,
    "tls_resolvers": { i in
        i.d.next()
        let r = i.d.remainingArgs()
        if r.isEmpty { throw i.d.argErr() }
        return r
    },
    "ech": parseECHOption,
    "renewal_window_ratio": parseRenewalWindowRatioOption,
    "pki": parsePKIOption,
    "events": parseEventsOption,
    "filesystem": parseFilesystemOption,
])

private func parsePortOption(_ d: Dispenser) throws -> Any? {
    d.next()
    guard let a = d.allArgs(1) else { throw d.argErr() }
    do { return try Go.atoi(a[0]) } catch {
        throw d.err("converting port '\(a[0])' to integer value: \(error)")
    }
}

private func parseDurationOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    guard d.next(), d.next() else { throw d.argErr() }
    return CaddyDurationValue(try Go.caddyDuration(d.val))
}

private func parseSingleStringOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    guard d.next() else { throw d.argErr() }
    let v = d.val
    if d.next() { throw d.argErr() }
    return v
}

private func parseOffOption(_ d: Dispenser, _ message: String) throws -> Any? {
    d.next()
    guard d.next() else { throw d.argErr() }
    let v = d.val
    if d.next() { throw d.argErr() }
    if v != "off" { throw d.err(message) }
    return v
}

private func parseOrderOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    let ctx = i.context
    d.next()
    guard d.next() else { throw d.argErr() }
    let dir = d.val
    guard ctx.registry.directives[dir] != nil else { throw d.err("\(dir) is not a registered directive") }
    guard d.next() else { throw d.argErr() }
    let pos = d.val
    var order = ctx.directiveOrder.filter { $0 != dir }
    switch pos {
    case "first":
        order.insert(dir, at: 0)
        if d.nextArg() { throw d.argErr() }
        ctx.directiveOrder = order
        return order
    case "last":
        order.append(dir)
        if d.nextArg() { throw d.argErr() }
        ctx.directiveOrder = order
        return order
    case "before", "after":
        break
    default:
        throw d.err("unknown positional '\(pos)'")
    }
    guard d.nextArg() else { throw d.argErr() }
    let other = d.val
    if d.nextArg() { throw d.argErr() }
    guard var target = order.firstIndex(of: other) else { throw d.err("directive '\(other)' not found") }
    if pos == "after" { target += 1 }
    order.insert(dir, at: target)
    ctx.directiveOrder = order
    return order
}

private func parseStorageOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    guard d.next(), d.next() else { throw d.argErr() }
    let name = d.val
    let fields = try i.context.registry.unmarshalModuleObject(d, "caddy.storage." + name)
    return moduleObject(fields, key: "module", name: name)
}

private func parseStorageCleanInterval(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    guard d.next() else { throw d.argErr() }
    let v = d.val
    if d.next() { throw d.argErr() }
    if v == "off" { return false }
    do { return CaddyDurationValue(try Go.caddyDuration(d.val)) } catch {
        throw d.err("failed to parse storage_clean_interval, must be a duration or 'off' \(error)")
    }
}

private func parseACMEEABOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    var eab = ExternalAccountBinding()
    d.next()
    if d.nextArg() { throw d.argErr() }
    while d.nextBlock(0) {
        switch d.val {
        case "key_id":
            guard d.nextArg() else { throw d.argErr() }
            eab.keyID = d.val
        case "mac_key":
            guard d.nextArg() else { throw d.argErr() }
            eab.macKey = d.val
        default:
            throw d.err("unrecognized parameter '\(d.val)'")
        }
    }
    return eab
}

private func parseCertIssuerOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    var issuers = i.existing as? [Issuer] ?? []
    guard d.next() else { throw d.argErr() }
    issuers.append(try parseIssuerModule(d, d.val, i.context.registry))
    return issuers
}

private func parseDefaultBindOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    var addresses = d.remainingArgs()
    if addresses.isEmpty { addresses = [""] }
    return [ConfigValue("bind", try parseBindBlock(d, addresses: addresses))]
}

private func parseAdminOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    var disabled = false
    var listen = ""
    var enforceOrigin = false
    var origins: [String] = []
    if d.nextArg() {
        if d.val == "off" {
            disabled = true
            if d.next() { throw d.err("No more option is allowed after turning off admin config") }
        } else {
            listen = d.val
            if d.nextArg() { throw d.argErr() }
        }
    }
    while d.nextBlock(0) {
        switch d.val {
        case "enforce_origin": enforceOrigin = true
        case "origins": origins = d.remainingArgs()
        default: throw d.err("unrecognized parameter '\(d.val)'")
        }
    }
    if listen.isEmpty && !disabled { listen = AdminConfig.defaultListen }
    var o = JSONObject()
    o.put(AdminConfig.CodingKeys.disabled, disabled)
    o.put(AdminConfig.CodingKeys.listen, listen)
    o.put(AdminConfig.CodingKeys.enforceOrigin, enforceOrigin)
    o.put(AdminConfig.CodingKeys.origins, origins)
    return o
}

private func parseOnDemandOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    if d.nextArg() { throw d.argErr() }
    var ond: JSONObject?
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "ask":
            guard d.nextArg() else { throw d.argErr() }
            if ond == nil { ond = JSONObject() }
            if ond!["permission"] != nil { throw d.err("on-demand TLS permission module (or 'ask') already specified") }
            ond!["permission"] = .object(moduleObject(["endpoint": .string(d.val)], key: "module", name: "http"))
        case "permission":
            guard d.nextArg() else { throw d.argErr() }
            if ond == nil { ond = JSONObject() }
            if ond!["permission"] != nil { throw d.err("on-demand TLS permission module (or 'ask') already specified") }
            let name = d.val
            let fields = try i.context.registry.unmarshalModuleObject(d, "tls.permission." + name)
            ond!["permission"] = .object(moduleObject(fields, key: "module", name: name))
        case "interval":
            throw d.err("the on_demand_tls 'interval' option is no longer supported, remove it from your config")
        case "burst":
            throw d.err("the on_demand_tls 'burst' option is no longer supported, remove it from your config")
        default:
            throw d.err("unrecognized parameter '\(d.val)'")
        }
    }
    guard let ond else { throw d.err("expected at least one config parameter for on_demand_tls") }
    return ond
}

private func parseAutoHTTPSOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    let v = d.remainingArgs()
    if v.isEmpty { throw d.argErr() }
    for x in v where !["off", "disable_redirects", "disable_certs", "ignore_loaded_certs"].contains(x) {
        throw d.err("auto_https must be one of 'off', 'disable_redirects', 'disable_certs', or 'ignore_loaded_certs'")
    }
    return v
}

private func parseMetricsOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    var m = HTTPMetricsConfig.Document()
    while d.nextBlock(0) {
        switch d.val {
        case "per_host": m.perHost = true
        case "observe_catchall_hosts": m.observeCatchallHosts = true
        case "otlp": m.otlp = true
        default: throw d.err("unrecognized servers option '\(d.val)'")
        }
    }
    return m
}

private func parseOCSPStaplingOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    guard let a = d.allArgs(1) else { throw d.argErr() }
    if a[0] != "off" { throw d.err("invalid argument '\(a[0])'") }
    return OCSPOption(disableStapling: true)
}

private func parseLogOption(_ i: GlobalOptionInput) throws -> Any? {
    var names = Set<String>()
    if let existing = i.existing {
        guard let vals = existing as? [ConfigValue] else {
            throw i.d.err("existing log values of unexpected type: \(type(of: existing))")
        }
        for v in vals {
            guard let l = v.value as? NamedCustomLog else { throw i.d.err("existing log value of unexpected type") }
            names.insert(l.name)
        }
    }
    let h = Helper(
        d: i.d, context: i.context, state: StateMap(), blockState: StateMap(), matcherDefs: [:],
        parentBlock: ServerBlock())
    return try parseLogHelper(h, globalLogNames: names)
}

private func parseDNSOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    let opt = d.val
    guard d.next() else {
        if opt == "acme_dns" { return nil }
        throw d.argErr()
    }
    let name = d.val
    let fields = try i.context.registry.unmarshalModuleObject(d, "dns.providers." + name)
    return DNSProviderValue(name: name, fields: fields)
}

private func parseECHOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    let names = d.remainingArgs()
    if names.isEmpty { throw d.argErr() }
    var publication: [JSONObject] = []
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "dns":
            guard d.next() else { throw d.argErr() }
            let provider = d.val
            let fields = try i.context.registry.unmarshalModuleObject(d, "dns.providers." + provider)
            var p = JSONObject()
            p.put("configs", names)
            p["publishers"] = .object([
                "dns": .object(["provider": .object(moduleObject(fields, key: "name", name: provider))])
            ])
            publication.append(p)
        default:
            throw d.err("ech: unrecognized subdirective '\(d.val)'")
        }
    }
    return ECHValue(publicNames: names, publication: publication)
}

private func parseRenewalWindowRatioOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    guard d.next() else { throw d.argErr() }
    let r: Double
    do { r = try Go.parseFloat(d.val) } catch { throw d.err("parsing renewal_window_ratio: \(error)") }
    if r <= 0 || r >= 1 { throw d.err("renewal_window_ratio must be between 0 and 1 (exclusive)") }
    if d.next() { throw d.argErr() }
    return r
}

private func parseEventsOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    d.next()
    var subscriptions: [JSONObject] = []
    while d.nextBlock(0) {
        switch d.val {
        case "on":
            guard d.nextArg() else { throw d.argErr() }
            var event = d.val
            if event == "*" { event = "" }
            guard d.nextArg() else { throw d.argErr() }
            let handler = d.val
            let fields = try i.context.registry.unmarshalModuleObject(d, "events.handlers." + handler)
            var s = JSONObject()
            s["events"] = .strings([event])
            s["handlers"] = .array([.object(moduleObject(fields, key: "handler", name: handler))])
            subscriptions.append(s)
        default:
            throw d.argErr()
        }
    }
    var app = JSONObject()
    app.put("subscriptions", subscriptions)
    return CaddyfileApp(name: "events", value: .object(app))
}

private func parseFilesystemOption(_ i: GlobalOptionInput) throws -> Any? {
    let d = i.d
    var list = (i.existing as? JSONObject)?["filesystems"]?.arrayValue ?? []
    var key = ""
    var fsRaw: JSONObject?
    while d.next() {
        guard let a = d.args(1) else { throw d.argErr() }
        key = a[0]
        guard d.nextArg() else { throw d.argErr() }
        let name = d.val
        let fields = try i.context.registry.unmarshalModuleObject(d, "caddy.fs." + name)
        fsRaw = moduleObject(fields, key: "backend", name: name)
    }
    var entry = JSONObject()
    entry.put("name", key)
    entry.put("file_system", fsRaw)
    list.append(.object(entry))
    let result: JSONObject = ["filesystems": .array(list)]
    return result
}
