import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import UsherCore
import UsherHTTP3
import UsherTLS

/// HTTP/3 on one listener address: a QUIC endpoint on the UDP port of the same number, dispatching requests to
/// the slot's current server. Registered in its slot as one connection, so stopping the listener sends GOAWAY on
/// every QUIC connection and the slot drains once they have all closed.
final class HTTP3Listener: ServedConnection, @unchecked Sendable {
    // @unchecked: `endpoint` is set once before the listener is shared, then only read.
    let slot: ListenerSlot
    let eventLoop: any EventLoop
    private(set) var endpoint: QUICServerEndpoint!
    private let stopping = Mutex(false)

    init(slot: ListenerSlot, loop: any EventLoop) {
        self.slot = slot
        self.eventLoop = loop
        // Touched only on `loop`, where every request of this endpoint runs.
        let dates = LoopConfined(value: DateHeaderCache())
        let executor = EventLoopTaskExecutor.forLoop(loop)
        var config = HTTP3ServerConfiguration(credentials: { serverName, local, remote in
            guard let tls = slot.currentServer?.tls else { return nil }
            let hello = HandshakeInfo(serverName: serverName, remoteAddress: remote, localAddress: local)
            guard let cert = try? tls.certificate(for: hello) else { return nil }
            return QUICCredentialCache.shared.credentials(for: cert)
        })
        config.onRequest = { stream in
            HTTP3RequestStream.begin(stream, slot: slot, executor: executor, dates: dates.value)
        }
        config.enableConnectProtocol = true
        // One registry per endpoint; whether a new connection offers WebTransport follows the server in the slot
        // when it connects, so a reload can turn it on or off on the same socket.
        let sessions = WebTransportSessions()
        config.extensionForNewConnection = {
            guard slot.currentServer?.settings.webTransport == true else { return (nil, []) }
            return (sessions, WebTransportCodepoint.serverSettings)
        }
        if let server = slot.currentServer {
            // quic-go's idle timeout (30 s), which Caddy keeps, unless the server's `idle_timeout` is shorter.
            config.idleTimeout = min(server.settings.idleTimeout ?? .seconds(30), .seconds(30))
            config.maxFieldSectionSize = UInt64(server.settings.maxHeaderBytes)
        }
        endpoint = QUICServerEndpoint(configuration: config, loop: loop)
    }

    /// Binds the UDP socket.
    func start(host: String, port: Int) async throws {
        _ = try await endpoint.start(host: host, port: port)
        slot.register(self)
    }

    /// Serves on an inherited UDP socket (`fdgram/N`, from systemd socket activation).
    func start(boundSocket fd: Int32) async throws {
        _ = try await endpoint.start(boundSocket: fd)
        slot.register(self)
    }

    func shutdown() {
        guard
            stopping.withLock({ s in
                defer { s = true }; return !s
            })
        else { return }
        let endpoint = self.endpoint!
        Task {
            await endpoint.shutdown()
            await endpoint.stop()
            self.slot.unregister(self)
        }
    }

    func forceClose() {
        endpoint.closeAllConnections()
    }
}

/// QUIC credentials made from the `tls` app's certificates, one per certificate, shared by every endpoint.
final class QUICCredentialCache: Sendable {
    static let shared = QUICCredentialCache()
    private let cache = Mutex<[String: QUICCredentials]>([:])

    func credentials(for cert: TLSCertificate) -> QUICCredentials? {
        if let c = cache.withLock({ $0[cert.id] }) { return c }
        guard let made = try? QUICCredentials(chainPEM: cert.chainPEM, keyPEM: cert.keyPEM) else { return nil }
        cache.withLock { c in
            // Renewed certificates get new IDs; drop the lot now and then rather than track which are current.
            if c.count > 256 { c.removeAll() }
            c[cert.id] = made
        }
        return made
    }
}

