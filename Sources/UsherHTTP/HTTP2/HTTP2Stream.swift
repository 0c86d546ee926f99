import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/2 connection as its listener sees it: stopping the listener sends GOAWAY and lets open streams finish.
final class HTTP2Connection: ServedConnection {
    let channel: any Channel
    var eventLoop: any EventLoop { channel.eventLoop }

    init(channel: any Channel) { self.channel = channel }

    func shutdown() { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
    func forceClose() { channel.close(promise: nil) }
}

/// HTTP/2 on a connection: NIOHTTP2's connection handler and multiplexer, a connection manager for GOAWAY on
/// shutdown and idle timeouts, and one ``HTTP2StreamHandler`` per request stream.
enum HTTP2Pipeline {
    /// Streams a client may open at once (Go's default, which Caddy keeps).
    static let maxConcurrentStreams = 250
    /// Per-stream and connection receive windows: how much request body may be in flight.
    static let windowSize = 1 << 20

    static func configure(_ channel: any Channel, slot: ListenerSlot, server: HTTPServerInstance) throws {
        let settings = server.settings
        let connection = HTTP2Connection(channel: channel)
        slot.register(connection)
        channel.closeFuture.whenComplete { _ in slot.unregister(connection) }
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: channel.eventLoop,
            configuration: .init(maxIdleTime: settings.idleTimeout, maxAge: nil, maxGraceTime: nil, keepalive: nil)
        )
        var connectionConfig = NIOHTTP2Handler.ConnectionConfiguration()
        connectionConfig.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: settings.maxHeaderBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: windowSize),
        ]
        var streamConfig = NIOHTTP2Handler.StreamConfiguration()
        streamConfig.targetWindowSize = windowSize
        let executor = EventLoopTaskExecutor.forLoop(channel.eventLoop)
        let remote = channel.remoteAddress
        let local = channel.localAddress
        let handler = NIOHTTP2Handler(
            mode: .server, eventLoop: channel.eventLoop, connectionConfiguration: connectionConfig,
            streamConfiguration: streamConfig, streamDelegate: manager.http2StreamDelegate
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                let sync = stream.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try sync.addHandler(HTTP2StreamHandler(
                    slot: slot, settings: settings, executor: executor, remoteAddress: remote, localAddress: local
                ))
            }
        }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(handler)
        try sync.addHandler(manager)
    }
}

