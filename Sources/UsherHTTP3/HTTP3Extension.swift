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
    /// The peer's SETTINGS arrived (``HTTP3ConnectionHandle/peerSettings`` holds them).
    func settingsReceived(on connection: HTTP3ConnectionHandle)
    /// The connection closed (its streams have been told already).
    func connectionClosed(_ connection: HTTP3ConnectionHandle)
}

extension HTTP3Extension {
    public func settingsReceived(on connection: HTTP3ConnectionHandle) {}
    public func connectionClosed(_ connection: HTTP3ConnectionHandle) {}
}

/// A connection as an extension sees it: send datagrams, open streams, read the peer's SETTINGS.
public final class HTTP3ConnectionHandle {
    weak var connection: QUICConnection?

    init(_ connection: QUICConnection) { self.connection = connection }

    /// The peer's SETTINGS, once its control stream has delivered them.
    public var peerSettings: [HTTP3Setting]? { connection?.peerControl.settings }

    /// The connection is open (not closed or draining).
    public var isOpen: Bool { connection.map { !$0.closed } ?? false }

    /// The extension the connection was made with.
    public var `extension`: (any HTTP3Extension)? { connection?.ext }

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
    /// Bytes from the peer, and whether its side ended with them. Give credit back with ``consumed(_:)``. Until
    /// this is set, arriving bytes are held (and not credited), so a stream can wait for its session.
    public var onData: ((ByteBuffer, _ fin: Bool) -> Void)? {
        didSet { replayHeld() }
    }
    /// The peer abandoned its sending side (RESET_STREAM) with `code`; our side may still send.
    public var onReset: ((_ code: UInt64) -> Void)?
    /// The peer wants no more of our bytes (STOP_SENDING) with `code`; our side is reset with the same code.
    public var onStopSending: ((_ code: UInt64) -> Void)?
    /// The peer acknowledged `count` more bytes of what this side wrote (the preamble not counted).
    public var onAcknowledged: ((_ count: Int) -> Void)?
    /// The stream is gone (both sides done, or the connection closed): `code` is the peer's error code if any.
    public var onClose: ((_ code: UInt64?) -> Void)?
    /// Unacknowledged bytes above which ``write(_:)`` waits. Default: 256 KiB.
    public var sendWindow: Int {
        get { outbound.window }
        set { outbound.window = newValue }
    }

    private let outbound = SendQueue(window: 256 * 1024)
    /// Bytes that arrived before ``onData`` was set.
    private var held: [(ByteBuffer, Bool)] = []
    /// Preamble bytes of ours not yet acknowledged (not reported through ``onAcknowledged``).
    private var preambleUnacked = 0
    private var finQueued = false
    /// Our sending side was reset (by us, or by ngtcp2 after the peer's STOP_SENDING): nothing more goes out.
    private(set) var sendingShut = false
    private(set) var finSent = false
    private(set) var closed = false

    init(id: Int64, connection: QUICConnection) {
        self.id = id
        self.owner = connection
        self.handle = connection.handle
    }

    /// Whether this side may write (a peer's unidirectional stream may not be written).
    public var writable: Bool { id & 0x2 == 0 || (id & 0x1 == 1) == (connection?.isServer ?? true) }

    /// Whether the stream carries bytes both ways.
    public var isBidirectional: Bool { id & 0x2 == 0 }

    /// Whether the peer sends on this stream (bidirectional, or the peer's unidirectional one).
    public var readable: Bool { isBidirectional || !writable }

    /// Bookkeeping of whoever holds the stream (its WebTransport session), told before ``onClose``.
    var detach: (() -> Void)?

    /// Whether our side has ended (FIN queued) or been reset.
    public var sendingEnded: Bool { finQueued || closed }

    /// Bytes queued or sent but not yet acknowledged.
    public var unacknowledged: Int { outbound.unacked }

    /// Gives the peer credit for `count` bytes taken. After the stream has closed only the connection's window
    /// grows (a proxy may take a stream's last bytes after it ended; the connection must not lose that credit).
    public func consumed(_ count: Int) {
        guard count > 0 else { return }
        if closed {
            handle.connection?.extendConnectionCredit(by: count)
        } else {
            connection?.extendCredit(stream: id, by: count)
        }
    }

    /// Queues the preamble of a stream we opened.
    func enqueuePreamble(_ bytes: [UInt8]) throws {
        preambleUnacked = bytes.count
        try enqueue(ByteBuffer(bytes: bytes))
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
        finQueued = true
        sendingShut = true
        connection?.resetStream(id, code: code)
    }

    /// Resets our sending side only (RESET_STREAM with `code`); the peer's bytes still arrive.
    public func resetSending(_ code: UInt64) {
        guard !closed, !sendingShut, !finSent || outbound.unacked > 0 else { return }
        finQueued = true
        sendingShut = true
        outbound.fail()
        connection?.resetStreamWrite(id, code: code)
    }

    /// Stops reading with `code` (STOP_SENDING); our side may still send.
    public func stopReading(_ code: UInt64) {
        guard !closed else { return }
        connection?.stopReading(id, code: code)
    }

    // MARK: - Called by the connection

    var hasPendingWrite: Bool { !closed && !sendingShut && (!outbound.pending.isEmpty || (finQueued && !finSent)) }

    /// ngtcp2 will take nothing more on our side (it was reset).
    func sendingWasShut() {
        sendingShut = true
        outbound.fail()
    }

    /// The next bytes to write (one buffer), and whether they end our side.
    func nextWrite() -> (ByteBuffer?, fin: Bool) {
        (outbound.pending.first, finQueued && outbound.pending.count <= 1)
    }

    /// ngtcp2 took `count` bytes of ``nextWrite()`` (and the FIN if `fin`).
    func wrote(_ count: Int, fin: Bool) {
        outbound.wrote(count)
        if fin && outbound.pending.isEmpty { finSent = true }
    }

    func acknowledged(_ count: Int) {
        outbound.acknowledged(count)
        var payload = count
        if preambleUnacked > 0 {
            let p = min(preambleUnacked, payload)
            preambleUnacked -= p
            payload -= p
        }
        if payload > 0 { onAcknowledged?(payload) }
    }

    func receive(_ buffer: ByteBuffer, fin: Bool) {
        if let onData { onData(buffer, fin) } else if buffer.readableBytes > 0 || fin { held.append((buffer, fin)) }
    }

    private func replayHeld() {
        guard !held.isEmpty, let onData else { return }
        let h = held
        held = []
        for (b, fin) in h { onData(b, fin) }
    }

    func peerReset(code: UInt64) { onReset?(code) }

    func peerStopSending(code: UInt64) {
        finQueued = true
        sendingShut = true
        outbound.fail()
        onStopSending?(code)
    }

    func didClose(code: UInt64?) {
        guard !closed else { return }
        closed = true
        outbound.fail()
        let callback = onClose
        detach?()
        detach = nil
        onClose = nil
        onData = nil
        onReset = nil
        onStopSending = nil
        onAcknowledged = nil
        held = []
        callback?(code)
    }

    func releaseBuffers() { outbound.release() }
}
