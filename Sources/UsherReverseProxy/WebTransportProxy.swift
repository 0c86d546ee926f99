import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import UsherCore
import UsherHTTP
import UsherHTTP3
import UsherHandlers

extension ReverseProxyHandler {
    /// A WebTransport Extended CONNECT: dial the upstream over HTTP/3, send it the CONNECT with the proxied
    /// header fields, and only once it answers 2xx accept the client's session and bridge the two. The session
    /// goes on after this returns (no task is kept per session); it counts as one request in flight at its
    /// upstream until it ends. Failures before the client's session is accepted are ``AttemptFailure``s, so the
    /// next upstream may be tried.
    func proxyWebTransport(
        _ request: Request, _ writer: any ResponseWriter, to upstream: Upstream,
        connections: ConnectionPool, loop: any EventLoop, placeholders: ProxyPlaceholders
    ) async throws {
        guard let accepting = writer.capability((any WebTransportAccepting).self), accepting.webTransportRequested
        else {
            throw HandlerError(
                status: 501,
                HTTPErrorMessage("reverse_proxy: WebTransport needs HTTP/3 with enable_webtransport on this server"))
        }
        guard connections.transport.versions == ["3"] else {
            throw HandlerError(
                status: 502,
                HTTPErrorMessage(
                    "reverse_proxy: WebTransport to \(upstream.address) needs the HTTP/3 transport (transport http versions [\"3\"])"
                ))
        }
        let sessions = WebTransportSessions()
        let connection: HTTP3ClientConnection
        do {
            connection = try await connections.http3.dial(upstream.address, on: loop, webTransport: sessions)
        } catch let e as UpstreamError {
            throw AttemptFailure(status: e.timedOut ? 504 : 502, message: e.description, dial: true, bodySent: false)
        }
        var target: (method: HTTPMethod, uri: String)?
        if let rewrite {
            let saved = request.saveTarget()
            if rewrite.rewrite(request) { target = (.CONNECT, request.uri) }
            request.restoreTarget(saved)
        }
        let head = upstreamRequestHead(request, upgrade: nil, target: target, withoutBody: true)
        let fields = HTTP3UpstreamExchange.fields(head, connectProtocol: request.connectProtocol ?? "webtransport")
        let sentAt = NIODeadline.now()
        let result: WebTransportSession.ConnectResult
        do {
            result = try await withResponseTimeout(connections.transport, on: loop, closing: connection) {
                try await WebTransportSession.connect(over: connection, sessions: sessions, fields: fields)
            }
        } catch {
            connection.close()
            let timedOut = error is WebTransportTimeout
            throw AttemptFailure(
                status: timedOut ? 504 : 502,
                message: timedOut
                    ? "reverse_proxy: timeout awaiting the WebTransport response from \(upstream.address)"
                    : "reverse_proxy: WebTransport to \(upstream.address): \(error)",
                dial: true, bodySent: false)
        }
        let latency = NIODeadline.now() - sentAt
        placeholders.latency = latency
        if let passive = healthChecks?.passive {
            // Passive health as for any response: a slow answer or an unhealthy status counts against the upstream.
            if let slow = passive.unhealthyLatency, slow.nanoseconds > 0, latency.nanoseconds >= slow.nanoseconds {
                countFailure(upstream, loop: loop)
            }
            if case .refused(let status, _, _) = result,
                passive.unhealthyStatus.contains(where: { ResponseMatcher.statusMatches(status, $0) })
            {
                countFailure(upstream, loop: loop)
            }
        }
        switch result {
        case .refused(let status, let upstreamFields, let stream):
            // The upstream's answer goes to the client as it is (without its body); the stream is done.
            placeholders.status = status
            recordUpstreamResponse(upstream, request, status: status, latency: latency)
            stream.reset()
            connection.close()
            copyFields(upstreamFields, status: status, into: writer, request: request)
            try await writer.writeHead(HTTPResponseStatus(statusCode: status))
            return
        case .accepted(let upstreamSession, let upstreamFields):
            placeholders.status = 200
            recordUpstreamResponse(upstream, request, status: 200, latency: latency)
            copyFields(upstreamFields, status: 200, into: writer, request: request)
            if request.headers.contains(name: "Sec-Webtransport-Http3-Draft02"),
                !writer.headers.contains(name: "Sec-Webtransport-Http3-Draft")
            {
                // Clients in draft-02 mode look for this answer.
                writer.headers.add(name: "Sec-Webtransport-Http3-Draft", value: "draft02")
            }
            let clientSession: WebTransportSession
            do {
                clientSession = try await accepting.acceptWebTransport(.ok)
            } catch {
                upstreamSession.abort()
                connection.close()
                throw error
            }
            let bridge = WebTransportBridge(
                client: clientSession, upstream: upstreamSession, connection: connection,
                upstreamHost: upstream.host, loop: loop, logger: logger,
                address: upstream.address, remote: request.remoteHost)
            tunnels?.add(bridge, to: configKey)
            let tunnels = self.tunnels
            let key = configKey
            bridge.onFinish = { b in tunnels?.remove(b, from: key) }
            if let t = streamTimeout, t.nanoseconds > 0 { bridge.limitLifetime(to: .nanoseconds(t.nanoseconds)) }
            bridge.start()
        }
    }

