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
        var t = text
        // On the UTF-8 bytes: addresses are parsed for every request (client IPs, log filters).
        let parsed: [UInt8]? = t.withUTF8 { all in
            let end = all.firstIndex(of: UInt8(ascii: "%")) ?? all.count
            let b = UnsafeBufferPointer(rebasing: all[0..<end])
            return b.contains(UInt8(ascii: ":")) ? IPAddress.parseV6(b) : IPAddress.parseV4(b)
        }
        guard let parsed else { return nil }
        bytes = parsed
    }

    /// Dotted decimal, four parts of 0–255 without leading zeros.
    static func parseV4(_ b: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(4)
        var i = 0
        while i < b.count || out.count < 4 {
            if out.count == 4 { return nil }
            if out.count > 0 {
                guard i < b.count, b[i] == UInt8(ascii: ".") else { return nil }
                i += 1
            }
            let start = i
            var v = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                v = v * 10 + Int(b[i] - 0x30)
                i += 1
                if i - start > 3 { return nil }
            }
            let len = i - start
            guard len > 0, v <= 255, !(len > 1 && b[start] == 0x30) else { return nil }
            out.append(UInt8(v))
        }
        return out
    }

    /// Colon-separated hex groups with at most one `::`, optionally ending in dotted IPv4 (Go's `parseIPv6`).
    static func parseV6(_ s: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var ip = [UInt8](repeating: 0, count: 16)
        var ellipsis = -1
        var p = 0
        let n = s.count
        if n >= 2 && s[0] == UInt8(ascii: ":") && s[1] == UInt8(ascii: ":") {
            ellipsis = 0
            p = 2
            if p == n { return ip }
        }
        var i = 0
        while i < 16 {
            // A hex group of 1 to 4 digits.
            var v = 0
            var c = p
            while c < n, c - p < 5, let d = hexValue(s[c]) {
                v = v << 4 | d
                c += 1
            }
            guard c > p, c - p <= 4 else { return nil }
            if c < n && s[c] == UInt8(ascii: ".") {
                guard ellipsis >= 0 || i == 12, i + 4 <= 16,
                    let v4 = parseV4(UnsafeBufferPointer(rebasing: s[p..<n]))
                else { return nil }
                ip[i] = v4[0]
                ip[i + 1] = v4[1]
                ip[i + 2] = v4[2]
                ip[i + 3] = v4[3]
                i += 4
                p = n
                break
            }
            ip[i] = UInt8(v >> 8)
            ip[i + 1] = UInt8(v & 0xFF)
            i += 2
            p = c
            if p == n { break }
            guard s[p] == UInt8(ascii: ":"), p + 1 < n else { return nil }
            p += 1
            if s[p] == UInt8(ascii: ":") {
                guard ellipsis < 0 else { return nil }
                ellipsis = i
                p += 1
                if p == n { break }
            }
        }
        guard p == n else { return nil }
        if i < 16 {
            guard ellipsis >= 0 else { return nil }
            let fill = 16 - i
            var j = i - 1
            while j >= ellipsis {
                ip[j + fill] = ip[j]
                j -= 1
            }
            for k in ellipsis..<(ellipsis + fill) { ip[k] = 0 }
        } else if ellipsis >= 0 {
            return nil
        }
        return ip
    }

    private static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: return Int(b - 0x30)
        case 0x61...0x66: return Int(b - 0x61 + 10)
        case 0x41...0x46: return Int(b - 0x41 + 10)
        default: return nil
        }
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
        if isIPv4 {
            var out: [UInt8] = []
            out.reserveCapacity(15)
            for (i, b) in bytes.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ".")) }
                if b >= 100 { out.append(0x30 + b / 100) }
                if b >= 10 { out.append(0x30 + (b / 10) % 10) }
                out.append(0x30 + b % 10)
            }
            return String(decoding: out, as: UTF8.self)
        }
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
