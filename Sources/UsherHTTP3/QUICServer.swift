import CNghttp3
import CNgtcp2
import Foundation
public import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// TLS credentials for QUIC (GnuTLS, which Debian's ngtcp2 crypto backend uses), from PEM files.
public final class QUICCredentials: @unchecked Sendable {
    // @unchecked: immutable after init; GnuTLS credentials are safe to share between sessions.
    let cred: gnutls_certificate_credentials_t

    public init(certificateFile: String, keyFile: String) throws {
        var c: gnutls_certificate_credentials_t?
        guard gnutls_certificate_allocate_credentials(&c) == 0, let c else { throw QUICError("allocating credentials") }
        let rv = gnutls_certificate_set_x509_key_file(c, certificateFile, keyFile, GNUTLS_X509_FMT_PEM)
        guard rv == 0 else {
            gnutls_certificate_free_credentials(c)
            throw QUICError("loading \(certificateFile) and \(keyFile): \(String(cString: gnutls_strerror(rv)))")
        }
        cred = c
    }

    deinit { gnutls_certificate_free_credentials(cred) }
}

public struct QUICError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Nanoseconds on the monotonic clock, ngtcp2's time base.
func quicTimestamp() -> ngtcp2_tstamp {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Answers one HTTP/3 request: method and path in, status, header fields and body out. A stand-in for the handler
/// chain until requests are bridged into it.
public typealias HTTP3Responder = @Sendable (_ method: String, _ path: String) -> (status: Int, headers: [(String, String)], body: [UInt8])

/// A QUIC server endpoint on one UDP socket: routes datagrams to connections by destination connection ID,
/// completes QUIC v1 handshakes (TLS 1.3 with ALPN `h3`) and, when given a responder, answers HTTP/3 requests
/// through nghttp3. Everything runs on the socket's event loop.
public final class QUICServerEndpoint: @unchecked Sendable {
    // @unchecked: all state is touched only on `loop`.
    let credentials: QUICCredentials
    let loop: any EventLoop
    let responder: HTTP3Responder?
    /// SETTINGS to add to nghttp3's (e.g. H3_DATAGRAM and WebTransport's); none leaves the wire untouched.
    let extraSettings: [HTTP3Setting]
    private var channel: (any Channel)?
    private var connections: [[UInt8]: QUICServerConnection] = [:]
    /// Handshakes completed so far.
    public private(set) var handshakesCompleted = 0

    public init(credentials: QUICCredentials, loop: any EventLoop, extraSettings: [HTTP3Setting] = [],
                responder: HTTP3Responder? = nil) {
        self.credentials = credentials
        self.loop = loop
        self.extraSettings = extraSettings
        self.responder = responder
    }

    /// Binds `host:port` (port 0 picks one) and returns the bound port.
    public func start(host: String, port: Int) async throws -> Int {
        let endpoint = self
        let ch = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(DatagramReader(endpoint: endpoint)) }
            }
            .bind(host: host, port: port).get()
        try await loop.submit { endpoint.channel = ch }.get()
        return ch.localAddress?.port ?? 0
    }

    public func stop() async {
        try? await channel?.close()
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let channel else { return }
        let bytes = Array(envelope.data.readableBytesView)
        var vc = ngtcp2_version_cid()
        let rv = bytes.withUnsafeBufferPointer { ngtcp2_pkt_decode_version_cid(&vc, $0.baseAddress, $0.count, 18) }
        guard rv == 0 else { return }
        let dcid = Array(UnsafeBufferPointer(start: vc.dcid, count: vc.dcidlen))
        if let conn = connections[dcid] {
            conn.read(bytes, from: envelope.remoteAddress)
            return
        }
        var hd = ngtcp2_pkt_hd()
        guard bytes.withUnsafeBufferPointer({ ngtcp2_accept(&hd, $0.baseAddress, $0.count) }) == 0 else { return }
        guard let local = channel.localAddress,
              let conn = try? QUICServerConnection(endpoint: self, header: hd, local: local, remote: envelope.remoteAddress) else { return }
        connections[dcid] = conn
        connections[conn.scid] = conn
        conn.read(bytes, from: envelope.remoteAddress)
    }

    func send(_ bytes: ArraySlice<UInt8>, to remote: SocketAddress) {
        guard let channel else { return }
        var buf = channel.allocator.buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buf), promise: nil)
    }

    func register(_ cid: [UInt8], _ conn: QUICServerConnection) { connections[cid] = conn }

    func handshakeCompleted() { handshakesCompleted += 1 }

    func forget(_ conn: QUICServerConnection) {
        connections = connections.filter { $0.value !== conn }
    }
}

