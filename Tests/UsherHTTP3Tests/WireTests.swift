import Testing
import UsherHTTP3

@Suite("HTTP/3 wire primitives, byte for byte")
struct WireTests {
    @Test("varints: RFC 9000's examples (A.1) decode, and every length encodes shortest and round-trips")
    func varints() {
        let examples: [([UInt8], UInt64)] = [
            ([0xC2, 0x19, 0x7C, 0x5E, 0xFF, 0x14, 0xE8, 0x8C], 151_288_809_941_952_652),
            ([0x9D, 0x7F, 0x3E, 0x7D], 494_878_333),
            ([0x7B, 0xBD], 15293),
            ([0x25], 37),
            ([0x40, 0x25], 37),
        ]
        for (bytes, value) in examples {
            #expect(QUICVarint.decode(bytes)?.value == value)
            #expect(QUICVarint.decode(bytes)?.length == bytes.count)
        }
        #expect(QUICVarint.encode(37) == [0x25])
        #expect(QUICVarint.encode(15293) == [0x7B, 0xBD])
        #expect(QUICVarint.encode(494_878_333) == [0x9D, 0x7F, 0x3E, 0x7D])
        #expect(QUICVarint.encode(151_288_809_941_952_652) == [0xC2, 0x19, 0x7C, 0x5E, 0xFF, 0x14, 0xE8, 0x8C])
        for v: UInt64 in [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, QUICVarint.max] {
            let e = QUICVarint.encode(v)
            #expect(QUICVarint.decode(e)?.value == v)
        }
        #expect(QUICVarint.decode([0x40]) == nil)
        #expect(QUICVarint.decode([]) == nil)
    }