    /// The upstream's response fields (pseudo-headers and hop-by-hop ones dropped) with `headers.response` ops,
    /// `Via`, and the upstream's `Server` in place of ours.
    private func copyFields(
        _ fields: [(name: String, value: String)], status: Int, into writer: any ResponseWriter,
        request: Request
    ) {
        var h = HTTPHeaders(fields.filter { !$0.name.hasPrefix(":") }.map { ($0.name, $0.value) })
        Self.removeHopByHop(&h)
        h.remove(name: "Content-Length")
        if let r = headers?.response, let ops = r.ops, r.require?.matches(status: status, headers: h) ?? true {
            ops.apply(to: &h, request.replacer)
        }
        writer.headers.remove(name: "Server")
        writer.headers.add(name: "Via", value: "3.0 Usher")
        for (name, value) in h { writer.headers.add(name: name, value: value) }
    }

    /// Runs `body`, failing with ``WebTransportTimeout`` (and closing `connection`) after the transport's
    /// `response_header_timeout`, if it has one.
    private func withResponseTimeout<T: Sendable>(
        _ transport: HTTPTransport, on loop: any EventLoop, closing connection: HTTP3ClientConnection,
        _ body: () async throws -> T
    ) async throws -> T {
        guard let t = transport.responseHeaderTimeout, t.nanoseconds > 0 else { return try await body() }
        let fired = NIOLoopBound(Box(false), eventLoop: loop)
        let bound = NIOLoopBound(connection, eventLoop: loop)
        let timer = loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) {
            fired.value.value = true
            bound.value.close()
        }
        defer { timer.cancel() }
        do {
            return try await body()
        } catch  where fired.value.value {
            throw WebTransportTimeout()
        }
    }
}

private final class Box<T> {
    var value: T
    init(_ value: T) { self.value = value }
}

struct WebTransportTimeout: Error {}

