import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
import UsherCore

@testable import UsherReverseProxy

/// The FastCGI codec on the wire: the records a request becomes and the HTTP parts records become.
@Suite("fastcgi: records on the wire")
struct FastCGICodecTests {
    func codec(captureStderr: Bool = false) throws -> FastCGIClientCodec {
        let transport = try ConfigDecoder(registry: standardRegistry).decode(
            FastCGITransport.self, from: .object(["capture_stderr": .bool(captureStderr)]))
        return FastCGIClientCodec(transport: transport)
    }

    struct Record: Equatable {
        var type: UInt8
        var content: [UInt8]
    }

    /// Every record in `bytes`, checking version 1 and request ID 1.
    func records(_ bytes: [UInt8]) -> [Record] {
        var out: [Record] = []
        var i = 0
        while i + 8 <= bytes.count {
            #expect(bytes[i] == 1 && bytes[i + 2] == 0 && bytes[i + 3] == 1)
            let length = Int(bytes[i + 4]) << 8 | Int(bytes[i + 5])
            let padding = Int(bytes[i + 6])
            out.append(Record(type: bytes[i + 1], content: Array(bytes[(i + 8)..<(i + 8 + length)])))
            i += 8 + length + padding
        }
        #expect(i == bytes.count)
        return out
    }

