import Foundation
import UsherCore

/// Writes DNS messages (RFC 1035 §4) without name compression, which is what TSIG's canonical form needs.
struct DNSWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: Int) { bytes += [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    mutating func u32(_ v: Int) { for s in [24, 16, 8, 0] { bytes.append(UInt8((v >> s) & 0xFF)) } }
    mutating func u48(_ v: Int) { for s in [40, 32, 24, 16, 8, 0] { bytes.append(UInt8((v >> s) & 0xFF)) } }
    mutating func raw(_ b: [UInt8]) { bytes += b }

    /// A domain name as labels; `lowercase` gives TSIG's canonical form.
    mutating func name(_ name: String, lowercase: Bool = false) throws {
        bytes += try Self.encodeName(name, lowercase: lowercase)
    }

    static func encodeName(_ name: String, lowercase: Bool = false) throws -> [UInt8] {
        var out: [UInt8] = []
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        if !trimmed.isEmpty {
            for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
                let l = Array((lowercase ? label.lowercased() : String(label)).utf8)
                guard !l.isEmpty, l.count <= 63 else { throw RFC2136Error("invalid DNS name \"\(name)\"") }
                out.append(UInt8(l.count))
                out += l
            }
        }
        out.append(0)
        guard out.count <= 255 else { throw RFC2136Error("DNS name too long: \(name)") }
        return out
    }
}

/// Reads the parts of a DNS message the RFC 2136 client needs: the header and where each record starts.
struct DNSReader {
    let m: [UInt8]

    func u16(_ i: Int) -> Int? { i + 1 < m.count ? Int(m[i]) << 8 | Int(m[i + 1]) : nil }

    var id: Int? { u16(0) }
    var rcode: Int? { m.count >= 4 ? Int(m[3] & 0x0F) : nil }

    func skipName(_ start: Int) -> Int? { DNSMessage.skipName(m, start) }

    /// The start offsets of every record in the answer, authority and additional sections, plus the offset of
    /// the end of the message.
    func recordOffsets() -> (records: [Int], end: Int)? {
        guard m.count >= 12, let qd = u16(4), let an = u16(6), let ns = u16(8), let ar = u16(10) else { return nil }
        var i = 12
        for _ in 0..<qd {
            guard let e = skipName(i) else { return nil }
            i = e + 4
        }
        var starts: [Int] = []
        for _ in 0..<(an + ns + ar) {
            starts.append(i)
            guard let e = skipName(i), let len = u16(e + 8) else { return nil }
            i = e + 10 + len
            guard i <= m.count else { return nil }
        }
        return (starts, i)
    }
}

/// Why a dynamic update failed.
public struct RFC2136Error: Error, CustomStringConvertible {
    public let description: String
    /// The config field at fault, when a setting is.
    let field: RFC2136Provider.CodingKeys?
    init(_ d: String, field: RFC2136Provider.CodingKeys? = nil) {
        description = d
        self.field = field
    }
}

/// RCODE names (RFC 1035, RFC 2136 §2.2, RFC 8945 §5.3) for error messages.
func rcodeName(_ code: Int) -> String {
    let names = [
        0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
        7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG", 17: "BADKEY", 18: "BADTIME",
        22: "BADTRUNC",
    ]
    return names[code] ?? "RCODE \(code)"
}
