import Foundation
import Glibc
import NIOCore
import NIOPosix
public import UsherCore

/// `dns.providers.rfc2136`: changes records with RFC 2136 dynamic updates sent to the zone's primary server,
/// signed with a TSIG key (the same JSON as the caddy-dns module).
public struct RFC2136Provider: DNSProvider {
    public static let moduleID: ModuleID = "dns.providers.rfc2136"

    /// `key_name`: the TSIG key's name as the server knows it.
    public var keyName: String
    /// `key_alg`: `hmac-sha256` (also `hmac-sha384`, `hmac-sha512`, `hmac-sha1`, `hmac-md5`).
    public var keyAlgorithm: String
    /// `key`: the base64 TSIG secret.
    public var key: String
    /// `server`: `host:port` of the server that takes updates (port 53 when omitted).
    public var server: String
    /// How long to wait for the server's answer to one update.
    public var timeout: Duration = .seconds(10)

    let tsig: TSIGKey

    package enum CodingKeys: String, CodingKey { case keyName = "key_name", keyAlgorithm = "key_alg", key, server }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        keyName = try c.decodeIfPresent(String.self, forKey: .keyName) ?? ""
        keyAlgorithm = try c.decodeIfPresent(String.self, forKey: .keyAlgorithm) ?? ""
        key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
        server = try c.decodeIfPresent(String.self, forKey: .server) ?? ""
        for (k, v) in [(CodingKeys.keyName, keyName), (.keyAlgorithm, keyAlgorithm), (.key, key), (.server, server)]
        where v.isEmpty {
            throw c.error(k, "required")
        }
        guard (try? Self.splitServer(server)) != nil else {
            throw c.error(.server, "\(server) is not host:port")
        }
        do {
            tsig = try TSIGKey(name: keyName, algorithm: keyAlgorithm, secret: key)
        } catch let e as RFC2136Error {
            throw c.error(e.field ?? .keyName, e.description)
        }
    }

    public init(keyName: String, keyAlgorithm: String, key: String, server: String) throws {
        self.keyName = keyName
        self.keyAlgorithm = keyAlgorithm
        self.key = key
        self.server = server
        tsig = try TSIGKey(name: keyName, algorithm: keyAlgorithm, secret: key)
        _ = try Self.splitServer(server)
    }

    static func splitServer(_ s: String) throws -> (host: String, port: Int) {
        let (host, port) = splitHostPort(s)
        guard !host.isEmpty, let p = port.isEmpty ? 53 : Int(port), (1...65535).contains(p) else {
            throw RFC2136Error("\(s) is not host:port")
        }
        return (host, p)
    }

    public func appendRecords(zone: String, records: [DNSProviderRecord]) async throws -> [DNSProviderRecord] {
        try await update(zone: zone, records: records, add: true)
        return records
    }

    public func deleteRecords(zone: String, records: [DNSProviderRecord]) async throws -> [DNSProviderRecord] {
        try await update(zone: zone, records: records, add: false)
        return records
    }

    /// One UPDATE message (RFC 2136 §2) with every record: added with class IN, or deleted one by one with class
    /// NONE (§2.5.4), which removes only the record with that data.
    private func update(zone: String, records: [DNSProviderRecord], add: Bool) async throws {
        guard !records.isEmpty else { return }
        var w = DNSWriter()
        w.u16(Int.random(in: 0...0xFFFF))
        w.u16(5 << 11)  // opcode UPDATE
        w.u16(1)  // zone count
        w.u16(0)  // prerequisites
        w.u16(records.count)
        w.u16(0)  // additional (the signature is counted when added)
        try w.name(zone)
        w.u16(6)  // SOA
        w.u16(1)  // IN
        for r in records {
            try w.name(DNSProviderRecord.absoluteName(r.name, zone: zone))
            let (type, rdata) = try Self.rdata(r)
            w.u16(type)
            w.u16(add ? 1 : 254)
            let seconds = Int(r.ttl.components.seconds)
            w.u32(add ? (seconds > 0 ? seconds : 60) : 0)
            w.u16(rdata.count)
            w.raw(rdata)
        }
        let (signed, mac) = try tsig.sign(w.bytes)
        let (host, port) = try Self.splitServer(server)
        let timeout = self.timeout
        let response = try await NIOThreadPool.singleton.runIfActive {
            try Self.exchange(signed, host: host, port: port, timeout: timeout)
        }
        let reader = DNSReader(m: response)
        guard reader.id == Int(signed[0]) << 8 | Int(signed[1]) else {
            throw RFC2136Error("the response from \(server) does not match the update's ID")
        }
        let rcode = reader.rcode ?? 2
        // A refused key is answered unsigned (NOTAUTH with BADKEY/BADSIG inside); check the signature otherwise.
        let tsigError = (try? tsig.verify(response, requestMAC: mac)) ?? -1
        if rcode != 0 {
            let detail = tsigError > 0 ? " (TSIG \(rcodeName(tsigError)))" : ""
            throw RFC2136Error(
                "\(server) refused the update to zone \(zone): \(rcodeName(rcode))\(detail)")
        }
        guard tsigError == 0 else {
            _ = try tsig.verify(response, requestMAC: mac)  // rethrows why
            throw RFC2136Error("\(server) answered with TSIG error \(rcodeName(tsigError))")
        }
    }

    /// The record's type code and wire data.
    static func rdata(_ r: DNSProviderRecord) throws -> (Int, [UInt8]) {
        switch r.type.uppercased() {
        case "TXT":
            // Character strings of at most 255 bytes each (RFC 1035 §3.3.14).
            let bytes = Array(r.data.utf8)
            var out: [UInt8] = []
            var i = 0
            repeat {
                let chunk = bytes[i..<min(i + 255, bytes.count)]
                out.append(UInt8(chunk.count))
                out += chunk
                i += 255
            } while i < bytes.count
            return (16, out)
        case "A":
            guard let ip = IPAddress(r.data), ip.isIPv4 else {
                throw RFC2136Error("A record data \(r.data) is not IPv4")
            }
            return (1, ip.bytes)
        case "AAAA":
            guard let ip = IPAddress(r.data), !ip.isIPv4 else {
                throw RFC2136Error("AAAA record data \(r.data) is not IPv6")
            }
            return (28, ip.bytes)
        case "CNAME":
            return (5, try DNSWriter.encodeName(r.data))
        default:
            throw RFC2136Error("record type \(r.type) is not supported by dns.providers.rfc2136")
        }
    }

    /// Sends `message` over UDP and waits up to `timeout` for the answer with the same ID.
    static func exchange(_ message: [UInt8], host: String, port: Int, timeout: Duration) throws -> [UInt8] {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let family: Int32 = address.protocol == .inet6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw RFC2136Error("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let connected = address.withSockAddr { sa, len in connect(fd, sa, socklen_t(len)) }
        guard connected == 0 else {
            throw RFC2136Error("connecting to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        guard message.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == message.count else {
            throw RFC2136Error("sending the update to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        var buffer = [UInt8](repeating: 0, count: 65535)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw RFC2136Error("no answer from \(host):\(port) within \(timeout)")
                }
                throw RFC2136Error("reading the answer from \(host):\(port): \(String(cString: strerror(errno)))")
            }
            if n >= 12 && buffer[0] == message[0] && buffer[1] == message[1] { return Array(buffer[0..<n]) }
        }
        throw RFC2136Error("no answer from \(host):\(port) within \(timeout)")
    }
}
