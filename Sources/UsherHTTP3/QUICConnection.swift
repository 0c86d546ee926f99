import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Where a QUIC connection's packets go, and who routes packets to it: a server endpoint's shared socket, or a
/// client connection's own. Everything happens on `loop`.
protocol QUICDatagramSink: AnyObject {
    var loop: any EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    /// Sends one datagram, or several of `segmentSize` bytes each (the last may be shorter) through GSO.
    func send(_ buffer: ByteBuffer, segmentSize: Int?, to remote: SocketAddress)
    func flush()
    /// A new connection ID of ours: packets carrying it belong to `conn`.
    func register(_ cid: [UInt8], _ conn: QUICConnection)
    /// The connection is closed.
    func forget(_ conn: QUICConnection)
    /// Calls ``QUICConnection/readsDone()`` on `conn` once the current batch of reads is processed.
    func writeAfterReads(_ conn: QUICConnection)
    /// The stateless reset token announced with connection ID `cid`.
    func statelessResetToken(for cid: [UInt8]) -> [UInt8]
}

/// What server and client QUIC connections share: ngtcp2 state and its GnuTLS session, nghttp3 once the
/// handshake is done, the HTTP/3 streams, the packet write loop and the one timer ngtcp2 asks for. Subclasses
/// create the ngtcp2 connection and the TLS session, and say what a received header block means.
class QUICConnection {
    unowned let sink: any QUICDatagramSink
    /// The sink's loop, held directly: C callbacks check it on every call, which through the unowned `sink` would
    /// cost a reference-count round trip each time.
    let loop: any EventLoop
    var conn: OpaquePointer?
    var session: gnutls_session_t?
    let scid: [UInt8]
    var remote: SocketAddress
    var remoteAddress: SocketAddress { remote }
    let localAddress: SocketAddress
    /// The server name from the client's hello (SNI), or the one a client asked for.
    var serverName: String?
    // C code keeps pointers to these, so they live at fixed heap addresses, freed in deinit.
    let localStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    let remoteStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    let path = UnsafeMutablePointer<ngtcp2_path>.allocate(capacity: 1)
    let connRef = UnsafeMutablePointer<ngtcp2_crypto_conn_ref>.allocate(capacity: 1)
    var timer: Scheduled<Void>?
    /// When `timer` fires (ngtcp2's clock).
    var timerDeadline: UInt64 = .max
    /// nghttp3, bound once the handshake is done.
    var h3Connection: NGHTTP3Connection?
    var h3: OpaquePointer? { h3Connection?.conn }
    /// HTTP/3 request streams by ID.
    var streams: [Int64: HTTP3Stream] = [:]
    /// Our control stream, whose SETTINGS frame gets the endpoint's extra settings (see ``ControlStreamSplice``).
    var controlStream: Int64 = -1
    var splice: ControlStreamSplice
    /// The spliced bytes, alive until the connection ends (ngtcp2 keeps pointing at stream data until it is acked).
    var spliced: UnsafeMutableBufferPointer<UInt8>?
    /// Acknowledged bytes of the control stream nghttp3 never wrote, not yet subtracted from what we tell it.
    var ackShift = 0
    /// Whether ngtcp2 has taken the spliced chunk, and how long nghttp3's own version of it was.
    var splicedAccepted = false
    var splicedOriginalLength = 0
    var writeScheduled = false
    /// Registered with the sink to write at the end of the read batch.
    var pendingWrite = false
    /// Inside ngtcp2_conn_read_pkt (whose callbacks may queue writes).
    var reading = false
    var closed = false
    /// Draining (the peer closed): nothing more is sent; the connection is forgotten after 3 PTO.
    var draining = false
    /// GOAWAY went out: close once no request stream is left.
    var shuttingDown = false
    /// The extension that takes WebTransport streams and datagrams, if any (server: from the configuration).
    var ext: (any HTTP3Extension)?
    /// This connection as extensions see it.
    lazy var handle = HTTP3ConnectionHandle(self)
    /// Streams outside nghttp3, peer streams not yet classified (their first bytes), and peer streams known to be
    /// plain HTTP/3. Used only with an extension.
    var rawStreams: [Int64: HTTP3RawStream] = [:]
    var undecided: [Int64: [UInt8]] = [:]
    var plainStreams: Set<Int64> = []
    /// The peer's control stream, read alongside nghttp3 for the settings nghttp3 does not expose.
    var peerControl = PeerControlStream()
    var peerControlStream: Int64 = -1
    /// HTTP/3 datagrams to send.
    var outgoingDatagrams = CircularBuffer<[UInt8]>()
    /// The peer sent GOAWAY.
    var goawayReceived = false
    /// The handshake completed.
    var handshakeDone = false
    /// When the peer last sent a packet (for the endpoint's sweep of connections whose timers failed to end them).
    var lastActivity = NIODeadline.now()
    /// This side is the server (it grants the peer request streams).
    var isServer = true
    /// Request streams the peer may open (server side).
    var maxPeerBidiStreams: UInt64 = 100
    /// Packets written but not yet handed to the socket (one GSO write), their size and count. ngtcp2 writes each
    /// packet straight into `batch`, which is only ever touched on the connection's event loop (hence unchecked).
    @exclusivity(unchecked) var batch: ByteBuffer?
    @exclusivity(unchecked) var batchSegment = 0
    @exclusivity(unchecked) var batchCount = 0

