public import NIOCore

/// An IPv4 or IPv6 address, compared and printed as Go's `netip.Addr` does (IPv4-mapped IPv6 addresses are
/// unmapped when parsed from sockets, as Go reports them).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    public var isIPv4: Bool { bytes.count == 4 }
    public var bitLength: Int { bytes.count * 8 }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted IPv4 or IPv6 text (a `%zone` suffix is dropped).
    public init?(_ text: String) {
        var s = Substring(text)
        if let pct = s.firstIndex(of: "%") { s = s[..<pct] }
        if s.contains(":") {
            guard let b = IPAddress.parseV6(s) else { return nil }
            bytes = b
        } else {
            guard let b = IPAddress.parseV4(s) else { return nil }
            bytes = b
        }
    }

    static func parseV4(_ s: Substring) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt8(p) else {
                return nil
            }
            if p.count > 1 && p.hasPrefix("0") { return nil }
            out.append(v)
        }
        return out
    }

    static func parseV6(_ s: Substring) -> [UInt8]? {
        var text = s
        var tail: [UInt8] = []
        // An embedded IPv4 address in the last 32 bits.
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = parseV4(text[text.index(after: lastColon)...]) else { return nil }
            tail = v4
            text = text[...lastColon]
            if text.hasSuffix(":") && !text.hasSuffix("::") { text = text.dropLast() }
        }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for g in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !g.isEmpty, g.count <= 4, let v = UInt16(g, radix: 16) else { return nil }
                result.append(v)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        let rest = halves.count == 2 ? groups(halves[1]) : []
        guard let rest else { return nil }
        let tailGroups = tail.count / 2
        let total = head.count + rest.count + tailGroups
        if halves.count == 1 {
            guard total == 8 else { return nil }
        } else {
            guard total < 8 else { return nil }
        }
        var all = head
        if halves.count == 2 { all += Array(repeating: 0, count: 8 - total) }
        all += rest
        var out: [UInt8] = []
        for g in all { out += [UInt8(g >> 8), UInt8(g & 0xFF)] }
        out += tail
        return out.count == 16 ? out : nil
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address, else `self`.
    public var unmapped: IPAddress {
        if bytes.count == 16 && bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return IPAddress(bytes: Array(bytes[12..<16]))!
        }
        return self
    }

    public var isLoopback: Bool {
        isIPv4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    public var isPrivate: Bool {
        if isIPv4 {
            return bytes[0] == 10 || (bytes[0] == 172 && bytes[1] & 0xF0 == 16) || (bytes[0] == 192 && bytes[1] == 168)
        }
        return bytes[0] & 0xFE == 0xFC
    }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // RFC 5952: compress the longest run (2 or more) of zero groups.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        var s = ""
        i = 0
        while i < 8 {
            if i == bestStart {
                s += "::"
                i += bestLen
                continue
            }
            if !s.isEmpty && !s.hasSuffix(":") { s += ":" }
            s += String(groups[i], radix: 16)
            i += 1
        }
        return s
    }
}

/// An address prefix (CIDR), e.g. `10.0.0.0/8` or `::1/128`.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let bits: Int

    public init?(address: IPAddress, bits: Int) {
        guard bits >= 0, bits <= address.bitLength else { return nil }
        self.address = address
        self.bits = bits
    }

    /// Parses `addr/bits`, or a single address as a full-length prefix (Caddy's `CIDRExpressionToPrefix`).
    public init?(_ text: String) {
        if let slash = text.firstIndex(of: "/") {
            guard let a = IPAddress(String(text[..<slash])), let b = Int(text[text.index(after: slash)...]),
                b >= 0, b <= a.bitLength
            else { return nil }
            self.address = a
            self.bits = b
        } else {
            guard let a = IPAddress(text) else { return nil }
            self.address = a
            self.bits = a.bitLength
        }
    }

    /// Whether `ip` is in this prefix (never across address families).
    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.bytes.count == address.bytes.count else { return false }
        var remaining = bits
        for i in 0..<ip.bytes.count {
            if remaining <= 0 { return true }
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            if ip.bytes[i] & mask != address.bytes[i] & mask { return false }
            remaining -= 8
        }
        return true
    }

    /// The prefix with host bits zeroed.
    public var masked: IPPrefix {
        var b = address.bytes
        var remaining = bits
        for i in 0..<b.count {
            let mask: UInt8 = remaining >= 8 ? 0xFF : (remaining <= 0 ? 0 : ~(0xFF >> UInt8(remaining)))
            b[i] &= mask
            remaining -= 8
        }
        return IPPrefix(address: IPAddress(bytes: b)!, bits: bits)!
    }

    public var description: String { "\(address)/\(bits)" }

    /// Caddy's `private_ranges` shorthand.
    public static let privateRanges: [String] = [
        "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1",
    ]
}

extension SocketAddress {
    /// The peer's IP as Go reports it (IPv4-mapped IPv6 unmapped), or `nil` for unix sockets.
    public var ip: IPAddress? {
        guard let text = ipAddress else { return nil }
        return IPAddress(text)?.unmapped
    }
}

extension StringProtocol {
    package func components(separatedBy separator: String) -> [Substring] {
        var result: [Substring] = []
        var rest = self[...]
        while let r = rest.firstRange(of: separator) {
            result.append(Substring(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        result.append(Substring(rest))
        return result
    }
}
