import NIOCore

/// WebTransport over HTTP/3 codepoints (draft-ietf-webtrans-http3; values as deployed by browsers and libraries).
public enum WebTransportCodepoint {
    /// Capsules on the CONNECT stream.
    public static let closeSessionCapsule: UInt64 = 0x2843
    public static let drainSessionCapsule: UInt64 = 0x78AE
    /// Stream error codes.
    public static let sessionGone: UInt64 = 0x170D_7B68
    public static let bufferedStreamRejected: UInt64 = 0x3994_BD84
    /// SETTINGS that say "WebTransport here", by draft generation.
    public static let settingsH3DatagramDraft04: UInt64 = 0xFFD277
    public static let settingsMaxSessionsDraft13: UInt64 = 0x14E9_CD29
    public static let settingsEnabledDraft15: UInt64 = 0x2C7C_F000

    /// What a server announces so that current clients (Chrome, Firefox, Safari, webtransport-go, aioquic) accept
    /// it: datagrams (RFC 9297 and draft-04) and WebTransport in every generation's form, all `1` (aioquic and
    /// Chrome require 0 or 1 for 0x2b603742; one session per connection spares the draft-13 flow-control duties).
    /// Extended CONNECT is announced separately.
    public static let serverSettings: [HTTP3Setting] = [
        HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
        HTTP3Setting(settingsH3DatagramDraft04, 1),
        HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1),
        HTTP3Setting(HTTP3Codepoint.settingsWebTransportMaxSessions, 1),
        HTTP3Setting(settingsMaxSessionsDraft13, 1),
        HTTP3Setting(settingsEnabledDraft15, 1),
    ]

    /// What a client announces: datagrams, and WebTransport in the draft-02 and draft-15 forms.
    public static let clientSettings: [HTTP3Setting] = [
        HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
        HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1),
        HTTP3Setting(settingsEnabledDraft15, 1),
    ]

    /// Whether a peer's SETTINGS allow a WebTransport session: Extended CONNECT, datagrams, and one of the
    /// WebTransport indicators.
    public static func supportsWebTransport(_ settings: [HTTP3Setting]) -> Bool {
        func value(_ id: UInt64) -> UInt64 { settings.first { $0.id == id }?.value ?? 0 }
        guard value(HTTP3Codepoint.settingsEnableConnectProtocol) == 1 else { return false }
        guard value(HTTP3Codepoint.settingsH3Datagram) == 1 || value(settingsH3DatagramDraft04) == 1 else {
            return false
        }
        return value(HTTP3Codepoint.settingsEnableWebTransport) == 1
            || value(HTTP3Codepoint.settingsWebTransportMaxSessions) > 0
            || value(settingsMaxSessionsDraft13) > 0 || value(settingsEnabledDraft15) != 0
    }

    /// Whether the peer shows only the draft-15 indicator, and so expects `:protocol` `webtransport-h3`.
    public static func wantsDraft15Protocol(_ settings: [HTTP3Setting]) -> Bool {
        let ids = Set(settings.filter { $0.value != 0 }.map(\.id))
        return ids.contains(settingsEnabledDraft15) && !ids.contains(HTTP3Codepoint.settingsEnableWebTransport)
            && !ids.contains(HTTP3Codepoint.settingsWebTransportMaxSessions)
            && !ids.contains(settingsMaxSessionsDraft13)
    }

    /// The `:protocol` values of a WebTransport Extended CONNECT (drafts up to 14, and 15 on).
    public static func isWebTransportProtocol(_ value: String?) -> Bool {
        value == "webtransport" || value == "webtransport-h3"
    }
}

/// One capsule (RFC 9297 section 3.2): type, then value.
public struct Capsule: Equatable, Sendable {
    public var type: UInt64
    public var value: [UInt8]

    public init(type: UInt64, value: [UInt8]) {
        self.type = type
        self.value = value
    }

    public var encoded: [UInt8] { QUICVarint.encode(type) + QUICVarint.encode(UInt64(value.count)) + value }

    /// WT_CLOSE_SESSION: a 32-bit application code and a reason of at most 1024 bytes (longer ones are cut at a
    /// character boundary).
    public static func closeSession(code: UInt32, reason: String) -> Capsule {
        var r = Array(reason.utf8)
        if r.count > 1024 {
            r = Array(r.prefix(1024))
            while !r.isEmpty, String(validating: r, as: UTF8.self) == nil { r.removeLast() }
        }
        let c = [UInt8(code >> 24), UInt8(code >> 16 & 0xFF), UInt8(code >> 8 & 0xFF), UInt8(code & 0xFF)]
        return Capsule(type: WebTransportCodepoint.closeSessionCapsule, value: c + r)
    }