private final class DatagramReader: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let endpoint: QUICServerEndpoint

    init(endpoint: QUICServerEndpoint) { self.endpoint = endpoint }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        endpoint.receive(unwrapInboundIn(data))
    }
}

/// One server-side QUIC connection: ngtcp2 state, its GnuTLS session, and the timer ngtcp2 asks for.
final class QUICServerConnection {
    unowned let endpoint: QUICServerEndpoint
    private(set) var conn: OpaquePointer?
    private var session: gnutls_session_t?
    let scid: [UInt8]
    private var remote: SocketAddress
    // C code keeps pointers to these, so they live at fixed heap addresses, freed in deinit.
    private let localStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let remoteStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let path = UnsafeMutablePointer<ngtcp2_path>.allocate(capacity: 1)
    private let connRef = UnsafeMutablePointer<ngtcp2_crypto_conn_ref>.allocate(capacity: 1)
    private var timer: Scheduled<Void>?
    /// nghttp3, bound once the handshake is done.
    fileprivate var h3Connection: NGHTTP3Connection?
    fileprivate var h3: OpaquePointer? { h3Connection?.conn }
    /// Per request stream: what was received, and the response body (kept until the stream closes, as nghttp3
    /// sends from it without copying).
    fileprivate var requests: [Int64: (method: String, path: String)] = [:]
    fileprivate var bodies: [Int64: UnsafeMutableBufferPointer<UInt8>] = [:]
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

