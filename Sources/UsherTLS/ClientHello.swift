public import NIOCore

/// What the server needs from a ClientHello before choosing a certificate: the server name (SNI) and the
/// application protocols offered (ALPN), which TLS-ALPN-01 (`acme-tls/1`) and protocol choice depend on.
public struct ClientHelloInfo: Sendable, Equatable {
    public var serverName: String?
    public var alpn: [String]
    /// The cipher suites offered, in the client's order.
    public var cipherSuites: [UInt16] = []
    /// The signature schemes offered (`signature_algorithms`), in the client's order.
    public var signatureSchemes: [UInt16] = []

    public init(serverName: String?, alpn: [String]) {
        self.serverName = serverName
        self.alpn = alpn
    }

    /// The outcome of reading the bytes a client sent first.
    public enum Parse: Equatable {
        /// Not all of the ClientHello has arrived.
        case needMore
        /// Not a TLS ClientHello (the TLS stack will say so).
        case invalid
        case hello(ClientHelloInfo)
    }

    /// Reads a ClientHello from the start of `bytes`, across as many handshake records as it spans.
    public static func parse(_ buffer: ByteBuffer) -> Parse {
        // Gather the handshake bytes from consecutive records.
        var b = buffer
        var handshake: [UInt8] = []
        var needed: Int?
        while needed == nil || handshake.count < needed! {
            guard let header = b.readBytes(length: 5) else { return .needMore }
            guard header[0] == 22, header[1] == 3 else { return .invalid }
            let length = Int(header[3]) << 8 | Int(header[4])
            guard length > 0, length <= 16384 + 2048 else { return .invalid }
            guard let body = b.readBytes(length: length) else { return .needMore }
            handshake += body
            if needed == nil, handshake.count >= 4 {
                guard handshake[0] == 1 else { return .invalid }
                needed = 4 + (Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3]))
                // A ClientHello has no business being larger than this.
                guard needed! <= 65536 else { return .invalid }
            }
        }
        guard let info = parseBody(Array(handshake[4..<needed!])) else { return .invalid }
        return .hello(info)
    }

    static func parseBody(_ h: [UInt8]) -> ClientHelloInfo? {
        var i = 2 + 32  // version, random
        func u8() -> Int? {
            guard i < h.count else { return nil }
            defer { i += 1 }
            return Int(h[i])
        }
        func u16() -> Int? {
            guard i + 2 <= h.count else { return nil }
            defer { i += 2 }
            return Int(h[i]) << 8 | Int(h[i + 1])
        }
        guard let sid = u8() else { return nil }
        i += sid
        guard let suites = u16(), i + suites <= h.count else { return nil }
        var info = ClientHelloInfo(serverName: nil, alpn: [])
        for k in stride(from: i, to: i + suites - 1, by: 2) {
            info.cipherSuites.append(UInt16(h[k]) << 8 | UInt16(h[k + 1]))
        }
        i += suites
        guard let compression = u8() else { return nil }
        i += compression
        guard i < h.count, let extTotal = u16() else { return i <= h.count ? info : nil }
        let end = i + extTotal
        guard end <= h.count else { return nil }
        while i + 4 <= end {
            guard let type = u16(), let len = u16(), i + len <= end else { return nil }
            let ext = Array(h[i..<(i + len)])
            i += len
            if type == 0 {
                // server_name: list length, then entries of (type, length, name); the host_name entry counts.
                var j = 2
                while j + 3 <= ext.count {
                    let kind = ext[j]
                    let n = Int(ext[j + 1]) << 8 | Int(ext[j + 2])
                    guard j + 3 + n <= ext.count else { return nil }
                    if kind == 0 {
                        info.serverName = String(decoding: ext[(j + 3)..<(j + 3 + n)], as: UTF8.self).lowercased()
                    }
                    j += 3 + n
                }
            } else if type == 13 {
                // signature_algorithms: list length, then two-byte schemes.
                var j = 2
                while j + 1 < ext.count {
                    info.signatureSchemes.append(UInt16(ext[j]) << 8 | UInt16(ext[j + 1]))
                    j += 2
                }
            } else if type == 16 {
                // ALPN: list length, then length-prefixed protocol names.
                var j = 2
                while j < ext.count {
                    let n = Int(ext[j])
                    guard j + 1 + n <= ext.count else { return nil }
                    info.alpn.append(String(decoding: ext[(j + 1)..<(j + 1 + n)], as: UTF8.self))
                    j += 1 + n
                }
            }
        }
        return info
    }
}
