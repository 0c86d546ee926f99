public import UsherCaddyfile
public import UsherCore

/// The header matcher's Caddyfile form (`[!]Field [value]` per line), merged into `headers`.
public func parseHeaderMatcherLines(_ d: Dispenser, into headers: inout JSONObject) throws {
    while d.next() {
        guard let a = d.args(1) else { throw d.err("malformed header matcher: expected field") }
        var field = a[0]
        if field.hasPrefix("!") {
            if field.count == 1 { throw d.err("malformed header matcher: must have field name following ! character") }
            field.removeFirst()
            headers[field] = .null
            if d.nextArg() { throw d.err("malformed header matcher: null matching headers cannot have a field value") }
        } else {
            guard d.nextArg() else { throw d.err("malformed header matcher: expected both field and value") }
            let key = Go.canonicalHeaderKey(field)
            headers[key] = .strings((headers[key]?.stringArray ?? []) + [d.val])
        }
        if d.nextBlock(0) { throw d.err("malformed header matcher: blocks are not supported") }
    }
    headers = headers.sortedByKey()
}

/// A named response matcher (`@name { status ...; header ... }`), as `header ... { match { ... } }` and
/// `reverse_proxy`'s `handle_response` use (Caddy's `ParseNamedResponseMatcher`).
public func parseNamedResponseMatcher(_ d: Dispenser, _ matchers: inout [String: JSONObject]) throws {
    d.next()
    let name = d.val
    if matchers[name] != nil { throw d.err("matcher is defined more than once: \(name)") }
    var statusCodes: [Int]?
    var headers: JSONObject?
    let nesting = d.nesting
    while d.nextArg() || d.nextBlock(nesting) {
        switch d.val {
        case "header":
            var h = headers ?? JSONObject()
            try parseHeaderMatcherLines(d.newFromNextSegment(), into: &h)
            headers = h
        case "status":
            if statusCodes == nil { statusCodes = [] }
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            for var arg in args {
                if arg.utf8.count == 3 && arg.hasSuffix("xx") { arg = String(arg.prefix(1)) }
                do { statusCodes!.append(try Go.atoi(arg)) } catch {
                    throw d.err("bad status value '\(arg)': \(error)")
                }
            }
        default:
            throw d.err("unrecognized response matcher \(d.val)")
        }
    }
    var m = JSONObject()
    if let statusCodes, !statusCodes.isEmpty {
        m[ResponseMatcher.CodingKeys.statusCode] = .array(statusCodes.map { .number(JSONNumber($0)) })
    }
    if let headers, !headers.isEmpty { m[ResponseMatcher.CodingKeys.headers] = .object(headers) }
    matchers[name] = m
}
