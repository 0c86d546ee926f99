import UsherCaddyfile
import UsherCore

/// The Caddyfile syntax of the `tls.ca_pool.source.*` modules.
let caPoolParsers = CaddyfileSupport(modules: [
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
])

func parseInlineCAPool(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
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

func parseFileCAPool(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
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

func parseAuthorityPool(_ d: Dispenser) throws -> JSONValue {
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

func parseStorageCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
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

func parseHTTPCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
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

func parseCombinedCAPool(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
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
