import Crypto
import Foundation

/// Transaction signatures (RFC 8945) with an HMAC key shared with the DNS server.
struct TSIGKey: Sendable {
    /// The key's name as the server knows it.
    let name: String
    /// The algorithm's DNS name (`hmac-sha256.`).
    let algorithm: String
    let secret: [UInt8]

    /// Recognized `key_alg` spellings, with or without the trailing dot, to the algorithm's DNS name.
    static let algorithms: [String: String] = [
        "hmac-md5": "hmac-md5.sig-alg.reg.int.", "hmac-md5.sig-alg.reg.int": "hmac-md5.sig-alg.reg.int.",
        "hmac-sha1": "hmac-sha1.", "hmac-sha256": "hmac-sha256.", "hmac-sha384": "hmac-sha384.",
        "hmac-sha512": "hmac-sha512.",
    ]

    /// Checks the configured values; the error says which one is wrong.
    init(name: String, algorithm: String, secret: String) throws {
        var alg = algorithm.lowercased()
        if alg.hasSuffix(".") { alg.removeLast() }
        guard let canonical = Self.algorithms[alg] else {
            throw RFC2136Error(
                "unsupported TSIG algorithm \"\(algorithm)\" (use hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha1 "
                    + "or hmac-md5)", field: .keyAlgorithm)
        }
        guard let bytes = Data(base64Encoded: secret), !bytes.isEmpty else {
            throw RFC2136Error("the TSIG secret must be base64", field: .key)
        }
        self.name = name.hasSuffix(".") ? name : name + "."
        guard (try? DNSWriter.encodeName(self.name)) != nil else {
            throw RFC2136Error("\(name) is not a valid key name", field: .keyName)
        }
        self.algorithm = canonical
        self.secret = Array(bytes)
    }

    func mac(_ data: [UInt8]) -> [UInt8] {
        let key = SymmetricKey(data: secret)
        switch algorithm {
        case "hmac-md5.sig-alg.reg.int.": return Array(HMAC<Insecure.MD5>.authenticationCode(for: data, using: key))
        case "hmac-sha1.": return Array(HMAC<Insecure.SHA1>.authenticationCode(for: data, using: key))
        case "hmac-sha384.": return Array(HMAC<SHA384>.authenticationCode(for: data, using: key))
        case "hmac-sha512.": return Array(HMAC<SHA512>.authenticationCode(for: data, using: key))
        default: return Array(HMAC<SHA256>.authenticationCode(for: data, using: key))
        }
    }

    /// TSIG's variables (RFC 8945 §4.3.3), digested after the message.
    private func variables(timeSigned: Int, fudge: Int, error: Int) throws -> [UInt8] {
        var w = DNSWriter()
        try w.name(name, lowercase: true)
        w.u16(255)  // class ANY
        w.u32(0)  // TTL
        try w.name(algorithm, lowercase: true)
        w.u48(timeSigned)
        w.u16(fudge)
        w.u16(error)
        w.u16(0)  // other length
        return w.bytes
    }

    /// `message` (ARCOUNT not yet counting the signature) with a TSIG record appended; returns the signed message
    /// and the MAC, which the response's signature covers.
    func sign(_ message: [UInt8], now: Date = Date()) throws -> (message: [UInt8], mac: [UInt8]) {
        let time = Int(now.timeIntervalSince1970)
        let fudge = 300
        let mac = self.mac(message + (try variables(timeSigned: time, fudge: fudge, error: 0)))
        var out = message
        let arcount = Int(out[10]) << 8 | Int(out[11]) + 1
        out[10] = UInt8(arcount >> 8)
        out[11] = UInt8(arcount & 0xFF)
        var rdata = DNSWriter()
        try rdata.name(algorithm, lowercase: true)
        rdata.u48(time)
        rdata.u16(fudge)
        rdata.u16(mac.count)
        rdata.raw(mac)
        rdata.raw([out[0], out[1]])  // original ID
        rdata.u16(0)  // error
        rdata.u16(0)  // other length
        var rr = DNSWriter()
        try rr.name(name, lowercase: true)
        rr.u16(250)  // TSIG
        rr.u16(255)  // ANY
        rr.u32(0)
        rr.u16(rdata.bytes.count)
        rr.raw(rdata.bytes)
        return (out + rr.bytes, mac)
    }

    /// Checks the signature on a response to a request signed with `requestMAC`; returns the TSIG error code the
    /// server put in it (0 when none). Throws when the response is unsigned or its MAC does not verify.
    func verify(_ response: [UInt8], requestMAC: [UInt8]) throws -> Int {
        let r = DNSReader(m: response)
        guard let (starts, end) = r.recordOffsets(), let last = starts.last, let arcount = r.u16(10), arcount > 0,
            let afterName = r.skipName(last), r.u16(afterName) == 250
        else { throw RFC2136Error("the server's response is not signed (TSIG)") }
        // The TSIG record's data: algorithm, time, fudge, MAC, original ID, error, other.
        var i = afterName + 10
        guard let afterAlg = r.skipName(i) else { throw RFC2136Error("malformed TSIG record in the response") }
        i = afterAlg
        guard i + 10 <= end else { throw RFC2136Error("malformed TSIG record in the response") }
        let time = response[i..<i + 6].reduce(0) { $0 << 8 | Int($1) }
        let fudge = r.u16(i + 6) ?? 0
        let macSize = r.u16(i + 8) ?? 0
        i += 10
        guard i + macSize + 6 <= end else { throw RFC2136Error("malformed TSIG record in the response") }
        let mac = Array(response[i..<i + macSize])
        i += macSize
        let originalID = r.u16(i) ?? 0
        let error = r.u16(i + 2) ?? 0
        if macSize == 0 { return error }  // BADKEY/BADSIG answers carry no MAC
        // The message as it was before signing: TSIG removed, ARCOUNT one less, the original ID.
        var unsigned = Array(response[0..<last])
        unsigned[0] = UInt8(originalID >> 8)
        unsigned[1] = UInt8(originalID & 0xFF)
        unsigned[10] = UInt8((arcount - 1) >> 8)
        unsigned[11] = UInt8((arcount - 1) & 0xFF)
        var prefix = DNSWriter()
        prefix.u16(requestMAC.count)
        prefix.raw(requestMAC)
        let expected = self.mac(
            prefix.bytes + unsigned + (try variables(timeSigned: time, fudge: fudge, error: error)))
        guard expected == mac else { throw RFC2136Error("the response's TSIG signature does not verify") }
        return error
    }
}
