import CNgtcp2
public import NIOCore

/// What plain HTTP/3 does not carry, for an extension such as WebTransport: peer streams that begin with a
/// WebTransport preamble (nghttp3 never sees them), HTTP/3 datagrams, and the peer's SETTINGS. Registered with
/// ``HTTP3ServerConfiguration/extension``; with none registered nothing is classified or parsed, and the bytes on the
/// wire are plain HTTP/3's. Every call happens on the connection's event loop.
public protocol HTTP3Extension: AnyObject, Sendable {
    /// A peer stream whose preamble names `kind`; its bytes after the preamble arrive through the stream's
    /// ``HTTP3RawStream/onData``.
    func streamOpened(_ stream: HTTP3RawStream, kind: PeerStreamKind)
    /// An HTTP/3 datagram for the request stream `streamID` (RFC 9297).
    func datagramReceived(_ payload: [UInt8], streamID: UInt64, on connection: HTTP3ConnectionHandle)
}

/// A connection as an extension sees it: send datagrams, open streams, read the peer's SETTINGS.
public final class HTTP3ConnectionHandle {
    weak var connection: QUICConnection?

    init(_ connection: QUICConnection) { self.connection = connection }

    /// The peer's SETTINGS, once its control stream has delivered them.
    public var peerSettings: [HTTP3Setting]? { connection?.peerControl.settings }

    /// Queues an HTTP/3 datagram for request stream `streamID`; false when the peer takes none (no
    /// `max_datagram_frame_size`) or it is too large for one packet.
    @discardableResult
    public func sendDatagram(_ payload: [UInt8], streamID: UInt64) -> Bool {
        connection?.queueDatagram(HTTP3Datagram.encode(streamID: streamID, payload: payload)) ?? false
    }

    /// Opens a stream of ours that nghttp3 does not own, starting with `preamble` (e.g. WebTransport's signal or
    /// stream type and the session ID).
    public func openStream(bidirectional: Bool, preamble: [UInt8]) throws -> HTTP3RawStream {
        guard let connection else { throw HTTP3StreamClosedError() }
        return try connection.openRawStream(bidirectional: bidirectional, preamble: preamble)
    }
}

/// A QUIC stream outside nghttp3 (a WebTransport stream): bytes in, bytes out, with the same credit and
/// acknowledgement rules as request streams.
public final class HTTP3RawStream {
    public let id: Int64
    /// Unowned for the reason ``HTTP3Stream`` gives; `closed` guards it.
    private unowned(unsafe) let owner: QUICConnection
    var connection: QUICConnection? { closed ? nil : owner }
    /// The connection, for datagrams and more streams.
    public let handle: HTTP3ConnectionHandle
    /// Bytes from the peer, and whether its side ended with them. Give credit back with ``consumed(_:)``.
    public var onData: ((ByteBuffer, _ fin: Bool) -> Void)?
    /// The stream is gone (reset either way, or the connection closed): `code` is the peer's error code if any.
    public var onClose: ((_ code: UInt64?) -> Void)?
    /// Unacknowledged bytes above which ``write(_:)`` waits. Default: 256 KiB.
    public var sendWindow: Int {
        get { outbound.window }
        set { outbound.window = newValue }
    }

    private let outbound = SendQueue(window: 256 * 1024)
    private var finQueued = false
    private(set) var finSent = false
    private(set) var closed = false

    init(id: Int64, connection: QUICConnection) {
        self.id = id
        self.owner = connection
        self.handle = connection.handle
    }

    /// Whether this side may write (a peer's unidirectional stream may not be written).
    public var writable: Bool { id & 0x2 == 0 || (id & 0x1 == 1) == (connection?.isServer ?? true) }

    /// Gives the peer credit for `count` bytes taken.
    public func consumed(_ count: Int) {
        guard count > 0, !closed else { return }
        connection?.extendCredit(stream: id, by: count)
    }

    /// Queues bytes (and the end of our side with `fin`) without waiting.
    public func enqueue(_ buffer: ByteBuffer, fin: Bool = false) throws {
        guard !closed, !finQueued else { throw HTTP3StreamClosedError() }
        outbound.append(buffer)
        if fin { finQueued = true }
        connection?.scheduleWrite()
    }

    /// Queues bytes, then waits while too many are unacknowledged.
    public func write(_ buffer: ByteBuffer, fin: Bool = false) async throws {
        try enqueue(buffer, fin: fin)
        try await outbound.waitForWindow { closed }
    }

    /// Resets our side (RESET_STREAM) and stops reading (STOP_SENDING) with `code`.
    public func reset(_ code: UInt64) {
        guard !closed else { return }
        connection?.resetStream(id, code: code)
    }

    /// Stops reading with `code` (STOP_SENDING); our side may still send.
    public func stopReading(_ code: UInt64) {
        guard !closed else { return }
        connection?.stopReading(id, code: code)
    }

    // MARK: - Called by the connection

    var hasPendingWrite: Bool { !closed && (!outbound.pending.isEmpty || (finQueued && !finSent)) }

    /// The next bytes to write (one buffer), and whether they end our side.
    func nextWrite() -> (ByteBuffer?, fin: Bool) {
        (outbound.pending.first, finQueued && outbound.pending.count <= 1)
    }

    /// ngtcp2 took `count` bytes of ``nextWrite()`` (and the FIN if `fin`).
    func wrote(_ count: Int, fin: Bool) {
        outbound.wrote(count)
        if fin && outbound.pending.isEmpty { finSent = true }
    }

    func acknowledged(_ count: Int) { outbound.acknowledged(count) }

    func receive(_ buffer: ByteBuffer, fin: Bool) {
        if let onData { onData(buffer, fin) } else { consumed(buffer.readableBytes) }
    }

    func didClose(code: UInt64?) {
        guard !closed else { return }
        closed = true
        outbound.fail()
        let callback = onClose
        onClose = nil
        onData = nil
        callback?(code)
    }

    func releaseBuffers() { outbound.release() }
}