    init(sink: any QUICDatagramSink, local: SocketAddress, remote: SocketAddress, extraSettings: [HTTP3Setting]) {
        self.sink = sink
        self.loop = sink.loop
        self.remote = remote
        self.localAddress = local
        splice = ControlStreamSplice(extra: extraSettings)
        scid = (0..<18).map { _ in UInt8.random(in: 0...255) }
        localStorage.initialize(to: sockaddr_storage())
        remoteStorage.initialize(to: sockaddr_storage())
        path.initialize(to: ngtcp2_path())
        connRef.initialize(to: ngtcp2_crypto_conn_ref())
        Self.store(local, into: localStorage)
        Self.store(remote, into: remoteStorage)
        let localLen = local.protocol == .inet6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
        let remoteLen = remote.protocol == .inet6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
        path.pointee.local.addr = UnsafeMutableRawPointer(localStorage).assumingMemoryBound(to: sockaddr.self)
        path.pointee.local.addrlen = ngtcp2_socklen(localLen)
        path.pointee.remote.addr = UnsafeMutableRawPointer(remoteStorage).assumingMemoryBound(to: sockaddr.self)
        path.pointee.remote.addrlen = ngtcp2_socklen(remoteLen)
    }

    /// This connection as C user data (unretained: the sink's table keeps it alive).
    var userData: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// Hands the TLS session to ngtcp2 with ALPN `h3`; ngtcp2 finds this connection through `connRef`.
    func attach(_ s: gnutls_session_t) throws {
        var alpn = Array("h3".utf8)
        let alpnRV = alpn.withUnsafeMutableBufferPointer { b -> Int32 in
            var datum = gnutls_datum_t(data: b.baseAddress, size: UInt32(b.count))
            return gnutls_alpn_set_protocols(s, &datum, 1, UInt32(GNUTLS_ALPN_MANDATORY.rawValue))
        }
        guard alpnRV == 0 else { throw QUICError("setting ALPN") }
        connRef.pointee.get_conn = { ref in
            guard let ref, let user = ref.pointee.user_data else { return nil }
            return Unmanaged<QUICConnection>.fromOpaque(user).takeUnretainedValue().conn
        }
        connRef.pointee.user_data = userData
        gnutls_session_set_ptr(s, UnsafeMutableRawPointer(connRef))
        ngtcp2_conn_set_tls_native_handle(conn, UnsafeMutableRawPointer(s))
    }