    public static let drainSession = Capsule(type: WebTransportCodepoint.drainSessionCapsule, value: [])

    /// The code and reason of a WT_CLOSE_SESSION capsule, or nil when malformed.
    public var closeInfo: (code: UInt32, reason: String)? {
        guard type == WebTransportCodepoint.closeSessionCapsule, value.count >= 4 else { return nil }
        let code = UInt32(value[0]) << 24 | UInt32(value[1]) << 16 | UInt32(value[2]) << 8 | UInt32(value[3])
        return (code, String(decoding: value[4...], as: UTF8.self))
    }
}

/// Reads capsules from the bytes of a CONNECT stream's DATA frames, which may split them anywhere.
public struct CapsuleParser: Sendable {
    private var buffer: [UInt8] = []
    /// The most bytes one capsule may hold; a longer one is a protocol error.
    public var maxCapsuleSize = 64 * 1024

    public init() {}

    /// Takes more bytes; returns the capsules they complete.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws -> [Capsule] {
        buffer += bytes
        var out: [Capsule] = []
        var i = 0
        while let type = QUICVarint.decode(buffer, from: i),
            let length = QUICVarint.decode(buffer, from: i + type.length)
        {
            guard length.value <= UInt64(maxCapsuleSize) else {
                throw HTTP3WireError.frame("capsule of \(length.value) bytes")
            }
            let start = i + type.length + length.length
            guard buffer.count >= start + Int(length.value) else { break }
            out.append(Capsule(type: type.value, value: Array(buffer[start..<start + Int(length.value)])))
            i = start + Int(length.value)
        }
        if i > 0 { buffer.removeFirst(i) }
        return out
    }

    /// Bytes of a capsule begun but not complete.
    public var buffered: Int { buffer.count }
}

/// How a WebTransport session ended.
public struct WebTransportCloseInfo: Equatable, Sendable {
    /// The application's code (0 when the session ended with a FIN alone).
    public var code: UInt32
    public var reason: String
    /// The CONNECT stream was reset (or its connection closed) rather than closed cleanly; `code`/`reason` are 0/"".
    public var aborted: Bool
    /// The stream error code of the reset, when `aborted`.
    public var resetCode: UInt64?

    public init(code: UInt32, reason: String, aborted: Bool = false, resetCode: UInt64? = nil) {
        self.code = code
        self.reason = reason
        self.aborted = aborted
        self.resetCode = resetCode
    }
}

public struct WebTransportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The WebTransport sessions of the connections of one endpoint (server) or one client connection: routes the
/// peer's WebTransport streams and datagrams to their session, holding streams that arrive before their session
/// is established (at most ``maxPendingStreams`` per connection, the rest refused with
/// WT_BUFFERED_STREAM_REJECTED). Register one as ``HTTP3ServerConfiguration/extension`` or
/// ``HTTP3ClientConfiguration/extension``. Everything happens on the connections' event loop.
public final class WebTransportSessions: HTTP3Extension, @unchecked Sendable {
    // @unchecked: used only on the event loop of its connections.
    private struct Key: Hashable {
        let connection: ObjectIdentifier
        let session: UInt64
    }
    private var sessions: [Key: WebTransportSession] = [:]
    private var pending: [Key: [HTTP3RawStream]] = [:]
    private var pendingCount: [ObjectIdentifier: Int] = [:]
    private var settingsWaiters: [ObjectIdentifier: [CheckedContinuation<Void, Never>]] = [:]
    /// Streams held per connection while their session is not established yet.
    public var maxPendingStreams = 32

    public init() {}

    /// Sessions open now.
    public var count: Int { sessions.count }

    public func streamOpened(_ stream: HTTP3RawStream, kind: PeerStreamKind) {
        let sessionID: UInt64
        switch kind {
        case .webTransportBidi(let s), .webTransportUni(let s): sessionID = s
        default:
            stream.reset(WebTransportCodepoint.bufferedStreamRejected)
            return
        }
        let key = Key(connection: ObjectIdentifier(stream.handle), session: sessionID)
        if let session = sessions[key] {
            session.adopt(stream)
            return
        }
        let conn = ObjectIdentifier(stream.handle)
        guard pendingCount[conn, default: 0] < maxPendingStreams else {
            stream.reset(WebTransportCodepoint.bufferedStreamRejected)
            return
        }
        pendingCount[conn, default: 0] += 1
        pending[key, default: []].append(stream)
        stream.detach = { [weak self] in
            guard let self, var list = self.pending[key] else { return }
            list.removeAll { $0 === stream }
            self.pending[key] = list.isEmpty ? nil : list
            self.pendingCount[conn, default: 1] -= 1
        }
    }

