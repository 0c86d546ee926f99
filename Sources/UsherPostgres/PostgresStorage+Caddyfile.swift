public import UsherCaddyfile
import UsherCore

/// The Caddyfile syntax of this target's modules; `StandardModules` lists it.
public enum PostgresCaddyfile {
    public static let support = CaddyfileSupport(modules: [
        "caddy.storage.postgres": { d, _ in .object(try parsePostgresStorage(d)) }
    ])
}

/// `storage postgres [<connection_string>] { connection_string|host|port|user|password|dbname|sslmode|sslrootcert
/// <value>  query_timeout|lock_timeout <duration>  max_connections <n> }`.
func parsePostgresStorage(_ d: Dispenser) throws -> JSONObject {
    typealias Key = PostgresStorageModule.CodingKeys
    d.next()
    var o = JSONObject()
    if d.nextArg() {
        o.put(Key.connectionString.stringValue, d.val)
        if d.nextArg() { throw d.argErr() }
    }
    while d.nextBlock(0) {
        guard let key = Key.allCases.first(where: { $0.stringValue == d.val }) else {
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
        guard d.nextArg() else { throw d.argErr() }
        let value = d.val
        if d.nextArg() { throw d.argErr() }
        switch key {
        case .port, .maxConnections:
            guard let n = Int(value) else { throw d.err("\(key.stringValue): \(value) is not a number") }
            o.put(key.stringValue, n)
        case .queryTimeout, .lockTimeout:
            do {
                o.put(key.stringValue, Int(try Go.caddyDuration(value)))
            } catch {
                throw d.err("\(key.stringValue): \(error)")
            }
        default:
            o.put(key.stringValue, value)
        }
    }
    return o
}
