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

    /// Credentials from PEM text: the certificate chain (leaf first) and its private key.
    public init(chainPEM: String, keyPEM: String) throws {
        var c: gnutls_certificate_credentials_t?
        guard gnutls_certificate_allocate_credentials(&c) == 0, let c else { throw QUICError("allocating credentials") }
        var chain = Array(chainPEM.utf8)
        var key = Array(keyPEM.utf8)
        let rv = chain.withUnsafeMutableBufferPointer { cb in
            key.withUnsafeMutableBufferPointer { kb in
                var cd = gnutls_datum_t(data: cb.baseAddress, size: UInt32(cb.count))
                var kd = gnutls_datum_t(data: kb.baseAddress, size: UInt32(kb.count))
                return gnutls_certificate_set_x509_key_mem(c, &cd, &kd, GNUTLS_X509_FMT_PEM)
            }
        }
        guard rv == 0 else {
            gnutls_certificate_free_credentials(c)
            throw QUICError("loading a certificate and key: \(String(cString: gnutls_strerror(rv)))")
        }
        cred = c
    }

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

/// Answers one HTTP/3 request: method and path in, status, header fields and body out. The simplest way to serve
/// (tests, fixed answers); ``HTTP3ServerConfiguration/onRequest`` gets the whole stream instead.
public typealias HTTP3Responder = @Sendable (_ method: String, _ path: String) -> (status: Int, headers: [(String, String)], body: [UInt8])

/// What a QUIC server endpoint serves and how.
public struct HTTP3ServerConfiguration: Sendable {
    /// The credentials for a handshake, by the client's server name (`nil` without SNI) and the addresses;
    /// `nil` refuses the handshake.
    public var credentials: @Sendable (_ serverName: String?, _ local: SocketAddress, _ remote: SocketAddress) -> QUICCredentials?
    /// Called on the endpoint's loop when a request's header fields are complete.
    public var onRequest: (@Sendable (HTTP3ServerStream) -> Void)?
    /// SETTINGS to add to nghttp3's (e.g. H3_DATAGRAM and WebTransport's); none leaves the wire untouched.
    public var extraSettings: [HTTP3Setting] = []
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL: accept Extended CONNECT (`:protocol`).
    public var enableConnectProtocol = false
    /// SETTINGS_MAX_FIELD_SECTION_SIZE: the most request header bytes accepted. Default: none announced.
    public var maxFieldSectionSize: UInt64?
    /// Idle timeout (QUIC `max_idle_timeout`). Default: 30 s.
    public var idleTimeout: TimeAmount = .seconds(30)
    /// Request streams a client may have open at once. Default: 100.
    public var maxConcurrentStreams = 100

    public init(credentials: @escaping @Sendable (_ serverName: String?, _ local: SocketAddress, _ remote: SocketAddress) -> QUICCredentials?,
                onRequest: (@Sendable (HTTP3ServerStream) -> Void)? = nil) {
        self.credentials = credentials
        self.onRequest = onRequest
    }
}

/// A QUIC server endpoint on one UDP socket: routes datagrams to connections by destination connection ID,
/// completes QUIC v1 handshakes (TLS 1.3 with ALPN `h3`) and serves HTTP/3 through nghttp3, handing each request
/// stream to ``HTTP3ServerConfiguration/onRequest``. Everything runs on the socket's event loop.
public final class QUICServerEndpoint: @unchecked Sendable {
    // @unchecked: all state is touched only on `loop`.
    let configuration: HTTP3ServerConfiguration
    let loop: any EventLoop
    var extraSettings: [HTTP3Setting] { configuration.extraSettings }
    private var channel: (any Channel)?
    private var connections: [[UInt8]: QUICServerConnection] = [:]
    /// Every live connection once (``connections`` has one entry per connection ID).
    private var live: [ObjectIdentifier: QUICServerConnection] = [:]
    private var shuttingDown = false
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    /// Handshakes completed so far.
    public private(set) var handshakesCompleted = 0
    /// ngtcp2's packet-level debug log on standard error, when `USHER_QUIC_DEBUG_LOG` is set.
    static let debugLog = ProcessInfo.processInfo.environment["USHER_QUIC_DEBUG_LOG"] != nil

