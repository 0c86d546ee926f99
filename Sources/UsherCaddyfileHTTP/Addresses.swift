import UsherCaddyfile
import UsherCore

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
        if let ip = IPAddressText.canonicalIPv6(h) { h = ip }
        return SiteAddress(original: original, scheme: lowerExceptPlaceholders(scheme),
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

/// IPv6 text normalisation as Go's `netip` prints addresses.
enum IPAddressText {
    /// The canonical text of an IPv6 address (not an IPv4 or IPv4-mapped one), or nil.
    static func canonicalIPv6(_ s: String) -> String? {
        guard s.contains(":") else { return nil }
        var zone = ""
        var text = Substring(s)
        if let pct = text.firstIndex(of: "%") {
            zone = String(text[pct...])
            text = text[..<pct]
        }
        guard let groups = parseIPv6(text) else { return nil }
        // IPv4-mapped addresses print as IPv4 in Go and are left alone here.
        if groups[0..<5].allSatisfy({ $0 == 0 }) && groups[5] == 0xffff { return nil }
        var bestStart = -1
        var bestLen = 0
        var i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 {
                    bestStart = i
                    bestLen = j - i
                }
                i = j
            } else {
                i += 1
            }
        }
        var out = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLen
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(groups[i], radix: 16)
            i += 1
        }
        return out + zone
    }

    static func parseIPv6(_ s: Substring) -> [UInt16]? {
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawGap = false
        var parts = s.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if s.hasPrefix("::") { parts.removeFirst() }
        if s.hasSuffix("::") { parts.removeLast() }
        for (idx, p) in parts.enumerated() {
            if p.isEmpty {
                guard !sawGap else { return nil }
                sawGap = true
                continue
            }
            if p.contains(".") {
                guard idx == parts.count - 1 else { return nil }
                let octets = p.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
                guard octets.count == 4 else { return nil }
                let a = UInt16(octets[0]) << 8 | UInt16(octets[1])
                let b = UInt16(octets[2]) << 8 | UInt16(octets[3])
                if sawGap { tail += [a, b] } else { head += [a, b] }
                continue
            }
            guard p.count <= 4, let v = UInt16(p, radix: 16) else { return nil }
            if sawGap { tail.append(v) } else { head.append(v) }
        }
        if sawGap {
            let fill = 8 - head.count - tail.count
            guard fill >= 1 else { return nil }
            return head + Array(repeating: 0, count: fill) + tail
        }
        return head.count == 8 ? head : nil
    }
}

/// Caddy's `NetworkAddress` as the Caddyfile adapter uses it: parsed and printed exactly as Caddy does.
struct CaddyNetworkAddress {
    var network = ""
    var host = ""
    var startPort: UInt64 = 0
    var endPort: UInt64 = 0

    static func isUnix(_ n: String) -> Bool { n.hasPrefix("unix") }
    static func isFD(_ n: String) -> Bool { n.hasPrefix("fd") }

    /// Caddy's `SplitNetworkAddress`.
    static func split(_ input: String) throws -> (network: String, host: String, port: String) {
        var a = input
        var network = ""
        if let slash = a.firstIndex(of: "/") {
            network = String(a[..<slash]).trimmingWhitespace().lowercased()
            a = String(a[a.index(after: slash)...])
            if isUnix(network) || isFD(network) { return (network, a, "") }
        }
        do {
            let hp = try Go.splitHostPort(a)
            return (network, hp.host, hp.port)
        } catch let first {
            let trimmed = a.trimmingCharacters(in: "[]")
            do {
                let hp = try Go.splitHostPort(Go.joinHostPort(trimmed, "0"))
                return (network, hp.host, "")
            } catch {
                throw CaddyfileError("\(first)\n\(error)")
            }
        }
    }

    /// Caddy's `JoinNetworkAddress`.
    static func join(_ network: String, _ host: String, _ port: String) -> String {
        var a = network.isEmpty ? "" : network + "/"
        if (!host.isEmpty && port.isEmpty) || isUnix(network) || isFD(network) {
            a += host
        } else if !port.isEmpty {
            a += Go.joinHostPort(host, port)
        }
        return a
    }

    /// Caddy's `ParseNetworkAddress`.
    init(parsing addr: String) throws {
        let (network, host, port) = try Self.split(addr)
        self.network = network.isEmpty ? "tcp" : network
        self.host = host
        if Self.isUnix(self.network) || Self.isFD(self.network) { return }
        if !port.isEmpty {
            let parts = port.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let before = parts[0]
            let after = parts.count > 1 ? parts[1] : before
            do { startPort = try Go.parseUint(before, bits: 16) } catch {
                throw CaddyfileError("invalid start port: \(error)")
            }
            do { endPort = try Go.parseUint(after, bits: 16) } catch {
                throw CaddyfileError("invalid end port: \(error)")
            }
            guard endPort >= startPort else { throw CaddyfileError("end port must not be less than start port") }
        }
    }

    var portText: String { startPort == endPort ? "\(startPort)" : "\(startPort)-\(endPort)" }

    var description: String {
        var net = network
        if net == "tcp" { net = "" }
        return Self.join(net, host, portText)
    }
}