    @Test("nghttp3's own control stream: SETTINGS spliced with H3_DATAGRAM and WebTransport, offsets accounted")
    func settingsSplice() throws {
        var settings = HTTP3ConnectionSettings()
        settings.enableConnectProtocol = true
        let h3 = try NGHTTP3Connection(server: settings)
        try h3.bindLocalStreams(control: 3, qpackEncoder: 7, qpackDecoder: 11)
        var controlBytes: [UInt8]?
        while let w = try h3.nextWrite() {
            if w.streamID == 3 && controlBytes == nil { controlBytes = w.bytes }
        }
        let original = try #require(controlBytes)
        // What nghttp3 0.8.0 writes: stream type 0, SETTINGS (4) with MAX_FIELD_SECTION_SIZE (6, no limit),
        // QPACK_MAX_TABLE_CAPACITY (1) 4096, QPACK_BLOCKED_STREAMS (7) 100, ENABLE_CONNECT_PROTOCOL (8) 1.
        let maxVarint: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(original == [0x00, 0x04, 0x11, 0x06] + maxVarint + [0x01, 0x50, 0x00, 0x07, 0x40, 0x64, 0x08, 0x01])

        // Without extensions, the bytes on the wire are nghttp3's, untouched.
        var plain = ControlStreamSplice(extra: [])
        #expect(try plain.rewrite(original) == original)
        #expect(plain.added == 0)

        var splice = ControlStreamSplice(extra: [
            HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
            HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1),
        ])
        let spliced = try splice.rewrite(original)
        #expect(
            spliced == [0x00, 0x04, 0x18, 0x06] + maxVarint
                + [0x01, 0x50, 0x00, 0x07, 0x40, 0x64, 0x08, 0x01, 0x33, 0x01, 0xAB, 0x60, 0x37, 0x42, 0x01])
        #expect(splice.added == 7)
        // Later chunks pass through.
        #expect(try splice.rewrite([0x07, 0x01, 0x00]) == [0x07, 0x01, 0x00])
        // The stream type alone first (as nghttp3 writes it on a live connection), then the frame.
        var split = ControlStreamSplice(extra: [HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1)])
        #expect(try split.rewrite([0x00]) == [0x00])
        #expect(!split.done)
        #expect(
            try split.rewrite(Array(original.dropFirst())) == [0x04, 0x13, 0x06] + maxVarint
                + [0x01, 0x50, 0x00, 0x07, 0x40, 0x64, 0x08, 0x01, 0x33, 0x01])
        #expect(split.added == 2)

        // The peer side reads the result back, split anywhere.
        for cut in 0...spliced.count {
            var peer = PeerControlStream()
            try peer.receive(Array(spliced[..<cut]))
            try peer.receive(Array(spliced[cut...]))
            #expect(peer.value(of: HTTP3Codepoint.settingsH3Datagram) == 1)
            #expect(peer.value(of: HTTP3Codepoint.settingsEnableWebTransport) == 1)
            #expect(peer.value(of: HTTP3Codepoint.settingsEnableConnectProtocol) == 1)
            #expect(peer.value(of: 0x06) == QUICVarint.max)
        }
    }

    @Test("peer control streams: SETTINGS first and once, GOAWAY noted, HTTP/2 settings and repeats refused")
    func peerControl() throws {
        var p = PeerControlStream()
        try p.receive([0x00, 0x04, 0x02, 0x33, 0x01, 0x07, 0x01, 0x08])
        #expect(p.settings == [HTTP3Setting(0x33, 1)])
        #expect(p.goaway == 8)
        var noSettings = PeerControlStream()
        #expect(throws: HTTP3WireError.self) { try noSettings.receive([0x00, 0x07, 0x01, 0x00]) }
        var twice = PeerControlStream()
        #expect(throws: HTTP3WireError.self) { try twice.receive([0x00, 0x04, 0x00, 0x04, 0x00]) }
        var repeated = PeerControlStream()
        #expect(throws: HTTP3WireError.self) { try repeated.receive([0x00, 0x04, 0x04, 0x33, 0x01, 0x33, 0x00]) }
        var http2 = PeerControlStream()
        #expect(throws: HTTP3WireError.self) { try http2.receive([0x00, 0x04, 0x02, 0x02, 0x01]) }
        var notControl = PeerControlStream()
        #expect(throws: HTTP3WireError.self) { try notControl.receive([0x02]) }
    }

    @Test("stream classification by the first varint: WebTransport streams are kept from nghttp3")
    func classification() {
        // A request stream starts with a HEADERS frame.
        #expect(PeerStreamClassifier.classify([0x01, 0x10], bidirectional: true).kind == .http3)
        // 0x41 (two-byte varint 0x40 0x41) then the session's stream ID.
        let bidi = PeerStreamClassifier.classify([0x40, 0x41, 0x04, 0xAA], bidirectional: true)
        #expect(bidi.kind == .webTransportBidi(session: 4))
        #expect(bidi.headerLength == 3)
        #expect(PeerStreamClassifier.classify([0x40, 0x41], bidirectional: true).kind == .undecided)
        #expect(PeerStreamClassifier.classify([0x40], bidirectional: true).kind == .undecided)
        let uni = PeerStreamClassifier.classify([0x40, 0x54, 0x40, 0x08, 0xFF], bidirectional: false)
        #expect(uni.kind == .webTransportUni(session: 8))
        #expect(uni.headerLength == 4)
        for type: UInt8 in [0x00, 0x02, 0x03] {
            #expect(PeerStreamClassifier.classify([type], bidirectional: false).kind == .http3)
        }
    }

    @Test("HTTP/3 datagrams carry the quarter stream ID")
    func datagrams() {
        #expect(HTTP3Datagram.encode(streamID: 4, payload: [0xAB]) == [0x01, 0xAB])
        #expect(HTTP3Datagram.encode(streamID: 400, payload: []) == [0x40, 0x64])
        let d = HTTP3Datagram.decode([0x40, 0x64, 0x01, 0x02])
        #expect(d?.streamID == 400)
        #expect(d?.payload == [0x01, 0x02])
        #expect(HTTP3Datagram.decode([]) == nil)
    }
}
