import UsherCaddyfile
import UsherCore
import UsherTLS

/// A site address as written in a Caddyfile: `https://example.com:8443/path`.
public struct SiteAddress: Equatable, Sendable {
    public var original = ""
    public var scheme = ""
    public var host = ""
    public var port = ""
    public var path = ""

    /// Parses a site address (Caddy's `ParseAddress`); the port, if any, must be 0–65535.
    public init(parsing input: String) throws {
        var str = input
        if str.utf8.count > 4096 { str = String(decoding: Array(str.utf8)[..<4096], as: UTF8.self) }
        var remaining = str.trimmingWhitespace()
        original = remaining
        if let r = remaining.firstRange(of: "://") {
            scheme = String(remaining[..<r.lowerBound])
            remaining = String(remaining[r.upperBound...])
        }
        let hostPart: String
        if let slash = remaining.firstIndex(of: "/") {
            hostPart = String(remaining[..<slash])
            path = "/" + remaining[remaining.index(after: slash)...]
        } else {
            hostPart = remaining
        }
        if let hp = try? Go.splitHostPort(hostPart) {
            host = hp.host
            port = hp.port
        } else if let hp = try? Go.splitHostPort(hostPart + ":") {
            host = hp.host
            port = hp.port
        } else {
            host = hostPart
        }
        if !port.isEmpty {
            do {
                let n = try Go.atoi(port)
                if n < 0 || n > 65535 { throw CaddyfileError("port \(n) is out of range") }
            } catch let e as Go.Failure {
                throw CaddyfileError("invalid port '\(port)': \(e)")
            }
        }
    }

    init(original: String, scheme: String, host: String, port: String, path: String) {
        self.original = original
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
    }

    /// Lower-cased scheme and host (placeholders kept as written), IPv6 hosts in canonical form.
    public func normalized() -> SiteAddress {
        var h = host.trimmingWhitespace()
        // IPv6 hosts print as Go's netip does (a zone kept as written; IPv4-mapped ones left alone).
        if h.contains(":"), let ip = IPAddress(h), ip.bytes.count == 16, ip.unmapped.bytes.count == 16 {
            h = ip.description + (h.firstIndex(of: "%").map { String(h[$0...]) } ?? "")
        }
        return SiteAddress(
            original: original, scheme: lowerExceptPlaceholders(scheme),
            host: lowerExceptPlaceholders(h), port: port, path: path)
    }

    /// The address as a URL-like string; the default port for the scheme is left out.
    public var description: String {
        if host.isEmpty && port.isEmpty { return "" }
        var scheme = self.scheme
        if scheme.isEmpty { scheme = port == "443" ? "https" : "http" }
        var s = scheme + "://"
        if !port.isEmpty && ((scheme == "https" && port != "443") || (scheme == "http" && port != "80")) {
            s += Go.joinHostPort(host, port)
        } else {
            s += host
        }
        return s + path
    }
}

func lowerExceptPlaceholders(_ s: String) -> String {
    var out = ""
    var escaped = false
    var inPlaceholder = false
    for ch in s {
        if ch == "\\" && !escaped {
            escaped = true
            out.append(ch)
            continue
        }
        if ch == "{" && !escaped { inPlaceholder = true }
        if ch == "}" && inPlaceholder && !escaped { inPlaceholder = false }
        if inPlaceholder { out.append(ch) } else { out += ch.lowercased() }
        escaped = false
    }
    return out
}
