import UsherCore

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
