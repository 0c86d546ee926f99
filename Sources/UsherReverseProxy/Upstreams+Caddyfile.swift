import UsherCaddyfile
import UsherCore

/// An upstream dial address split into its parts (Caddy's `parsedAddr`).
struct UpstreamAddress {
    var network = ""
    var scheme = ""
    var host = ""
    var port = ""

    var dialAddress: String {
        if !network.isEmpty { return CaddyNetworkAddress.join(network, host, port) }
        if port.isEmpty && host.contains("{") { return host }
        return Go.joinHostPort(host, port)
    }
    var rangedPort: Bool { port.contains("-") }
    var replaceablePort: Bool { port.contains("{") && port.contains("}") }
    var isUnix: Bool { CaddyNetworkAddress.isUnix(network) }

    init(parsing input: String) throws {
        if input.contains("://") {
            if input.contains("{") {
                throw CaddyfileError(
                    "due to parsing difficulties, placeholders are not allowed when an upstream address contains a scheme"
                )
            }
            var u: SimpleURL
            do {
                u = try SimpleURL(parsing: input)
            } catch let e as SimpleURL.PortError {
                // A port range is not a valid URL port; parse with a placeholder port and keep the range.
                guard e.port.contains("-"), let colon = input.lastIndex(of: ":") else {
                    throw CaddyfileError("parsing upstream URL: \(e)")
                }
                let range = String(input[input.index(after: colon)...])
                if range.filter({ $0 == "-" }).count != 1 {
                    throw CaddyfileError("parsing upstream URL: parse \"\(input)\": port range invalid: \(range)")
                }
                do { u = try SimpleURL(parsing: input.replacingAll(range, with: "0")) } catch {
                    throw CaddyfileError("parsing upstream URL: \(error)")
                }
                port = range
            } catch {
                throw CaddyfileError("parsing upstream URL: \(error)")
            }
            if port.isEmpty { port = u.port }
            if !u.path.isEmpty || !u.rawQuery.isEmpty || !u.fragment.isEmpty {
                throw CaddyfileError("for now, URLs for proxy upstreams only support scheme, host, and port components")
            }
            if u.scheme == "http" && port == "443" {
                throw CaddyfileError(
                    "upstream address has conflicting scheme (http://) and port (:443, the HTTPS port)")
            }
            if u.scheme == "https" && port == "80" {
                throw CaddyfileError("upstream address has conflicting scheme (https://) and port (:80, the HTTP port)")
            }
            if u.scheme == "h2c" && port == "443" {
                throw CaddyfileError("upstream address has conflicting scheme (h2c://) and port (:443, the HTTPS port)")
            }
            if port.isEmpty {
                switch u.scheme {
                case "", "http", "h2c": port = "80"
                case "https": port = "443"
                default: break
                }
            }
            scheme = u.scheme
            host = u.hostname
        } else {
            if let parts = try? CaddyNetworkAddress.split(input) {
                (network, host, port) = parts
            } else {
                host = input
            }
            if port.isEmpty && !host.contains("{") && !CaddyNetworkAddress.isUnix(network)
                && !CaddyNetworkAddress.isFD(network)
            {
                port = "80"
            }
        }
        if network == "unix+h2c" {
            network = "unix"
            scheme = "h2c"
        }
    }
}

/// The parts of a URL `reverse_proxy` looks at, parsed as Go's `url.Parse` would for `scheme://host:port/...`.
struct SimpleURL {
    struct PortError: Error, CustomStringConvertible {
        let url: String
        let port: String
        var description: String { "parse \"\(url)\": invalid port \":\(port)\" after host" }
    }

    var scheme = ""
    var host = ""
    var port = ""
    var path = ""
    var rawQuery = ""
    var fragment = ""
    var hostname: String { host }

    init(parsing input: String) throws {
        var rest = Substring(input)
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        }
        if let q = rest.firstIndex(of: "?") {
            rawQuery = String(rest[rest.index(after: q)...])
            rest = rest[..<q]
        }
        guard let r = rest.firstRange(of: "://") else { throw CaddyfileError("parse \"\(input)\": missing scheme") }
        scheme = rest[..<r.lowerBound].lowercased()
        guard let first = scheme.first, first.isLetter,
            scheme.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "." })
        else {
            throw CaddyfileError("parse \"\(input)\": first path segment in URL cannot contain colon")
        }
        rest = rest[r.upperBound...]
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = String(rest[slash...])
        }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var hostPart = authority
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw CaddyfileError("parse \"\(input)\": missing ']' in host")
            }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                port = String(after.dropFirst())
            } else if !after.isEmpty {
                throw CaddyfileError("parse \"\(input)\": invalid port \"\(after)\" after host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            port = String(authority[authority.index(after: colon)...])
        }
        if !port.allSatisfy({ $0.isASCII && $0.isNumber }) { throw PortError(url: input, port: port) }
        host = String(hostPart)
    }
}
