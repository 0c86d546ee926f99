import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import UsherCore
import UsherHTTP3
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/2 connection as its listener sees it: stopping the listener sends GOAWAY and lets open streams finish.
final class HTTP2Connection: ServedConnection, Sendable {
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

    static func configure(
        _ channel: any Channel, slot: ListenerSlot, server: HTTPServerInstance, tls: TLSConnectionInfo? = nil,
        connectionGuard: ConnectionGuard?
    ) throws {
        let settings = server.settings
        let connection = HTTP2Connection(channel: channel)
        slot.register(connection)
        channel.closeFuture.whenComplete { _ in slot.unregister(connection) }
        let manager = HTTP2ConnectionManager(
            maxStreams: maxConcurrentStreams, idleTimeout: settings.idleTimeout, connectionGuard: connectionGuard
        )
        var connectionConfig = NIOHTTP2Handler.ConnectionConfiguration()
        connectionConfig.initialSettings = [
            // NIOHTTP2 treats going past this as a connection error; HTTP2FrameWatch advertises the real limit and
            // the manager refuses streams beyond it one by one.
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 2 * maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: settings.maxHeaderBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: windowSize),
            // Extended CONNECT (RFC 8441), so WebSockets can ride HTTP/2 streams.
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
        var streamConfig = NIOHTTP2Handler.StreamConfiguration()
        streamConfig.targetWindowSize = windowSize
        let executor = EventLoopTaskExecutor.forLoop(channel.eventLoop)
        let remote =
            server.settings.listenerPlan.isEmpty
            ? channel.remoteAddress : PeerAddressOverride.remoteAddress(of: channel)
        let local = channel.localAddress
        // The streams of a connection share one Date cache.
        let dates = NIOLoopBound(DateHeaderCache(), eventLoop: channel.eventLoop)
        let boundManager = NIOLoopBound(manager, eventLoop: channel.eventLoop)
        let handler = NIOHTTP2Handler(
            mode: .server, eventLoop: channel.eventLoop, connectionConfiguration: connectionConfig,
            streamConfiguration: streamConfig, streamDelegate: manager.streamDelegate(on: channel.eventLoop)
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                if !boundManager.value.streamOpened() {
                    try stream.pipeline.syncOperations.addHandler(RefusedStreamHandler())
                    return
                }
                try stream.pipeline.syncOperations.addHandler(
                    HTTP2StreamHandler(
                        slot: slot, settings: settings, executor: executor, remoteAddress: remote, localAddress: local,
                        dates: dates.value, tls: tls
                    ))
            }
        }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(
            HTTP2FrameWatch(advertisedMaxStreams: maxConcurrentStreams, connectionGuard: connectionGuard))
        try sync.addHandler(handler)
        try sync.addHandler(manager)
    }
}

