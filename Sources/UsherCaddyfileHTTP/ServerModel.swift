import UsherTLS
import UsherCaddyfile
import UsherCore

/// `caddy.CustomLog`.
final class CustomLog {
    var writer: JSONObject?
    var encoder: JSONObject?
    var core: JSONObject?
    var level = ""
    var sampling: JSONObject?
    var include: [String] = []
    var exclude: [String] = []

    var isEmpty: Bool {
        writer == nil && encoder == nil && core == nil && level.isEmpty && sampling == nil && include.isEmpty
            && exclude.isEmpty
    }

    var json: JSONObject {
        var o = JSONObject()
        o.put("writer", writer)
        o.put("encoder", encoder)
        o.put("core", core)
        o.put("level", level)
        o.put("sampling", sampling)
        o.put("include", include)
        o.put("exclude", exclude)
        return o
    }
}

/// A logger a `log` directive or option defines (Caddy's `namedCustomLog`).
struct NamedCustomLog {
    var name = ""
    var hostnames: [String] = []
    var log: CustomLog?
    var noHostname = false
}

/// `bind` addresses and protocols.
struct AddressesWithProtocols: Equatable {
    var addresses: [String]
    var protocols: [String]?
}