/// Serves the one request of an HTTP/2 stream: builds the ``Request`` once the head arrives, runs the handler
/// chain in a task on the connection's event loop, streams the request body with backpressure (credit goes back
/// to the client only as the handler reads) and the response with the stream's flow control.
final class HTTP2StreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let slot: ListenerSlot
    let settings: ConnectionSettings
    let executor: EventLoopTaskExecutor
    let remoteAddress: SocketAddress?
    let localAddress: SocketAddress?

    private var context: ChannelHandlerContext?
    private var pendingHead: HTTPRequestHead?
    private var body: BodyStream?
    private var writer: HTTP2ResponseWriter?
    private var task: Task<Void, Never>?
    private var closed = false
    private var bodyBackpressure = false
    private var pendingRead = false
    private var writabilityWaiters: [CheckedContinuation<Void, any Error>] = []
    private var writeTimer: Scheduled<Void>?

    init(slot: ListenerSlot, settings: ConnectionSettings, executor: EventLoopTaskExecutor,
         remoteAddress: SocketAddress?, localAddress: SocketAddress?) {
        self.slot = slot
        self.settings = settings
        self.executor = executor
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
    }

    var eventLoop: any EventLoop { executor.eventLoop }
    let allocator = ByteBufferAllocator()

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

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
        let error = ClientDisconnectedError()
        for w in writabilityWaiters { w.resume(throwing: error) }
        writabilityWaiters.removeAll()
        body?.fail(error)
        writer?.abandonQuietly()
        task?.cancel()
        writeTimer?.cancel()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            let waiters = writabilityWaiters
            writabilityWaiters.removeAll()
            for w in waiters { w.resume() }
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if bodyBackpressure {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            pendingHead = head
        case .body(let buffer):
            if let head = pendingHead {
                pendingHead = nil
                begin(head, hasBody: true)
            }
            if let body, !body.yield(buffer) { bodyBackpressure = true }
        case .end:
            if let head = pendingHead {
                pendingHead = nil
                begin(head, hasBody: false)
            } else {
                body?.finish()
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A head without END_STREAM: the body follows in later frames.
        if let head = pendingHead {
            pendingHead = nil
            begin(head, hasBody: true)
        }
        context.fireChannelReadComplete()
    }

    private func begin(_ head: HTTPRequestHead, hasBody: Bool) {
        guard let server = slot.currentServer else {
            respondAndClose(.serviceUnavailable)
            return
        }
        let target: RequestTarget
        do {
            target = try RequestTarget(parsing: head.uri, method: head.method)
        } catch {
            respondAndClose(.badRequest)
            return
        }
        var stream: BodyStream?
        if hasBody {
            let loop = eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            stream = BodyStream(highWatermark: settings.bodyWindow) { _ in
                if loop.inEventLoop {
                    handler.value.bodyDemand()
                } else {
                    loop.execute { handler.value.bodyDemand() }
                }
            }
        }
        body = stream
        let contentLength = head.headers.first(name: "content-length").flatMap { Int($0.trimmingASCIISpaces) }
        let requestBody = RequestBody(stream: stream, expectedLength: hasBody ? contentLength : 0)
        let host = head.headers.first(name: "host") ?? target.authority ?? ""
        let request = Request(
            method: head.method, target: target, version: HTTPVersion(major: 2, minor: 0), headers: head.headers,
            host: host, scheme: settings.scheme, body: requestBody, remoteAddress: remoteAddress,
            localAddress: localAddress, server: server.info
        )
        let writer = HTTP2ResponseWriter(stream: self, isHEAD: head.method == .HEAD)
        self.writer = writer
        if let limit = settings.writeTimeout {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            writeTimer = eventLoop.scheduleTask(in: limit) { bound.value.context?.close(promise: nil) }
        }
        let handle = StreamHandle(stream: self, request: request, writer: writer)
        task = Task.immediate(executorPreference: executor) {
            await server.serve(handle.request, handle.writer)
            handle.stream.handlerFinished()
        }
    }

    private func bodyDemand() {
        guard bodyBackpressure else { return }
        bodyBackpressure = false
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    /// After the chain returned: the response is complete (or abandoned). Unread request body is dropped by
    /// resetting the stream, as Go does, so the client stops sending.
    nonisolated func handlerFinished() {
        let bound = NIOLoopBound(self, eventLoop: executor.eventLoop)
        let finish: @Sendable () -> Void = {
            let me = bound.value
            me.writeTimer?.cancel()
            if let body = me.body, !body.isFinished {
                body.fail(ResponseFinishedError())
                me.bodyBackpressure = false
                if me.pendingRead, let context = me.context {
                    me.pendingRead = false
                    context.read()
                }
            }
        }
        if executor.eventLoop.inEventLoop { finish() } else { executor.eventLoop.execute(finish) }
    }

    /// Answers without running a handler (protocol-level refusal) and ends the stream.
    private func respondAndClose(_ status: HTTPResponseStatus) {
        guard let context else { return }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        let text = "\(status.code) \(status.reasonPhrase)"
        headers.add(name: "content-length", value: String(text.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http2, status: status, headers: headers))), promise: nil)
        var buf = allocator.buffer(capacity: text.utf8.count)
        buf.writeString(text)
        context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Writes a response part (flushing when asked), waiting while the stream's flow-control window is exhausted.
    func send(_ part: HTTPServerResponsePart?, flush: Bool) async throws {
        guard eventLoop.inEventLoop else {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            let sendable = part.map { NIOLoopBound($0, eventLoop: eventLoop) }
            try await eventLoop.flatSubmit {
                let promise = bound.eventLoop.makePromise(of: Void.self)
                promise.completeWithTask { try await bound.value.send(sendable?.value, flush: flush) }
                return promise.futureResult
            }.get()
            return
        }
        guard !closed, let context else { throw ClientDisconnectedError() }
        if let part { context.write(wrapOutboundOut(part), promise: nil) }
        if flush || !context.channel.isWritable { context.flush() }
        if !context.channel.isWritable {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                writabilityWaiters.append(c)
            }
        }
    }

    /// Resets the stream: the response cannot be completed.
    func reset() {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let run: @Sendable () -> Void = { bound.value.context?.close(promise: nil) }
        if eventLoop.inEventLoop { run() } else { eventLoop.execute(run) }
    }

    private var cachedDateSecond = -1
    private var cachedDate = ""

    func dateHeader() -> String {
        let now = time(nil)
        if Int(now) != cachedDateSecond {
            cachedDateSecond = Int(now)
            cachedDate = GoTimeLayout.httpDate(WallTime(seconds: Int(now), nanoseconds: 0))
        }
        return cachedDate
    }
}

/// The stream, request and writer a request task works on; all belong to the connection's event loop, where the
/// task runs.
struct StreamHandle: @unchecked Sendable {
    let stream: HTTP2StreamHandler
    let request: Request
    let writer: HTTP2ResponseWriter
}

