import CNghttp3
public import NIOCore

/// One request stream of an HTTP/3 connection as the application sees it. On a server: the request's fields and
/// body coming in, the response going out. On a client: the request going out (``sendRequest(_:hasBody:)``), the
/// response's fields (``onHeaders``) and body coming in. Every call and callback happens on the connection's event
/// loop.
///
/// Request body bytes get the client credit back only through ``consumed(_:)``, so a slow reader holds the client
/// back instead of buffering without bound. Response body bytes stay referenced until the client acknowledges
/// them; ``write(_:)`` waits while more than ``sendWindow`` bytes are unacknowledged.
public final class HTTP3Stream {
    /// The QUIC stream ID.
    public let id: Int64
    /// The connection, while the stream is open. Not `weak`: a weak reference gives the connection a side table,
    /// which makes every retain and release of it slower, on every packet. The connection closes its streams
    /// before it goes away, so `closed` guards the unowned reference.
    private unowned(unsafe) let owner: QUICConnection
    var connection: QUICConnection? { closed ? nil : owner }
    /// Received header fields in arrival order, pseudo-header fields (`:method`, `:path`, `:status`, ...) included:
    /// the request's on a server, the latest response head's on a client.
    public internal(set) var fields: [(name: String, value: String)] = []
    /// Request trailer fields, once the body has ended.
    public internal(set) var trailers: [(name: String, value: String)] = []
    /// Client: a response head arrived (interim 1xx heads too; ``fields`` holds it).
    public var onHeaders: (() -> Void)?
    /// Received body bytes as they arrive.
    public var onData: ((ByteBuffer) -> Void)?
    /// The request body has ended (after trailers, if any).
    public var onEnd: (() -> Void)?
    /// The stream is gone: `complete` when both sides ended normally, else it was reset by the peer, refused, or
    /// its connection closed. Called once; pending writes fail with ``HTTP3StreamClosedError``.
    public var onClose: ((_ complete: Bool) -> Void)?
    /// Whether the request body has ended.
    public private(set) var requestEnded = false
    /// Unacknowledged bytes above which ``write(_:)`` waits. Default: 256 KiB.
    public var sendWindow: Int {
        get { outbound.window }
        set { outbound.window = newValue }
    }

    private(set) var closed = false
    private var responseSubmitted = false
    private var responseEnded = false
    private var responseTrailers: [(String, String)] = []
    /// Body bytes to send, and those sent but not yet acknowledged.
    private let outbound = SendQueue(window: 256 * 1024)
    /// nghttp3 asked for data and got none: it must be told when there is some.
    private var starved = false
    /// Body bytes handed to ``onData`` and not yet credited through ``consumed(_:)``: when the stream closes they
    /// go back to the connection's window, or unread bodies would shrink it for good.
    var uncredited = 0

    init(id: Int64, connection: QUICConnection) {
        self.id = id
        self.owner = connection
    }

    /// The client's address.
    public var remoteAddress: SocketAddress? { connection?.remoteAddress }
    /// The address the client sent to.
    public var localAddress: SocketAddress? { connection?.localAddress }
    /// The server name the client asked for in its TLS hello (SNI), if any.
    public var serverName: String? { connection?.serverName }

    /// The WebTransport registry of the stream's connection, when it offers WebTransport.
    public var webTransportSessions: WebTransportSessions? { connection?.ext as? WebTransportSessions }

    /// The value of the first field named `name` (lowercase), pseudo-header fields included.
    public func field(_ name: String) -> String? { fields.first { $0.name == name }?.value }

    /// Gives the client credit for `count` request body bytes the application has taken.
    public func consumed(_ count: Int) {
        guard count > 0, !closed else { return }
        uncredited -= min(count, uncredited)
        connection?.extendCredit(stream: id, by: count)
    }

    /// Sends an interim (1xx) response.
    public func sendInterim(_ fields: [(String, String)]) throws {
        guard !closed, !responseSubmitted, let connection else { throw HTTP3StreamClosedError() }
        try connection.submitInfo(stream: id, fields: fields)
    }

