import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The first handler of an accepted TCP connection, below TLS: the connection-level policy the protocols share. Every
/// TLS or h2c-capable listener's connections have one; cleartext HTTP/1.1 alone needs none, since its connection
/// handler is there from the accept and keeps the first request's deadline itself.
///
/// - **Until the first request**, one deadline covers every phase before it (TLS handshake, ALPN, the h2c sniff, the
///   HTTP/2 preface, a connection with no stream, an HTTP/1.1 head that never starts): `read_header_timeout`, else
///   `idle_timeout`, from the moment the connection was accepted (Go arms the same deadline before its handshake).
///   Protocol handlers call ``requestStarted()`` when a first request head is complete.
/// - **After a connection error**, ``lingerClose()`` stops passing bytes up (so nothing the peer sends next is parsed
///   or buffered), lets what was written (the GOAWAY) go out, and closes after a short grace or once the peer has
///   sent ``lingerBudget`` more bytes, whichever comes first.
///
/// Everything here runs on the channel's event loop.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// How long a connection that hit a protocol error may take to receive what was written before it closes.
    static let lingerGrace: TimeAmount = .seconds(1)
    /// How many bytes a peer may send after a protocol error before the connection closes at once.
    static let lingerBudget = 256 * 1024

    private let firstRequestLimit: TimeAmount?
    private var context: ChannelHandlerContext?
    /// The first request's deadline: a scheduled callback, which costs no allocation (a scheduled task costs
    /// several, on every connection).
    private var deadline: NIOScheduledCallback?
    private var lingerTimer: Scheduled<Void>?
    private var lingering = false
    private var discarded = 0

    init(settings: ConnectionSettings) {
        firstRequestLimit = settings.readHeaderTimeout ?? settings.idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        guard let limit = firstRequestLimit else { return }
        deadline = try? context.eventLoop.scheduleCallback(in: limit, handler: Deadline(owner: self))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelDeadline()
        lingerTimer?.cancel()
        lingerTimer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelDeadline()
        context.fireChannelInactive()
    }

    private func cancelDeadline() {
        deadline?.cancel()
        deadline = nil
    }

    /// Calls back the guard, which cancels it before it leaves the pipeline, so the reference cannot dangle.
    private struct Deadline: NIOScheduledCallbackHandler, @unchecked Sendable {
        unowned let owner: ConnectionGuard
        func handleScheduledCallback(eventLoop: some EventLoop) { owner.firstRequestDeadlinePassed() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard lingering else {
            context.fireChannelRead(data)
            return
        }
        discarded += unwrapInboundIn(data).readableBytes
        if discarded > Self.lingerBudget { context.close(promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !lingering { context.fireChannelReadComplete() }
    }

    /// A first request head is complete: the protocol's own timeouts govern the connection from here on.
    func requestStarted() {
        cancelDeadline()
    }

    /// Only reached while no request has come: a first request or an error cancels the callback.
    private func firstRequestDeadlinePassed() {
        deadline = nil
        context?.close(promise: nil)
    }

    /// The connection cannot go on: discard what arrives, let what was written go out, then close.
    func lingerClose() {
        guard !lingering, let context else { return }
        lingering = true
        cancelDeadline()
        let channel = context.channel
        lingerTimer = context.eventLoop.scheduleTask(in: Self.lingerGrace) { channel.close(promise: nil) }
        // Once everything written so far has reached the socket, there is nothing left to wait for but the peer's
        // reading it; a short grace covers that.
        context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { result in
            if case .failure = result { channel.close(promise: nil) }
        }
    }

    /// Closes once everything written so far has reached the socket.
    func closeWhenWritten() {
        guard let context else { return }
        let channel = context.channel
        context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
    }

}

/// On the listening socket: when `accept` fails because the process or system is out of descriptors (or memory),
/// stops accepting for a while instead of retrying at once, backing off from 5 ms to 1 s as Go's `http.Server` does,
/// and logs once per burst. NIO keeps such a listener registered for reading after the failure, so without this the
/// loop spins on `accept` and starves the connections already open.
final class AcceptBackoff: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    static let firstDelay: TimeAmount = .milliseconds(5)
    static let maxDelay: TimeAmount = .seconds(1)

    private let logger: Logger
    private let address: String
    private var delay: TimeAmount?
    private var resume: Scheduled<Void>?
    private var failures = 0

    init(logger: Logger, address: String) {
        self.logger = logger
        self.address = address
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if failures > 0 {
            logger.info(
                "accepting connections again",
                metadata: [
                    "address": "\(address)", "failed_accepts": "\(failures)",
                ])
            failures = 0
        }
        delay = nil
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let io = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(io.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        let next = delay.map { min($0 * 2, Self.maxDelay) } ?? Self.firstDelay
        delay = next
        if failures == 0 {
            logger.error(
                "accept failed; pausing the listener",
                metadata: [
                    "address": "\(address)", "error": "\(io)", "retry_in_ms": "\(next.nanoseconds / 1_000_000)",
                ])
        }
        failures += 1
        guard resume == nil, let options = context.channel.syncOptions else { return }
        // Turning auto-read off takes the socket out of the poll set; turning it on again puts it back.
        try? options.setOption(.autoRead, value: false)
        let channel = context.channel
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        resume = context.eventLoop.scheduleTask(in: next) {
            bound.value.resume = nil
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
        context.fireChannelInactive()
    }
}
