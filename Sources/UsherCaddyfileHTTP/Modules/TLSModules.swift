import UsherCaddyfile
import UsherCore

// TLS modules configured from the Caddyfile (issuers, CA pools, leaf verifiers, certificate getters), storage,
// trusted-proxy sources and listener wrappers.

let tlsModuleParsers = CaddyfileSupport(modules: [
    "tls.issuance.acme": { d, r in .object(try parseACMEIssuer(d, r).json) },
    "tls.issuance.internal": { d, _ in .object(try parseInternalIssuer(d)) },
    "tls.issuance.zerossl": { d, r in .object(try parseZeroSSLIssuer(d, r)) },
    "tls.ca_pool.source.inline": parseInlineCAPool,
    "tls.ca_pool.source.file": parseFileCAPool,
    "tls.ca_pool.source.pki_root": { d, _ in try parseAuthorityPool(d) },
    "tls.ca_pool.source.pki_intermediate": { d, _ in try parseAuthorityPool(d) },
    "tls.ca_pool.source.storage": parseStorageCAPool,
    "tls.ca_pool.source.http": parseHTTPCAPool,
    "tls.ca_pool.source.system": { d, _ in
        d.next()
        if d.countRemainingArgs() > 0 { throw d.argErr() }
        if d.nextBlock(0) { throw d.err("system trust pool does not support any configuration") }
        return .object(JSONObject())
    },
    "tls.ca_pool.source.combined": parseCombinedCAPool,
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
    "http.ip_sources.static": { d, _ in
        var ranges: [String] = []
        if d.next() {
            while d.nextArg() {
                if d.val == "private_ranges" {
                    ranges += ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1"]
                } else {
                    ranges.append(d.val)
                }
            }
        }
        var o = JSONObject()
        o.put("ranges", ranges)
        return .object(o)
    },
    "caddy.listeners.http_redirect": { _, _ in .object(JSONObject()) },
    "caddy.listeners.tls": { _, _ in .object(JSONObject()) },
    "caddy.listeners.proxy_protocol": parseProxyProtocolWrapper,
])

private func parseInlineCAPool(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.countRemainingArgs() > 0 { throw d.argErr() }
    var certs: [String] = []
    while d.nextBlock(0) {
        switch d.val {
        case "trust_der": certs += d.remainingArgs()
        default: throw d.err("unrecognized directive: \(d.val)")
        }
    }
    if certs.isEmpty { throw d.err("no certificates specified") }
    return .object(["trusted_ca_certs": .strings(certs)])
}

private func parseFileCAPool(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var files = d.remainingArgs()
    while d.nextBlock(0) {
        switch d.val {
        case "pem_file": files += d.remainingArgs()
        default: throw d.err("unrecognized directive: \(d.val)")
        }
    }
    if files.isEmpty { throw d.err("no certificates specified") }
    return .object(["pem_files": .strings(files)])
}

private func parseAuthorityPool(_ d: Dispenser) throws -> JSONValue {
    d.next()
    var authority = d.remainingArgs()
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "authority": authority += d.remainingArgs()
        default: throw d.err("unrecognized directive: \(d.val)")
        }
    }
    if authority.isEmpty { throw d.err("no authorities specified") }
    return .object(["authority": .strings(authority)])
}

private func parseStorageCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var keys = d.remainingArgs()
    var storage: JSONObject?
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "storage":
            if storage != nil { throw d.err("storage module already set") }
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "caddy.storage." + name)
            storage = moduleObject(fields, key: "module", name: name)
        case "keys":
            keys += d.remainingArgs()
        default:
            throw d.err("unrecognized directive: \(d.val)")
        }
    }
    var o = JSONObject()
    o.put("storage", storage)
    o.put("pem_keys", keys)
    return .object(o)
}

private func parseHTTPCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var endpoints = d.remainingArgs()
    var tls: JSONObject?
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "endpoints":
            if d.countRemainingArgs() == 0 { throw d.argErr() }
            endpoints += d.remainingArgs()
        case "tls":
            if tls != nil { throw d.err("tls block already defined") }
            var t = JSONObject()
            var ca: JSONObject?
            var insecure = false
            var timeout: Int64 = 0
            var serverName = ""
            var renegotiation = ""
            let n2 = d.nesting
            while d.nextBlock(n2) {
                switch d.val {
                case "ca":
                    guard d.nextArg() else { throw d.argErr() }
                    let name = d.val
                    let fields = try registry.unmarshalModuleObject(d, "tls.ca_pool.source." + name)
                    ca = moduleObject(fields, key: "provider", name: name)
                case "insecure_skip_verify":
                    insecure = true
                case "handshake_timeout":
                    guard d.nextArg() else { throw d.argErr() }
                    do { timeout = try Go.caddyDuration(d.val) } catch {
                        throw d.err("bad timeout value '\(d.val)': \(error)")
                    }
                case "server_name":
                    guard let a = d.args(1) else { throw d.argErr() }
                    serverName = a[0]
                case "renegotiation":
                    guard let a = d.args(1) else { throw d.argErr() }
                    guard ["never", "once", "freely"].contains(a[0]) else {
                        throw d.err("unrecognized renegotiation level: ")
                    }
                    renegotiation = a[0]
                default:
                    throw d.err("unrecognized directive: \(d.val)")
                }
            }
            t.put("ca", ca)
            t.put("insecure_skip_verify", insecure)
            t.putDuration("handshake_timeout", timeout)
            t.put("server_name", serverName)
            t.put("renegotiation", renegotiation)
            tls = t
        default:
            throw d.err("unrecognized directive: \(d.val)")
        }
    }
    var o = JSONObject()
    o.put("endpoints", endpoints)
    o.put("tls", tls)
    return .object(o)
}

private func parseCombinedCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.countRemainingArgs() > 0 { throw d.argErr() }
    var sources: [JSONObject] = []
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "source":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "tls.ca_pool.source." + name)
            sources.append(moduleObject(fields, key: "provider", name: name))
        default:
            throw d.err("unrecognized directive: \(d.val)")
        }
    }
    if sources.isEmpty { throw d.err("no sources specified") }
    return .object(["sources": .array(sources.map { .object($0) })])
}

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
        do { fields = try registry.unmarshalModuleObject(d, "tls.leaf_cert_loader." + name) } catch { throw d.wrap(error) }
        loaders.append(moduleObject(fields, key: "loader", name: name))
    } else {
        let nesting = d.nesting
        while d.nextBlock(nesting) {
            let name = d.val
            let fields: JSONObject
            do { fields = try registry.unmarshalModuleObject(d, "tls.leaf_cert_loader." + name) } catch { throw d.wrap(error) }
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