    /// Sends the final response head; with `hasBody` false the stream ends with it.
    public func sendResponse(_ fields: [(String, String)], hasBody: Bool) throws {
        guard !closed, !responseSubmitted, let connection else { throw HTTP3StreamClosedError() }
        responseSubmitted = true
        if !hasBody { responseEnded = true }
        try connection.submitResponse(stream: id, fields: fields, withBody: hasBody)
    }

    /// Client: sends the request head; with `hasBody` false the stream's sending side ends with it.
    public func sendRequest(_ fields: [(String, String)], hasBody: Bool) throws {
        guard !closed, !responseSubmitted, let connection else { throw HTTP3StreamClosedError() }
        responseSubmitted = true
        if !hasBody { responseEnded = true }
        try connection.submitRequest(stream: id, fields: fields, withBody: hasBody)
    }

    /// Queues body bytes without waiting for the client.
    public func enqueue(_ buffer: ByteBuffer) throws {
        guard !closed, responseSubmitted, !responseEnded else { throw HTTP3StreamClosedError() }
        guard buffer.readableBytes > 0 else { return }
        outbound.append(buffer)
        resume()
    }

    /// Queues body bytes, then waits while too many are unacknowledged.
    public func write(_ buffer: ByteBuffer) async throws {
        try enqueue(buffer)
        try await outbound.waitForWindow { closed }
    }

    /// Ends the response body, with trailer fields if any.
    public func finish(trailers: [(String, String)] = []) throws {
        guard !closed, responseSubmitted else { throw HTTP3StreamClosedError() }
        guard !responseEnded else { return }
        responseEnded = true
        responseTrailers = trailers
        if !trailers.isEmpty, let connection { try connection.submitTrailers(stream: id, fields: trailers) }
        resume()
    }

    /// Abandons the stream both ways with an HTTP/3 error code (default 0x10c, H3_REQUEST_CANCELLED).
    public func reset(_ code: UInt64 = 0x010c) {
        guard !closed else { return }
        connection?.resetStream(id, code: code)
    }

    /// Stops reading the request body (STOP_SENDING, default 0x100, H3_NO_ERROR); the response may still be sent.
    public func stopReading(_ code: UInt64 = 0x0100) {
        guard !closed, !requestEnded else { return }
        requestEnded = true
        connection?.stopReading(id, code: code)
    }

    private func resume() {
        guard starved else {
            connection?.scheduleWrite()
            return
        }
        starved = false
        connection?.resumeStream(id)
    }

    // MARK: - Called by the connection

    /// nghttp3 wants body bytes: fills `vec`, moving buffers to `inflight`.
    func provide(_ vec: UnsafeMutablePointer<nghttp3_vec>, count: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        var n = 0
        while n < count, let b = outbound.popForWrite() {
            b.withUnsafeReadableBytes { raw in
                vec[n] = nghttp3_vec(
                    base: UnsafeMutablePointer(mutating: raw.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                    len: raw.count)
            }
            n += 1
        }
        if outbound.pending.isEmpty && responseEnded {
            flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
            if !responseTrailers.isEmpty { flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_NO_END_STREAM) }
            return n
        }
        if n == 0 {
            starved = true
            return Int(NGHTTP3_ERR_WOULDBLOCK)
        }
        return n
    }

    /// The peer acknowledged `count` more body bytes.
    func acknowledged(_ count: Int) { outbound.acknowledged(count) }

    func requestDidEnd() {
        guard !requestEnded else { return }
        requestEnded = true
        onEnd?()
    }

    func didClose(complete: Bool) {
        guard !closed else { return }
        if uncredited > 0 {
            owner.extendConnectionCredit(by: uncredited)
            uncredited = 0
        }
        closed = true
        outbound.fail()
        let callback = onClose
        onClose = nil
        onData = nil
        onEnd = nil
        onHeaders = nil
        callback?(complete && responseEnded)
    }

    /// Releases what nghttp3 no longer points at, once the stream is closed for good.
    func releaseBuffers() { outbound.release() }
}

/// The stream was reset or its connection closed before the response completed.
public struct HTTP3StreamClosedError: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "HTTP/3 stream closed" }
}

/// The server allows no more concurrent request streams on this connection for now.
public struct HTTP3StreamsExhaustedError: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "no HTTP/3 request stream available on this connection" }
}