/// Joins a client's WebTransport session to the upstream's: every stream the one side opens is opened on the
/// other (same direction and kind) and its bytes copied, FIN for FIN; resets and STOP_SENDING carry their codes
/// across; datagrams are passed on (dropped when the other side cannot take them); WT_DRAIN_SESSION and
/// WT_CLOSE_SESSION (code and reason) go across, a reset CONNECT stream resets the other. Bytes from one side are
/// credited back to it only as the other side's peer acknowledges them, so what the proxy holds per stream is
/// bounded by the flow-control window. All on the connections' event loop, without tasks.
final class WebTransportBridge: HeldConnection, @unchecked Sendable {
    // @unchecked: state is touched only on `loop`; `drain()`/`close()` hop there.
    let client: WebTransportSession
    let upstream: WebTransportSession
    let connection: HTTP3ClientConnection
    let upstreamHost: UpstreamHost
    let loop: any EventLoop
    let logger: Logger?
    let address: String
    let remote: String
    var onFinish: ((WebTransportBridge) -> Void)?
    private let started = NIODeadline.now()
    private var streams = 0
    private var bytesUp = 0
    private var bytesDown = 0
    private var datagramsUp = 0
    private var datagramsDown = 0
    private var datagramsDropped = 0
    private var ended: (WebTransportCloseInfo, byClient: Bool)?
    private var finished = false
    private var lifetime: Scheduled<Void>?
    private let series: ProxyMetrics.WebTransportSeries

    init(
        client: WebTransportSession, upstream: WebTransportSession, connection: HTTP3ClientConnection,
        upstreamHost: UpstreamHost,
        loop: any EventLoop, logger: Logger?, address: String, remote: String
    ) {
        self.client = client
        self.upstream = upstream
        self.connection = connection
        self.upstreamHost = upstreamHost
        self.loop = loop
        self.logger = logger
        self.address = address
        self.remote = remote
        self.series = ProxyMetrics.shared.webTransportSeries(upstream: address)
    }

    func start() {
        // The session is a request in flight at its upstream (least_conn, max_requests, num_requests).
        upstreamHost.begin()
        series.active.increment()
        series.sessions.increment()
        client.onStream = { [weak self] s in self?.pair(s, fromClient: true) }
        upstream.onStream = { [weak self] s in self?.pair(s, fromClient: false) }
        client.onDatagram = { [weak self] d in
            guard let self else { return }
            self.datagramsUp += 1
            if !self.upstream.sendDatagram(d) { self.datagramsDropped += 1 }
        }
        upstream.onDatagram = { [weak self] d in
            guard let self else { return }
            self.datagramsDown += 1
            if !self.client.sendDatagram(d) { self.datagramsDropped += 1 }
        }
        client.onDrain = { [weak self] in self?.upstream.drain() }
        upstream.onDrain = { [weak self] in self?.client.drain() }
        client.onClose = { [weak self] info in self?.sessionEnded(info, byClient: true) }
        upstream.onClose = { [weak self] info in self?.sessionEnded(info, byClient: false) }
        // Either session may have ended while the other was being set up.
        if let info = client.closeInfo { sessionEnded(info, byClient: true) }
        if let info = upstream.closeInfo { sessionEnded(info, byClient: false) }
        connection.onClose = { [weak self] in
            guard let self else { return }
            if self.upstream.closeInfo == nil { self.upstream.abort() }
            self.finish()
        }
    }

    func limitLifetime(to t: TimeAmount) {
        let bound = NIOLoopBound(self, eventLoop: loop)
        lifetime = loop.scheduleTask(in: t) { bound.value.closeNow(reason: "stream_timeout") }
    }

    private func pair(_ s: HTTP3RawStream, fromClient: Bool) {
        let other = fromClient ? upstream : client
        let t: HTTP3RawStream
        do {
            t = try other.openStream(bidirectional: s.isBidirectional)
        } catch {
            // The other side allows no more streams now: this one is refused.
            s.reset(0x10B)  // H3_REQUEST_REJECTED
            return
        }
        streams += 1
        pipe(s, into: t, up: fromClient)
        if s.isBidirectional { pipe(t, into: s, up: !fromClient) }
    }

