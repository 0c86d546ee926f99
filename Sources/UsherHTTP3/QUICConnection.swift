import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Recovers the connection from a C callback's user data.
@inline(__always)
private func connection(_ userData: UnsafeMutableRawPointer?) -> QUICConnection? {
    userData.map { Unmanaged<QUICConnection>.fromOpaque($0).takeUnretainedValue() }
}

/// A header field nghttp3 decoded, as text.
private func fieldText(_ name: OpaquePointer?, _ value: OpaquePointer?) -> (name: String, value: String)? {
    guard let name, let value else { return nil }
    let n = nghttp3_rcbuf_get_buf(name)
    let v = nghttp3_rcbuf_get_buf(value)
    return (String(decoding: UnsafeBufferPointer(start: n.base, count: n.len), as: UTF8.self),
            String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self))
}

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
    var conn: OpaquePointer?
    var session: gnutls_session_t?
    let scid: [UInt8]
    private var remote: SocketAddress
    var remoteAddress: SocketAddress { remote }
    let localAddress: SocketAddress
    /// The server name from the client's hello (SNI), or the one a client asked for.
    var serverName: String?
    // C code keeps pointers to these, so they live at fixed heap addresses, freed in deinit.
    private let localStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let remoteStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    let path = UnsafeMutablePointer<ngtcp2_path>.allocate(capacity: 1)
    private let connRef = UnsafeMutablePointer<ngtcp2_crypto_conn_ref>.allocate(capacity: 1)
    private var timer: Scheduled<Void>?
    /// When `timer` fires (ngtcp2's clock).
    private var timerDeadline: UInt64 = .max
    /// nghttp3, bound once the handshake is done.
    var h3Connection: NGHTTP3Connection?
    var h3: OpaquePointer? { h3Connection?.conn }
    /// HTTP/3 request streams by ID.
    var streams: [Int64: HTTP3Stream] = [:]
    /// Our control stream, whose SETTINGS frame gets the endpoint's extra settings (see ``ControlStreamSplice``).
    fileprivate var controlStream: Int64 = -1
    fileprivate var splice: ControlStreamSplice
    /// The spliced bytes, alive until the connection ends (ngtcp2 keeps pointing at stream data until it is acked).
    fileprivate var spliced: UnsafeMutableBufferPointer<UInt8>?
    /// Acknowledged bytes of the control stream nghttp3 never wrote, not yet subtracted from what we tell it.
    fileprivate var ackShift = 0
    /// Whether ngtcp2 has taken the spliced chunk, and how long nghttp3's own version of it was.
    fileprivate var splicedAccepted = false
    fileprivate var splicedOriginalLength = 0
    private var writeScheduled = false
    /// Registered with the sink to write at the end of the read batch.
    private var pendingWrite = false
    /// Inside ngtcp2_conn_read_pkt (whose callbacks may queue writes).
    private var reading = false
    private(set) var closed = false
    /// Draining (the peer closed): nothing more is sent; the connection is forgotten after 3 PTO.
    private var draining = false
    /// GOAWAY went out: close once no request stream is left.
    var shuttingDown = false
    /// The extension that takes WebTransport streams and datagrams, if any (server: from the configuration).
    var ext: (any HTTP3Extension)?
    /// This connection as extensions see it.
    private(set) lazy var handle = HTTP3ConnectionHandle(self)
    /// Streams outside nghttp3, peer streams not yet classified (their first bytes), and peer streams known to be
    /// plain HTTP/3. Used only with an extension.
    var rawStreams: [Int64: HTTP3RawStream] = [:]
    var undecided: [Int64: [UInt8]] = [:]
    var plainStreams: Set<Int64> = []
    /// The peer's control stream, read alongside nghttp3 for the settings nghttp3 does not expose.
    var peerControl = PeerControlStream()
    var peerControlStream: Int64 = -1
    /// HTTP/3 datagrams to send.
    private var outgoingDatagrams = CircularBuffer<[UInt8]>()
    /// The peer sent GOAWAY.
    var goawayReceived = false
    /// The handshake completed.
    var handshakeDone = false
    /// When the peer last sent a packet (for the endpoint's sweep of connections whose timers failed to end them).
    private(set) var lastActivity = NIODeadline.now()
    /// This side is the server (it grants the peer request streams).
    var isServer = true
    /// Request streams the peer may open (server side).
    var maxPeerBidiStreams: UInt64 = 100
    /// Packets written but not yet handed to the socket (one GSO write), their size and count. ngtcp2 writes each
    /// packet straight into `batch`, which is only ever touched on the connection's event loop (hence unchecked).
    @exclusivity(unchecked) private var batch: ByteBuffer?
    @exclusivity(unchecked) private var batchSegment = 0
    @exclusivity(unchecked) private var batchCount = 0

    init(sink: any QUICDatagramSink, local: SocketAddress, remote: SocketAddress, extraSettings: [HTTP3Setting]) {
        self.sink = sink
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

    /// The callbacks both sides share; subclasses add the handshake's first step.
    func commonCallbacks() -> ngtcp2_callbacks {
        var callbacks = ngtcp2_callbacks()
        callbacks.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb
        callbacks.encrypt = ngtcp2_crypto_encrypt_cb
        callbacks.decrypt = ngtcp2_crypto_decrypt_cb
        callbacks.hp_mask = ngtcp2_crypto_hp_mask_cb
        callbacks.update_key = ngtcp2_crypto_update_key_cb
        callbacks.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb
        callbacks.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb
        callbacks.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb
        callbacks.version_negotiation = ngtcp2_crypto_version_negotiation_cb
        callbacks.rand = { dest, len, _ in
            guard let dest else { return }
            for i in 0..<len { dest[i] = UInt8.random(in: 0...255) }
        }
        callbacks.get_new_connection_id = { _, cid, token, cidlen, userData in
            guard let cid, let token, let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let bytes = (0..<cidlen).map { _ in UInt8.random(in: 0...255) }
            bytes.withUnsafeBufferPointer { ngtcp2_cid_init(cid, $0.baseAddress, $0.count) }
            let reset = me.sink.statelessResetToken(for: bytes)
            for i in 0..<Int(NGTCP2_STATELESS_RESET_TOKENLEN) { token[i] = reset[i] }
            me.sink.register(bytes, me)
            return 0
        }
        callbacks.handshake_completed = { _, userData in
            guard let me = connection(userData) else { return 0 }
            return me.handshakeDidComplete()
        }
        callbacks.recv_stream_data = { _, flags, streamID, _, data, len, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let h3 = me.h3, let conn = me.conn else { return 0 }
            if me.ext != nil {
                return me.receiveClassified(streamID, data, len, fin: flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0)
            }
            let consumed = nghttp3_conn_read_stream(h3, streamID, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0 ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Credit goes back for framing nghttp3 consumed; body bytes are credited as the application takes
            // them (HTTP3Stream.consumed), the rest through deferred_consume.
            ngtcp2_conn_extend_max_stream_offset(conn, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        callbacks.acked_stream_data_offset = { _, streamID, _, datalen, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.acknowledged(Int(datalen))
                return 0
            }
            guard let h3 = me.h3 else { return 0 }
            var acked = datalen
            if streamID == me.controlStream && me.ackShift > 0 {
                let shift = min(UInt64(me.ackShift), acked)
                me.ackShift -= Int(shift)
                acked -= shift
            }
            return nghttp3_conn_add_ack_offset(h3, streamID, acked) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.stream_close = { _, flags, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let appError = flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0 ? code : UInt64(NGHTTP3_H3_NO_ERROR)
            if me.ext != nil {
                me.undecided[streamID] = nil
                me.plainStreams.remove(streamID)
                if let raw = me.rawStreams.removeValue(forKey: streamID) {
                    raw.didClose(code: flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0 ? code : nil)
                    raw.releaseBuffers()
                    // A stream the peer opened is done: it may open another of its kind.
                    if (streamID & 0x1 == 0) == me.isServer, let conn = me.conn {
                        if streamID & 0x2 == 0 {
                            ngtcp2_conn_extend_max_streams_bidi(conn, 1)
                        } else {
                            ngtcp2_conn_extend_max_streams_uni(conn, 1)
                        }
                    }
                    return 0
                }
            }
            if let h3 = me.h3 {
                let rv = nghttp3_conn_close_stream(h3, streamID, appError)
                if rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND { return NGTCP2_ERR_CALLBACK_FAILURE }
            }
            me.streamClosed(streamID, complete: appError == UInt64(NGHTTP3_H3_NO_ERROR))
            return 0
        }
        // The peer abandoned its side (RESET_STREAM) or wants no more of ours (STOP_SENDING; ngtcp2 answers with
        // RESET_STREAM): either way the exchange is over.
        callbacks.stream_reset = { _, streamID, _, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.peerReset(code: code)
                return 0
            }
            if me.ext != nil { me.undecided[streamID] = nil }
            return me.peerAbandoned(streamID, code: code)
        }
        callbacks.stream_stop_sending = { _, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.peerStopSending(code: code)
                return 0
            }
            return me.peerAbandoned(streamID, code: code)
        }
        callbacks.recv_datagram = { _, _, data, len, userData in
            guard let me = connection(userData), let data, let ext = me.ext else { return 0 }
            // A malformed quarter stream ID is the peer's error (RFC 9297 2.1); dropping it is allowed too.
            guard let d = HTTP3Datagram.decode(Array(UnsafeBufferPointer(start: data, count: len))) else { return 0 }
            ext.datagramReceived(d.payload, streamID: d.streamID, on: me.handle)
            return 0
        }
        callbacks.extend_max_remote_streams_bidi = { _, maxStreams, userData in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Only a server counts the client's request streams (a client granting streams to an extension does not).
            if me.isServer, let h3 = me.h3 { nghttp3_conn_set_max_client_streams_bidi(h3, maxStreams) }
            return 0
        }
        callbacks.extend_max_stream_data = { _, streamID, _, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let h3 = me.h3 { return nghttp3_conn_unblock_stream(h3, streamID) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE }
            return 0
        }
        return callbacks
    }

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
    static let priority = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
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

    private static func store(_ address: SocketAddress, into storage: UnsafeMutablePointer<sockaddr_storage>) {
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

    /// Writes soon, once for everything queued until then. Inside a read there is nothing to schedule: the
    /// read is followed by a write anyway.
    func scheduleWrite() {
        guard !writeScheduled, !closed, !reading, !pendingWrite else { return }
        writeScheduled = true
        let bound = NIOLoopBound(Unmanaged.passRetained(self), eventLoop: sink.loop)
        sink.loop.execute {
            let me = bound.value.takeRetainedValue()
            me.writeScheduled = false
            me.writePackets()
            me.sink.flush()
        }
    }

    /// Sends whatever there is: HTTP/3 stream data from nghttp3, and ngtcp2's own packets (handshake, ACKs); then
    /// arms the timer for ngtcp2's next expiry.
    func writePackets() {
        guard let conn, !closed, !draining else { return }
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        var vecs = [nghttp3_vec](repeating: nghttp3_vec(), count: 16)
        // Pacing: at most a send quantum now; ngtcp2's expiry brings us back for the rest.
        let quantum = max(1, min(ngtcp2_conn_get_send_quantum(conn) / Self.maxPacket, 64))
        var written = 0
        defer { ngtcp2_conn_update_pkt_tx_time(conn, quicTimestamp()) }
        while written < quantum {
            var streamID: Int64 = -1
            var fin: Int32 = 0
            var count = 0
            if let h3, ngtcp2_conn_get_max_data_left(conn) > 0 {
                let n = nghttp3_conn_writev_stream(h3, &streamID, &fin, &vecs, vecs.count)
                guard n >= 0 else {
                    close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
                    return
                }
                count = Int(n)
            }
            // nghttp3's first write on our control stream carries SETTINGS: send the spliced bytes instead, and
            // count only nghttp3's own towards its offset.
            var originalLength: Int?
            if streamID == controlStream && count > 0, let b = spliced, !splicedAccepted {
                // The spliced chunk did not go out last time; nghttp3 offers the same bytes again.
                originalLength = splicedOriginalLength
                vecs[0] = nghttp3_vec(base: b.baseAddress, len: b.count)
                count = 1
            } else if streamID == controlStream && !splice.done && count > 0 {
                var original: [UInt8] = []
                for v in vecs.prefix(count) where v.len > 0 { original += UnsafeBufferPointer(start: v.base, count: v.len) }
                guard let rewritten = try? splice.rewrite(original) else {
                    close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
                    return
                }
                if rewritten != original {
                    let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: rewritten.count)
                    _ = b.initialize(from: rewritten)
                    spliced = b
                    ackShift = splice.added
                    originalLength = original.count
                    splicedOriginalLength = original.count
                    vecs[0] = nghttp3_vec(base: b.baseAddress, len: b.count)
                    count = 1
                }
            }
            var accepted: ngtcp2_ssize = -1
            var flags = UInt32(NGTCP2_WRITE_STREAM_FLAG_MORE)
            if fin != 0 { flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) }
            let n = writePacket { dest, destLength in
                vecs.withUnsafeBufferPointer { v in
                    // nghttp3_vec and ngtcp2_vec have the same layout (base pointer, length).
                    v.baseAddress!.withMemoryRebound(to: ngtcp2_vec.self, capacity: max(count, 1)) { nv in
                        usher_ngtcp2_conn_writev_stream(conn, &ps.path, &pi, dest, destLength, &accepted, flags,
                                                        streamID, count > 0 ? nv : nil, count, quicTimestamp())
                    }
                }
            }
            if n < 0 {
                switch Int32(n) {
                case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                    if let h3 { nghttp3_conn_block_stream(h3, streamID) }
                    continue
                case NGTCP2_ERR_STREAM_SHUT_WR:
                    if let h3 { nghttp3_conn_shutdown_stream_write(h3, streamID) }
                    continue
                case NGTCP2_ERR_WRITE_MORE:
                    guard recordWritten(streamID, accepted, originalLength) else { return }
                    continue
                default:
                    close(sendingClose: true, error: Int32(n))
                    return
                }
            }
            guard recordWritten(streamID, accepted, originalLength) else { return }
            if n == 0 { break }
            written += 1
        }
        if ext != nil { writeExtensionData() }
        sendBatch()
        armTimer()
    }

    /// Tells nghttp3 how many of its bytes ngtcp2 took; false when the connection had to close.
    private func recordWritten(_ streamID: Int64, _ accepted: ngtcp2_ssize, _ originalLength: Int?) -> Bool {
        guard accepted >= 0 else { return true }
        guard let written = nghttp3Written(accepted, original: originalLength),
              h3.map({ nghttp3_conn_add_write_offset($0, streamID, written) == 0 }) ?? true else {
            close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
            return false
        }
        return true
    }

    /// Has `write` put the next packet straight into the GSO batch (no copy), then queues it. `write` gets the
    /// destination and its room and returns what ngtcp2 returned: a packet's length, 0, or an error. ngtcp2 may
    /// leave a packet unfinished (`NGTCP2_ERR_WRITE_MORE`) and finish it in the next call, which must therefore get
    /// the same destination: nothing moves the batch between the two, and it always has room for a whole packet.
    private func writePacket(_ write: (UnsafeMutablePointer<UInt8>, Int) -> ngtcp2_ssize) -> ngtcp2_ssize {
        if batch == nil {
            batch = sink.allocator.buffer(capacity: Self.useGSO ? Self.maxBatchBytes : Self.maxPacket)
        }
        var n: ngtcp2_ssize = 0
        batch!.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.maxPacket) { dest in
            n = write(dest.baseAddress!.assumingMemoryBound(to: UInt8.self), Self.maxPacket)
            return n > 0 ? Int(n) : 0
        }
        if n > 0 { queued(Int(n)) }
        return n
    }

    /// A packet of `length` bytes was just written at the end of ``batch``. Packets of one size go out together as
    /// one GSO write (the kernel cuts them apart): a write per packet is most of the cost of sending otherwise. A
    /// shorter packet ends a batch; a longer one starts the next.
    private func queued(_ length: Int) {
        if batchCount > 0 && length > batchSegment {
            // Rare (sizes change at the ends of bursts): the batch goes without it, and it starts the next one.
            let end = batch!.writerIndex
            let last = batch!.getSlice(at: end - length, length: length)!
            batch!.moveWriterIndex(to: end - length)
            sendBatch()
            var next = sink.allocator.buffer(capacity: Self.useGSO ? Self.maxBatchBytes : Self.maxPacket)
            next.writeImmutableBuffer(last)
            batch = next
        }
        if batchCount == 0 { batchSegment = length }
        batchCount += 1
        if length < batchSegment || !Self.useGSO || batch!.writerIndex + Self.maxPacket > Self.maxBatchBytes
            || batchCount == Self.maxSegments {
            sendBatch()
        }
    }

    /// Sends the queued packets (flushed by the caller or at the end of the read batch).
    func sendBatch() {
        guard let b = batch else { return }
        // A batch with no packet is dropped unsent (an idle connection keeps no buffer).
        if batchCount > 0 { sink.send(b, segmentSize: batchCount > 1 ? batchSegment : nil, to: remote) }
        batch = nil
        batchCount = 0
    }

    /// Whether the kernel cuts a write into datagrams for us (Linux UDP GSO).
    static let useGSO = System.supportsUDPSegmentationOffload
    /// Packets per GSO write (the kernel's limit).
    static let maxSegments = 64
    /// The most a GSO write may carry: one UDP datagram's worth before the kernel cuts it.
    static let maxBatchBytes = 65_000
    /// The largest packet written (ngtcp2's default `max_tx_udp_payload_size`).
    static let maxPacket = 1452

    /// How many of nghttp3's bytes ngtcp2 took: all of them when the whole spliced SETTINGS chunk went out; a
    /// partly accepted spliced chunk cannot be mapped back (`nil`).
    private func nghttp3Written(_ accepted: ngtcp2_ssize, original: Int?) -> Int? {
        guard let original else { return Int(accepted) }
        guard Int(accepted) == spliced?.count else { return nil }
        splicedAccepted = true
        return original
    }

    /// After the handshake: our control and QPACK streams, and nghttp3 reading the peer's.
    func startHTTP3(server: Bool) -> Int32 {
        guard let conn else { return NGTCP2_ERR_CALLBACK_FAILURE }
        var callbacks = nghttp3_callbacks()
        callbacks.begin_headers = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if let stream = me.streams[streamID] {
                // A client sees interim (1xx) heads before the final one.
                stream.fields = []
            } else {
                me.streams[streamID] = HTTP3Stream(id: streamID, connection: me)
            }
            return 0
        }
        callbacks.recv_header = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID], let field = fieldText(name, value) else { return 0 }
            stream.fields.append(field)
            return 0
        }
        callbacks.end_headers = { _, streamID, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID] else { return 0 }
            me.headersReceived(stream)
            return 0
        }
        callbacks.recv_trailer = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID], let field = fieldText(name, value) else { return 0 }
            stream.trailers.append(field)
            return 0
        }
        callbacks.recv_data = { _, streamID, data, len, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = me.streams[streamID], let onData = stream.onData, let data else {
                // Nobody reads this body: credit it back at once.
                me.extendCredit(stream: streamID, by: len)
                return 0
            }
            stream.uncredited += len
            onData(ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: len)))
            return 0
        }
        callbacks.end_stream = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.requestDidEnd()
            return 0
        }
        callbacks.deferred_consume = { _, streamID, consumed, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.extendCredit(stream: streamID, by: consumed)
            return 0
        }
        callbacks.acked_stream_data = { _, streamID, datalen, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.acknowledged(Int(datalen))
            return 0
        }
        callbacks.stream_close = { _, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streamClosed(streamID, complete: code == UInt64(NGHTTP3_H3_NO_ERROR))
            return 0
        }
        callbacks.stop_sending = { _, streamID, code, userData, _ in
            guard let me = connection(userData), let conn = me.conn else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return ngtcp2_conn_shutdown_stream_read(conn, streamID, code) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
        }
        callbacks.shutdown = { _, _, userData in
            // The peer sent GOAWAY: no new requests on this connection.
            connection(userData)?.goawayReceived = true
            return 0
        }
        callbacks.reset_stream = { _, streamID, code, userData, _ in
            guard let me = connection(userData), let conn = me.conn else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return ngtcp2_conn_shutdown_stream_write(conn, streamID, code) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
        }
        var control: Int64 = -1, encoder: Int64 = -1, decoder: Int64 = -1
        do {
            let h3 = try NGHTTP3Connection(server: server, settings: http3Settings(), callbacks: callbacks, userData: userData)
            h3Connection = h3
            if server { nghttp3_conn_set_max_client_streams_bidi(h3.conn, maxPeerBidiStreams) }
            guard ngtcp2_conn_open_uni_stream(conn, &control, nil) == 0,
                  ngtcp2_conn_open_uni_stream(conn, &encoder, nil) == 0,
                  ngtcp2_conn_open_uni_stream(conn, &decoder, nil) == 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            try h3.bindLocalStreams(control: control, qpackEncoder: encoder, qpackDecoder: decoder)
        } catch {
            return NGTCP2_ERR_CALLBACK_FAILURE
        }
        controlStream = control
        if shuttingDown { beginShutdown() }
        return 0
    }

    func peerAbandoned(_ streamID: Int64, code: UInt64) -> Int32 {
        if let h3, nghttp3_conn_shutdown_stream_read(h3, streamID) != 0 { return NGTCP2_ERR_CALLBACK_FAILURE }
        streams[streamID]?.didClose(complete: false)
        return 0
    }

    /// A TLS session for either side with QUIC's priority, hooked up to ngtcp2's crypto callbacks.
    func makeSession(server: Bool) throws -> gnutls_session_t {
        var s: gnutls_session_t?
        let flags = UInt32(server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_ENABLE_EARLY_DATA.rawValue | GNUTLS_NO_END_OF_EARLY_DATA.rawValue
        guard gnutls_init(&s, flags) == 0, let s else { throw QUICError("gnutls_init") }
        session = s
        let configured = server ? ngtcp2_crypto_gnutls_configure_server_session(s) : ngtcp2_crypto_gnutls_configure_client_session(s)
        guard let cache = Self.priorityCache, gnutls_priority_set(s, cache) == 0, configured == 0 else {
            throw QUICError("configuring the TLS session")
        }
        return s
    }

    // MARK: - Extension streams and datagrams

    /// Stream data when an extension is registered: a peer stream's first varint decides whether nghttp3 or the
    /// extension gets it; bytes wait here until there are enough to tell.
    func receiveClassified(_ id: Int64, _ data: UnsafePointer<UInt8>?, _ len: Int, fin: Bool) -> Int32 {
        guard let h3, let conn else { return 0 }
        let bytes = UnsafeBufferPointer(start: data, count: len)
        if let raw = rawStreams[id] {
            raw.receive(ByteBuffer(bytes: bytes), fin: fin)
            return 0
        }
        let peerInitiated = (id & 0x1 == 0) == isServer
        if !peerInitiated || plainStreams.contains(id) || streams[id] != nil {
            if id == peerControlStream { feedPeerControl(Array(bytes)) }
            let consumed = nghttp3_conn_read_stream(h3, id, data, len, fin ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            ngtcp2_conn_extend_max_stream_offset(conn, id, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        let first = (undecided[id] ?? []) + Array(bytes)
        let bidirectional = id & 0x2 == 0
        let (kind, headerLength) = PeerStreamClassifier.classify(first, bidirectional: bidirectional)
        switch kind {
        case .undecided:
            if fin { return 0 }
            undecided[id] = first
            return 0
        case .http3:
            undecided[id] = nil
            plainStreams.insert(id)
            if !bidirectional, QUICVarint.decode(first)?.value == HTTP3Codepoint.controlStream {
                peerControlStream = id
                feedPeerControl(first)
            }
            let consumed = first.withUnsafeBufferPointer { nghttp3_conn_read_stream(h3, id, $0.baseAddress, $0.count, fin ? 1 : 0) }
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            ngtcp2_conn_extend_max_stream_offset(conn, id, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        case .webTransportBidi, .webTransportUni:
            undecided[id] = nil
            let raw = HTTP3RawStream(id: id, connection: self)
            rawStreams[id] = raw
            // The preamble is ours to credit; the rest is credited as the extension consumes it.
            extendCredit(stream: id, by: headerLength)
            ext?.streamOpened(raw, kind: kind)
            raw.receive(ByteBuffer(bytes: first[headerLength...]), fin: fin)
            return 0
        }
    }

    /// Reads the peer's control stream beside nghttp3 (which checks it); tells the extension when SETTINGS arrive.
    private func feedPeerControl(_ bytes: [UInt8]) {
        let had = peerControl.settings != nil
        try? peerControl.receive(bytes)
        if !had, peerControl.settings != nil { ext?.settingsReceived(on: handle) }
    }

    func queueDatagram(_ datagram: [UInt8]) -> Bool {
        guard let conn, !closed else { return false }
        let max = ngtcp2_conn_get_remote_transport_params(conn)?.pointee.max_datagram_frame_size ?? 0
        // The frame adds a type byte and a length.
        guard UInt64(datagram.count + 4) <= max, datagram.count + 64 < Self.maxPacket else { return false }
        outgoingDatagrams.append(datagram)
        scheduleWrite()
        return true
    }

    func openRawStream(bidirectional: Bool, preamble: [UInt8]) throws -> HTTP3RawStream {
        guard let conn, !closed else { throw HTTP3StreamClosedError() }
        var id: Int64 = -1
        let rv = bidirectional ? ngtcp2_conn_open_bidi_stream(conn, &id, nil) : ngtcp2_conn_open_uni_stream(conn, &id, nil)
        if rv == NGTCP2_ERR_STREAM_ID_BLOCKED { throw HTTP3StreamsExhaustedError() }
        guard rv == 0 else { throw QUICError("opening a stream: \(String(cString: ngtcp2_strerror(rv)))") }
        let raw = HTTP3RawStream(id: id, connection: self)
        rawStreams[id] = raw
        try raw.enqueuePreamble(preamble)
        return raw
    }

    /// Datagrams, then extension streams' bytes, each into packets of their own.
    private func writeExtensionData() {
        guard let conn else { return }
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        while let d = outgoingDatagrams.first {
            var accepted: Int32 = 0
            let n = writePacket { dest, destLength in
                d.withUnsafeBufferPointer { db in
                    var v = ngtcp2_vec(base: UnsafeMutablePointer(mutating: db.baseAddress), len: db.count)
                    return usher_ngtcp2_conn_writev_datagram(conn, &ps.path, &pi, dest, destLength, &accepted, 0, 0,
                                                            &v, 1, quicTimestamp())
                }
            }
            if n < 0 {
                // Too large or not allowed: dropped, as datagrams may be.
                outgoingDatagrams.removeFirst()
                continue
            }
            if n == 0 { break }
            if accepted != 0 { outgoingDatagrams.removeFirst() }
        }
        for (id, raw) in rawStreams where raw.hasPendingWrite {
            while raw.hasPendingWrite {
                let (buffer, fin) = raw.nextWrite()
                var accepted: ngtcp2_ssize = -1
                let flags = fin ? UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) : 0
                let n: ngtcp2_ssize = writePacket { dest, destLength in
                    if let buffer {
                        return buffer.withUnsafeReadableBytes { r in
                            var v = ngtcp2_vec(base: UnsafeMutablePointer(mutating: r.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                                               len: r.count)
                            return usher_ngtcp2_conn_writev_stream(conn, &ps.path, &pi, dest, destLength, &accepted, flags, id,
                                                                   &v, 1, quicTimestamp())
                        }
                    }
                    return usher_ngtcp2_conn_writev_stream(conn, &ps.path, &pi, dest, destLength, &accepted, flags, id,
                                                           nil, 0, quicTimestamp())
                }
                if n < 0 {
                    switch Int32(n) {
                    case NGTCP2_ERR_STREAM_DATA_BLOCKED: break
                    case NGTCP2_ERR_STREAM_SHUT_WR: raw.sendingWasShut()
                    case NGTCP2_ERR_STREAM_NOT_FOUND: raw.didClose(code: nil)
                    default:
                        close(sendingClose: true, error: Int32(n))
                        return
                    }
                    break
                }
                if accepted >= 0 { raw.wrote(Int(accepted), fin: fin && Int(accepted) == (buffer?.readableBytes ?? 0)) }
                if n == 0 { return }
            }
        }
    }

    // MARK: - Streams

    func streamClosed(_ streamID: Int64, complete: Bool) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.didClose(complete: complete)
        stream.releaseBuffers()
        // A client-initiated bidirectional stream ended: the client may open another.
        if isServer, streamID & 0x3 == 0, let conn { ngtcp2_conn_extend_max_streams_bidi(conn, 1) }
        if shuttingDown && streams.isEmpty { finishShutdown() }
    }

    func extendConnectionCredit(by count: Int) {
        guard let conn, !closed else { return }
        ngtcp2_conn_extend_max_offset(conn, UInt64(count))
        scheduleWrite()
    }

    func extendCredit(stream: Int64, by count: Int) {
        guard let conn, !closed else { return }
        ngtcp2_conn_extend_max_stream_offset(conn, stream, UInt64(count))
        ngtcp2_conn_extend_max_offset(conn, UInt64(count))
        scheduleWrite()
    }

    func submitInfo(stream: Int64, fields: [(String, String)]) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        let rv = withFieldVector(fields) { nghttp3_conn_submit_info(h3, stream, $0, $1) }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    /// nghttp3 pulls a stream's body through this: from the stream's queued buffers.
    private static let bodyReader = nghttp3_data_reader(read_data: { _, streamID, vec, count, flags, userData, _ in
        guard let me = connection(userData), let vec, let flags, let stream = me.streams[streamID] else {
            return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE)
        }
        return nghttp3_ssize(stream.provide(vec, count: count, flags: flags))
    })

    func submitResponse(stream: Int64, fields: [(String, String)], withBody: Bool) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        var reader = Self.bodyReader
        let rv = withFieldVector(fields) { nva, n in
            withBody ? nghttp3_conn_submit_response(h3, stream, nva, n, &reader) : nghttp3_conn_submit_response(h3, stream, nva, n, nil)
        }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    func submitRequest(stream: Int64, fields: [(String, String)], withBody: Bool) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        var reader = Self.bodyReader
        let rv = withFieldVector(fields) { nva, n in
            withBody ? nghttp3_conn_submit_request(h3, stream, nva, n, &reader, nil)
                : nghttp3_conn_submit_request(h3, stream, nva, n, nil, nil)
        }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    /// Client: a new request stream, or ``HTTP3StreamsExhaustedError`` when the server allows no more now.
    func openRequestStream() throws -> HTTP3Stream {
        guard let conn, h3 != nil, !closed, !goawayReceived else { throw HTTP3StreamClosedError() }
        var id: Int64 = -1
        let rv = ngtcp2_conn_open_bidi_stream(conn, &id, nil)
        if rv == NGTCP2_ERR_STREAM_ID_BLOCKED { throw HTTP3StreamsExhaustedError() }
        guard rv == 0 else { throw QUICError("opening a stream: \(String(cString: ngtcp2_strerror(rv)))") }
        let stream = HTTP3Stream(id: id, connection: self)
        streams[id] = stream
        return stream
    }

    func submitTrailers(stream: Int64, fields: [(String, String)]) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        let rv = withFieldVector(fields) { nghttp3_conn_submit_trailers(h3, stream, $0, $1) }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    func resumeStream(_ id: Int64) {
        guard let h3 else { return }
        nghttp3_conn_resume_stream(h3, id)
        scheduleWrite()
    }

    func resetStream(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream(conn, id, code)
        scheduleWrite()
    }

    func resetStreamWrite(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream_write(conn, id, code)
        scheduleWrite()
    }

    func stopReading(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream_read(conn, id, code)
        scheduleWrite()
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

    private func finishShutdown() {
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
        return "handshake_done=\(handshakeDone) closed=\(closed) draining=\(draining) idle_s=\(idle) timer=\(timer != nil) "
            + "streams=\(streams.count) expiry_in_s=\(conn.map { Double(Int64(bitPattern: ngtcp2_conn_get_expiry($0) &- quicTimestamp())) / 1e9 } ?? -1)"
    }

    private func startDraining() {
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

    private func armTimer() {
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

extension DatagramBootstrap {
    /// Socket options for QUIC: big buffers, and with `coalesced` the kernel's receive offload (GRO), which hands
    /// over runs of datagrams from one sender as one read (``forEachDatagram(_:_:)`` cuts them apart again).
    func quicSocketOptions(coalesced: Bool) -> DatagramBootstrap {
        let gro = coalesced && System.supportsUDPReceiveOffload
        var b = self
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .channelOption(.maxMessagesPerRead, value: 64)
        if gro {
            b = b.channelOption(.datagramReceiveOffload, value: true)
                .channelOption(.datagramReceiveSegmentSize, value: true)
                // Sized by what arrives: small datagrams (request/response traffic) do not get 64 KiB each.
                .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 16384, maximum: 65536))
        } else {
            b = b.channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048))
        }
        return b
    }
}

/// Calls `body` with each datagram of `envelope`: one, or several of the reported segment size after GRO.
func forEachDatagram(_ envelope: AddressedEnvelope<ByteBuffer>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    envelope.data.withUnsafeReadableBytes { raw in
        let all = raw.bindMemory(to: UInt8.self)
        guard let size = envelope.metadata?.segmentSize, size > 0, size < all.count else {
            body(all)
            return
        }
        var offset = 0
        while offset < all.count {
            let end = min(offset + size, all.count)
            body(UnsafeBufferPointer(rebasing: all[offset..<end]))
            offset = end
        }
    }
}

/// Calls `body` with `fields` as an `nghttp3_nv` array (names lowercased by the caller); the bytes live for the
/// call only, which is enough: nghttp3 encodes them before returning.
func withFieldVector<R>(_ fields: [(String, String)], _ body: (UnsafePointer<nghttp3_nv>, Int) -> R) -> R {
    var bytes: [UInt8] = []
    var spans: [(Int, Int, Int, Int)] = []
    for (name, value) in fields {
        let n = bytes.count
        bytes += name.utf8
        let v = bytes.count
        bytes += value.utf8
        spans.append((n, name.utf8.count, v, value.utf8.count))
    }
    return bytes.withUnsafeMutableBufferPointer { b in
        let base = b.baseAddress ?? UnsafeMutablePointer(bitPattern: 1)!
        let nva = spans.map { s in
            nghttp3_nv(name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3, flags: UInt8(NGHTTP3_NV_FLAG_NONE))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}
