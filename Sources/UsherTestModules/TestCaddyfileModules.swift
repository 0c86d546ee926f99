import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore

/// Caddyfile parsers for the stand-ins Caddy's own adapt tests use (test builds only): `dns.providers.mock`, which
/// takes one optional argument, and `tls.client_auth.verifier.dummy`, which takes none.
let testCaddyfileSupport = CaddyfileSupport(modules: [
    "dns.providers.mock": { d, _ in
        d.next()
        var o = JSONObject()
        if d.nextArg() { o.put("argument", d.val) }
        if d.nextArg() { throw d.err("unexpected argument '\(d.val)'") }
        return .object(o)
    },
    "tls.client_auth.verifier.dummy": { _, _ in .object(JSONObject()) },
])
