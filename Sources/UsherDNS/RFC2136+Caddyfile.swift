public import UsherCaddyfile
import UsherCore

/// The Caddyfile syntax of this target's modules; `StandardModules` lists it.
public enum DNSCaddyfile {
    public static let support = CaddyfileSupport(modules: [
        "dns.providers.rfc2136": { d, _ in
            .object(try parseRFC2136(d))
        }
    ])
}

/// `rfc2136 { key_name <name>  key_alg <alg>  key <secret>  server <host:port> }`, each required.
func parseRFC2136(_ d: Dispenser) throws -> JSONObject {
    typealias Key = RFC2136Provider.CodingKeys
    d.next()
    if d.nextArg() { throw d.argErr() }
    var values: [Key: String] = [:]
    while d.nextBlock(0) {
        guard let key = [Key.keyName, .keyAlgorithm, .key, .server].first(where: { $0.stringValue == d.val }) else {
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
        guard d.nextArg() else { throw d.argErr() }
        values[key] = d.val
        if d.nextArg() { throw d.argErr() }
    }
    for key in [Key.key, .keyName, .keyAlgorithm, .server] where (values[key] ?? "").isEmpty {
        throw d.err("rfc2136: missing \(key.stringValue)")
    }
    var o = JSONObject()
    for key in [Key.keyName, .key, .keyAlgorithm, .server] { o.put(key, values[key] ?? "") }
    return o
}