    public init(configuration: HTTP3ServerConfiguration, loop: any EventLoop) {
        self.configuration = configuration
        self.loop = loop
    }

    /// An endpoint that answers every request through `responder` (or only handshakes, without one).
    public convenience init(credentials: QUICCredentials, loop: any EventLoop, extraSettings: [HTTP3Setting] = [],
                            responder: HTTP3Responder? = nil) {
        var config = HTTP3ServerConfiguration(credentials: { _, _, _ in credentials })
        config.extraSettings = extraSettings
        if let responder {
            config.onRequest = { stream in Self.answer(stream, with: responder) }
        }
        self.init(configuration: config, loop: loop)
    }

    private static func answer(_ stream: HTTP3ServerStream, with responder: @escaping HTTP3Responder) {
        stream.onData = { stream.consumed($0.readableBytes) }
        stream.onEnd = {
            let answer = responder(stream.field(":method") ?? "", stream.field(":path") ?? "")
            let fields = [(":status", String(answer.status)), ("content-length", String(answer.body.count))]
                + answer.headers.map { ($0.0.lowercased(), $0.1) }
            do {
                try stream.sendResponse(fields, hasBody: !answer.body.isEmpty)
                if !answer.body.isEmpty {
                    try stream.enqueue(ByteBuffer(bytes: answer.body))
                    try stream.finish()
                }
            } catch {
                stream.reset()
            }
        }
    }

    /// Binds `host:port` (port 0 picks one) and returns the bound port.
    public func start(host: String, port: Int) async throws -> Int {
        let endpoint = self
        let ch = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.maxMessagesPerRead, value: 64)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(DatagramReader(endpoint: endpoint)) }
            }
            .bind(host: host, port: port).get()
        try await loop.submit { endpoint.channel = ch }.get()
        return ch.localAddress?.port ?? 0
    }

    /// Closes the socket at once; connections end without a word.
    public func stop() async {
        try? await channel?.close()
    }

    /// Graceful shutdown: every connection gets GOAWAY, requests in flight finish, and each connection closes when
    /// it has none left. Returns when all are closed (new handshakes are refused meanwhile).
    public func shutdown() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.execute {
                self.shuttingDown = true
                self.drainWaiters.append(c)
                for conn in self.live.values { conn.beginShutdown() }
                self.checkDrained()
            }
        }
    }

    /// Closes every connection now (CONNECTION_CLOSE), whatever is in flight.
    public func closeAllConnections() {
        loop.execute {
            for conn in self.live.values { conn.close(sendingClose: true) }
        }
    }

    /// Live connections (handshaking or established).
    public var connectionCount: Int { live.count }

    private func checkDrained() {
        guard shuttingDown, live.isEmpty, !drainWaiters.isEmpty else { return }
        let w = drainWaiters
        drainWaiters = []
        for c in w { c.resume() }
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let channel else { return }
        envelope.data.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var vc = ngtcp2_version_cid()
            guard ngtcp2_pkt_decode_version_cid(&vc, bytes.baseAddress, bytes.count, 18) == 0 else { return }
            let dcid = Array(UnsafeBufferPointer(start: vc.dcid, count: vc.dcidlen))
            if let conn = connections[dcid] {
                conn.read(bytes, from: envelope.remoteAddress)
                return
            }
            guard !shuttingDown else { return }
            var hd = ngtcp2_pkt_hd()
            guard ngtcp2_accept(&hd, bytes.baseAddress, bytes.count) == 0 else { return }
            guard let local = channel.localAddress,
                  let conn = try? QUICServerConnection(endpoint: self, header: hd, local: local, remote: envelope.remoteAddress) else { return }
            connections[dcid] = conn
            connections[conn.scid] = conn
            live[ObjectIdentifier(conn)] = conn
            conn.read(bytes, from: envelope.remoteAddress)
        }
    }

    func send(_ buffer: ByteBuffer, to remote: SocketAddress) {
        channel?.write(AddressedEnvelope(remoteAddress: remote, data: buffer), promise: nil)
    }

    func flush() { channel?.flush() }

    var allocator: ByteBufferAllocator { channel?.allocator ?? ByteBufferAllocator() }

    func register(_ cid: [UInt8], _ conn: QUICServerConnection) { connections[cid] = conn }

    func handshakeCompleted() { handshakesCompleted += 1 }

    func forget(_ conn: QUICServerConnection) {
        guard live.removeValue(forKey: ObjectIdentifier(conn)) != nil else { return }
        connections = connections.filter { $0.value !== conn }
        checkDrained()
    }
}

