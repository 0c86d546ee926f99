import NIOCore
import NIOEmbedded
import Testing

@testable import UsherHTTP

/// One HTTP/2 frame's bytes: the 9-byte header, then `payload`.
private func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
    let n = payload.count
    return [
        UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
        UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff),
    ] + payload
}

private func setting(_ id: UInt16, _ value: UInt32) -> [UInt8] {
    [
        UInt8(id >> 8), UInt8(id & 0xff), UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff),
        UInt8(value & 0xff),
    ]
}

private func goAway(code: UInt32) -> [UInt8] {
    frame(
        type: 7, [0, 0, 0, 1, UInt8(code >> 24), UInt8(code >> 16 & 0xff), UInt8(code >> 8 & 0xff), UInt8(code & 0xff)])
}

/// A guard (first-request deadline of 3 s) below a frame watch advertising 250 streams, on an embedded channel.
private func watchedChannel() throws -> (EmbeddedChannel, ConnectionGuard) {
    var settings = ConnectionSettings()
    settings.readHeaderTimeout = .seconds(3)
    let connectionGuard = ConnectionGuard(settings: settings)
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(connectionGuard)
    try channel.pipeline.syncOperations.addHandler(
        HTTP2FrameWatch(advertisedMaxStreams: 250, connectionGuard: connectionGuard))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return (channel, connectionGuard)
}

private func written(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var out: [UInt8] = []
    while let io = try channel.readOutbound(as: IOData.self) {
        if case .byteBuffer(let b) = io { out += b.readableBytesView }
    }
    return out
}

/// Whether bytes sent by the peer still reach the handlers above the guard.
private func passesInbound(_ channel: EmbeddedChannel) throws -> Bool {
    try channel.writeInbound(ByteBuffer(bytes: [1, 2, 3]))
    return try channel.readInbound(as: ByteBuffer.self) != nil
}

@Suite("Connection policy: the HTTP/2 frame watch and the connection guard (in memory)")
struct ConnectionPolicyTests {
    @Test(
        "the server's first SETTINGS advertises 250 streams whatever NIOHTTP2 was configured with; later ones pass unchanged"
    )
    func advertisedStreams() throws {
        let (channel, _) = try watchedChannel()
        let first = frame(type: 4, setting(0x4, 1 << 20) + setting(0x3, 500) + setting(0x8, 1))
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: first)))
        #expect(try written(channel) == frame(type: 4, setting(0x4, 1 << 20) + setting(0x3, 250) + setting(0x8, 1)))
        let ack = frame(type: 4, flags: 1)
        let later = frame(type: 4, setting(0x3, 500))
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: ack + later)))
        #expect(try written(channel) == ack + later)
        #expect(try passesInbound(channel))
    }

    @Test(
        "a GOAWAY with an error code hands the connection to the guard even when its header is split across writes; NO_ERROR does not"
    )
    func goAwayDetection() throws {
        let (graceful, _) = try watchedChannel()
        try graceful.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: goAway(code: 0))))
        #expect(try passesInbound(graceful))

        let (split, _) = try watchedChannel()
        let bytes = goAway(code: 1)
        try split.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: Array(bytes[..<4]))))
        #expect(try passesInbound(split))
        try split.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: Array(bytes[4...]))))
        #expect(try !passesInbound(split), "bytes after the connection error still reach the protocol handler")
        // The guard closes after its grace.
        split.embeddedEventLoop.advanceTime(by: ConnectionGuard.lingerGrace)
        #expect(!split.isActive)
    }

    @Test("payload bytes that look like a GOAWAY header are skipped as payload, also when the payload comes in pieces")
    func payloadIsNotParsed() throws {
        let (channel, _) = try watchedChannel()
        let fake = goAway(code: 2)
        let data = frame(type: 0, stream: 1, fake + fake)
        // Header and the first half of the payload, then the rest, then an ordinary PING.
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: Array(data[..<(9 + fake.count)]))))
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: Array(data[(9 + fake.count)...]))))
        try channel.writeOutbound(IOData.byteBuffer(ByteBuffer(bytes: frame(type: 6, [UInt8](repeating: 0, count: 8)))))
        #expect(try passesInbound(channel))
        #expect(channel.isActive)
    }

    @Test(
        "with no request the guard closes the connection at read_header_timeout; after requestStarted it leaves it open"
    )
    func firstRequestDeadline() throws {
        let (idle, _) = try watchedChannel()
        idle.embeddedEventLoop.advanceTime(by: .milliseconds(2999))
        #expect(idle.isActive)
        idle.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!idle.isActive)

        let (served, connectionGuard) = try watchedChannel()
        connectionGuard.requestStarted()
        served.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(served.isActive)
        #expect(try passesInbound(served))
    }

    @Test("after a protocol error the guard closes at once when the peer sends more than 256 KiB")
    func lingerBudget() throws {
        let (channel, connectionGuard) = try watchedChannel()
        connectionGuard.lingerClose()
        try channel.writeInbound(ByteBuffer(repeating: 0, count: 200 * 1024))
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(repeating: 0, count: 100 * 1024))
        #expect(!channel.isActive)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
    }
}
