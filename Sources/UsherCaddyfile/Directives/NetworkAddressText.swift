import UsherCore

/// IPv6 text normalisation as Go's `netip` prints addresses.
package enum IPAddressText {
    /// The canonical text of an IPv6 address (not an IPv4 or IPv4-mapped one), or nil.
    package static func canonicalIPv6(_ s: String) -> String? {
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

    package static func parseIPv6(_ s: Substring) -> [UInt16]? {
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
package struct CaddyNetworkAddress {
    package var network = ""
    package var host = ""
    package var startPort: UInt64 = 0
    package var endPort: UInt64 = 0

    package static func isUnix(_ n: String) -> Bool { n.hasPrefix("unix") }
    package static func isFD(_ n: String) -> Bool { n.hasPrefix("fd") }

    /// Caddy's `SplitNetworkAddress`.
    package static func split(_ input: String) throws -> (network: String, host: String, port: String) {
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
    package static func join(_ network: String, _ host: String, _ port: String) -> String {
        var a = network.isEmpty ? "" : network + "/"
        if (!host.isEmpty && port.isEmpty) || isUnix(network) || isFD(network) {
            a += host
        } else if !port.isEmpty {
            a += Go.joinHostPort(host, port)
        }
        return a
    }

    /// Caddy's `ParseNetworkAddress`.
    package init(parsing addr: String) throws {
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

    package var portText: String { startPort == endPort ? "\(startPort)" : "\(startPort)-\(endPort)" }

    package var description: String {
        var net = network
        if net == "tcp" { net = "" }
        return Self.join(net, host, portText)
    }
}
