/// A listen or dial address in Caddy's syntax: `[network/]host:port[-port]`, e.g. `:8080`, `127.0.0.1:8080`,
/// `[::1]:8080`, `:8000-8003`, `unix//run/usher.sock`, `udp/:443`, `fd/3`.
public struct NetworkAddress: Hashable, Sendable, CustomStringConvertible {
    /// `tcp`, `tcp4`, `tcp6`, `udp`, `udp4`, `udp6`, `unix`, `unixgram`, `unixpacket`, `fd` or `fdgram`.
    public var network: String
    /// Host or IP (no brackets); for unix networks the socket path, for fd networks the descriptor number.
    public var host: String
    public var startPort: Int
    public var endPort: Int

    /// The most ports a range may span.
    public static let maxPortSpan = 65535

    public init(network: String, host: String, startPort: Int = 0, endPort: Int = 0) {
        self.network = network
        self.host = host
        self.startPort = startPort
        self.endPort = endPort
    }

    /// Parses an address; a missing network is `defaultNetwork`, a missing port `defaultPort`.
    public init(parsing input: String, defaultNetwork: String = "tcp", defaultPort: Int = 0) throws {
        var a = Substring(input)
        var network = ""
        if let slash = a.firstIndex(of: "/") {
            network = a[..<slash].trimmingSpaces.lowercased()
            a = a[a.index(after: slash)...]
            if Self.isUnix(network) || Self.isFD(network) {
                self.init(network: network, host: String(a))
                if Self.isUnix(network) {
                    _ = try Self.splitUnixPermissions(host)
                }
                return
            }
        }
        if network.isEmpty { network = defaultNetwork }
        guard
            ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "ip", "ip4", "ip6"].contains(network) || Self.isUnix(network)
                || Self.isFD(network)
        else {
            throw AddressError("unsupported network \"\(network)\" in address \"\(input)\"")
        }
        if Self.isUnix(network) || Self.isFD(network) {
            self.init(network: network, host: String(a))
            return
        }
        let (host, port) = try Self.splitHostPort(a, original: input)
        var start = defaultPort
        var end = defaultPort
        if let port, !port.isEmpty {
            let parts = port.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard let s = Int(parts[0]), s >= 0, s <= 65535 else {
                throw AddressError("invalid start port \"\(parts[0])\" in address \"\(input)\"")
            }
            let e: Int
            if parts.count == 2 {
                guard let ev = Int(parts[1]), ev >= 0, ev <= 65535 else {
                    throw AddressError("invalid end port \"\(parts[1])\" in address \"\(input)\"")
                }
                e = ev
            } else {
                e = s
            }
            guard e >= s else {
                throw AddressError("end port must not be less than start port in address \"\(input)\"")
            }
            start = s
            end = e
        }
        self.init(network: network, host: host, startPort: start, endPort: end)
    }

    static func splitHostPort(_ a: Substring, original: String) throws -> (String, String?) {
        if a.hasPrefix("[") {
            guard let close = a.firstIndex(of: "]") else {
                throw AddressError("missing ']' in address \"\(original)\"")
            }
            let host = String(a[a.index(after: a.startIndex)..<close])
            let rest = a[a.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":") else {
                throw AddressError("unexpected text after ']' in address \"\(original)\"")
            }
            return (host, String(rest.dropFirst()))
        }
        let colons = a.filter { $0 == ":" }.count
        if colons == 0 { return (String(a), nil) }
        if colons > 1 {
            // A bare IPv6 address without brackets has no port.
            return (String(a), nil)
        }
        let colon = a.firstIndex(of: ":")!
        return (String(a[..<colon]), String(a[a.index(after: colon)...]))
    }

    public static func isUnix(_ network: String) -> Bool {
        network == "unix" || network == "unixgram" || network == "unixpacket"
    }

    public static func isFD(_ network: String) -> Bool { network == "fd" || network == "fdgram" }

    public var isUnixNetwork: Bool { Self.isUnix(network) }
    public var isFDNetwork: Bool { Self.isFD(network) }
    public var isUDP: Bool { network.hasPrefix("udp") || network == "unixgram" || network == "fdgram" }

    /// The number of ports the range covers (1 for unix and fd networks).
    public var portRangeSize: Int {
        if isUnixNetwork || isFDNetwork { return 1 }
        return endPort - startPort + 1
    }

    /// One address per port of the range.
    public func expanded() -> [NetworkAddress] {
        if isUnixNetwork || isFDNetwork { return [self] }
        return (startPort...endPort).map { NetworkAddress(network: network, host: host, startPort: $0, endPort: $0) }
    }

    /// `host:port` for the port at `offset` in the range (brackets around IPv6), or the path for unix sockets.
    public func joinHostPort(offset: Int = 0) -> String {
        if isUnixNetwork || isFDNetwork { return host }
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(h):\(startPort + offset)"
    }

    public var isLoopback: Bool {
        if isUnixNetwork || isFDNetwork { return true }
        return host == "localhost" || host.hasPrefix("127.") || host == "::1"
    }

    public var isWildcardInterface: Bool {
        host.isEmpty || host == "0.0.0.0" || host == "::"
    }

    /// A unix socket path and the file mode to give it (`unix//path|0222`); default mode 0200.
    public static func splitUnixPermissions(_ host: String) throws -> (path: String, mode: UInt32) {
        guard let bar = host.lastIndex(of: "|") else { return (host, 0o200) }
        let modeText = host[host.index(after: bar)...]
        guard let mode = UInt32(modeText, radix: 8), mode <= 0o777 else {
            throw AddressError("invalid unix socket permissions \"\(modeText)\"")
        }
        guard mode & 0o200 != 0 else {
            throw AddressError("unix socket permissions \"\(modeText)\" must let the owner write")
        }
        return (String(host[..<bar]), mode)
    }

    public var description: String {
        var net = network
        if network == "tcp" && (!host.isEmpty || startPort != 0) { net = "" }
        var s = net.isEmpty ? "" : net + "/"
        if isUnixNetwork || isFDNetwork {
            s += host
        } else {
            let h = host.contains(":") ? "[\(host)]" : host
            s += startPort == endPort ? "\(h):\(startPort)" : "\(h):\(startPort)-\(endPort)"
        }
        return s
    }
}

/// A malformed network address.
public struct AddressError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host, never failing (a request's Host as the runtime reads it); Go's
/// strict `net.SplitHostPort` is ``Go/splitHostPort(_:)``, and listener addresses parse with ``NetworkAddress``.
public func splitHostPort(_ hostport: String) -> (host: String, port: String) {
    if hostport.hasPrefix("[") {
        if let close = hostport.firstIndex(of: "]") {
            let host = String(hostport[hostport.index(after: hostport.startIndex)..<close])
            let rest = hostport[hostport.index(after: close)...]
            return (host, rest.hasPrefix(":") ? String(rest.dropFirst()) : "")
        }
        return (hostport, "")
    }
    guard let colon = hostport.lastIndex(of: ":"), hostport.firstIndex(of: ":") == colon else {
        return (hostport, "")
    }
    return (String(hostport[..<colon]), String(hostport[hostport.index(after: colon)...]))
}