    /// The GnuTLS priority both sides use: TLS 1.3 only, QUIC's cipher suites and groups.
    static let priority =
        "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
        + "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1"
    /// ``priority`` parsed once and shared by every session (GnuTLS counts a cache's users atomically). A cache per
    /// session, as `gnutls_priority_set_direct` makes, cost each connection ~8 KB and a parse.
    nonisolated(unsafe) static let priorityCache: gnutls_priority_t? = {
        var cache: gnutls_priority_t?
        return gnutls_priority_init(&cache, priority, nil) == 0 ? cache : nil
    }()

    /// The handshake is done (server: confirmed). Returns 0 or an ngtcp2 error.
    func handshakeDidComplete() -> Int32 { 0 }

    /// A header block on `stream` is complete (server: a request; client: a response head).
    func headersReceived(_ stream: HTTP3Stream) {}

    /// The nghttp3 settings this side uses.
    func http3Settings() -> HTTP3ConnectionSettings {
        // No QPACK dynamic table yet: every field is sent literally or from the static table.
        var settings = HTTP3ConnectionSettings()
        settings.qpackMaxTableCapacity = 0
        settings.qpackBlockedStreams = 0
        return settings
    }

    deinit {
        timer?.cancel()
        releaseProtocolState()
        spliced?.deallocate()
        localStorage.deallocate()
        remoteStorage.deallocate()
        path.deallocate()
        connRef.deallocate()
    }

    /// Frees nghttp3, ngtcp2 and the TLS session, in that order. Subclasses call it before releasing the
    /// credentials the session uses.
    func releaseProtocolState() {
        h3Connection = nil
        if let c = conn { ngtcp2_conn_del(c) }
        conn = nil
        if let s = session { gnutls_deinit(s) }
        session = nil
    }

    static func store(_ address: SocketAddress, into storage: UnsafeMutablePointer<sockaddr_storage>) {
        address.withSockAddr { sa, len in
            UnsafeMutableRawPointer(storage).copyMemory(from: sa, byteCount: len)
        }
    }

    func read(_ bytes: UnsafeBufferPointer<UInt8>, from remote: SocketAddress) {
        guard let conn, !closed, !draining else { return }
        lastActivity = .now()
        var pi = ngtcp2_pkt_info()
        reading = true
        let rv = usher_ngtcp2_conn_read_pkt(conn, path, &pi, bytes.baseAddress, bytes.count, quicTimestamp())
        reading = false
        switch rv {
        case 0:
            // Answer once per read batch (acknowledgements for several packets at once).
            if !pendingWrite {
                pendingWrite = true
                sink.writeAfterReads(self)
            }
        case NGTCP2_ERR_DRAINING:
            startDraining()
        case NGTCP2_ERR_DROP_CONN:
            close(sendingClose: false)
        default:
            close(sendingClose: true, error: rv)
        }
    }

    /// The read batch is over: write what the packets called for.
    func readsDone() {
        pendingWrite = false
        writePackets()
    }