    public func datagramReceived(_ payload: [UInt8], streamID: UInt64, on connection: HTTP3ConnectionHandle) {
        // Datagrams for no session (yet) are dropped, as datagrams may be.
        sessions[Key(connection: ObjectIdentifier(connection), session: streamID)]?.receiveDatagram(payload)
    }

    public func settingsReceived(on connection: HTTP3ConnectionHandle) {
        guard let waiters = settingsWaiters.removeValue(forKey: ObjectIdentifier(connection)) else { return }
        for w in waiters { w.resume() }
    }

    /// Waits until the peer's SETTINGS are in (or the connection is gone); returns them.
    func peerSettings(of connection: HTTP3ConnectionHandle) async -> [HTTP3Setting]? {
        if let s = connection.peerSettings { return s }
        guard connection.isOpen else { return nil }
        await withCheckedContinuation { settingsWaiters[ObjectIdentifier(connection), default: []].append($0) }
        return connection.peerSettings
    }

    public func connectionClosed(_ connection: HTTP3ConnectionHandle) {
        // Waiters for SETTINGS that will never come find the connection closed.
        settingsReceived(on: connection)
        pendingCount[ObjectIdentifier(connection)] = nil
    }

    func register(_ session: WebTransportSession) {
        let key = Key(connection: ObjectIdentifier(session.handle), session: session.id)
        sessions[key] = session
        if let waiting = pending.removeValue(forKey: key) {
            pendingCount[key.connection, default: 0] -= waiting.count
            for s in waiting {
                s.detach = nil
                session.adopt(s)
            }
        }
    }

    func unregister(_ session: WebTransportSession) {
        let key = Key(connection: ObjectIdentifier(session.handle), session: session.id)
        if sessions[key] === session { sessions[key] = nil }
    }

    /// The request on `stream` will not become a session (refused, or it ended): streams waiting for it are
    /// refused with WT_BUFFERED_STREAM_REJECTED.
    public func rejectPending(for stream: HTTP3Stream) {
        guard let handle = stream.connection?.handle else { return }
        let key = Key(connection: ObjectIdentifier(handle), session: UInt64(stream.id))
        guard let waiting = pending.removeValue(forKey: key) else { return }
        pendingCount[key.connection, default: 0] -= waiting.count
        for s in waiting {
            s.detach = nil
            s.reset(WebTransportCodepoint.bufferedStreamRejected)
        }
    }
}

/// One WebTransport session: its CONNECT stream (capsules), the streams and datagrams that name it. Made by
/// ``accept(_:)`` on a server, or ``connect(over:sessions:fields:)`` on a client. Every call and callback happens
/// on the connection's event loop.
public final class WebTransportSession {
    /// The CONNECT stream.
    public let connectStream: HTTP3Stream
    /// The session ID (the CONNECT stream's ID).
    public let id: UInt64
    public let handle: HTTP3ConnectionHandle
    private let sessions: WebTransportSessions
    /// The session's streams still open, by stream ID.
    public private(set) var streams: [Int64: HTTP3RawStream] = [:]
    private var parser = CapsuleParser()
    /// Streams the peer opened before ``onStream`` was set.
    private var unclaimed: [HTTP3RawStream] = []
    private var datagramsHeld: [[UInt8]] = []
    /// A stream the peer opened (its bytes follow through ``HTTP3RawStream/onData``).
    public var onStream: ((HTTP3RawStream) -> Void)? {
        didSet {
            guard let onStream, !unclaimed.isEmpty else { return }
            let u = unclaimed
            unclaimed = []
            for s in u { onStream(s) }
        }
    }
    /// A datagram for this session.
    public var onDatagram: (([UInt8]) -> Void)? {
        didSet {
            guard let onDatagram, !datagramsHeld.isEmpty else { return }
            let d = datagramsHeld
            datagramsHeld = []
            for p in d { onDatagram(p) }
        }
    }
    /// The peer asked to wind the session down (WT_DRAIN_SESSION).
    public var onDrain: (() -> Void)?
    /// The session is over: by the peer's WT_CLOSE_SESSION or FIN, a reset, or our own ``close(code:reason:)``.
    /// Called once, after which the session's streams are reset with WT_SESSION_GONE.
    public var onClose: ((WebTransportCloseInfo) -> Void)?
    /// The CONNECT stream has closed both ways (after ``onClose``).
    public var onFinished: (() -> Void)?
    /// How the session ended, once it has.
    public private(set) var closeInfo: WebTransportCloseInfo?
    /// The CONNECT stream has closed both ways.
    public private(set) var connectClosed = false
    /// Datagrams that could not be sent (too large for the peer, or no datagrams allowed).
    public private(set) var datagramsDropped = 0
    private var finishedSending = false

