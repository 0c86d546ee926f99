import CUsherSystem
import NIOPosix

/// Plain DNS queries (class IN) to given nameservers or the system's, for dynamic upstreams, the ACME server's
/// `resolvers` and DNS-01 propagation checks.
public enum DNSClient {
    /// Queries `name` for records of `type` (1 A, 2 NS, 6 SOA, 16 TXT, 28 AAAA, 33 SRV) at each server in turn (`nil` host: the
    /// system's nameservers) until one answers; `nil` when none does (including NXDOMAIN). Blocks the calling thread.
    public static func query(_ name: String, type: Int32, servers: [(host: String?, port: Int)]) -> [DNSRecord]? {
        var answer = [UInt8](repeating: 0, count: 4096)
        for (server, port) in servers {
            let n = answer.withUnsafeMutableBufferPointer { buf in
                c_usher_dns_query(name, type, server, Int32(port), buf.baseAddress, Int32(buf.count))
            }
            if n > 0 { return DNSMessage.records(Array(answer[0..<Int(n)])) }
        }
        return nil
    }

    /// ``query(_:type:servers:)`` on NIO's blocking-work pool, for async callers.
    public static func lookup(_ name: String, type: Int32, servers: [(host: String?, port: Int)]) async
        -> [DNSRecord]?
    {
        (try? await NIOThreadPool.singleton.runIfActive { query(name, type: type, servers: servers) }) ?? nil
    }
}

/// A resource record of an answer: an address (A, AAAA), a service (SRV), text (TXT), a name server (NS) or the
/// start of a zone (SOA, with `target` its primary server).
public struct DNSRecord: Sendable {
    /// The record's owner name, without the trailing dot.
    public var name: String = ""
    /// The record's type code (1 A, 2 NS, 6 SOA, 16 TXT, 28 AAAA, 33 SRV).
    public var type: Int = 0
    public var address: String?
    /// NS: the server's name; SOA: the primary server's name.
    public var target: String?
    public var srv: (priority: Int, weight: Int, port: Int, target: String)?
    public var text: [String]?

    public init(
        address: String? = nil, srv: (priority: Int, weight: Int, port: Int, target: String)? = nil,
        text: [String]? = nil
    ) {
        self.address = address
        self.srv = srv
        self.text = text
    }
}

/// Reads the answer section of a DNS message (RFC 1035 4.1), following name compression.
public enum DNSMessage {
    public static func records(_ m: [UInt8]) -> [DNSRecord] {
        guard m.count >= 12 else { return [] }
        func u16(_ i: Int) -> Int? { i + 1 < m.count ? Int(m[i]) << 8 | Int(m[i + 1]) : nil }
        let qd = u16(4) ?? 0, an = u16(6) ?? 0
        var i = 12
        for _ in 0..<qd {
            guard let end = skipName(m, i) else { return [] }
            i = end + 4
        }
        var out: [DNSRecord] = []
        for _ in 0..<an {
            guard let afterName = skipName(m, i), let type = u16(afterName), let len = u16(afterName + 8) else { break }
            let data = afterName + 10
            guard data + len <= m.count else { break }
            let count = out.count
            switch (type, len) {
            case (1, 4), (28, 16):
                if let ip = IPAddress(bytes: Array(m[data..<data + len])) {
                    out.append(DNSRecord(address: ip.description))
                }
            case (16, _):
                // TXT: character strings, each length-prefixed.
                var strings: [String] = []
                var j = data
                while j < data + len {
                    let n = Int(m[j])
                    guard j + 1 + n <= data + len else { break }
                    strings.append(String(decoding: m[(j + 1)..<(j + 1 + n)], as: UTF8.self))
                    j += 1 + n
                }
                out.append(DNSRecord(text: strings))
            case (33, _) where len >= 7:
                if let p = u16(data), let w = u16(data + 2), let port = u16(data + 4),
                    let target = readName(m, data + 6)
                {
                    out.append(DNSRecord(srv: (p, w, port, target)))
                }
            case (2, _), (6, _):
                if let target = readName(m, data) {
                    var r = DNSRecord()
                    r.target = target
                    out.append(r)
                }
            default:
                break
            }
            if out.count > count {
                out[count].name = readName(m, i) ?? ""
                out[count].type = type
            }
            i = data + len
        }
        return out
    }

    /// The offset after the name at `start`, following no pointer (a pointer ends a name).
    public static func skipName(_ m: [UInt8], _ start: Int) -> Int? {
        var i = start
        while i < m.count {
            let len = Int(m[i])
            if len == 0 { return i + 1 }
            if len & 0xC0 == 0xC0 { return i + 2 }
            i += len + 1
        }
        return nil
    }

    /// The name at `i`, without the trailing dot.
    static func readName(_ m: [UInt8], _ start: Int) -> String? {
        var labels: [String] = []
        var i = start
        var jumps = 0
        while i < m.count {
            let len = Int(m[i])
            if len == 0 { return labels.joined(separator: ".") }
            if len & 0xC0 == 0xC0 {
                guard i + 1 < m.count, jumps < 16 else { return nil }
                i = (len & 0x3F) << 8 | Int(m[i + 1])
                jumps += 1
                continue
            }
            guard i + 1 + len <= m.count else { return nil }
            labels.append(String(decoding: m[(i + 1)...(i + len)], as: UTF8.self))
            i += len + 1
        }
        return nil
    }
}