    /// A TLS session for either side with QUIC's priority, hooked up to ngtcp2's crypto callbacks.
    func makeSession(server: Bool) throws -> gnutls_session_t {
        var s: gnutls_session_t?
        let flags =
            UInt32(server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_ENABLE_EARLY_DATA.rawValue
            | GNUTLS_NO_END_OF_EARLY_DATA.rawValue
        guard gnutls_init(&s, flags) == 0, let s else { throw QUICError("gnutls_init") }
        session = s
        let configured =
            server ? ngtcp2_crypto_gnutls_configure_server_session(s) : ngtcp2_crypto_gnutls_configure_client_session(s)
        guard let cache = Self.priorityCache, gnutls_priority_set(s, cache) == 0, configured == 0 else {
            throw QUICError("configuring the TLS session")
        }
        return s
    }

    // MARK: - Closing

    /// GOAWAY: no new requests; those in flight finish, then the connection closes.
    func beginShutdown() {
        shuttingDown = true
        guard let h3 else {
            // Still handshaking: nothing to finish.
            close(sendingClose: true)
            return
        }
        nghttp3_conn_submit_shutdown_notice(h3)
        nghttp3_conn_shutdown(h3)
        scheduleWrite()
        if streams.isEmpty { finishShutdown() }
    }

    func finishShutdown() {
        // Let the GOAWAY and the last responses go out before CONNECTION_CLOSE.
        let bound = NIOLoopBound(self, eventLoop: sink.loop)
        writePackets()
        sink.loop.scheduleTask(in: .milliseconds(50)) {
            bound.value.close(sendingClose: true)
        }
    }

    /// What ``QUICServerEndpoint/connectionSummaries`` shows of this connection.
    func summary(now: NIODeadline) -> String {
        let idle = Double((now - lastActivity).nanoseconds) / 1e9
        return
            "handshake_done=\(handshakeDone) closed=\(closed) draining=\(draining) idle_s=\(idle) timer=\(timer != nil) "
            + "streams=\(streams.count) expiry_in_s=\(conn.map { Double(Int64(bitPattern: ngtcp2_conn_get_expiry($0) &- quicTimestamp())) / 1e9 } ?? -1)"
    }

    func startDraining() {
        draining = true
        timer?.cancel()
        let pto = conn.map { ngtcp2_conn_get_pto($0) } ?? 1_000_000_000
        let bound = NIOLoopBound(self, eventLoop: sink.loop)
        timer = sink.loop.scheduleTask(in: .nanoseconds(Int64(3 * pto))) { bound.value.close(sendingClose: false) }
    }

    /// Ends the connection: with a CONNECTION_CLOSE (NO_ERROR, or a transport error for `error`) unless the peer
    /// is gone or the handshake never produced keys; streams still open learn they are gone.
    func close(sendingClose: Bool, error: Int32 = 0) {
        guard !closed else { return }
        if sendingClose, let conn, !draining {
            var ccerr = ngtcp2_connection_close_error()
            if error != 0 {
                ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, error, nil, 0)
            } else if h3 != nil {
                ngtcp2_connection_close_error_set_application_error(&ccerr, UInt64(NGHTTP3_H3_NO_ERROR), nil, 0)
            } else {
                ngtcp2_connection_close_error_default(&ccerr)
            }
            var pi = ngtcp2_pkt_info()
            let n = writePacket {
                usher_ngtcp2_conn_write_connection_close(conn, nil, &pi, $0, $1, &ccerr, quicTimestamp())
            }
            if n > 0 {
                sendBatch()
                sink.flush()
            }
        }
        closed = true
        timer?.cancel()
        let open = streams
        streams = [:]
        for stream in open.values { stream.didClose(complete: false) }
        let raw = rawStreams
        rawStreams = [:]
        for r in raw.values { r.didClose(code: nil) }
        ext?.connectionClosed(handle)
        sink.forget(self)
    }

    func armTimer() {
        guard let conn else { return }
        let expiry = ngtcp2_conn_get_expiry(conn)
        guard expiry != UInt64.max else {
            timer?.cancel()
            timer = nil
            return
        }
        // A timer due no later is set already: when it fires, ngtcp2 says what is due and it is set again. Saves
        // rescheduling on every write.
        if timer != nil && timerDeadline <= expiry { return }
        timer?.cancel()
        timerDeadline = expiry
        let now = quicTimestamp()
        let wait = expiry > now ? Int64(expiry - now) : 0
        // Strong: a timer already due in this loop tick runs even if cancelled after the connection is gone.
        let bound = NIOLoopBound(self, eventLoop: sink.loop)
        timer = sink.loop.scheduleTask(in: .nanoseconds(wait)) {
            let c = bound.value
            c.timer = nil
            guard let conn = c.conn, !c.closed else { return }
            let rv = ngtcp2_conn_handle_expiry(conn, quicTimestamp())
            if rv == NGTCP2_ERR_IDLE_CLOSE {
                c.close(sendingClose: false)
            } else if rv != 0 {
                c.close(sendingClose: true, error: rv)
            } else {
                c.writePackets()
                c.sink.flush()
            }
        }
    }
}
