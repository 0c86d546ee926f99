import UsherCaddyfile
import UsherCore
import UsherTLS

/// A logger a `log` directive or option defines (Caddy's `namedCustomLog`).
struct NamedCustomLog {
    var name = ""
    var hostnames: [String] = []
    var log: CustomLogConfig.Document?
    var noHostname = false
}

/// `bind` addresses and protocols.
struct AddressesWithProtocols: Equatable {
    var addresses: [String]
    var protocols: [String]?
}
