import Logging
import NIOCore
import NIOHTTP1
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// Serves HTTP/1.1 on one connection: turns decoded request parts into ``Request``s, runs each through the
/// current server's handler chain in a task on this connection's event loop, streams bodies both ways with
/// backpressure, answers pipelined requests in order, and enforces the server's limits and timeouts.
///
/// Everything here runs on the channel's event loop.
final class HTTP1Connection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One request and its response.
    final class Exchange {
        let request: Request
        let writer: HTTP1ResponseWriter
        let body: BodyStream?
        var expectContinue: Bool
        var continueSent = false
        var bodyComplete: Bool
        var handlerDone = false
        var task: Task<Void, Never>?

        init(request: Request, writer: HTTP1ResponseWriter, body: BodyStream?, expectContinue: Bool) {
            self.request = request
            self.writer = writer
            self.body = body
            self.expectContinue = expectContinue
            self.bodyComplete = body == nil
        }
    }

    let slot: ListenerSlot
    let settings: ConnectionSettings
    let executor: EventLoopTaskExecutor
    private(set) var context: ChannelHandlerContext!
    var allocator: ByteBufferAllocator { context.channel.allocator }

    private var current: Exchange?
    /// The exchange whose request body is still arriving (possibly after its handler finished).
    private var receiving: Exchange?
    private var discardBudget = 0
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var bodyBackpressure = false
    private var pendingRead = false
    private var closed = false
    private var writabilityWaiters: [CheckedContinuation<Void, any Error>] = []
    private var remoteAddress: SocketAddress?
    private var localAddress: SocketAddress?

    /// Bytes received since the last request head or body end, for the unterminated-head guard.
    var headBytesPending = 0
    private var awaitingHead = true

    private var idleTimer: Scheduled<Void>?
    private var headerTimer: Scheduled<Void>?
    private var bodyDeadline: Scheduled<Void>?
    private var bodyIdleTimer: Scheduled<Void>?
    private var writeDeadline: Scheduled<Void>?

    private var cachedDateSecond = -1
    private var cachedDate = ""

    init(slot: ListenerSlot, settings: ConnectionSettings, executor: EventLoopTaskExecutor) {
        self.slot = slot
        self.settings = settings
        self.executor = executor
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        remoteAddress = context.channel.remoteAddress
        localAddress = context.channel.localAddress
        slot.register(self)
        startIdleTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        slot.unregister(self)
        cancelTimers()
        let error = ClientDisconnectedError()
        for w in writabilityWaiters { w.resume(throwing: error) }
        writabilityWaiters.removeAll()
        for exchange in [current, receiving] {
            exchange?.body?.fail(error)
            exchange?.writer.abandon()
            exchange?.task?.cancel()
        }
        current = nil
        receiving = nil
        queued.removeAll()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            let waiters = writabilityWaiters
            writabilityWaiters.removeAll()
            bodyIdleTimerCancel(write: true)
            for w in waiters { w.resume() }
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if shouldRead {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private var shouldRead: Bool {
        if closed || bodyBackpressure || !queued.isEmpty { return false }
        // A complete request awaiting its response: wait before reading the next one.
        if let current, receiving !== current, !current.handlerDone { return false }
        return true
    }

    private func maybeResumeReading() {
        if pendingRead && shouldRead {
            pendingRead = false
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parse = error as? HTTPParserError {
            let status: HTTPResponseStatus
            switch parse {
            case .headerOverflow: status = .requestHeaderFieldsTooLarge
            case .invalidVersion: status = .httpVersionNotSupported
            default: status = .badRequest
            }
            sendErrorAndClose(status)
            return
        }
        if error is ByteToMessageDecoderError { sendErrorAndClose(.badRequest); return }
        context.close(promise: nil)
    }

    /// A protocol error before a handler ran: answer as Go does (status text as body) and close.
    func sendErrorAndClose(_ status: HTTPResponseStatus, detail: String? = nil) {
        guard !closed else { return }
        if let current, current.writer.status != nil || current.writer.finished {
            // A response is already under way; all we can do is close.
            context.close(promise: nil)
            return
        }
        let body = "\(status.code) \(status.reasonPhrase)" + (detail.map { ": \($0)" } ?? "")
        var buf = allocator.buffer(capacity: 160 + body.utf8.count)
        buf.writeString(HTTP1ResponseWriter.statusLine(status))
        buf.writeStaticString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")
        buf.writeString(body)
        current?.writer.abandon()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buf)).whenComplete { _ in channel.close(mode: .all, promise: nil) }
        cancelTimers()
        queued.removeAll()
        pendingRead = false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !queued.isEmpty {
            queued.append(part)
            return
        }
        dispatch(part)
    }

    private func dispatch(_ part: HTTPServerRequestPart) {
        guard !closed else { return }
        switch part {
        case .head(let head):
            if current != nil || receiving != nil {
                queued.append(part)
                return
            }
            headBytesPending = 0
            awaitingHead = false
            cancel(&headerTimer)
            beginRequest(head)
        case .body(let buffer):
            guard let exchange = receiving else { return }
            resetBodyIdleTimer()
            if exchange.handlerDone {
                discardBudget -= buffer.readableBytes
                if discardBudget < 0 { closeGracefully() }
                return
            }
            if let stream = exchange.body, !stream.yield(buffer) {
                bodyBackpressure = true
            }
        case .end:
            headBytesPending = 0
            awaitingHead = true
            guard let exchange = receiving else { return }
            receiving = nil
            exchange.bodyComplete = true
            cancel(&bodyDeadline)
            cancel(&bodyIdleTimer)
            exchange.body?.finish()
            if exchange.handlerDone { exchangeFinished(exchange) }
        }
    }

    // MARK: - Requests

    private func beginRequest(_ head: HTTPRequestHead) {
        idleTimer?.cancel()
        idleTimer = nil
        guard let server = slot.currentServer else {
            sendErrorAndClose(.serviceUnavailable)
            return
        }
        if head.version.major != 1 {
            sendErrorAndClose(.httpVersionNotSupported)
            return
        }
        var headerBytes = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers { headerBytes += name.utf8.count + value.utf8.count + 4 }
        if headerBytes > settings.maxHeaderBytes {
            sendErrorAndClose(.requestHeaderFieldsTooLarge)
            return
        }
        // Framing checks against request smuggling (RFC 9112 6.3).
        let te = head.headers[canonicalForm: "Transfer-Encoding"]
        let cls = head.headers["Content-Length"]
        if !te.isEmpty && !cls.isEmpty {
            sendErrorAndClose(.badRequest, detail: "both Transfer-Encoding and Content-Length")
            return
        }
        var contentLength: Int?
        if !cls.isEmpty {
            let values = Set(cls.flatMap { $0.split(separator: ",").map { String($0).trimmingASCIISpaces } })
            guard values.count == 1, let v = values.first, let n = Int(v), n >= 0, v.allSatisfy(\.isASCII) else {
                sendErrorAndClose(.badRequest, detail: "invalid Content-Length")
                return
            }
            contentLength = n
        }
        if !te.isEmpty && te.last.map({ $0.lowercased() }) != "chunked" {
            sendErrorAndClose(.notImplemented, detail: "unsupported transfer encoding")
            return
        }
        if head.version.minor >= 1 && !head.headers.contains(name: "Host") {
            sendErrorAndClose(.badRequest, detail: "missing required Host header")
            return
        }
        let hosts = head.headers["Host"]
        if hosts.count > 1 {
            sendErrorAndClose(.badRequest, detail: "too many Host headers")
            return
        }
        var expectContinue = false
        if let expect = head.headers.first(name: "Expect") {
            if expect.lowercased() == "100-continue" && head.version.minor >= 1 {
                expectContinue = true
            } else if head.version.minor >= 1 {
                sendErrorAndClose(.expectationFailed)
                return
            }
        }
        let target: RequestTarget
        do {
            target = try RequestTarget(parsing: head.uri, method: head.method)
        } catch {
            sendErrorAndClose(.badRequest, detail: "invalid URI")
            return
        }

        let hasBody = !te.isEmpty || (contentLength ?? 0) > 0
        var stream: BodyStream?
        if hasBody {
            let loop = context.eventLoop
            let connection = NIOLoopBound(self, eventLoop: loop)
            stream = BodyStream(highWatermark: settings.bodyWindow) { first in
                if loop.inEventLoop {
                    connection.value.bodyDemand(first: first)
                } else {
                    loop.execute { connection.value.bodyDemand(first: first) }
                }
            }
        }
        let body = RequestBody(stream: stream, expectedLength: te.isEmpty ? (contentLength ?? 0) : nil)
        let host = hosts.first ?? target.authority ?? ""
        let request = Request(
            method: head.method, target: target, version: head.version, headers: head.headers, host: host,
            scheme: settings.scheme, body: body, remoteAddress: remoteAddress, localAddress: localAddress,
            server: server.info
        )
        let writer = HTTP1ResponseWriter(
            connection: self, requestVersion: head.version, isHEAD: head.method == .HEAD,
            requestCloses: !head.isKeepAlive || slot.isClosing
        )
        let exchange = Exchange(request: request, writer: writer, body: stream, expectContinue: expectContinue && hasBody)
        current = exchange
        if hasBody {
            receiving = exchange
            if let t = settings.readTimeout { bodyDeadline = schedule(t) { $0.closeForTimeout() } }
            resetBodyIdleTimer()
        }
        if let t = settings.writeTimeout { writeDeadline = schedule(t) { $0.closeForTimeout() } }

        // The task runs on this connection's event loop (its executor), where the request, writer and exchange
        // live; nothing else touches them meanwhile except on this loop.
        let confined = LoopConfined(value: (self, exchange))
        exchange.task = Task(executorPreference: executor) {
            let (connection, exchange) = confined.value
            await server.serve(exchange.request, exchange.writer)
            connection.finishOnLoop(exchange)
        }
    }

    /// The body's reader wants data: resume reading, and send `100 Continue` the first time if asked for.
    func bodyDemand(first: Bool) {
        guard !closed, let exchange = receiving else { return }
        if exchange.expectContinue && !exchange.continueSent && exchange.writer.status == nil {
            exchange.continueSent = true
            var buf = allocator.buffer(capacity: 25)
            buf.writeStaticString("HTTP/1.1 100 Continue\r\n\r\n")
            context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
        }
        if bodyBackpressure {
            bodyBackpressure = false
        }
        maybeResumeReading()
    }

    /// Completes an exchange from its task: on the loop directly, or by hopping there.
    nonisolated func finishOnLoop(_ exchange: Exchange) {
        let loop = executor.eventLoop
        if loop.inEventLoop {
            handlerFinished(exchange)
        } else {
            let confined = LoopConfined(value: (self, exchange))
            loop.execute { confined.value.0.handlerFinished(confined.value.1) }
        }
    }

    private func handlerFinished(_ exchange: Exchange) {
        exchange.handlerDone = true
        cancel(&writeDeadline)
        guard !closed else { return }
        if exchange.writer.closeAfter || slot.isClosing {
            closeGracefully()
            return
        }
        if !exchange.bodyComplete {
            if exchange.expectContinue && !exchange.continueSent {
                // The client may still be waiting to send the body; it cannot be reused safely.
                closeGracefully()
                return
            }
            // Read and drop what is left of the body, up to a limit, to keep the connection.
            discardBudget = 256 * 1024
            bodyBackpressure = false
            exchange.body?.fail(ResponseFinishedError())
            maybeResumeReading()
            return
        }
        exchangeFinished(exchange)
    }

    private func exchangeFinished(_ exchange: Exchange) {
        guard current === exchange else { return }
        current = nil
        // Pipelined requests received meanwhile go next, in order.
        while let part = queued.first {
            if case .head = part, current != nil || receiving != nil { break }
            queued.removeFirst()
            dispatch(part)
            if closed { return }
        }
        if current == nil {
            startIdleTimer()
        }
        maybeResumeReading()
    }

    // MARK: - Writing

    /// Writes bytes for the current response (`nil`: flush only), waiting while the socket is not writable.
    func send(_ buffer: ByteBuffer?, flush: Bool) async throws {
        guard context.eventLoop.inEventLoop else {
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let sendable = buffer.map { NIOLoopBound($0, eventLoop: context.eventLoop) }
            try await context.eventLoop.flatSubmit {
                let promise = loopBound.eventLoop.makePromise(of: Void.self)
                promise.completeWithTask { try await loopBound.value.send(sendable?.value, flush: flush) }
                return promise.futureResult
            }.get()
            return
        }
        guard !closed else { throw ClientDisconnectedError() }
        if let buffer {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        if flush || !context.channel.isWritable {
            context.flush()
        }
        if !context.channel.isWritable {
            if let t = settings.writeIdleTimeout, bodyIdleTimer == nil {
                bodyIdleTimer = schedule(t) { $0.closeForTimeout() }
            }
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                writabilityWaiters.append(c)
            }
        }
    }

    /// The `Date` header value, recomputed once a second.
    func dateHeader() -> String {
        let now = time(nil)
        if Int(now) != cachedDateSecond {
            cachedDateSecond = Int(now)
            cachedDate = GoTimeLayout.httpDate(WallTime(seconds: Int(now), nanoseconds: 0))
        }
        return cachedDate
    }

    // MARK: - Closing and timers

    /// Closes once the current response is out; idle connections close at once.
    func closeGracefully() {
        guard !closed else { return }
        if let current, !current.handlerDone { return }
        cancelTimers()
        let channel = context.channel
        context.flush()
        context.close(mode: .all, promise: nil)
        _ = channel
    }

    /// Called by the listener when it shuts down: idle connections close now, busy ones after their response.
    func shutdown() {
        if current == nil && receiving == nil { closeGracefully() }
    }

    private func closeForTimeout() {
        guard !closed else { return }
        if let current, current.writer.status == nil && !current.writer.finished && current.bodyComplete == false {
            sendErrorAndClose(.requestTimeout)
            return
        }
        context.close(promise: nil)
    }

    /// Bytes arrived before a head was parsed: start the header timer, cut off heads that never end.
    func headBytesArrived(_ count: Int) {
        guard awaitingHead, !closed else { return }
        if headerTimer == nil, let t = settings.readHeaderTimeout {
            idleTimer?.cancel()
            idleTimer = nil
            headerTimer = schedule(t) { $0.closeForTimeout() }
        }
        headBytesPending += count
    }

    func checkHeadOverflow() {
        if awaitingHead && headBytesPending > settings.maxHeaderBytes + 4096 {
            sendErrorAndClose(.requestHeaderFieldsTooLarge)
        }
    }

    private func startIdleTimer() {
        idleTimer?.cancel()
        idleTimer = nil
        if let t = settings.idleTimeout {
            idleTimer = schedule(t) { $0.context.close(promise: nil) }
        }
    }

    private func resetBodyIdleTimer() {
        cancel(&bodyIdleTimer)
        if let t = settings.readIdleTimeout {
            bodyIdleTimer = schedule(t) { $0.closeForTimeout() }
        }
    }

    private func bodyIdleTimerCancel(write: Bool) {
        if write, receiving == nil { cancel(&bodyIdleTimer) }
    }

    private func cancel(_ timer: inout Scheduled<Void>?) {
        timer?.cancel()
        timer = nil
    }

    private func cancelTimers() {
        cancel(&idleTimer)
        cancel(&headerTimer)
        cancel(&bodyDeadline)
        cancel(&bodyIdleTimer)
        cancel(&writeDeadline)
    }

    private func schedule(_ delay: TimeAmount, _ action: @escaping (HTTP1Connection) -> Void) -> Scheduled<Void> {
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let actionBound = NIOLoopBound(action, eventLoop: context.eventLoop)
        return context.eventLoop.scheduleTask(in: delay) { actionBound.value(loopBound.value) }
    }
}

/// The client went away while its request was being served.
public struct ClientDisconnectedError: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "client disconnected" }
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