private final class DatagramReader: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let endpoint: QUICServerEndpoint

    init(endpoint: QUICServerEndpoint) { self.endpoint = endpoint }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        endpoint.receive(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        endpoint.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors (a client gone) surface here; they concern one peer, not the socket.
    }
}

/// Recovers the connection from a C callback's user data.
@inline(__always)
private func connection(_ userData: UnsafeMutableRawPointer?) -> QUICServerConnection? {
    userData.map { Unmanaged<QUICServerConnection>.fromOpaque($0).takeUnretainedValue() }
}

/// One server-side QUIC connection: ngtcp2 state, its GnuTLS session, nghttp3 once the handshake is done, the
/// request streams, and the one timer ngtcp2 asks for.
final class QUICServerConnection {
    unowned let endpoint: QUICServerEndpoint
    private(set) var conn: OpaquePointer?
    private var session: gnutls_session_t?
    /// The credentials chosen for this handshake, alive as long as the session uses them.
    private var credentials: QUICCredentials?
    let scid: [UInt8]
    private var remote: SocketAddress
    var remoteAddress: SocketAddress { remote }
    let localAddress: SocketAddress
    /// The server name from the client's hello (SNI).
    private(set) var serverName: String?
    // C code keeps pointers to these, so they live at fixed heap addresses, freed in deinit.
    private let localStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let remoteStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    private let path = UnsafeMutablePointer<ngtcp2_path>.allocate(capacity: 1)
    private let connRef = UnsafeMutablePointer<ngtcp2_crypto_conn_ref>.allocate(capacity: 1)
    private var timer: Scheduled<Void>?
    /// nghttp3, bound once the handshake is done.
    fileprivate var h3Connection: NGHTTP3Connection?
    fileprivate var h3: OpaquePointer? { h3Connection?.conn }
    /// Request streams by ID.
    fileprivate var streams: [Int64: HTTP3ServerStream] = [:]
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
    private var closed = false
    /// Draining (the peer closed): nothing more is sent; the connection is forgotten after 3 PTO.
    private var draining = false
    /// GOAWAY went out: close once no request stream is left.
    private var shuttingDown = false
    /// Reused for every packet this connection writes.
    private var packet = [UInt8](repeating: 0, count: 1452)