    /// Copies `a`'s bytes into `b`; `a` gets credit as `b`'s peer acknowledges them.
    private func pipe(_ a: HTTP3RawStream, into b: HTTP3RawStream, up: Bool) {
        // Weak: either stream (and the bridge) may be gone by the time the other calls back.
        a.onData = { [weak self, weak a, weak b] buffer, fin in
            let n = buffer.readableBytes
            do {
                guard let b else { throw HTTP3StreamClosedError() }
                try b.enqueue(buffer, fin: fin)
                if let self { if up { self.bytesUp += n } else { self.bytesDown += n } }
            } catch {
                // The other side is gone (reset or stopped): what it cannot take is credited and dropped.
                a?.consumed(n)
            }
        }
        // Strong: `a` may have closed by the time `b`'s last bytes are acknowledged, and its connection still
        // needs that credit back. (Closing clears these callbacks, which ends the cycle.)
        b.onAcknowledged = { [a] n in a.consumed(n) }
        a.onReset = { [weak b] code in b?.resetSending(code) }
        b.onStopSending = { [weak a] code in a?.stopReading(code) }
    }

    /// Called for both sessions (the second because the first one's end closed it): only the first counts.
    private func sessionEnded(_ info: WebTransportCloseInfo, byClient: Bool) {
        guard ended == nil else { return }
        ended = (info, byClient)
        let other = byClient ? upstream : client
        if other.closeInfo == nil {
            if info.aborted { other.abort() } else { other.close(code: info.code, reason: info.reason) }
        }
        // The close capsule and FIN must reach the upstream before its connection goes: wait for its CONNECT
        // stream to end, or give up after a while.
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.scheduleTask(in: .seconds(3)) { bound.value.finish() }
        if upstream.connectClosed { finish() } else { upstream.onFinished = { [weak self] in self?.finish() } }
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        lifetime?.cancel()
        upstreamHost.end()
        series.active.decrement()
        series.streams.increment(by: Int64(streams))
        series.bytesUp.increment(by: Int64(bytesUp))
        series.bytesDown.increment(by: Int64(bytesDown))
        series.datagramsUp.increment(by: Int64(datagramsUp))
        series.datagramsDown.increment(by: Int64(datagramsDown))
        series.datagramsDropped.increment(by: Int64(datagramsDropped))
        // Not from inside the callback that got us here (a QUIC connection's read or write): next tick.
        let ends = NIOLoopBound((client, upstream, connection), eventLoop: loop)
        loop.execute {
            let (client, upstream, connection) = ends.value
            if upstream.closeInfo == nil { upstream.abort() }
            if client.closeInfo == nil { client.abort() }
            connection.close()
        }
        let info = ended?.0 ?? WebTransportCloseInfo(code: 0, reason: "", aborted: true)
        logger?.info(
            "webtransport session ended",
            metadata: [
                "upstream": .string(address),
                "remote_ip": .string(remote),
                "duration": .stringConvertible(Double((NIODeadline.now() - started).nanoseconds) / 1e9),
                "streams": .stringConvertible(streams),
                "bytes_up": .stringConvertible(bytesUp),
                "bytes_down": .stringConvertible(bytesDown),
                "datagrams_up": .stringConvertible(datagramsUp),
                "datagrams_down": .stringConvertible(datagramsDown),
                "datagrams_dropped": .stringConvertible(datagramsDropped),
                "close_code": .stringConvertible(info.code),
                "close_reason": .string(info.reason),
                "aborted": .stringConvertible(info.aborted),
                "closed_by": .string(ended.map { $0.byClient ? "client" : "upstream" } ?? "proxy"),
            ])
        let callback = onFinish
        onFinish = nil
        callback?(self)
    }

    private func closeNow(reason: String) {
        guard !finished else { return }
        if client.closeInfo == nil { client.close(code: 0, reason: reason) }
        if upstream.closeInfo == nil { upstream.close(code: 0, reason: reason) }
    }

    // MARK: HeldConnection

    // Called from any thread; the bridge is touched only on its loop (hence `@unchecked Sendable`).
    func drain() {
        loop.execute {
            self.client.drain()
            self.upstream.drain()
        }
    }

    func close() {
        loop.execute { self.closeNow(reason: "proxy handler unloaded") }
    }
}