    init(endpoint: QUICServerEndpoint, header hd: ngtcp2_pkt_hd, local: SocketAddress, remote: SocketAddress) throws {
        self.endpoint = endpoint
        self.remote = remote
        splice = ControlStreamSplice(extra: endpoint.extraSettings)
        scid = (0..<18).map { _ in UInt8.random(in: 0...255) }
        var scidC = ngtcp2_cid()
        scid.withUnsafeBufferPointer { ngtcp2_cid_init(&scidC, $0.baseAddress, $0.count) }

        var callbacks = ngtcp2_callbacks()
        callbacks.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb
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
            guard let cid, let token, let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            let bytes = (0..<cidlen).map { _ in UInt8.random(in: 0...255) }
            bytes.withUnsafeBufferPointer { ngtcp2_cid_init(cid, $0.baseAddress, $0.count) }
            for i in 0..<Int(NGTCP2_STATELESS_RESET_TOKENLEN) { token[i] = UInt8.random(in: 0...255) }
            me.endpoint.register(bytes, me)
            return 0
        }
        callbacks.handshake_completed = { _, userData in
            guard let userData else { return 0 }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            me.endpoint.handshakeCompleted()
            return me.endpoint.responder == nil ? 0 : me.startHTTP3()
        }
        callbacks.recv_stream_data = { _, flags, streamID, _, data, len, userData, _ in
            guard let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            guard let h3 = me.h3, let conn = me.conn else { return 0 }
            let consumed = nghttp3_conn_read_stream(h3, streamID, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0 ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Credit goes back for what nghttp3 consumed (the rest is returned by deferred_consume).
            ngtcp2_conn_extend_max_stream_offset(conn, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        callbacks.acked_stream_data_offset = { _, streamID, _, datalen, userData, _ in
            guard let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            guard let h3 = me.h3 else { return 0 }
            var acked = datalen
            if streamID == me.controlStream && me.ackShift > 0 {
                let shift = min(UInt64(me.ackShift), acked)
                me.ackShift -= Int(shift)
                acked -= shift
            }
            return nghttp3_conn_add_ack_offset(h3, streamID, acked) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.stream_close = { _, _, streamID, code, userData, _ in
            guard let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            if let h3 = me.h3 {
                let rv = nghttp3_conn_close_stream(h3, streamID, code)
                if rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND { return NGTCP2_ERR_CALLBACK_FAILURE }
            }
            me.requests[streamID] = nil
            me.bodies.removeValue(forKey: streamID)?.deallocate()
            return 0
        }
        callbacks.extend_max_remote_streams_bidi = { _, maxStreams, userData in
            guard let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            if let h3 = me.h3 { nghttp3_conn_set_max_client_streams_bidi(h3, maxStreams) }
            return 0
        }
        callbacks.extend_max_stream_data = { _, streamID, _, userData, _ in
            guard let userData else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            if let h3 = me.h3 { return nghttp3_conn_unblock_stream(h3, streamID) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE }
            return 0
        }

        var settings = ngtcp2_settings()
        usher_ngtcp2_settings_default(&settings)
        settings.initial_ts = quicTimestamp()
        var params = ngtcp2_transport_params()
        usher_ngtcp2_transport_params_default(&params)
        params.initial_max_stream_data_bidi_local = 256 * 1024
        params.initial_max_stream_data_bidi_remote = 256 * 1024
        params.initial_max_stream_data_uni = 256 * 1024
        params.initial_max_data = 1024 * 1024
        params.initial_max_streams_bidi = 100
        params.initial_max_streams_uni = 3
        params.max_idle_timeout = 30 * 1_000_000_000
        params.original_dcid = hd.dcid
        if endpoint.extraSettings.contains(where: { $0.id == HTTP3Codepoint.settingsH3Datagram && $0.value == 1 }) {
            // HTTP/3 datagrams need QUIC DATAGRAM frames (RFC 9297 section 2.1.1).
            params.max_datagram_frame_size = 65535
        }

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
        var dcid = hd.scid
        var c: OpaquePointer?
        let me = Unmanaged.passUnretained(self).toOpaque()
        let rv = usher_ngtcp2_conn_server_new(&c, &dcid, &scidC, path, hd.version, &callbacks, &settings, &params, nil, me)
        guard rv == 0, let c else { throw QUICError("ngtcp2_conn_server_new: \(rv)") }
        conn = c

        var s: gnutls_session_t?
        let flags = UInt32(GNUTLS_SERVER) | GNUTLS_ENABLE_EARLY_DATA.rawValue | GNUTLS_NO_END_OF_EARLY_DATA.rawValue
        guard gnutls_init(&s, flags) == 0, let s else { throw QUICError("gnutls_init") }
        session = s
        let priority = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
            + "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1"
        guard gnutls_priority_set_direct(s, priority, nil) == 0,
              ngtcp2_crypto_gnutls_configure_server_session(s) == 0,
              gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(endpoint.credentials.cred)) == 0 else {
            throw QUICError("configuring the TLS session")
        }
        var alpn = Array("h3".utf8)
        let alpnRV = alpn.withUnsafeMutableBufferPointer { b -> Int32 in
            var datum = gnutls_datum_t(data: b.baseAddress, size: UInt32(b.count))
            return gnutls_alpn_set_protocols(s, &datum, 1, UInt32(GNUTLS_ALPN_MANDATORY.rawValue))
        }
        guard alpnRV == 0 else { throw QUICError("setting ALPN") }
        connRef.pointee.get_conn = { ref in
            guard let ref, let user = ref.pointee.user_data else { return nil }
            return Unmanaged<QUICServerConnection>.fromOpaque(user).takeUnretainedValue().conn
        }
        connRef.pointee.user_data = me
        gnutls_session_set_ptr(s, UnsafeMutableRawPointer(connRef))
        ngtcp2_conn_set_tls_native_handle(c, UnsafeMutableRawPointer(s))
    }

    deinit {
        timer?.cancel()
        h3Connection = nil
        for b in bodies.values { b.deallocate() }
        spliced?.deallocate()
        if let conn { ngtcp2_conn_del(conn) }
        if let session { gnutls_deinit(session) }
        localStorage.deallocate()
        remoteStorage.deallocate()
        path.deallocate()
        connRef.deallocate()
    }

    private static func store(_ address: SocketAddress, into storage: UnsafeMutablePointer<sockaddr_storage>) {
        address.withSockAddr { sa, len in
            UnsafeMutableRawPointer(storage).copyMemory(from: sa, byteCount: len)
        }
    }

    func read(_ bytes: [UInt8], from remote: SocketAddress) {
        guard let conn else { return }
        var pi = ngtcp2_pkt_info()
        let rv = bytes.withUnsafeBufferPointer {
            usher_ngtcp2_conn_read_pkt(conn, path, &pi, $0.baseAddress, $0.count, quicTimestamp())
        }
        if rv != 0 && rv != NGTCP2_ERR_DRAINING {
            close()
            return
        }
        writePackets()
    }

    /// Sends whatever there is: HTTP/3 stream data from nghttp3, and ngtcp2's own packets (handshake, ACKs); then
    /// arms the timer for ngtcp2's next expiry.
    func writePackets() {
        guard let conn else { return }
        var buf = [UInt8](repeating: 0, count: 1452)
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        var vecs = [nghttp3_vec](repeating: nghttp3_vec(), count: 16)
        while true {
            var streamID: Int64 = -1
            var fin: Int32 = 0
            var count = 0
            if let h3, ngtcp2_conn_get_max_data_left(conn) > 0 {
                let n = nghttp3_conn_writev_stream(h3, &streamID, &fin, &vecs, vecs.count)
                guard n >= 0 else {
                    close()
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
                    close()
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
            let n = buf.withUnsafeMutableBufferPointer { b in
                vecs.withUnsafeBufferPointer { v in
                    // nghttp3_vec and ngtcp2_vec have the same layout (base pointer, length).
                    v.baseAddress!.withMemoryRebound(to: ngtcp2_vec.self, capacity: max(count, 1)) { nv in
                        usher_ngtcp2_conn_writev_stream(conn, &ps.path, &pi, b.baseAddress, b.count, &accepted, flags,
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
                    if accepted >= 0, let written = nghttp3Written(accepted, original: originalLength),
                       let h3, nghttp3_conn_add_write_offset(h3, streamID, written) != 0 {
                        close()
                        return
                    }
                    if accepted >= 0 && nghttp3Written(accepted, original: originalLength) == nil {
                        close()
                        return
                    }
                    continue
                default:
                    close()
                    return
                }
            }
            if accepted >= 0 {
                guard let written = nghttp3Written(accepted, original: originalLength) else {
                    close()
                    return
                }
                if let h3, nghttp3_conn_add_write_offset(h3, streamID, written) != 0 {
                    close()
                    return
                }
            }
            if n == 0 { break }
            endpoint.send(buf[0..<Int(n)], to: remote)
        }
        armTimer()
    }

    /// How many of nghttp3's bytes ngtcp2 took: all of them when the whole spliced SETTINGS chunk went out; a
    /// partly accepted spliced chunk cannot be mapped back (`nil`).
    private func nghttp3Written(_ accepted: ngtcp2_ssize, original: Int?) -> Int? {
        guard let original else { return Int(accepted) }
        guard Int(accepted) == spliced?.count else { return nil }
        splicedAccepted = true
        return original
    }

    /// After the handshake: our control and QPACK streams, and nghttp3 reading the client's.
    fileprivate func startHTTP3() -> Int32 {
        guard let conn else { return NGTCP2_ERR_CALLBACK_FAILURE }
        var callbacks = nghttp3_callbacks()
        callbacks.recv_header = { _, streamID, token, _, value, _, userData, _ in
            guard let userData, let value else { return 0 }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            let v = nghttp3_rcbuf_get_buf(value)
            let text = String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self)
            var r = me.requests[streamID] ?? ("", "")
            switch token {
            case Int32(NGHTTP3_QPACK_TOKEN__METHOD.rawValue): r.method = text
            case Int32(NGHTTP3_QPACK_TOKEN__PATH.rawValue): r.path = text
            default: break
            }
            me.requests[streamID] = r
            return 0
        }
        callbacks.end_stream = { _, streamID, userData, _ in
            guard let userData else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue().respond(streamID)
        }
        callbacks.deferred_consume = { _, streamID, consumed, userData, _ in
            guard let userData else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            guard let conn = me.conn else { return 0 }
            ngtcp2_conn_extend_max_stream_offset(conn, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        callbacks.acked_stream_data = { _, _, _, _, _ in 0 }
        // No QPACK dynamic table yet: every field is sent literally or from the static table.
        var settings = HTTP3ConnectionSettings()
        settings.qpackMaxTableCapacity = 0
        settings.qpackBlockedStreams = 0
        var control: Int64 = -1, encoder: Int64 = -1, decoder: Int64 = -1
        do {
            let h3 = try NGHTTP3Connection(server: settings, callbacks: callbacks,
                                           userData: Unmanaged.passUnretained(self).toOpaque())
            h3Connection = h3
            guard ngtcp2_conn_open_uni_stream(conn, &control, nil) == 0,
                  ngtcp2_conn_open_uni_stream(conn, &encoder, nil) == 0,
                  ngtcp2_conn_open_uni_stream(conn, &decoder, nil) == 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            try h3.bindLocalStreams(control: control, qpackEncoder: encoder, qpackDecoder: decoder)
        } catch {
            return NGTCP2_ERR_CALLBACK_FAILURE
        }
        controlStream = control
        return 0
    }

    /// The request on `streamID` is complete: ask the responder and submit the response.
    fileprivate func respond(_ streamID: Int64) -> Int32 {
        guard let h3, let responder = endpoint.responder else { return 0 }
        let r = requests[streamID] ?? ("", "")
        let answer = responder(r.method, r.path)
        let body = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(answer.body.count, 1))
        _ = body.initialize(from: answer.body)
        bodies[streamID] = UnsafeMutableBufferPointer(rebasing: body[0..<answer.body.count])
        let fields = [(":status", String(answer.status)), ("content-length", String(answer.body.count))]
            + answer.headers.map { ($0.0.lowercased(), $0.1) }
        // nghttp3 encodes the fields during the call, so the buffers need only live that long.
        let names = fields.map { Array($0.0.utf8) }
        let values = fields.map { Array($0.1.utf8) }
        var nva: [nghttp3_nv] = []
        var holders: [UnsafeMutableBufferPointer<UInt8>] = []
        defer { holders.forEach { $0.deallocate() } }
        for (n, v) in zip(names, values) {
            let nb = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(n.count, 1))
            _ = nb.initialize(from: n)
            let vb = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(v.count, 1))
            _ = vb.initialize(from: v)
            holders += [nb, vb]
            nva.append(nghttp3_nv(name: nb.baseAddress, value: vb.baseAddress, namelen: n.count, valuelen: v.count,
                                  flags: UInt8(NGHTTP3_NV_FLAG_NONE)))
        }
        var reader = nghttp3_data_reader(read_data: { _, streamID, vec, _, pflags, userData, _ in
            guard let userData, let vec, let pflags else { return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE) }
            let me = Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue()
            pflags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
            guard let b = me.bodies[streamID], b.count > 0 else { return 0 }
            vec.pointee = nghttp3_vec(base: b.baseAddress, len: b.count)
            return 1
        })
        let rv = answer.body.isEmpty
            ? nghttp3_conn_submit_response(h3, streamID, nva, nva.count, nil)
            : nghttp3_conn_submit_response(h3, streamID, nva, nva.count, &reader)
        return rv == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
    }

    private func armTimer() {
        guard let conn else { return }
        timer?.cancel()
        let expiry = ngtcp2_conn_get_expiry(conn)
        guard expiry != UInt64.max else { return }
        let now = quicTimestamp()
        let wait = expiry > now ? Int64(expiry - now) : 0
        let me = Unmanaged.passUnretained(self)
        let bound = NIOLoopBound(me, eventLoop: endpoint.loop)
        timer = endpoint.loop.scheduleTask(in: .nanoseconds(wait)) {
            let c = bound.value.takeUnretainedValue()
            guard let conn = c.conn else { return }
            if ngtcp2_conn_handle_expiry(conn, quicTimestamp()) != 0 {
                c.close()
                return
            }
            c.writePackets()
        }
    }

    func close() {
        timer?.cancel()
        endpoint.forget(self)
    }
}