    init(connectStream: HTTP3Stream, handle: HTTP3ConnectionHandle, sessions: WebTransportSessions) {
        self.connectStream = connectStream
        self.id = UInt64(connectStream.id)
        self.handle = handle
        self.sessions = sessions
        connectStream.onData = { [unowned self] b in self.receiveCapsuleBytes(b) }
        connectStream.onEnd = { [unowned self] in
            self.peerEnded(WebTransportCloseInfo(code: 0, reason: ""))
        }
        connectStream.onClose = { [unowned self] complete in
            // Strong for the rest of the call: the registry may hold the last reference, dropped just below.
            let me = self
            me.connectClosed = true
            if me.closeInfo == nil {
                me.terminate(
                    WebTransportCloseInfo(code: 0, reason: "", aborted: !complete, resetCode: complete ? nil : 0x10C))
            }
            me.sessions.unregister(me)
            let finished = me.onFinished
            me.onFinished = nil
            finished?()
        }
        sessions.register(self)
    }

    /// Server: takes an Extended CONNECT stream whose 2xx response has been sent as a session. The connection
    /// must have been made with a ``WebTransportSessions`` extension.
    public static func accept(_ stream: HTTP3Stream) throws -> WebTransportSession {
        guard let conn = stream.connection, let sessions = conn.ext as? WebTransportSessions else {
            throw WebTransportError("WebTransport is not enabled on this connection")
        }
        return WebTransportSession(connectStream: stream, handle: conn.handle, sessions: sessions)
    }

    /// The result of a client's attempt: a session on 2xx, else the server's answer.
    public enum ConnectResult: @unchecked Sendable {
        // @unchecked: made and used on the connection's event loop.
        case accepted(WebTransportSession, fields: [(name: String, value: String)])
        case refused(status: Int, fields: [(name: String, value: String)], stream: HTTP3Stream)
    }

