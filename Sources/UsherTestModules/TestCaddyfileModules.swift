import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore

/// Caddyfile parsers for the stand-ins Caddy's own adapt tests use (test builds only): `dns.providers.mock`, which
/// takes one optional argument; `tls.client_auth.verifier.dummy` and `caddy.logging.cores.mock`, which take none.
let testCaddyfileSupport = CaddyfileSupport(modules: [
    "dns.providers.mock": { d, _ in
        d.next()
        var o = JSONObject()
        if d.nextArg() { o.put("argument", d.val) }
        if d.nextArg() { throw d.err("unexpected argument '\(d.val)'") }
        return .object(o)
    },
    "tls.client_auth.verifier.dummy": { _, _ in .object(JSONObject()) },
    "caddy.logging.cores.mock": { _, _ in .object(JSONObject()) },
])
