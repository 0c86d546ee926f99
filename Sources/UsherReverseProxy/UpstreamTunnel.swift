public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
public import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// An upstream connection after a protocol switch: raw bytes both ways, read on demand.
final class UpstreamTunnel: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var buffered = CircularBuffer<ByteBuffer>()
    private var waiter: CheckedContinuation<ByteBuffer?, any Error>?
    private let writability = WritabilityGate()
    private(set) var closed = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        teardown()
        context.close(promise: nil)
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        waiter?.resume(returning: nil)
        waiter = nil
        writability.fail(UpstreamError(description: "upstream closed the connection", retryable: false))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard buffer.readableBytes > 0 else { return }
        if let w = waiter {
            waiter = nil
            w.resume(returning: buffer)
        } else {
            buffered.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if waiter != nil { context.read() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writability.open() }
        context.fireChannelWritabilityChanged()
    }

    /// The next bytes from the upstream; `nil` once it has closed.
    func next() async throws -> ByteBuffer? {
        if let b = buffered.popFirst() { return b }
        guard !closed, let context else { return nil }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            context.read()
        }
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard !closed, let context else {
            throw UpstreamError(description: "upstream closed the connection", retryable: false)
        }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        if !context.channel.isWritable { try await writability.wait() }
    }

    /// Sends `last` (if any), then closes.
    func close(sending last: ByteBuffer?) {
        guard let context else { return }
        let channel = context.channel
        if let last, !closed {
            context.writeAndFlush(wrapOutboundOut(last)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
        teardown()
    }
}
