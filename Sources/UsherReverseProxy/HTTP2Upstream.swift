import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One HTTP/2 connection to an upstream, shared by the requests of its event loop: each request is a stream,
/// spoken through NIO's HTTP/1-to-HTTP/2 codec so the exchange code is the same as for HTTP/1.1.
final class HTTP2Upstream: @unchecked Sendable {
    // @unchecked: used only on its channel's event loop (the loop of the requests that share it).
    let channel: any Channel
    let address: String
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    private let secure: Bool

    init(channel: any Channel, address: String, secure: Bool) throws {
        self.channel = channel
        self.address = address
        self.secure = secure
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
            HTTP2Setting(parameter: .enablePush, value: 0),
        ]
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client, connectionConfiguration: connection, streamConfiguration: stream
        ) { pushed in
            // Servers may not open streams to us; pushes were disabled above.
            pushed.close()
        }
        // HTTP/2 keeps reading for its own frames (SETTINGS, PING, WINDOW_UPDATE) whatever the streams do.
        channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    /// Whether new streams can be opened: the connection is up.
    var isUsable: Bool { channel.isActive }

    /// A new stream, ready for one request.
    func openStream() async throws -> UpstreamConnection {
        let address = self.address
        let secure = self.secure
        let stream = try await multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                let sync = stream.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: secure ? .https : .http))
                try sync.addHandler(UpstreamConnection(address: address, isStream: true))
            }
        }.get()
        return try stream.pipeline.syncOperations.handler(type: UpstreamConnection.self)
    }

    func close() { channel.close(promise: nil) }
}