/// One HTTP/3 request: the ``Request`` built from the stream's fields, the handler chain run in a task on the
/// endpoint's loop, the body streamed in with credit returned as the handler reads, and the response through a
/// ``FramedResponseWriter``.
final class HTTP3RequestStream: FramedStream {
    let stream: HTTP3Stream
    let loop: any EventLoop
    let dates: DateHeaderCache
    private var body: BodyStream?
    private var task: Task<Void, Never>?
    private var handlerDone = false
    /// Credit held back while the body buffer is full, given back when the handler catches up.
    private var withheld = 0
    private var paused = false

    private init(stream: HTTP3Stream, loop: any EventLoop, dates: DateHeaderCache) {
        self.stream = stream
        self.loop = loop
        self.dates = dates
    }

    static func begin(
        _ stream: HTTP3Stream, slot: ListenerSlot, executor: EventLoopTaskExecutor, dates: DateHeaderCache
    ) {
        let me = HTTP3RequestStream(stream: stream, loop: executor.eventLoop, dates: dates)
        guard let server = slot.currentServer else {
            me.refuse(.serviceUnavailable)
            return
        }
        guard let request = me.makeRequest(server) else {
            me.refuse(.badRequest)
            return
        }
        let writer = FramedResponseWriter(stream: me, isHEAD: request.method == .HEAD)
        let webTransport =
            request.method == .CONNECT && WebTransportCodepoint.isWebTransportProtocol(request.connectProtocol)
        // Looked up only for WebTransport CONNECTs: a cast on every request is not free.
        let sessions = webTransport ? stream.webTransportSessions : nil
        if webTransport {
            guard sessions != nil else {
                me.refuse(.notImplemented, "WebTransport is not enabled on this server (enable_webtransport)")
                return
            }
            writer.webTransportRequested = true
        } else {
            writer.upgradeRequested = request.connectProtocol != nil && request.method == .CONNECT
        }
        stream.onClose = { complete in
            // A CONNECT that did not become a session: its early streams are refused.
            if webTransport { sessions?.rejectPending(for: stream) }
            // The body's demand callback points back at `me`: let it go, or the two keep each other alive after
            // the stream is gone (a running handler keeps its own reference).
            defer { me.body = nil }
            guard !complete else { return }
            me.body?.fail(ClientDisconnectedError())
            writer.abandonQuietly()
            me.task?.cancel()
        }
        let task = executor.startRequest(server, request, writer, owner: me) { $0.handlerFinished() }
        // The task's closure holds this stream until the task is freed, and the task is freed only once nothing
        // holds it: kept only while the handler runs (it may have finished already, before startTask returned).
        if !me.handlerDone { me.task = task }
    }

    private func makeRequest(_ server: HTTPServerInstance) -> Request? {
        guard let head = FramedRequestHead(stream.fields.lazy.map { ($0.name, $0.value) }) else { return nil }
        let httpMethod = head.method
        let headers = head.headers
        let connectProtocol = head.protocol
        let authority = head.authority
        // An extended CONNECT names a path, not an authority, as its target.
        guard let target = try? RequestTarget(parsing: head.path, method: connectProtocol == nil ? httpMethod : .GET)
        else { return nil }
        let hasBody = !stream.requestEnded
        var stream: BodyStream?
        if hasBody {
            let handler = NIOLoopBound(self, eventLoop: loop)
            let loop = self.loop
            stream = BodyStream(highWatermark: server.settings.bodyWindow) { _ in
                if loop.inEventLoop { handler.value.bodyDemand() } else { loop.execute { handler.value.bodyDemand() } }
            }
            self.stream.onData = { [unowned self] buffer in
                let n = buffer.readableBytes
                if stream!.yield(buffer) && !paused {
                    self.stream.consumed(n)
                } else {
                    paused = true
                    withheld += n
                }
            }
        }
        body = stream
        let contentLength = headers.first(name: "content-length").flatMap { Int($0.trimmingASCIISpaces) }
        let request = Request(
            method: httpMethod, target: target, version: HTTPVersion(major: 3, minor: 0), headers: headers,
            host: authority ?? headers.first(name: "host") ?? target.authority ?? "", scheme: "https",
            body: RequestBody(stream: stream, expectedLength: hasBody ? contentLength : 0),
            remoteAddress: self.stream.remoteAddress, localAddress: self.stream.localAddress, server: server.info
        )
        request.tls = TLSConnectionInfo(
            serverName: self.stream.serverName, version: 0x0304, negotiatedProtocol: "h3",
            clientCertificate: nil)
        request.connectProtocol = connectProtocol
        if hasBody {
            self.stream.onEnd = { [unowned self] in
                for (name, value) in self.stream.trailers { request.trailers.add(name: name, value: value) }
                stream?.finish()
            }
        }
        return request
    }