    func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var all: [UInt8] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { all += Array(b.readableBytesView) }
        return all
    }

    /// A record as the application would send it, with `padding` bytes of padding.
    func record(_ type: UInt8, _ content: [UInt8], padding: UInt8 = 0) -> [UInt8] {
        [1, type, 0, 1, UInt8(content.count >> 8), UInt8(content.count & 0xFF), padding, 0] + content
            + [UInt8](repeating: 0, count: Int(padding))
    }

    @Test(
        "a request: BEGIN_REQUEST keeping the connection, PARAMS with short and long lengths, STDIN in 65535-byte records"
    )
    func requestRecords() throws {
        let channel = EmbeddedChannel(handler: try codec())
        let long = String(repeating: "v", count: 300)
        let params = FastCGIRequestParams(env: [("SHORT", "x"), ("LONG", long)], sendsBody: true)
        try channel.pipeline.syncOperations.triggerUserOutboundEvent(params, promise: nil)
        try channel.writeOutbound(
            HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")))
        var body = ByteBuffer()
        body.writeBytes([UInt8](repeating: 7, count: 70_000))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(body)))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        let recs = records(try outbound(channel))
        #expect(recs.map(\.type) == [1, 4, 4, 5, 5, 5])
        #expect(recs[0].content == [0, 1, 1, 0, 0, 0, 0, 0])
        let expectedPairs: [UInt8] =
            [5, 1] + Array("SHORTx".utf8) + [4, 0x80, 0, 1, 0x2C] + Array("LONG".utf8) + Array(long.utf8)
        #expect(recs[1].content == expectedPairs)
        #expect(recs[2].content.isEmpty)
        #expect(recs[3].content.count == 65535 && recs[4].content.count == 70_000 - 65535)
        #expect(recs[5].content.isEmpty)
    }

    @Test("HEAD and OPTIONS send no body: STDIN is empty whatever the request carried")
    func noBodyForHead() throws {
        let channel = EmbeddedChannel(handler: try codec())
        try channel.pipeline.syncOperations.triggerUserOutboundEvent(
            FastCGIRequestParams(env: [], sendsBody: false), promise: nil)
        try channel.writeOutbound(
            HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/")))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "ignored"))))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        let types = records(try outbound(channel)).map(\.type)
        #expect(types == [1, 4, 5], "\(types)")  // no pairs: only the empty PARAMS that ends them
    }

    /// A channel with a GET already sent, waiting for its response.
    func requested(_ codec: FastCGIClientCodec) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: codec)
        try channel.pipeline.syncOperations.triggerUserOutboundEvent(
            FastCGIRequestParams(env: [], sendsBody: true), promise: nil)
        try channel.writeOutbound(
            HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        _ = try outbound(channel)
        return channel
    }

    func inbound(_ channel: EmbeddedChannel) throws -> [HTTPClientResponsePart] {
        var parts: [HTTPClientResponsePart] = []
        while let p = try channel.readInbound(as: HTTPClientResponsePart.self) { parts.append(p) }
        return parts
    }

    func bodyText(_ parts: [HTTPClientResponsePart]) -> String {
        parts.compactMap { if case .body(let b) = $0 { return String(buffer: b) } else { return nil } }.joined()
    }

    @Test("a response: the CGI header block split across records and reads, padding, Status, names made canonical")
    func responseParts() throws {
        let channel = try requested(try codec())
        let stdout = Array("Status: 404 Not Found\r\ncontent-type: text/plain\r\nX-A:  1 \r\n\r\nhello, ".utf8)
        var wire = record(6, Array(stdout[..<10]), padding: 6) + record(6, Array(stdout[10...]), padding: 3)
        wire +=
            record(7, Array("a warning".utf8)) + record(6, Array("world".utf8)) + record(3, [0, 0, 0, 0, 0, 0, 0, 0])
        // Fed in uneven pieces, as a socket hands them over.
        var i = 0
        for size in [3, 17, 1, 40, 200] where i < wire.count {
            let end = min(wire.count, i + size)
            try channel.writeInbound(ByteBuffer(bytes: wire[i..<end]))
            i = end
        }
        if i < wire.count { try channel.writeInbound(ByteBuffer(bytes: wire[i...])) }
        let parts = try inbound(channel)
        guard case .head(let head) = parts.first else {
            Issue.record("no head: \(parts)")
            return
        }
        #expect(head.status.code == 404)
        #expect(head.headers["Content-Type"] == ["text/plain"])
        #expect(head.headers["X-A"] == ["1"])
        #expect(bodyText(parts) == "hello, world")
        if case .end = parts.last {} else { Issue.record("no end: \(parts)") }
    }

    @Test("LF line ends, output ending inside its header block, and a malformed header line")
    func oddHeaders() throws {
        let lf = try requested(try codec())
        try lf.writeInbound(
            ByteBuffer(
                bytes: record(6, Array("Location: /x\nX-B: 2\n\nbody".utf8)) + record(3, [0, 0, 0, 0, 0, 0, 0, 0])))
        let lfParts = try inbound(lf)
        guard case .head(let h) = lfParts.first else {
            Issue.record("no head")
            return
        }
        #expect(h.status.code == 200 && h.headers["Location"] == ["/x"] && bodyText(lfParts) == "body")

        let unterminated = try requested(try codec())
        try unterminated.writeInbound(
            ByteBuffer(bytes: record(6, Array("X-Only: 1\r\n".utf8)) + record(3, [0, 0, 0, 0, 0, 0, 0, 0])))
        let uParts = try inbound(unterminated)
        guard case .head(let u) = uParts.first else {
            Issue.record("no head")
            return
        }
        #expect(u.status.code == 200 && u.headers["X-Only"] == ["1"] && uParts.count == 2)

        let bad = try requested(try codec())
        #expect(throws: (any Error).self) {
            try bad.writeInbound(ByteBuffer(bytes: record(6, Array("no colon here\r\n\r\n".utf8))))
        }
        // Output on an idle connection, or after the request ended, is an error, not a response.
        let idle = EmbeddedChannel(handler: try codec())
        #expect(throws: (any Error).self) {
            try idle.writeInbound(ByteBuffer(bytes: record(6, Array("X: 1\r\n\r\n".utf8))))
        }
        #expect(throws: (any Error).self) {
            try lf.writeInbound(ByteBuffer(bytes: record(3, [0, 0, 0, 0, 0, 0, 0, 0])))
        }
    }
}
