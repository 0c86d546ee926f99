public import UsherCaddyfile
import UsherCore

/// Caddyfile parsers for the request matchers in this module (`@name { path ... }` and friends).
public enum HTTPMatcherCaddyfile {
    public static let support = CaddyfileSupport(modules: [
        "http.matchers.host": { d, _ in try listMatcher(d, "host") },
        "http.matchers.path": { d, _ in try listMatcher(d, "path") },
        "http.matchers.method": { d, _ in try listMatcher(d, "method") },
        "http.matchers.query": parseQueryMatcher,
        "http.matchers.header": parseHeaderMatcher,
        "http.matchers.header_regexp": { d, _ in
            try parseRegexpMapMatcher(d, "header_regexp", onceName: "header_regexp")
        },
        "http.matchers.protocol": parseProtocolMatcher,
        "http.matchers.not": parseNotMatcher,
        "http.matchers.path_regexp": { d, _ in try parseRegexpMatcher(d, "path_regexp") },
        "http.matchers.remote_ip": { d, _ in try parseIPMatcher(d, "remote_ip") },
        "http.matchers.client_ip": { d, _ in try parseIPMatcher(d, "client_ip") },
        "http.matchers.vars": parseVarsMatcher,
        "http.matchers.vars_regexp": { d, _ in try parseRegexpMapMatcher(d, "vars_regexp", onceName: nil) },
    ])
}

/// host, path, method: every argument of every instance.
private func listMatcher(_ d: Dispenser, _ name: String) throws -> JSONValue {
    var items: [String] = []
    while d.next() {
        items.append(contentsOf: d.remainingArgs())
        if d.nextBlock(0) { throw d.err("malformed \(name) matcher: blocks are not supported") }
    }
    return .strings(items)
}

private func parseQueryMatcher(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    var keys: [String] = []
    var values: [String: [String]] = [:]
    while d.next() {
        for q in d.remainingArgs() where !q.isEmpty {
            guard let eq = q.firstIndex(of: "=") else {
                throw d.err("malformed query matcher token: \(d.val); must be in param=val format")
            }
            let k = String(q[..<eq])
            if values[k] == nil { keys.append(k) }
            values[k, default: []].append(String(q[q.index(after: eq)...]))
        }
        if d.nextBlock(0) { throw d.err("malformed query matcher: blocks are not supported") }
    }
    var o = JSONObject()
    for k in keys { o[k] = .strings(values[k]!) }
    return .object(o.sortedByKey())
}

private func parseHeaderMatcher(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    var o = JSONObject()
    try parseHeaderMatcherLines(d, into: &o)
    return .object(o)
}

private func regexpObject(name: String, pattern: String) -> JSONValue {
    var o = JSONObject()
    o.put("name", name)
    o["pattern"] = .string(pattern)
    return .object(o)
}

/// header_regexp and vars_regexp: `[<name>] <field> <regexp>`.
private func parseRegexpMapMatcher(_ d: Dispenser, _ kind: String, onceName: String?) throws -> JSONValue {
    var o = JSONObject()
    while d.next() {
        guard let two = d.args(2) else { throw d.argErr() }
        var name = ""
        var field = two[0]
        var value = two[1]
        if let third = d.args(1) {
            name = two[0]
            field = two[1]
            value = third[0]
        }
        if name.isEmpty { name = d.context(matcherNameContextKey) }
        if let onceName, o[field] != nil {
            throw d.err("\(onceName) matcher can only be used once per named matcher, per header field: \(field)")
        }
        o[field] = regexpObject(name: name, pattern: value)
        if d.nextBlock(0) { throw d.err("malformed \(kind) matcher: blocks are not supported") }
    }
    return .object(o.sortedByKey())
}

private func parseRegexpMatcher(_ d: Dispenser, _ kind: String) throws -> JSONValue {
    var pattern = ""
    var name = ""
    while d.next() {
        if !pattern.isEmpty { throw d.err("regular expression can only be used once per named matcher") }
        let args = d.remainingArgs()
        switch args.count {
        case 1: pattern = args[0]
        case 2:
            name = args[0]
            pattern = args[1]
        default: throw d.argErr()
        }
        if name.isEmpty { name = d.context(matcherNameContextKey) }
        if d.nextBlock(0) { throw d.err("malformed \(kind) matcher: blocks are not supported") }
    }
    return regexpObject(name: name, pattern: pattern)
}

private func parseProtocolMatcher(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    var proto = ""
    while d.next() {
        guard let a = d.args(1) else { throw d.err("expected exactly one protocol") }
        proto = a[0]
    }
    return .string(proto)
}

/// Caddy's private ranges (`private_ranges`).
let privateRangesCIDR = ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1"]

private func parseIPMatcher(_ d: Dispenser, _ kind: String) throws -> JSONValue {
    var ranges: [String] = []
    while d.next() {
        while d.nextArg() {
            if kind == "remote_ip" && d.val == "forwarded" {
                throw d.err("the 'forwarded' option is no longer supported; use the 'client_ip' matcher instead")
            }
            if d.val == "private_ranges" {
                ranges.append(contentsOf: privateRangesCIDR)
                continue
            }
            ranges.append(d.val)
        }
        if d.nextBlock(0) { throw d.err("malformed \(kind) matcher: blocks are not supported") }
    }
    var o = JSONObject()
    o.put("ranges", ranges)
    return .object(o)
}

private func parseVarsMatcher(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    var o = JSONObject()
    while d.next() {
        guard let a = d.args(1) else { throw d.err("malformed vars matcher: expected field name") }
        let vals = d.remainingArgs()
        if vals.isEmpty { throw d.err("malformed vars matcher: expected at least one value to match against") }
        o[a[0]] = .strings((o[a[0]]?.stringArray ?? []) + vals)
        if d.nextBlock(0) { throw d.err("malformed vars matcher: blocks are not supported") }
    }
    return .object(o.sortedByKey())
}

private func parseNotMatcher(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    var sets: [JSONValue] = []
    while d.next() {
        sets.append(.object(try parseNestedMatcherSet(d, registry)))
    }
    return .array(sets)
}