    init(endpoint: QUICServerEndpoint, header hd: ngtcp2_pkt_hd, local: SocketAddress, remote: SocketAddress) throws {
        self.endpoint = endpoint
        self.remote = remote
        self.localAddress = local
        splice = ControlStreamSplice(extra: endpoint.extraSettings)
        scid = (0..<18).map { _ in UInt8.random(in: 0...255) }
        var scidC = ngtcp2_cid()
        scid.withUnsafeBufferPointer { ngtcp2_cid_init(&scidC, $0.baseAddress, $0.count) }
        let config = endpoint.configuration

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
            guard let cid, let token, let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let bytes = (0..<cidlen).map { _ in UInt8.random(in: 0...255) }
            bytes.withUnsafeBufferPointer { ngtcp2_cid_init(cid, $0.baseAddress, $0.count) }
            for i in 0..<Int(NGTCP2_STATELESS_RESET_TOKENLEN) { token[i] = UInt8.random(in: 0...255) }
            me.endpoint.register(bytes, me)
            return 0
        }
        callbacks.handshake_completed = { _, userData in
            guard let me = connection(userData) else { return 0 }
            me.endpoint.handshakeCompleted()
            return me.endpoint.configuration.onRequest == nil ? 0 : me.startHTTP3()
        }
        callbacks.recv_stream_data = { _, flags, streamID, _, data, len, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let h3 = me.h3, let conn = me.conn else { return 0 }
            let consumed = nghttp3_conn_read_stream(h3, streamID, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0 ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Credit goes back for framing nghttp3 consumed; body bytes are credited as the application takes
            // them (HTTP3ServerStream.consumed), the rest through deferred_consume.
            ngtcp2_conn_extend_max_stream_offset(conn, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        callbacks.acked_stream_data_offset = { _, streamID, _, datalen, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
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
            if let h3 = me.h3 {
                let rv = nghttp3_conn_close_stream(h3, streamID, appError)
                if rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND { return NGTCP2_ERR_CALLBACK_FAILURE }
            }
            me.streamClosed(streamID, complete: appError == UInt64(NGHTTP3_H3_NO_ERROR))
            return 0
        }
        callbacks.stream_reset = { _, streamID, _, _, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // The client abandoned its request: stop reading it, and the request is not complete.
            if let h3 = me.h3, nghttp3_conn_shutdown_stream_read(h3, streamID) != 0 { return NGTCP2_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.didClose(complete: false)
            return 0
        }
        callbacks.stream_stop_sending = { _, streamID, _, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // The client wants no more response (ngtcp2 answers with RESET_STREAM).
            if let h3 = me.h3, nghttp3_conn_shutdown_stream_read(h3, streamID) != 0 { return NGTCP2_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.didClose(complete: false)
            return 0
        }
        callbacks.extend_max_remote_streams_bidi = { _, maxStreams, userData in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let h3 = me.h3 { nghttp3_conn_set_max_client_streams_bidi(h3, maxStreams) }
            return 0
        }
        callbacks.extend_max_stream_data = { _, streamID, _, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let h3 = me.h3 { return nghttp3_conn_unblock_stream(h3, streamID) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE }
            return 0
        }

        var settings = ngtcp2_settings()
        usher_ngtcp2_settings_default(&settings)
        settings.initial_ts = quicTimestamp()
        if QUICServerEndpoint.debugLog { usher_ngtcp2_settings_log_to_stderr(&settings) }
        var params = ngtcp2_transport_params()
        usher_ngtcp2_transport_params_default(&params)
        params.initial_max_stream_data_bidi_local = 256 * 1024
        params.initial_max_stream_data_bidi_remote = 256 * 1024
        params.initial_max_stream_data_uni = 256 * 1024
        params.initial_max_data = 4 * 1024 * 1024
        params.initial_max_streams_bidi = UInt64(config.maxConcurrentStreams)
        params.initial_max_streams_uni = 3
        params.max_idle_timeout = UInt64(max(config.idleTimeout.nanoseconds, 0))
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
              ngtcp2_crypto_gnutls_configure_server_session(s) == 0 else {
            throw QUICError("configuring the TLS session")
        }
        // The certificate depends on the server name the client asks for, known once its hello is in.
        gnutls_handshake_set_post_client_hello_function(s) { session in
            guard let session, let ref = gnutls_session_get_ptr(session)?.assumingMemoryBound(to: ngtcp2_crypto_conn_ref.self),
                  let me = connection(ref.pointee.user_data) else { return GNUTLS_E_INTERNAL_ERROR }
            return me.chooseCredentials(session)
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

    /// Picks the certificate for the client's server name (SNI).
    private func chooseCredentials(_ session: gnutls_session_t) -> Int32 {
        var name = [CChar](repeating: 0, count: 256)
        var length = name.count
        var type: UInt32 = 0
        let serverName = gnutls_server_name_get(session, &name, &length, &type, 0) == 0
            ? String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
        self.serverName = serverName
        guard let chosen = endpoint.configuration.credentials(serverName, localAddress, remote) else { return GNUTLS_E_NO_CERTIFICATE_FOUND }
        credentials = chosen
        return gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(chosen.cred))
    }

    func read(_ bytes: UnsafeBufferPointer<UInt8>, from remote: SocketAddress) {
        guard let conn, !closed, !draining else { return }
        var pi = ngtcp2_pkt_info()
        let rv = usher_ngtcp2_conn_read_pkt(conn, path, &pi, bytes.baseAddress, bytes.count, quicTimestamp())
        switch rv {
        case 0:
            writePackets()
        case NGTCP2_ERR_DRAINING:
            startDraining()
        case NGTCP2_ERR_DROP_CONN:
            close(sendingClose: false)
        default:
            close(sendingClose: true, error: rv)
        }
    }

    /// Writes soon, once for everything queued until then.
    func scheduleWrite() {
        guard !writeScheduled, !closed else { return }
        writeScheduled = true
        let bound = NIOLoopBound(Unmanaged.passRetained(self), eventLoop: endpoint.loop)
        endpoint.loop.execute {
            let me = bound.value.takeRetainedValue()
            me.writeScheduled = false
            me.writePackets()
            me.endpoint.flush()
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
        while true {
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
            let n = packet.withUnsafeMutableBufferPointer { b in
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
                    guard recordWritten(streamID, accepted, originalLength) else { return }
                    continue
                default:
                    close(sendingClose: true, error: Int32(n))
                    return
                }
            }
            guard recordWritten(streamID, accepted, originalLength) else { return }
            if n == 0 { break }
            emit(Int(n))
        }
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

    /// Sends the first `length` bytes of ``packet`` (flushed by the caller or the end of the read batch).
    private func emit(_ length: Int) {
        var buf = endpoint.allocator.buffer(capacity: length)
        _ = packet.withUnsafeBufferPointer { buf.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[0..<length])) }
        endpoint.send(buf, to: remote)
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
        callbacks.begin_headers = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if me.streams[streamID] == nil { me.streams[streamID] = HTTP3ServerStream(id: streamID, connection: me) }
            return 0
        }
        callbacks.recv_header = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let name, let value, let stream = me.streams[streamID] else { return 0 }
            let n = nghttp3_rcbuf_get_buf(name)
            let v = nghttp3_rcbuf_get_buf(value)
            stream.fields.append((String(decoding: UnsafeBufferPointer(start: n.base, count: n.len), as: UTF8.self),
                                  String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self)))
            return 0
        }
        callbacks.end_headers = { _, streamID, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID] else { return 0 }
            me.endpoint.configuration.onRequest?(stream)
            return 0
        }
        callbacks.begin_trailers = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.inTrailers = true
            return 0
        }
        callbacks.recv_trailer = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let name, let value, let stream = me.streams[streamID] else { return 0 }
            let n = nghttp3_rcbuf_get_buf(name)
            let v = nghttp3_rcbuf_get_buf(value)
            stream.trailers.append((String(decoding: UnsafeBufferPointer(start: n.base, count: n.len), as: UTF8.self),
                                    String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self)))
            return 0
        }
        callbacks.recv_data = { _, streamID, data, len, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = me.streams[streamID], let onData = stream.onData, let data else {
                // Nobody reads this body: credit it back at once.
                me.extendCredit(stream: streamID, by: len)
                return 0
            }
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
        callbacks.reset_stream = { _, streamID, code, userData, _ in
            guard let me = connection(userData), let conn = me.conn else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return ngtcp2_conn_shutdown_stream_write(conn, streamID, code) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
        }
        // No QPACK dynamic table yet: every field is sent literally or from the static table.
        var settings = HTTP3ConnectionSettings()
        settings.qpackMaxTableCapacity = 0
        settings.qpackBlockedStreams = 0
        settings.enableConnectProtocol = endpoint.configuration.enableConnectProtocol
        settings.maxFieldSectionSize = endpoint.configuration.maxFieldSectionSize
        var control: Int64 = -1, encoder: Int64 = -1, decoder: Int64 = -1
        do {
            let h3 = try NGHTTP3Connection(server: settings, callbacks: callbacks,
                                           userData: Unmanaged.passUnretained(self).toOpaque())
            h3Connection = h3
            nghttp3_conn_set_max_client_streams_bidi(h3.conn, UInt64(endpoint.configuration.maxConcurrentStreams))
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

    // MARK: - Streams

    private func streamClosed(_ streamID: Int64, complete: Bool) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.didClose(complete: complete)
        stream.releaseBuffers()
        // A client-initiated bidirectional stream ended: the client may open another.
        if streamID & 0x3 == 0, let conn { ngtcp2_conn_extend_max_streams_bidi(conn, 1) }
        if shuttingDown && streams.isEmpty { finishShutdown() }
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

    func submitResponse(stream: Int64, fields: [(String, String)], withBody: Bool) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        var reader = nghttp3_data_reader(read_data: { _, streamID, vec, count, flags, userData, _ in
            guard let me = connection(userData), let vec, let flags, let stream = me.streams[streamID] else {
                return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE)
            }
            return nghttp3_ssize(stream.provide(vec, count: count, flags: flags))
        })
        let rv = withFieldVector(fields) { nva, n in
            withBody ? nghttp3_conn_submit_response(h3, stream, nva, n, &reader) : nghttp3_conn_submit_response(h3, stream, nva, n, nil)
        }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
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
        let bound = NIOLoopBound(self, eventLoop: endpoint.loop)
        writePackets()
        endpoint.loop.scheduleTask(in: .milliseconds(50)) {
            bound.value.close(sendingClose: true)
        }
    }

    private func startDraining() {
        draining = true
        timer?.cancel()
        let pto = conn.map { ngtcp2_conn_get_pto($0) } ?? 1_000_000_000
        let bound = NIOLoopBound(self, eventLoop: endpoint.loop)
        timer = endpoint.loop.scheduleTask(in: .nanoseconds(Int64(3 * pto))) { bound.value.close(sendingClose: false) }
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
            let n = packet.withUnsafeMutableBufferPointer {
                usher_ngtcp2_conn_write_connection_close(conn, nil, &pi, $0.baseAddress, $0.count, &ccerr, quicTimestamp())
            }
            if n > 0 {
                emit(Int(n))
                endpoint.flush()
            }
        }
        closed = true
        timer?.cancel()
        let open = streams
        streams = [:]
        for stream in open.values { stream.didClose(complete: false) }
        endpoint.forget(self)
    }

    private func armTimer() {
        guard let conn else { return }
        timer?.cancel()
        let expiry = ngtcp2_conn_get_expiry(conn)
        guard expiry != UInt64.max else { return }
        let now = quicTimestamp()
        let wait = expiry > now ? Int64(expiry - now) : 0
        let bound = NIOLoopBound(Unmanaged.passUnretained(self), eventLoop: endpoint.loop)
        timer = endpoint.loop.scheduleTask(in: .nanoseconds(wait)) {
            let c = bound.value.takeUnretainedValue()
            guard let conn = c.conn, !c.closed else { return }
            let rv = ngtcp2_conn_handle_expiry(conn, quicTimestamp())
            if rv == NGTCP2_ERR_IDLE_CLOSE {
                c.close(sendingClose: false)
            } else if rv != 0 {
                c.close(sendingClose: true, error: rv)
            } else {
                c.writePackets()
                c.endpoint.flush()
            }
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
