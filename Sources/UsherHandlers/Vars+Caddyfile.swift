import UsherCaddyfile
import UsherCore

let varsParsers = CaddyfileSupport(handlerDirectives: [
    "vars": { h in handlerObject("vars", try parseVarsMiddleware(h.d)) }
])

/// `vars` (Caddy's `VarsMiddleware.UnmarshalCaddyfile`): `vars [<name> <value>] { <name> <value> ... }`.
func parseVarsMiddleware(_ d: Dispenser) throws -> JSONObject {
    d.next()
    var vars: [(String, JSONValue)] = []
    func set(_ k: String, _ v: JSONValue) {
        if let i = vars.firstIndex(where: { $0.0 == k }) { vars[i].1 = v } else { vars.append((k, v)) }
    }
    func nextVar(headerLine: Bool) throws {
        if headerLine && !d.nextArg() { return }
        let name = d.val
        guard d.nextArg() else { throw d.argErr() }
        set(name, scalarJSON(d.scalarVal))
        if d.nextArg() { throw d.argErr() }
    }
    try nextVar(headerLine: true)
    while d.nextBlock(0) { try nextVar(headerLine: false) }
    var o = JSONObject()
    for (k, v) in vars { o[k] = v }
    return o
}
