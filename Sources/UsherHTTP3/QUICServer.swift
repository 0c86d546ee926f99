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

/// A QUIC server endpoint on one UDP socket: routes datagrams to connections by destination connection ID and
/// completes QUIC v1 handshakes (TLS 1.3 with ALPN `h3`). Streams are not served yet. Everything runs on the
/// socket's event loop.
public final class QUICServerEndpoint: @unchecked Sendable {
    // @unchecked: all state is touched only on `loop`.
    let credentials: QUICCredentials
    let loop: any EventLoop
    private var channel: (any Channel)?
    private var connections: [[UInt8]: QUICServerConnection] = [:]
    /// Handshakes completed so far.
    public private(set) var handshakesCompleted = 0

    public init(credentials: QUICCredentials, loop: any EventLoop) {
        self.credentials = credentials
        self.loop = loop
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

    init(endpoint: QUICServerEndpoint, header hd: ngtcp2_pkt_hd, local: SocketAddress, remote: SocketAddress) throws {
        self.endpoint = endpoint
        self.remote = remote
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
            Unmanaged<QUICServerConnection>.fromOpaque(userData).takeUnretainedValue().endpoint.handshakeCompleted()
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

    /// Sends whatever ngtcp2 has (handshake, ACKs), then arms the timer for its next expiry.
    func writePackets() {
        guard let conn else { return }
        var buf = [UInt8](repeating: 0, count: 1452)
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        while true {
            let n = buf.withUnsafeMutableBufferPointer { b in
                usher_ngtcp2_conn_writev_stream(conn, &ps.path, &pi, b.baseAddress, b.count, nil, 0, -1, nil, 0, quicTimestamp())
            }
            if n <= 0 { break }
            endpoint.send(buf[0..<Int(n)], to: remote)
        }
        armTimer()
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
