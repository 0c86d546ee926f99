import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP
import UsherHTTP3
public import UsherHandlers

// One attempt at one upstream: the request up, the response (or its interim heads) back.

extension ReverseProxyHandler {
    /// One exchange with one upstream: the request up (head, then body), the response back (head, then body).
    /// Throws ``AttemptFailure`` when the upstream failed before anything was sent to the client.
    func proxy(
        _ request: Request, _ writer: any ResponseWriter, to upstream: Upstream,
        connections: ConnectionPool, loop: any EventLoop, placeholders: ProxyPlaceholders,
        next: any HTTPHandler, prebuffered: PrebufferedBody? = nil
    ) async throws {
        let fastCGI = connections.transport.fastCGI
        let upgrade = fastCGI == nil ? Self.requestedUpgrade(request) : nil
        if fastCGI == nil, request.method == .CONNECT,
            WebTransportCodepoint.isWebTransportProtocol(request.connectProtocol)
        {
            try await proxyWebTransport(
                request, writer, to: upstream, connections: connections, loop: loop,
                placeholders: placeholders)
            return
        }
        if let upgrade, upgrade.extendedConnect, upgrade.type.lowercased() != "websocket" {
            throw HandlerError(
                status: 501, HTTPErrorMessage("reverse_proxy: extended CONNECT for \(upgrade.type) is not supported"))
        }
        // With proxy_protocol each client connection gets its own upstream connections ("client->upstream").
        var dialKey = upstream.address
        if connections.transport.proxyProtocol != nil, let peer = request.remoteAddress, peer.ipAddress != nil {
            dialKey = peer.hostPortString + "->" + upstream.address
        }
        var target: (method: HTTPMethod, uri: String)?
        var withoutBody = false
        if let rewrite {
            // The rewrite shapes only the request line that goes up; header ops and later handlers see the
            // request as it came.
            let saved = request.saveTarget()
            let changed = rewrite.rewrite(request)
            target = (request.method, request.uri)
            request.restoreTarget(saved)
            // A rewrite to GET or HEAD leaves the body for later handlers (forward_auth relies on it), as Caddy.
            withoutBody = changed && (target?.method == .GET || target?.method == .HEAD)
        }
        var head = upstreamRequestHead(
            request, upgrade: upgrade, target: target, withoutBody: withoutBody,
            tlsUpstream: connections.transport.tls != nil ? upstream.address : nil)
        if let prebuffered, prebuffered.complete, !withoutBody {
            head.headers.remove(name: "Transfer-Encoding")
            head.headers.replaceOrAdd(name: "Content-Length", value: String(prebuffered.length))
        }
        var fastCGIParams: FastCGIRequestParams?
        if let fastCGI {
            // Caddy's request buffering gives an empty body an explicit length, which the application sees.
            if requestBuffers != 0, prebuffered == nil, request.body.expectedLength == 0 {
                head.headers.replaceOrAdd(name: "Content-Length", value: "0")
            }
            // Before a connection is taken: a refused request (411, 400) leaves the pool as it was.
            fastCGIParams = try fastCGIRequest(fastCGI, request, head: head, withoutBody: withoutBody)
        }
        var conn: any UpstreamExchange
        var reused: Bool
        do {
            (conn, reused) = try await connections.acquire(dialKey, on: loop, upgrade: upgrade != nil)
        } catch let e as UpstreamError {
            throw AttemptFailure(status: e.timedOut ? 504 : 502, message: e.description, dial: true, bodySent: false)
        }
        if let fastCGIParams { (conn as? UpstreamConnection)?.send(event: fastCGIParams) }
        do {
            try await conn.write(.head(head), flush: false)
        } catch  where reused {
            // A pooled connection the upstream had closed: dial afresh, nothing was sent.
            conn.close()
            do {
                (conn, reused) = try await connections.acquire(dialKey, on: loop, upgrade: upgrade != nil)
            } catch let e as UpstreamError {
                throw AttemptFailure(
                    status: e.timedOut ? 504 : 502, message: e.description, dial: true, bodySent: false)
            }
            if let fastCGIParams { (conn as? UpstreamConnection)?.send(event: fastCGIParams) }
            try await conn.write(.head(head), flush: false)
        }
        var responseStarted = false
        var bodySent = false
        let sentAt = NIODeadline.now()
        do {
            // An upgrade's body is the tunnel itself, bridged once the upstream switches.
            if upgrade == nil && !withoutBody {
                for chunk in prebuffered?.chunks ?? [] {
                    bodySent = true
                    try await conn.write(.body(.byteBuffer(chunk)), flush: false)
                }
                if prebuffered?.complete != true {
                    for try await chunk in request.body {
                        bodySent = true
                        try await conn.write(.body(.byteBuffer(chunk)), flush: false)
                    }
                }
            }
            try await conn.write(.end(nil), flush: true)
            let headTimer = connections.transport.responseHeaderTimeout.flatMap { t -> Scheduled<Void>? in
                guard t.nanoseconds > 0 else { return nil }
                let bound = NIOLoopBound(conn, eventLoop: loop)
                return loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) { bound.value.timeOut() }
            }
            let head: HTTPResponseHead?
            do {
                head = try await nextHead(conn)
                headTimer?.cancel()
            } catch  where conn.timedOut {
                throw AttemptFailure(
                    status: 504, message: "reverse_proxy: timeout awaiting response headers from \(upstream.address)",
                    dial: false, bodySent: bodySent)
            }
            guard let first = head else {
                throw AttemptFailure(
                    status: 502, message: "upstream closed the connection before responding",
                    dial: false, bodySent: bodySent)
            }
            let latency = NIODeadline.now() - sentAt
            placeholders.latency = latency
            placeholders.status = Int(first.status.code)
            recordUpstreamResponse(upstream, request, status: Int(first.status.code), latency: latency)
            if let passive = healthChecks?.passive {
                let status = Int(first.status.code)
                for bad in passive.unhealthyStatus where ResponseMatcher.statusMatches(status, bad) {
                    countFailure(upstream, loop: loop)
                }
                if let slow = passive.unhealthyLatency, slow.nanoseconds > 0, latency.nanoseconds >= slow.nanoseconds {
                    countFailure(upstream, loop: loop)
                }
            }
            var responseHeaders = first.headers
            let reusable = !Self.connectionCloses(first)
            Self.removeHopByHop(&responseHeaders)
            if let upgrade, first.status == .switchingProtocols {
                responseStarted = true
                try await switchProtocols(
                    request, writer, conn: conn, upgrade: upgrade, head: first,
                    headers: responseHeaders, loop: loop)
                return
            }
            placeholders.responseHeaders = first.headers
            var status = first.status
            for rh in handleResponse
            where rh.match?.matches(status: Int(first.status.code), headers: first.headers) ?? true {
                if let code = rh.statusCode {
                    // Only the status changes; the response is copied as usual.
                    guard let n = Int(request.replacer.replaceAll(code.value)), n > 0 else {
                        throw HandlerError(
                            status: 500,
                            HTTPErrorMessage("reverse_proxy: invalid handle_response status_code \(code.value)"))
                    }
                    status = HTTPResponseStatus(statusCode: n)
                    break
                }
                responseStarted = true
                let pending = PendingResponse(
                    handler: self, head: first, headers: responseHeaders, connection: conn,
                    reusable: reusable, connections: connections, loop: loop)
                let previous = request.attached(PendingResponse.self)
                request.attach(pending)
                defer { request.attach(previous) }
                // The routes end in what follows this handler (forward_auth's way on to the application).
                try await rh.routes.compile(next: next).serve(request, writer)
                if !pending.copied { conn.close() }
                return
            }
            responseStarted = true
            try await copyResponse(
                request, writer, head: first, status: status, headers: responseHeaders,
                connection: conn, reusable: reusable, connections: connections, loop: loop)
        } catch let f as AttemptFailure {
            conn.close()
            throw f
        } catch {
            conn.close()
            // Once the response is under way, or when the client is the one that failed, nothing can be retried.
            if responseStarted || error is ClientDisconnectedError || error is HandlerError
                || error is CancellationError
            {
                throw error
            }
            // The upstream broke the exchange before its response began (a reset, a malformed head).
            throw AttemptFailure(
                status: 502, message: "reverse_proxy: \(upstream.address): \(error)", dial: false, bodySent: bodySent)
        }
    }

    /// Sends the upstream's response to the client: head (with `headers.response` ops, `Via`, the upstream's
    /// `Server`), then the body, flushed per write when it streams; the connection goes back to the pool if the
    /// body ended cleanly.
    func copyResponse(
        _ request: Request, _ writer: any ResponseWriter, head first: HTTPResponseHead,
        status: HTTPResponseStatus, headers upstreamHeaders: HTTPHeaders, connection conn: any UpstreamExchange,
        reusable: Bool, connections: ConnectionPool, loop: any EventLoop
    ) async throws {
        var responseHeaders = upstreamHeaders
        if let r = headers?.response, let ops = r.ops,
            r.require?.matches(status: Int(status.code), headers: responseHeaders) ?? true
        {
            ops.apply(to: &responseHeaders, request.replacer)
        }
        // Our Server field gives way to the upstream's, and Via says we passed it on (Caddy since 2.8).
        writer.headers.remove(name: "Server")
        writer.headers.add(name: "Via", value: "\(first.version.major).\(first.version.minor) Usher")
        for (name, value) in responseHeaders { writer.headers.add(name: name, value: value) }
        let eventStream =
            first.headers.first(name: "Content-Type")?.lowercased().hasPrefix("text/event-stream") ?? false
        var held: [ByteBuffer] = []
        var heldBytes = 0
        var complete = false
        if responseBuffers != 0 && !eventStream {
            // Read ahead up to the limit; a body that ends within it gets a length.
            reading: while responseBuffers < 0 || heldBytes <= responseBuffers {
                guard let part = try await conn.next() else { break }
                switch part {
                case .head: continue
                case .body(let b):
                    held.append(b)
                    heldBytes += b.readableBytes
                case .end:
                    complete = true
                    break reading
                }
            }
            if complete && !responseHeaders.contains(name: "Content-Length") {
                writer.headers.replaceOrAdd(name: "Content-Length", value: String(heldBytes))
            }
        }
        let streaming =
            !complete
            && ((flushInterval?.nanoseconds ?? 0) < 0
                || !first.headers.contains(name: "Content-Length") || eventStream)
        try await writer.writeHead(status)
        let flusher = writer.capability((any Flushing).self)
        for b in held { try await writer.write(b) }
        if streaming { try await flusher?.flush() }
        while !complete, let part = try await conn.next() {
            switch part {
            case .head:
                continue
            case .body(let buffer):
                try await writer.write(buffer)
                if streaming { try await flusher?.flush() }
            case .end:
                complete = true
            }
        }
        connections.release(conn, reusable: complete && reusable, loop: loop)
    }

    /// The FastCGI environment of this exchange; a body of unknown length (beyond what `request_buffers` read)
    /// is refused with 411, as Caddy does, since CGI needs `CONTENT_LENGTH` up front.
    func fastCGIRequest(
        _ fastCGI: FastCGITransport, _ request: Request, head: HTTPRequestHead, withoutBody: Bool
    ) throws -> FastCGIRequestParams {
        if request.path.utf8.contains(0) {
            throw HandlerError(status: 400, HTTPErrorMessage("invalid request path"))
        }
        let method = request.method
        let sendsBody = method != .HEAD && method != .OPTIONS && !withoutBody
        var length = 0
        if sendsBody {
            if let declared = head.headers.first(name: "Content-Length") {
                guard let n = Int(declared), n >= 0 else {
                    throw HandlerError(status: 411, HTTPErrorMessage("fastcgi: bad Content-Length"))
                }
                length = n
            } else if request.body.expectedLength == nil {
                throw HandlerError(status: 411, HTTPErrorMessage("fastcgi: request body length unknown"))
            }
        }
        return FastCGIRequestParams(
            env: try fastCGI.environment(request, head: head, contentLength: length), sendsBody: sendsBody)
    }

    /// The final response head, skipping interim (1xx) ones.
    func nextHead(_ conn: any UpstreamExchange) async throws -> HTTPResponseHead? {
        while let part = try await conn.next() {
            if case .head(let h) = part {
                if h.status.code >= 100 && h.status.code < 200 && h.status != .switchingProtocols { continue }
                return h
            }
        }
        return nil
    }
}
