import NIOCore
import Testing
import UsherTLS

@Suite("ClientHello: server name and ALPN read before the handshake")
struct ClientHelloTests {
    /// A ClientHello with the given SNI and ALPN, split into records of at most `recordSize` bytes.
    func hello(sni: String?, alpn: [String], recordSize: Int = 16384, schemes: [UInt16] = [0x0403, 0x0804]) -> [UInt8] {
        var exts: [UInt8] = []
        func u16(_ v: Int) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 255)] }
        if let sni {
            let name = Array(sni.utf8)
            let entry = [0] + u16(name.count) + name
            let body = u16(entry.count) + entry
            exts += u16(0) + u16(body.count) + body
        }
        if !alpn.isEmpty {
            let list = alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
            let body = u16(list.count) + list
            exts += u16(16) + u16(body.count) + body
        }
        if !schemes.isEmpty {
            let list = schemes.flatMap { u16(Int($0)) }
            let body = u16(list.count) + list
            exts += u16(13) + u16(body.count) + body
        }
        // Padding, so a large hello spans records.
        exts += u16(21) + u16(3000) + [UInt8](repeating: 0, count: 3000)
        var body: [UInt8] =
            [3, 3] + [UInt8](repeating: 7, count: 32) + [0] + u16(4) + [0x13, 0x01, 0xc0, 0x2b] + [1, 0]
        body += u16(exts.count) + exts
        let handshake = [1, UInt8(body.count >> 16), UInt8(body.count >> 8 & 255), UInt8(body.count & 255)] + body
        var out: [UInt8] = []
        var i = 0
        while i < handshake.count {
            let chunk = handshake[i..<min(i + recordSize, handshake.count)]
            out += [22, 3, 1] + u16(chunk.count) + chunk
            i += recordSize
        }
        return out
    }

    /// What parsing `hello` gives: the name and ALPN asked for, and the suites and schemes every hello here offers.
    func info(_ sni: String?, _ alpn: [String]) -> ClientHelloInfo {
        var i = ClientHelloInfo(serverName: sni, alpn: alpn)
        i.cipherSuites = [0x1301, 0xc02b]
        i.signatureSchemes = [0x0403, 0x0804]
        return i
    }

    @Test(
        "SNI, ALPN, cipher suites and signature schemes are read, in one record or across several; partial input asks for more"
    )
    func parses() {
        let one = hello(sni: "A.Test", alpn: ["acme-tls/1", "h2"])
        #expect(
            ClientHelloInfo.parse(ByteBuffer(bytes: one))
                == .hello(info("a.test", ["acme-tls/1", "h2"])))
        let split = hello(sni: "b.test", alpn: ["http/1.1"], recordSize: 700)
        #expect(
            ClientHelloInfo.parse(ByteBuffer(bytes: split)) == .hello(info("b.test", ["http/1.1"])))
        for cut in [0, 3, 5, 100, split.count - 1] {
            #expect(ClientHelloInfo.parse(ByteBuffer(bytes: split.prefix(cut))) == .needMore)
        }
        #expect(
            ClientHelloInfo.parse(ByteBuffer(bytes: hello(sni: nil, alpn: [])))
                == .hello(info(nil, [])))
    }

    @Test("bytes that are not a ClientHello are refused rather than waited on")
    func invalid() {
        #expect(ClientHelloInfo.parse(ByteBuffer(bytes: Array("GET / HTTP/1.1\r\n\r\n".utf8))) == .invalid)
        var h = hello(sni: "a.test", alpn: [])
        h[5] = 2  // a ServerHello
        #expect(ClientHelloInfo.parse(ByteBuffer(bytes: h)) == .invalid)
    }
}