    /// Client: waits for the server's SETTINGS, checks that they offer WebTransport, then sends the Extended
    /// CONNECT `fields` (pseudo-header fields first; `:protocol` becomes `webtransport-h3` for a server that shows
    /// only the draft-15 indicator) and waits for the final response head. The connection must have been made
    /// with `sessions` as its extension and ``WebTransportCodepoint/clientSettings``.
    public static func connect(
        over connection: HTTP3ClientConnection, sessions: WebTransportSessions,
        fields: [(String, String)]
    ) async throws -> ConnectResult {
        guard let handle = connection.handle else { throw HTTP3StreamClosedError() }
        guard let settings = await sessions.peerSettings(of: handle) else {
            throw WebTransportError("connection closed before the server's SETTINGS arrived")
        }
        guard WebTransportCodepoint.supportsWebTransport(settings) else {
            throw WebTransportError(
                "the server does not offer WebTransport (no Extended CONNECT, datagrams or WebTransport setting)")
        }
        var f = fields
        if WebTransportCodepoint.wantsDraft15Protocol(settings), let i = f.firstIndex(where: { $0.0 == ":protocol" }) {
            f[i].1 = "webtransport-h3"
        }
        let stream = try connection.openStream()
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<ConnectResult, any Error>) in
            var resumed = false
            stream.onHeaders = {
                guard !resumed, let status = stream.field(":status").flatMap(Int.init), status >= 200 else { return }
                resumed = true
                stream.onHeaders = nil
                stream.onClose = nil
                let fields = stream.fields.filter { $0.name != ":status" }
                if (200..<300).contains(status) {
                    // Made here, in the callback, so capsules right behind the head are not missed.
                    let session = WebTransportSession(connectStream: stream, handle: handle, sessions: sessions)
                    c.resume(returning: .accepted(session, fields: fields))
                } else {
                    sessions.rejectPending(for: stream)
                    c.resume(returning: .refused(status: status, fields: fields, stream: stream))
                }
            }
            stream.onClose = { _ in
                guard !resumed else { return }
                resumed = true
                sessions.rejectPending(for: stream)
                c.resume(throwing: WebTransportError("the server reset the CONNECT stream before answering"))
            }
            do {
                try stream.sendRequest(f, hasBody: true)
            } catch {
                resumed = true
                stream.onClose = nil
                c.resume(throwing: error)
            }
        }
    }

    /// Opens a stream of this session: bidirectional, or unidirectional (ours to write).
    public func openStream(bidirectional: Bool) throws -> HTTP3RawStream {
        guard closeInfo == nil else { throw HTTP3StreamClosedError() }
        let preamble =
            bidirectional
            ? QUICVarint.encode(HTTP3Codepoint.webTransportBidiSignal) + QUICVarint.encode(id)
            : QUICVarint.encode(HTTP3Codepoint.webTransportUniStream) + QUICVarint.encode(id)
        let stream = try handle.openStream(bidirectional: bidirectional, preamble: preamble)
        track(stream)
        return stream
    }

    /// Sends a datagram; false (and counted in ``datagramsDropped``) when it cannot go.
    @discardableResult
    public func sendDatagram(_ payload: [UInt8]) -> Bool {
        guard closeInfo == nil, handle.sendDatagram(payload, streamID: id) else {
            datagramsDropped += 1
            return false
        }
        return true
    }

    /// Asks the peer to wind the session down (WT_DRAIN_SESSION).
    public func drain() {
        guard closeInfo == nil, !finishedSending else { return }
        try? connectStream.enqueue(ByteBuffer(bytes: Capsule.drainSession.encoded))
    }

    /// Ends the session: WT_CLOSE_SESSION with `code` and `reason`, then FIN on the CONNECT stream. The session's
    /// streams are reset with WT_SESSION_GONE.
    public func close(code: UInt32 = 0, reason: String = "") {
        guard closeInfo == nil else { return }
        if !finishedSending {
            finishedSending = true
            try? connectStream.enqueue(ByteBuffer(bytes: Capsule.closeSession(code: code, reason: reason).encoded))
            try? connectStream.finish()
        }
        terminate(WebTransportCloseInfo(code: code, reason: reason))
    }

    /// Ends the session at once: the CONNECT stream is reset with `code` (default H3_REQUEST_CANCELLED).
    public func abort(_ code: UInt64 = 0x10C) {
        finishedSending = true
        connectStream.reset(code)
        if closeInfo == nil { terminate(WebTransportCloseInfo(code: 0, reason: "", aborted: true, resetCode: code)) }
    }

    // MARK: - Internals

    func adopt(_ stream: HTTP3RawStream) {
        guard closeInfo == nil else {
            stream.reset(WebTransportCodepoint.sessionGone)
            return
        }
        track(stream)
        if let onStream { onStream(stream) } else { unclaimed.append(stream) }
    }

    private func track(_ stream: HTTP3RawStream) {
        streams[stream.id] = stream
        let id = stream.id
        stream.detach = { [weak self] in self?.streams[id] = nil }
    }

    func receiveDatagram(_ payload: [UInt8]) {
        guard closeInfo == nil else { return }
        if let onDatagram {
            onDatagram(payload)
        } else if datagramsHeld.count < 64 {
            datagramsHeld.append(payload)
        }
    }

    private func receiveCapsuleBytes(_ b: ByteBuffer) {
        connectStream.consumed(b.readableBytes)
        let capsules: [Capsule]
        do {
            capsules = try parser.feed(b.readableBytesView)
        } catch {
            // Malformed capsules end the session (draft: the stream is reset with H3_MESSAGE_ERROR).
            abort(0x10E)
            return
        }
        for c in capsules {
            switch c.type {
            case WebTransportCodepoint.closeSessionCapsule:
                guard let info = c.closeInfo else {
                    abort(0x10E)
                    return
                }
                peerEnded(WebTransportCloseInfo(code: info.code, reason: info.reason))
            case WebTransportCodepoint.drainSessionCapsule:
                onDrain?()
            default:
                // Unknown capsules are ignored (RFC 9297 section 3.2).
                continue
            }
        }
    }

    /// The peer closed the session (capsule or FIN): our side of the CONNECT stream ends too.
    private func peerEnded(_ info: WebTransportCloseInfo) {
        guard closeInfo == nil else { return }
        if !finishedSending {
            finishedSending = true
            try? connectStream.finish()
        }
        terminate(info)
    }

    private func terminate(_ info: WebTransportCloseInfo) {
        guard closeInfo == nil else { return }
        closeInfo = info
        for s in unclaimed { s.reset(WebTransportCodepoint.sessionGone) }
        unclaimed = []
        let callback = onClose
        onClose = nil
        onStream = nil
        onDatagram = nil
        onDrain = nil
        callback?(info)
        // What is left of the session's streams goes: unfinished sending sides reset, reading stopped.
        for s in Array(streams.values) {
            if !s.sendingEnded && s.writable { s.resetSending(WebTransportCodepoint.sessionGone) }
            if s.readable { s.stopReading(WebTransportCodepoint.sessionGone) }
        }
        if connectClosed { sessions.unregister(self) }
    }
}
