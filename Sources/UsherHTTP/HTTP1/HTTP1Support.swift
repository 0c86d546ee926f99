import NIOCore

/// The connection and exchange a request task works on; both belong to the connection's event loop, where the
/// task runs.
struct ExchangeHandle: @unchecked Sendable {
    let connection: HTTP1Connection
    let exchange: HTTP1Connection.Exchange
}

/// The client went away while its request was being served.
public struct ClientDisconnectedError: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "client disconnected" }
}

/// After an upgrade, takes the place of the HTTP decoder: raw bytes go to the connection's upgraded stream.
final class UpgradedInbound: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    let connection: HTTP1Connection

    init(connection: HTTP1Connection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.upgradedRead(unwrapInboundIn(data))
    }
}

/// Counts bytes ahead of the HTTP decoder: starts the header timer and stops heads that never end.
final class HTTP1HeadGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let connection: HTTP1Connection

    init(connection: HTTP1Connection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = unwrapInboundIn(data).readableBytes
        connection.headBytesArrived(count)
        context.fireChannelRead(data)
        connection.checkHeadOverflow()
    }
}
