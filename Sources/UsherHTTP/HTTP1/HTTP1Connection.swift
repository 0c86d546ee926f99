import Logging
import NIOCore
import NIOHTTP1
import UsherCore
import UsherTLS

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
        /// The request named a protocol to switch to (`Upgrade`); after it the parser stops, so unless the
        /// handler upgrades, the connection cannot carry another request.
        var upgradeRequested = false
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
    /// Set while the handler is in a pipeline; cleared when it leaves, so the handler and its context do not keep
    /// each other (and the whole channel) alive.
    var context: ChannelHandlerContext?
    let allocator = ByteBufferAllocator()
    var eventLoop: any EventLoop { executor.eventLoop }

    var current: Exchange?
    /// The exchange whose request body is still arriving (possibly after its handler finished).
    var receiving: Exchange?
    private var discardBudget = 0
    var queued = CircularBuffer<HTTPServerRequestPart>()
    private var bodyBackpressure = false
    private var drainDepth = 0
    private var pendingRead = false
    var closed = false
    private let writability = WritabilityGate()
    private var remoteAddress: SocketAddress?
    private var localAddress: SocketAddress?
    /// After a `101`: the client's bytes, as a stream for the handler that took the connection over.
    var upgraded: BodyStream?

    /// Bytes received since the last request head or body end, for the unterminated-head guard.
    var headBytesPending = 0
    var awaitingHead = true

    // Timeouts are deadlines checked by one timer per connection, which is re-armed only when it fires: moving a
    // deadline costs a clock read, not a timer-heap operation.
    var idleSince: NIODeadline?
    var headStartedAt: NIODeadline?
    var bodyActivityAt: NIODeadline?
    var requestStartedAt: NIODeadline?
    var writeStalledAt: NIODeadline?
    var timer: Scheduled<Void>?
    let timerCap: TimeAmount

    private let dates = DateHeaderCache()

    /// What the TLS handshake settled, on a TLS connection.
    let tls: TLSConnectionInfo?
    /// The connection-level policy below this handler, told when the first request has arrived.
    private let connectionGuard: ConnectionGuard?
    /// A protocol error that came after a complete request: answered once the responses before it are out.
    private var pendingError: HTTPResponseStatus?

    init(
        slot: ListenerSlot, settings: ConnectionSettings, executor: EventLoopTaskExecutor,
        tls: TLSConnectionInfo? = nil,
        connectionGuard: ConnectionGuard? = nil
    ) {
        self.tls = tls
        self.connectionGuard = connectionGuard
        self.slot = slot
        self.settings = settings
        self.executor = executor
        let limits = [
            settings.idleTimeout, settings.readHeaderTimeout, settings.readTimeout, settings.readIdleTimeout,
            settings.writeTimeout, settings.writeIdleTimeout,
        ].compactMap { $0 }
        let shortest = limits.min() ?? .seconds(8)
        timerCap = max(.milliseconds(20), .nanoseconds(shortest.nanoseconds / 8))
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        remoteAddress =
            settings.listenerPlan.isEmpty
            ? context.channel.remoteAddress : PeerAddressOverride.remoteAddress(of: context.channel)
        localAddress = context.channel.localAddress
        slot.register(self)
        idleSince = .now()
        // The first head is due read_header_timeout after the connection began, whether or not a byte comes.
        headStartedAt = idleSince
        armTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        slot.unregister(self)
        timer?.cancel()
        timer = nil
        let error = ClientDisconnectedError()
        writability.fail(error)
        upgraded?.finish()
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
            writeStalledAt = nil
            writability.open()
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

    /// Reading stops for body backpressure and when a pipelined request is already waiting; otherwise it goes on
    /// while a response is produced, which keeps the socket's epoll registration unchanged between requests.
    private var shouldRead: Bool {
        !(closed || bodyBackpressure || !queued.isEmpty || pendingError != nil)
    }

    private func maybeResumeReading() {
        if pendingRead && shouldRead, let context {
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
            failParsing(status)
            return
        }
        if error is ByteToMessageDecoderError {
            failParsing(.badRequest)
            return
        }
        context.close(promise: nil)
    }

    /// Bytes after the last complete request do not parse: the requests before them are answered first, in order (a
    /// proxied response may still be on its way), then the error closes the connection. One inside a body ends it.
    private func failParsing(_ status: HTTPResponseStatus) {
        guard !closed else { return }
        if receiving == nil && (current != nil || !queued.isEmpty) {
            if pendingError == nil { pendingError = status }
            return
        }
        sendErrorAndClose(status)
    }

    /// A protocol error before a handler ran: answer as Go does (status text as body) and close.
    func sendErrorAndClose(_ status: HTTPResponseStatus, detail: String? = nil) {
        guard !closed, let context else { return }
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
            headStartedAt = nil
            connectionGuard?.requestStarted()
            beginRequest(head)
        case .body(let buffer):
            guard let exchange = receiving else { return }
            if settings.readIdleTimeout != nil { bodyActivityAt = .now() }
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
            bodyActivityAt = nil
            exchange.body?.finish()
            if exchange.handlerDone { exchangeFinished(exchange) }
        }
    }

    // MARK: - Requests

    private func beginRequest(_ head: HTTPRequestHead) {
        idleSince = nil
        guard let server = slot.currentServer else {
            sendErrorAndClose(.serviceUnavailable)
            return
        }
        if head.version.major != 1 {
            sendErrorAndClose(.httpVersionNotSupported)
            return
        }
        // One pass over the fields: size, framing, host, expectations and connection options.
        var headerBytes = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        var host: String?
        var hostCount = 0
        var contentLengths: [String] = []
        var transferEncoding: String?
        var expect: String?
        var connectionClose = false
        var connectionKeepAlive = false
        var upgrade = false
        for (name, value) in head.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
            switch name.utf8.count {
            case 4 where name.equalsASCIICaseInsensitive("host"):
                host = value
                hostCount += 1
            case 6 where name.equalsASCIICaseInsensitive("expect"):
                expect = value
            case 7 where name.equalsASCIICaseInsensitive("upgrade"):
                upgrade = true
            case 10 where name.equalsASCIICaseInsensitive("connection"):
                for token in value.split(separator: ",") {
                    let t = String(token).trimmingASCIISpaces
                    if t.equalsASCIICaseInsensitive("close") { connectionClose = true }
                    if t.equalsASCIICaseInsensitive("keep-alive") { connectionKeepAlive = true }
                }
            case 14 where name.equalsASCIICaseInsensitive("content-length"):
                contentLengths.append(value)
            case 17 where name.equalsASCIICaseInsensitive("transfer-encoding"):
                transferEncoding = (transferEncoding.map { $0 + "," } ?? "") + value
            default:
                break
            }
        }
        if headerBytes > settings.maxHeaderBytes {
            sendErrorAndClose(.requestHeaderFieldsTooLarge)
            return
        }
        // Framing checks against request smuggling (RFC 9112 6.3).
        if transferEncoding != nil && !contentLengths.isEmpty {
            sendErrorAndClose(.badRequest, detail: "both Transfer-Encoding and Content-Length")
            return
        }
        var contentLength: Int?
        if !contentLengths.isEmpty {
            let values = Set(contentLengths.flatMap { $0.split(separator: ",").map { String($0).trimmingASCIISpaces } })
            guard values.count == 1, let v = values.first, !v.isEmpty, v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let n = Int(v)
            else {
                sendErrorAndClose(.badRequest, detail: "invalid Content-Length")
                return
            }
            contentLength = n
        }
        if transferEncoding != nil && head.version.minor == 0 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            sendErrorAndClose(.badRequest, detail: "Transfer-Encoding in an HTTP/1.0 request")
            return
        }
        // Only `chunked` alone, as Go accepts: any other coding, or one before chunked, gets 501.
        if let te = transferEncoding, !te.trimmingASCIISpaces.equalsASCIICaseInsensitive("chunked") {
            sendErrorAndClose(.notImplemented, detail: "unsupported transfer encoding")
            return
        }
        if head.version.minor >= 1 && hostCount == 0 {
            sendErrorAndClose(.badRequest, detail: "missing required Host header")
            return
        }
        if hostCount > 1 {
            sendErrorAndClose(.badRequest, detail: "too many Host headers")
            return
        }
        var expectContinue = false
        if let expect {
            if expect.equalsASCIICaseInsensitive("100-continue") && head.version.minor >= 1 {
                expectContinue = true
            } else if head.version.minor >= 1 {
                sendErrorAndClose(.expectationFailed)
                return
            }
        }
        let keepAlive = head.version.minor >= 1 ? !connectionClose : (connectionKeepAlive && !connectionClose)
        let target: RequestTarget
        do {
            target = try RequestTarget(parsing: head.uri, method: head.method)
        } catch {
            sendErrorAndClose(.badRequest, detail: "invalid URI")
            return
        }

        let hasBody = transferEncoding != nil || (contentLength ?? 0) > 0
        var stream: BodyStream?
        if hasBody {
            let loop = eventLoop
            let connection = NIOLoopBound(self, eventLoop: loop)
            stream = BodyStream(highWatermark: settings.bodyWindow) { first in
                if loop.inEventLoop {
                    connection.value.bodyDemand(first: first)
                } else {
                    loop.execute { connection.value.bodyDemand(first: first) }
                }
            }
        }
        let body = RequestBody(stream: stream, expectedLength: transferEncoding == nil ? (contentLength ?? 0) : nil)
        // RFC 9112 §3.2.2: an absolute-form target (and CONNECT's authority form) names the authority, and the Host
        // field gives way to it; the forwarded Host follows.
        var headers = head.headers
        let requestHost = target.authority ?? host ?? ""
        if let authority = target.authority, host != authority { headers.replaceOrAdd(name: "Host", value: authority) }
        let request = Request(
            method: head.method, target: target, version: head.version, headers: headers, host: requestHost,
            scheme: settings.scheme, body: body, remoteAddress: remoteAddress, localAddress: localAddress,
            server: server.info
        )
        request.tls = tls
        let writer = HTTP1ResponseWriter(
            connection: self, requestVersion: head.version, isHEAD: head.method == .HEAD,
            requestCloses: !keepAlive || slot.isClosing
        )
        let exchange = Exchange(
            request: request, writer: writer, body: stream, expectContinue: expectContinue && hasBody)
        exchange.upgradeRequested = upgrade || head.method == .CONNECT
        current = exchange
        requestStartedAt = request.startTime
        if hasBody {
            receiving = exchange
            bodyActivityAt = request.startTime
        }

        let task = executor.startRequest(server, request, writer, owner: (self, exchange)) { $0.0.finishOnLoop($0.1) }
        // The task's closure holds the exchange until the task is freed, and the task is freed only once nothing
        // holds it: kept only while the handler runs (it may have finished already, before startTask returned).
        if !exchange.handlerDone { exchange.task = task }
    }

    /// The body's reader wants data: resume reading, and send `100 Continue` the first time if asked for.
    func bodyDemand(first: Bool) {
        guard !closed, let exchange = receiving else { return }
        if exchange.expectContinue && !exchange.continueSent && exchange.writer.status == nil {
            exchange.continueSent = true
            var buf = allocator.buffer(capacity: 25)
            buf.writeStaticString("HTTP/1.1 100 Continue\r\n\r\n")
            context?.writeAndFlush(wrapOutboundOut(buf), promise: nil)
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
            let handle = ExchangeHandle(connection: self, exchange: exchange)
            loop.execute { handle.connection.handlerFinished(handle.exchange) }
        }
    }

    private func handlerFinished(_ exchange: Exchange) {
        exchange.handlerDone = true
        exchange.task = nil
        requestStartedAt = nil
        writeStalledAt = nil
        guard !closed else { return }
        if exchange.writer.closeAfter || slot.isClosing || exchange.upgradeRequested {
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
        // Pipelined requests received meanwhile go next, in order. Requests that complete synchronously would
        // recurse through here once per queued request; past a few levels, continue on the next loop tick.
        if drainDepth > 8 && !queued.isEmpty {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.execute { loopBound.value.drainQueue() }
            return
        }
        drainQueue()
    }

    private func drainQueue() {
        guard current == nil, !closed else { return }
        drainDepth += 1
        defer { drainDepth -= 1 }
        while let part = queued.first {
            if case .head = part, current != nil || receiving != nil { break }
            queued.removeFirst()
            dispatch(part)
            if closed { return }
        }
        if current == nil {
            if let pendingError, queued.isEmpty, receiving == nil {
                self.pendingError = nil
                sendErrorAndClose(pendingError)
                return
            }
            idleSince = .now()
        }
        maybeResumeReading()
    }

    // MARK: - Writing

    /// Writes bytes for the current response (`nil`: flush only), waiting while the socket is not writable.
    func send(_ buffer: ByteBuffer?, flush: Bool) async throws {
        guard eventLoop.inEventLoop else {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            let sendable = buffer.map { NIOLoopBound($0, eventLoop: eventLoop) }
            try await eventLoop.flatSubmit {
                let promise = loopBound.eventLoop.makePromise(of: Void.self)
                promise.completeWithTask { try await loopBound.value.send(sendable?.value, flush: flush) }
                return promise.futureResult
            }.get()
            return
        }
        guard !closed, let context else { throw ClientDisconnectedError() }
        if let buffer {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        if flush || !context.channel.isWritable {
            context.flush()
        }
        if !context.channel.isWritable {
            if writeStalledAt == nil { writeStalledAt = .now() }
            try await writability.wait()
        }
    }

    /// Sends part of a file with sendfile(2); returns once the kernel has taken all of it.
    func sendFile(descriptor: CInt, offset: Int, length: Int) async throws {
        guard eventLoop.inEventLoop else {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            try await eventLoop.flatSubmit {
                let promise = loopBound.eventLoop.makePromise(of: Void.self)
                promise.completeWithTask {
                    try await loopBound.value.sendFile(descriptor: descriptor, offset: offset, length: length)
                }
                return promise.futureResult
            }.get()
            return
        }
        guard !closed, let context else { throw ClientDisconnectedError() }
        // The region owns its own descriptor, so the caller may close theirs whenever it likes.
        let own = dup(descriptor)
        guard own >= 0 else { throw IOError(errnoCode: errno, reason: "dup") }
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: own)
        let region = FileRegion(fileHandle: handle, readerIndex: offset, endIndex: offset + length)
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { _ in try? handle.close() }
        if writeStalledAt == nil && !context.channel.isWritable { writeStalledAt = .now() }
        context.writeAndFlush(NIOAny(IOData.fileRegion(region)), promise: promise)
        try await promise.futureResult.get()
    }

    /// Whether `writer`'s request is the current one and asked to switch protocols.
    func upgradeRequestedByCurrent(_ writer: HTTP1ResponseWriter) -> Bool {
        guard let current, current.writer === writer else { return false }
        return current.upgradeRequested
    }

    /// Switches the connection to raw bytes after the `101` head went out: the HTTP parser (and whatever it had
    /// buffered past the request) gives way to a handler that feeds ``upgraded``, and the listener no longer
    /// counts the connection, which now belongs to the handler that took it.
    func beginUpgrade() throws -> BodyStream {
        guard !closed, let context else { throw ClientDisconnectedError() }
        let loop = eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let stream = BodyStream(highWatermark: settings.bodyWindow) { _ in
            if loop.inEventLoop {
                bound.value.upgradedDemand()
            } else {
                loop.execute { bound.value.upgradedDemand() }
            }
        }
        upgraded = stream
        slot.unregister(self)
        let sync = context.pipeline.syncOperations
        try sync.addHandler(UpgradedInbound(connection: self), position: .before(self))
        if let guardHandler = try? sync.handler(type: HTTP1HeadGuard.self) {
            sync.removeHandler(guardHandler, promise: nil)
        }
        if let decoder = try? sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            // Bytes the client sent after its request are forwarded to UpgradedInbound as the decoder leaves.
            sync.removeHandler(decoder, promise: nil)
        }
        return stream
    }

    /// Raw bytes after an upgrade, from ``UpgradedInbound``.
    func upgradedRead(_ buffer: ByteBuffer) {
        guard let upgraded, buffer.readableBytes > 0 else { return }
        if !upgraded.yield(buffer) { bodyBackpressure = true }
    }

    private func upgradedDemand() {
        guard bodyBackpressure else { return }
        bodyBackpressure = false
        maybeResumeReading()
    }

    /// Writes `last` and closes, for a handler ending an upgraded stream.
    func closeUpgraded(sending last: ByteBuffer?) {
        upgraded?.finish()
        guard !closed, let context else { return }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(last ?? allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(mode: .all, promise: nil)
        }
    }

    /// The `Date` header value, recomputed once a second.
    func dateHeader() -> String { dates.value() }
}
