import Testing
import UsherHTTP3

@Suite("WebTransport wire pieces: capsules, SETTINGS, peer checks")
struct WebTransportWireTests {
    @Test(
        "WT_CLOSE_SESSION is type 0x2843, a length, a 32-bit code and the reason; it parses back at every split point")
    func closeCapsule() throws {
        let c = Capsule.closeSession(code: 4242, reason: "bye")
        // 0x2843 needs two varint bytes (0x40 | 0x28, 0x43); length 7; code 0x00001092; "bye".
        #expect(c.encoded == [0x68, 0x43, 0x07, 0x00, 0x00, 0x10, 0x92, 0x62, 0x79, 0x65])
        let stream = c.encoded + Capsule.drainSession.encoded + Capsule(type: 0x1234, value: [1, 2, 3]).encoded
        for split in 0...stream.count {
            var p = CapsuleParser()
            let got = try p.feed(stream[..<split]) + p.feed(stream[split...])
            #expect(got.map(\.type) == [0x2843, 0x78AE, 0x1234], "split at \(split)")
            #expect(got.first?.closeInfo?.code == 4242 && got.first?.closeInfo?.reason == "bye")
            #expect(p.buffered == 0)
        }
        #expect(Capsule.drainSession.encoded == [0x80, 0x00, 0x78, 0xAE, 0x00])
    }

    @Test(
        "a reason over 1024 bytes is cut at a character boundary; a short close value is malformed; oversized capsules are refused"
    )
    func closeLimits() throws {
        let long = String(repeating: "é", count: 600)  // 1200 bytes, 2 per character
        let c = Capsule.closeSession(code: 1, reason: long)
        #expect(c.value.count == 4 + 1024)
        #expect(c.closeInfo?.reason == String(repeating: "é", count: 512))
        let odd = Capsule.closeSession(code: 1, reason: "a" + String(repeating: "é", count: 600))
        #expect(odd.value.count == 4 + 1023)
        #expect(Capsule(type: 0x2843, value: [0, 0, 1]).closeInfo == nil)
        var p = CapsuleParser()
        #expect(throws: (any Error).self) { try p.feed(QUICVarint.encode(0x2843) + QUICVarint.encode(1 << 20)) }
    }

    @Test(
        "what a server announces; which peers count as offering WebTransport, and which want :protocol webtransport-h3")
    func settings() {
        #expect(
            WebTransportCodepoint.serverSettings.map(\.id) == [
                0x33, 0xFFD277, 0x2B60_3742, 0xC671_706A, 0x14E9_CD29, 0x2C7C_F000,
            ])
        #expect(WebTransportCodepoint.serverSettings.allSatisfy { $0.value == 1 })
        let base = [HTTP3Setting(0x08, 1), HTTP3Setting(0x33, 1)]
        #expect(!WebTransportCodepoint.supportsWebTransport(base))
        #expect(WebTransportCodepoint.supportsWebTransport(base + [HTTP3Setting(0x2B60_3742, 1)]))
        #expect(WebTransportCodepoint.supportsWebTransport(base + [HTTP3Setting(0x14E9_CD29, 5)]))
        #expect(!WebTransportCodepoint.supportsWebTransport([HTTP3Setting(0x33, 1), HTTP3Setting(0x2B60_3742, 1)]))
        #expect(!WebTransportCodepoint.supportsWebTransport([HTTP3Setting(0x08, 1), HTTP3Setting(0x2B60_3742, 1)]))
        #expect(
            WebTransportCodepoint.supportsWebTransport([
                HTTP3Setting(0x08, 1), HTTP3Setting(0xFFD277, 1), HTTP3Setting(0xC671_706A, 1),
            ]))
        // webtransport-go v0.12 shows only the draft-15 indicator (as a server it also sends 0x2b603742).
        #expect(WebTransportCodepoint.wantsDraft15Protocol(base + [HTTP3Setting(0x2C7C_F000, 1)]))
        #expect(
            !WebTransportCodepoint.wantsDraft15Protocol(
                base + [HTTP3Setting(0x2C7C_F000, 1), HTTP3Setting(0x2B60_3742, 1)]))
        #expect(
            WebTransportCodepoint.isWebTransportProtocol("webtransport")
                && WebTransportCodepoint.isWebTransportProtocol("webtransport-h3"))
        #expect(
            !WebTransportCodepoint.isWebTransportProtocol("websocket")
                && !WebTransportCodepoint.isWebTransportProtocol(nil))
    }

    @Test("the server SETTINGS spliced into nghttp3's control stream, byte for byte")
    func splice() throws {
        var splice = ControlStreamSplice(extra: WebTransportCodepoint.serverSettings)
        // nghttp3 0.8.0's control stream with max field section 16384 and Extended CONNECT (as usher's servers).
        let original: [UInt8] = [0x00, 0x04, 0x0B, 0x06, 0x80, 0x00, 0x40, 0x00, 0x01, 0x00, 0x07, 0x00, 0x08, 0x01]
        let out = try splice.rewrite(original)
        #expect(
            out == [
                0x00, 0x04, 0x2A, 0x06, 0x80, 0x00, 0x40, 0x00, 0x01, 0x00, 0x07, 0x00, 0x08, 0x01,
                0x33, 0x01, 0x80, 0xFF, 0xD2, 0x77, 0x01, 0xAB, 0x60, 0x37, 0x42, 0x01,
                0xC0, 0x00, 0x00, 0x00, 0xC6, 0x71, 0x70, 0x6A, 0x01, 0x94, 0xE9, 0xCD, 0x29, 0x01,
                0xAC, 0x7C, 0xF0, 0x00, 0x01,
            ])
        #expect(splice.added == out.count - original.count)
    }
}