    private func bodyDemand() {
        guard paused else { return }
        paused = false
        stream.consumed(withheld)
        withheld = 0
    }

    /// After the chain returned: a body still arriving is not wanted.
    nonisolated func handlerFinished() {
        let bound = NIOLoopBound(self, eventLoop: loop)
        let finish: @Sendable () -> Void = {
            let me = bound.value
            me.handlerDone = true
            me.task = nil
            if let body = me.body, !body.isFinished {
                body.fail(ResponseFinishedError())
                me.stream.stopReading()
            }
        }
        if loop.inEventLoop { finish() } else { loop.execute(finish) }
    }

    /// Answers without running a handler (protocol-level refusal).
    private func refuse(_ status: HTTPResponseStatus, _ why: String? = nil) {
        let text = why ?? "\(status.code) \(status.reasonPhrase)"
        do {
            try stream.sendResponse(
                [
                    (":status", String(status.code)), ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", String(text.utf8.count)),
                ], hasBody: true)
            try stream.enqueue(ByteBuffer(string: text))
            try stream.finish()
        } catch {
            stream.reset()
        }
        stream.stopReading()
    }

    // MARK: FramedStream

    /// Runs `body` on the endpoint's loop (the request task normally is there already).
    private func onLoop<R: Sendable>(_ body: @escaping (HTTP3RequestStream) throws -> R) async throws -> R {
        if loop.inEventLoop { return try body(self) }
        let bound = NIOLoopBound(self, eventLoop: loop)
        return try await loop.submit { try body(bound.value) }.get()
    }

    func sendHead(_ fields: [(String, String)], interim: Bool, endStream: Bool, flush: Bool) async throws {
        let f = LoopConfined(value: fields)
        try await onLoop { me in
            if interim {
                try me.stream.sendInterim(f.value)
            } else {
                try me.stream.sendResponse(f.value, hasBody: !endStream)
            }
        }
    }

    func sendData(_ buffer: ByteBuffer, endStream: Bool, flush: Bool) async throws {
        if loop.inEventLoop {
            try await stream.write(buffer)
            if endStream { try stream.finish() }
            return
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        try await loop.flatSubmit {
            let promise = bound.eventLoop.makePromise(of: Void.self)
            promise.completeWithTask { try await bound.value.sendData(buffer, endStream: endStream, flush: flush) }
            return promise.futureResult
        }.get()
    }

    func sendTrailers(_ fields: [(String, String)]) async throws {
        let f = LoopConfined(value: fields)
        try await onLoop { try $0.stream.finish(trailers: f.value) }
    }

    func endStream() async throws {
        try await onLoop { try $0.stream.finish() }
    }

    func flushStream() async throws {}

    func reset() {
        if loop.inEventLoop {
            stream.reset()
        } else {
            let bound = NIOLoopBound(self, eventLoop: loop)
            loop.execute { bound.value.stream.reset() }
        }
    }

    func dateHeader() -> String { dates.value() }

    func beganTunnel() -> BodyStream? { body }

    func beganWebTransport() throws -> WebTransportSession {
        // The session reads the CONNECT stream's capsules from here on.
        body?.finish()
        body = nil
        return try WebTransportSession.accept(stream)
    }

    func closeTunnel(sending last: ByteBuffer?) {
        let run: (HTTP3RequestStream) -> Void = { me in
            me.body?.fail(ResponseFinishedError())
            if let last, last.readableBytes > 0 { try? me.stream.enqueue(last) }
            try? me.stream.finish()
            me.stream.stopReading()
        }
        if loop.inEventLoop {
            run(self)
        } else {
            let bound = NIOLoopBound(self, eventLoop: loop)
            loop.execute { run(bound.value) }
        }
    }
}
