import UsherCaddyfile
import UsherCore
import UsherTLS

// TLS modules configured from the Caddyfile (issuers, leaf verifiers, certificate getters), storage
// and listener wrappers.

let tlsModuleParsers = CaddyfileSupport(modules: [
    "tls.issuance.acme": { d, r in .object(try parseACMEIssuer(d, r).json) },
    "tls.issuance.zerossl": { d, r in .object(try parseZeroSSLIssuer(d, r)) },
    "tls.leaf_cert_loader.file": { d, _ in try leafLoader(d, key: "files") },
    "tls.leaf_cert_loader.folder": { d, _ in try leafLoader(d, key: "folders") },
    "tls.leaf_cert_loader.pem": { d, _ in try leafLoader(d, key: "certificates") },
    "tls.client_auth.verifier.leaf": parseLeafVerifier,
    "tls.get_certificate.tailscale": { d, _ in
        d.next()
        if d.nextArg() { throw d.argErr() }
        return .object(JSONObject())
    },
    "tls.get_certificate.http": { d, _ in
        d.next()
        guard d.nextArg() else { throw d.argErr() }
        let url = d.val
        if d.nextArg() { throw d.argErr() }
        if d.nextBlock(0) { throw d.err("block not allowed here") }
        var o = JSONObject()
        o.put("url", url)
        return .object(o)
    },
    "tls.permission.http": { d, _ in
        guard d.next() else { return .object(["endpoint": ""]) }
        guard let a = d.allArgs(1) else { throw d.argErr() }
        return .object(["endpoint": .string(a[0])])
    },
    "caddy.storage.file_system": { d, _ in
        guard d.next() else { throw d.err("expected tokens") }
        var root = ""
        if d.nextArg() { root = d.val }
        if d.nextArg() { throw d.argErr() }
        while d.nextBlock(0) {
            switch d.val {
            case "root":
                try d.setArgOnce(&root, duplicateMessage: "root already set")
                if d.nextArg() { throw d.argErr() }
            default:
                throw d.err("unrecognized parameter '\(d.val)'")
            }
        }
        if root.isEmpty { throw d.err("missing root path (to use default, omit storage config entirely)") }
        return .object(["root": .string(root)])
    },
    "caddy.listeners.http_redirect": { _, _ in .object(JSONObject()) },
    "caddy.listeners.tls": { _, _ in .object(JSONObject()) },
    "caddy.listeners.proxy_protocol": parseProxyProtocolWrapper,
])

private func leafLoader(_ d: Dispenser, key: String) throws -> JSONValue {
    _ = d.nextArg()
    var o = JSONObject()
    o.put(key, d.remainingArgs())
    return .object(o)
}

private func parseLeafVerifier(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    _ = d.nextArg()
    var loaders: [JSONObject] = []
    if d.countRemainingArgs() > 1 {
        _ = d.nextArg()
        let name = d.val
        let fields: JSONObject
        do { fields = try registry.unmarshalModuleObject(d, "tls.leaf_cert_loader." + name) } catch {
            throw d.wrap(error)
        }
        loaders.append(moduleObject(fields, key: "loader", name: name))
    } else {
        let nesting = d.nesting
        while d.nextBlock(nesting) {
            let name = d.val
            let fields: JSONObject
            do { fields = try registry.unmarshalModuleObject(d, "tls.leaf_cert_loader." + name) } catch {
                throw d.wrap(error)
            }
            loaders.append(moduleObject(fields, key: "loader", name: name))
        }
    }
    var o = JSONObject()
    o.put("leaf_certs_loaders", loaders)
    return .object(o)
}

private func parseProxyProtocolWrapper(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.nextArg() { throw d.argErr() }
    var timeout: Int64 = 0
    var allow: [String] = []
    var deny: [String] = []
    var policy = ""
    while d.nextBlock(0) {
        switch d.val {
        case "timeout":
            guard d.nextArg() else { throw d.argErr() }
            do { timeout = try Go.caddyDuration(d.val) } catch {
                throw d.err("parsing proxy_protocol timeout duration: \(error)")
            }
        case "allow": allow += d.remainingArgs()
        case "deny": deny += d.remainingArgs()
        case "fallback_policy":
            guard d.nextArg() else { throw d.argErr() }
            let p = d.val.uppercased()
            guard ["USE", "IGNORE", "REJECT", "REQUIRE", "SKIP"].contains(p) else {
                throw d.err("\(d.val) is invalid policy")
            }
            policy = p == "IGNORE" ? "" : p
        default:
            throw d.argErr()
        }
    }
    var o = JSONObject()
    o.putDuration("timeout", timeout)
    o.put("allow", allow)
    o.put("deny", deny)
    o.put("fallback_policy", policy)
    return .object(o)
}