/// Serves the one request of an HTTP/2 stream, speaking frame payloads directly: builds the ``Request`` from the
/// HEADERS frame, runs the handler chain in a task on the connection's event loop, streams the request body with
/// backpressure (credit goes back to the client only as the handler reads) and the response with the stream's
/// flow control.
final class HTTP2StreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    let slot: ListenerSlot
    let settings: ConnectionSettings
    let executor: EventLoopTaskExecutor
    let remoteAddress: SocketAddress?
    let localAddress: SocketAddress?
    let dates: DateHeaderCache
    let tls: TLSConnectionInfo?

    private var context: ChannelHandlerContext?
    private var headReceived = false
    private var body: BodyStream?
    private var writer: FramedResponseWriter?
    private var task: Task<Void, Never>?
    private var handlerDone = false
    /// The request, for trailers arriving after its body.
    private var request: Request?
    private var closed = false
    private var bodyBackpressure = false
    private var pendingRead = false
    private let writability = WritabilityGate()
    private var writeTimer: Scheduled<Void>?

    init(
        slot: ListenerSlot, settings: ConnectionSettings, executor: EventLoopTaskExecutor,
        remoteAddress: SocketAddress?, localAddress: SocketAddress?, dates: DateHeaderCache, tls: TLSConnectionInfo?
    ) {
        self.tls = tls
        self.slot = slot
        self.settings = settings
        self.executor = executor
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.dates = dates
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
        request = nil
        let error = ClientDisconnectedError()
        writability.fail(error)
        body?.fail(error)
        writer?.abandonQuietly()
        task?.cancel()
        writeTimer?.cancel()
        // The writer points back at this handler, and the body's demand callback too: let both go, or the three
        // keep each other alive after the stream is gone (a running handler keeps its own references).
        writer = nil
        body = nil
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writability.open()
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
        case .headers(let h):
            if !headReceived {
                headReceived = true
                begin(h.headers, hasBody: !h.endStream)
            } else if h.endStream {
                // Trailers end the body.
                for (name, value, _) in h.headers where name.utf8.first != UInt8(ascii: ":") {
                    request?.trailers.add(name: name, value: value)
                }
                body?.finish()
            }
        case .data(let d):
            if case .byteBuffer(let buffer) = d.data, buffer.readableBytes > 0, let body, !body.yield(buffer) {
                bodyBackpressure = true
            }
            if d.endStream { body?.finish() }
        default:
            break
        }
    }

    private func begin(_ block: HPACKHeaders, hasBody: Bool) {
        guard let server = slot.currentServer else {
            respondAndClose(.serviceUnavailable)
            return
        }
        guard let head = FramedRequestHead(block.lazy.map { ($0.name, $0.value) }) else {
            respondAndClose(.badRequest)
            return
        }
        let target: RequestTarget
        do {
            // An extended CONNECT names a path, not an authority, as its target.
            target = try RequestTarget(parsing: head.path, method: head.protocol == nil ? head.method : .GET)
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
        let host = head.authority ?? head.headers.first(name: "host") ?? target.authority ?? ""
        let request = Request(
            method: head.method, target: target, version: HTTPVersion(major: 2, minor: 0), headers: head.headers,
            host: host, scheme: settings.scheme, body: requestBody, remoteAddress: remoteAddress,
            localAddress: localAddress, server: server.info
        )
        request.tls = tls
        request.connectProtocol = head.protocol
        let writer = FramedResponseWriter(stream: self, isHEAD: head.method == .HEAD)
        writer.upgradeRequested = head.protocol != nil && head.method == .CONNECT
        self.writer = writer
        if let limit = settings.writeTimeout {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            writeTimer = eventLoop.scheduleTask(in: limit) { bound.value.context?.close(promise: nil) }
        }
        if hasBody { self.request = request }
        let task = executor.startRequest(server, request, writer, owner: self) { $0.handlerFinished() }
        // The task's closure holds this stream until the task is freed, and the task is freed only once nothing
        // holds it: kept only while the handler runs (it may have finished already, before startTask returned).
        if !handlerDone { self.task = task }
    }

    private func bodyDemand() {
        guard bodyBackpressure else { return }
        bodyBackpressure = false
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    /// After the chain returned: the response is complete (or abandoned). A body still arriving is read and
    /// dropped so the stream can close.
    nonisolated func handlerFinished() {
        let bound = NIOLoopBound(self, eventLoop: executor.eventLoop)
        let finish: @Sendable () -> Void = {
            let me = bound.value
            me.handlerDone = true
            me.task = nil
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
        let text = "\(status.code) \(status.reasonPhrase)"
        let headers: HPACKHeaders = [
            ":status": String(status.code), "content-type": "text/plain; charset=utf-8",
            "content-length": String(text.utf8.count),
        ]
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        var buf = allocator.buffer(capacity: text.utf8.count)
        buf.writeString(text)
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(buf), endStream: true))), promise: nil)
    }

    /// An extended CONNECT was answered: the stream is a tunnel now, which the write timeout does not cover.
    func beganTunnel() -> BodyStream? {
        writeTimer?.cancel()
        writeTimer = nil
        return body
    }

    func beganWebTransport() throws -> WebTransportSession {
        throw WebTransportError("WebTransport needs HTTP/3")
    }

    /// Ends a tunnel: `last` (if any) goes out with END_STREAM, and the client's side is read no more.
    func closeTunnel(sending last: ByteBuffer?) {
        body?.fail(ResponseFinishedError())
        writer?.abandonQuietly()
        guard !closed, let context else { return }
        context.writeAndFlush(
            wrapOutboundOut(.data(.init(data: .byteBuffer(last ?? ByteBuffer()), endStream: true))), promise: nil)
    }

    /// Writes a frame (`nil`: flush only), waiting while the stream's flow-control window is exhausted.
    func send(_ frame: HTTP2Frame.FramePayload?, flush: Bool) async throws {
        guard eventLoop.inEventLoop else {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            let sendable = frame.map { NIOLoopBound($0, eventLoop: eventLoop) }
            try await eventLoop.flatSubmit {
                let promise = bound.eventLoop.makePromise(of: Void.self)
                promise.completeWithTask { try await bound.value.send(sendable?.value, flush: flush) }
                return promise.futureResult
            }.get()
            return
        }
        guard !closed, let context else { throw ClientDisconnectedError() }
        if let frame { context.write(wrapOutboundOut(frame), promise: nil) }
        if flush || !context.channel.isWritable { context.flush() }
        if !context.channel.isWritable {
            try await writability.wait()
        }
    }

    /// Resets the stream: the response cannot be completed.
    func reset() {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let run: @Sendable () -> Void = { bound.value.context?.close(promise: nil) }
        if eventLoop.inEventLoop { run() } else { eventLoop.execute(run) }
    }

    func dateHeader() -> String { dates.value() }
}

extension HTTP2StreamHandler: FramedStream {
    func sendHead(_ fields: [(String, String)], interim: Bool, endStream: Bool, flush: Bool) async throws {
        var block = HPACKHeaders()
        block.reserveCapacity(fields.count)
        for (name, value) in fields { block.add(name: name, value: value) }
        try await send(.headers(.init(headers: block, endStream: endStream)), flush: flush)
    }

    func sendData(_ buffer: ByteBuffer, endStream: Bool, flush: Bool) async throws {
        try await send(.data(.init(data: .byteBuffer(buffer), endStream: endStream)), flush: flush)
    }

    func sendTrailers(_ fields: [(String, String)]) async throws {
        try await sendHead(fields, interim: false, endStream: true, flush: true)
    }

    func endStream() async throws {
        try await send(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), flush: true)
    }

    func flushStream() async throws { try await send(nil, flush: true) }
}
