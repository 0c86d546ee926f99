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

/// One request/response exchange with an upstream, as the proxy drives it: request parts out, response parts in.
/// An HTTP/1.1 connection, an HTTP/2 stream (through NIO's codec) or an HTTP/3 stream. Calls happen on the loop of
/// the request.
protocol UpstreamExchange: AnyObject {
    /// The next response part; `nil` after the end.
    func next() async throws -> HTTPClientResponsePart?
    /// Sends a request part, waiting while the upstream cannot take more.
    func write(_ part: HTTPClientRequestPart, flush: Bool) async throws
    /// Abandons the exchange (the connection for HTTP/1.1, the stream otherwise).
    func close()
    /// The response head did not come in time: fail the exchange.
    func timeOut()
    /// Whether a timeout ended the exchange.
    var timedOut: Bool { get }
    /// After a `101`: the raw byte tunnel (HTTP/1.1 only).
    func becomeTunnel() throws -> UpstreamTunnel
}

extension UpstreamConnection: UpstreamExchange {}

/// One HTTP/1.1 connection to an upstream, used by one request at a time. Reads only on demand (auto-read is off),
/// so a slow client slows the upstream instead of filling memory. Every call happens on the channel's loop.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let address: String
    /// An HTTP/2 stream rather than a connection: used once, never pooled.
    let isStream: Bool
    private var context: ChannelHandlerContext?
    private var buffered = CircularBuffer<HTTPClientResponsePart>()
    /// Body bytes in `buffered`; reading pauses above ``highWatermark``.
    private var bufferedBytes = 0
    private var waiter: CheckedContinuation<HTTPClientResponsePart?, any Error>?
    private let writability = WritabilityGate()
    private(set) var closed = false
    /// Set by the pool while the connection is idle.
    var idleSince: NIODeadline?
    /// `read_timeout` and `write_timeout` of the transport.
    var readTimeout: TimeAmount?
    var writeTimeout: TimeAmount?
    private var ioTimer: Scheduled<Void>?

    /// Response bytes held for a slow client before the upstream is no longer read.
    static let highWatermark = 64 * 1024

    init(address: String, isStream: Bool = false) {
        self.address = address
        self.isStream = isStream
    }

    var channel: (any Channel)? { context?.channel }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { context.read() }
    }
    func handlerRemoved(context: ChannelHandlerContext) {
        teardown(nil)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        // Reading starts at once: a TLS handshake needs it, and an idle connection should notice a close.
        context.read()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown(nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        teardown(error)
        context.close(promise: nil)
    }

    private func teardown(_ error: (any Error)?) {
        guard !closed else { return }
        closed = true
        ioTimer?.cancel()
        let e = error ?? UpstreamError(description: "upstream closed the connection", retryable: false)
        waiter?.resume(throwing: e)
        waiter = nil
        writability.fail(e)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let w = waiter {
            waiter = nil
            ioTimer?.cancel()
            w.resume(returning: part)
        } else {
            if case .body(let b) = part { bufferedBytes += b.readableBytes }
            buffered.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Reading goes on while little is held: the socket stays registered for reads (no epoll change per
        // response), an idle pooled connection notices the upstream closing it, and a slow client still stops
        // the upstream once ``highWatermark`` bytes wait.
        if bufferedBytes < Self.highWatermark { context.read() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writability.open()
        }
        context.fireChannelWritabilityChanged()
    }

    /// The next response part, from what was read already or from the socket.
    func next() async throws -> HTTPClientResponsePart? {
        if let part = buffered.popFirst() {
            if case .body(let b) = part {
                let wasAbove = bufferedBytes >= Self.highWatermark
                bufferedBytes -= b.readableBytes
                if wasAbove && bufferedBytes < Self.highWatermark { context?.read() }
            }
            return part
        }
        guard !closed, let context else {
            throw UpstreamError(description: "upstream closed the connection", retryable: false)
        }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            armIOTimer(readTimeout, "timeout reading from upstream")
            context.read()
        }
    }

    /// Writes a request part, waiting while the socket is not writable.
    func write(_ part: HTTPClientRequestPart, flush: Bool) async throws {
        guard !closed, let context else {
            throw UpstreamError(description: "upstream closed the connection", retryable: false)
        }
        context.write(wrapOutboundOut(part), promise: nil)
        if flush || !context.channel.isWritable { context.flush() }
        if !context.channel.isWritable {
            armIOTimer(writeTimeout, "timeout writing to upstream")
            defer { ioTimer?.cancel() }
            try await writability.wait()
        }
    }

    func close() { context?.close(promise: nil) }

    /// Passes an outbound user event down the pipeline (the FastCGI environment, ahead of a request's head).
    func send(event: Any) { context?.triggerUserOutboundEvent(event, promise: nil) }

    /// After a `101` head: HTTP gives way to a raw byte tunnel on the same socket.
    func becomeTunnel() throws -> UpstreamTunnel {
        guard !closed, let context else {
            throw UpstreamError(description: "upstream closed the connection", retryable: false)
        }
        let tunnel = UpstreamTunnel()
        let sync = context.pipeline.syncOperations
        try sync.addHandler(tunnel, position: .before(self))
        if let encoder = try? sync.handler(type: HTTPRequestEncoder.self) {
            sync.removeHandler(encoder, promise: nil)
        }
        if let validator = try? sync.handler(type: NIOHTTPRequestHeadersValidator.self) {
            sync.removeHandler(validator, promise: nil)
        }
        if let decoder = try? sync.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self) {
            sync.removeHandler(decoder, promise: nil)
        }
        closed = true
        sync.removeHandler(self, promise: nil)
        return tunnel
    }

    /// Set when the response head did not come in time (`response_header_timeout`), or a read or write took
    /// longer than `read_timeout`/`write_timeout`.
    private(set) var timedOut = false

    private func armIOTimer(_ limit: TimeAmount?, _ why: String) {
        guard let limit, let loop = context?.eventLoop else { return }
        ioTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: loop)
        ioTimer = loop.scheduleTask(in: limit) {
            let me = bound.value
            me.timedOut = true
            me.teardown(UpstreamError(description: why, retryable: false, timedOut: true))
            me.context?.close(promise: nil)
        }
    }

    /// Gives up on the exchange: the head did not arrive in time.
    func timeOut() {
        timedOut = true
        teardown(UpstreamError(description: "timeout awaiting response headers", retryable: false))
        context?.close(promise: nil)
    }

    /// Whether the connection can carry another request: open, and nothing unasked-for arrived while idle.
    var reusable: Bool { !closed && buffered.isEmpty && context?.channel.isActive == true }
}