/// The root response writer of an HTTP/2 stream. Holds back the head and the first few KiB of body, so a small
/// response goes out as HEADERS + one DATA frame with a `content-length`, as Go's server does.
final class HTTP2ResponseWriter: ResponseWriter, Flushing, ResponseAccounting, RootResponseWriter {
    unowned let stream: HTTP2StreamHandler
    let isHEAD: Bool
    var headers = HTTPHeaders()
    private(set) var status: HTTPResponseStatus?
    private var pending: ByteBuffer?
    private var headSent = false
    private(set) var finished = false
    private(set) var bodyBytesWritten = 0
    private var declaredRemaining: Int?

    init(stream: HTTP2StreamHandler, isHEAD: Bool) {
        self.stream = stream
        self.isHEAD = isHEAD
    }

    var wrapped: (any ResponseWriter)? { nil }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        guard self.status == nil, !finished else { return }
        if status.code >= 100 && status.code < 200 {
            // 101 has no meaning in HTTP/2; other 1xx go out as interim heads.
            if status == .switchingProtocols { return }
            try await stream.send(.head(HTTPResponseHead(version: .http2, status: status, headers: headers)), flush: true)
            return
        }
        self.status = status
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard !finished else { throw ResponseFinishedError() }
        if status == nil { status = .ok }
        bodyBytesWritten += buffer.readableBytes
        if !headSent {
            if pending == nil { pending = buffer } else {
                var b = buffer
                pending!.writeBuffer(&b)
            }
            if pending!.readableBytes > HTTP1ResponseWriter.holdBackLimit {
                try await sendHead(final: false, flush: false)
            }
            return
        }
        try await sendBody(buffer, flush: false)
    }

    func flush() async throws {
        guard !finished else { return }
        if !headSent {
            if status == nil { status = .ok }
            try await sendHead(final: false, flush: true)
        } else {
            try await stream.send(nil, flush: true)
        }
    }

    func finish() async throws {
        guard !finished else { return }
        if status == nil { status = .ok }
        if !headSent { try await sendHead(final: false, flush: false, complete: true) }
        finished = true
        if let remaining = declaredRemaining, remaining > 0 {
            // Fewer bytes than declared: the client must not take this for a complete response.
            stream.reset()
            return
        }
        try await stream.send(.end(nil), flush: true)
    }

    func abandon() {
        finished = true
        stream.reset()
    }

    /// Marks the writer finished when the stream is already gone.
    func abandonQuietly() { finished = true }

    private func bodyAllowed(_ status: HTTPResponseStatus) -> Bool {
        !(status.code < 200 || status.code == 204 || status.code == 304)
    }

    private func sendHead(final: Bool, flush: Bool, complete: Bool = false) async throws {
        let status = self.status ?? .ok
        var h = headers
        for name in ["Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"] { h.remove(name: name) }
        let pendingBytes = pending?.readableBytes ?? 0
        var declared = h.first(name: "Content-Length").flatMap { Int($0.trimmingASCIISpaces) }
        if h.contains(name: "Content-Length") && declared == nil { h.remove(name: "Content-Length") }
        if !bodyAllowed(status) {
            if status.code == 204 { h.remove(name: "Content-Length") }
            declared = nil
        } else if declared == nil && complete && !isHEAD {
            h.add(name: "Content-Length", value: String(pendingBytes))
        }
        if !isHEAD, bodyAllowed(status) { declaredRemaining = declared }
        if !h.contains(name: "Date") { h.add(name: "Date", value: stream.dateHeader()) }
        let suppressSniffing = h.first(name: "Content-Type")?.isEmpty == true
        if suppressSniffing { h.remove(name: "Content-Type") }
        if !suppressSniffing, !h.contains(name: "Content-Type"), bodyAllowed(status), pendingBytes > 0, let p = pending {
            h.add(name: "Content-Type", value: sniffContentType(p))
        }
        headSent = true
        try await stream.send(.head(HTTPResponseHead(version: .http2, status: status, headers: h)), flush: false)
        if let body = pending {
            pending = nil
            if !isHEAD && bodyAllowed(status) { try await sendBody(body, flush: flush) } else if flush {
                try await stream.send(nil, flush: true)
            }
        } else if flush {
            try await stream.send(nil, flush: true)
        }
    }

    private func sendBody(_ buffer: ByteBuffer, flush: Bool) async throws {
        guard !isHEAD, let status, bodyAllowed(status), buffer.readableBytes > 0 else {
            if flush { try await stream.send(nil, flush: true) }
            return
        }
        var out = buffer
        if let remaining = declaredRemaining {
            let allowed = min(remaining, buffer.readableBytes)
            declaredRemaining = remaining - allowed
            if allowed < buffer.readableBytes {
                if allowed > 0 {
                    try await stream.send(.body(.byteBuffer(buffer.getSlice(at: buffer.readerIndex, length: allowed)!)), flush: true)
                }
                throw ContentLengthExceededError()
            }
            out = buffer
        }
        try await stream.send(.body(.byteBuffer(out)), flush: flush)
    }
}
