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
        do {
            try Self.addKeyPair(to: c, chainPEM: chainPEM, keyPEM: keyPEM)
        } catch {
            gnutls_certificate_free_credentials(c)
            throw error
        }
        cred = c
    }

    /// Adds a certificate chain and its key (PEM) to GnuTLS credentials.
    static func addKeyPair(to cred: gnutls_certificate_credentials_t, chainPEM: String, keyPEM: String) throws {
        var chain = Array(chainPEM.utf8)
        var key = Array(keyPEM.utf8)
        let rv = chain.withUnsafeMutableBufferPointer { cb in
            key.withUnsafeMutableBufferPointer { kb in
                var cd = gnutls_datum_t(data: cb.baseAddress, size: UInt32(cb.count))
                var kd = gnutls_datum_t(data: kb.baseAddress, size: UInt32(kb.count))
                return gnutls_certificate_set_x509_key_mem(cred, &cd, &kd, GNUTLS_X509_FMT_PEM)
            }
        }
        guard rv == 0 else { throw QUICError("loading a certificate and key: \(String(cString: gnutls_strerror(rv)))") }
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
public typealias HTTP3Responder =
    @Sendable (_ method: String, _ path: String) -> (status: Int, headers: [(String, String)], body: [UInt8])

/// What a QUIC server endpoint serves and how.
public struct HTTP3ServerConfiguration: Sendable {
    /// The credentials for a handshake, by the client's server name (`nil` without SNI) and the addresses;
    /// `nil` refuses the handshake.
    public var credentials:
        @Sendable (_ serverName: String?, _ local: SocketAddress, _ remote: SocketAddress) -> QUICCredentials?
    /// Called on the endpoint's loop when a request's header fields are complete.
    public var onRequest: (@Sendable (HTTP3Stream) -> Void)?
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
    /// Handshakes under way above which new clients must first echo a Retry token (address validation, so a
    /// flood of spoofed Initials costs no state). 0: always. Default: 64.
    public var retryThreshold = 64
    /// How long a handshake may take before the connection is dropped. Default: 10 s.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Takes WebTransport streams and datagrams (see ``HTTP3Extension``). Default: none, which keeps the wire
    /// plain HTTP/3 and costs nothing per stream.
    public var `extension`: (any HTTP3Extension)?
    /// Decides ``extension`` and ``extraSettings`` afresh for each new connection (a reload may turn an
    /// extension on or off without a new socket); when set, it replaces those two.
    public var extensionForNewConnection:
        (@Sendable () -> (extension: (any HTTP3Extension)?, settings: [HTTP3Setting]))?

    public init(
        credentials:
            @escaping @Sendable (_ serverName: String?, _ local: SocketAddress, _ remote: SocketAddress) ->
            QUICCredentials?,
        onRequest: (@Sendable (HTTP3Stream) -> Void)? = nil
    ) {
        self.credentials = credentials
        self.onRequest = onRequest
    }
}

/// A QUIC server endpoint on one UDP socket: routes datagrams to connections by destination connection ID,
/// completes QUIC v1 handshakes (TLS 1.3 with ALPN `h3`) and serves HTTP/3 through nghttp3, handing each request
/// stream to ``HTTP3ServerConfiguration/onRequest``. Everything runs on the socket's event loop.
public final class QUICServerEndpoint: QUICDatagramSink, @unchecked Sendable {
    // @unchecked: all state is touched only on `loop`.
    let configuration: HTTP3ServerConfiguration
    let loop: any EventLoop
    var extraSettings: [HTTP3Setting] { configuration.extraSettings }
    private var channel: (any Channel)?
    private var connections: [[UInt8]: QUICConnection] = [:]
    /// Every live connection once (``connections`` has one entry per connection ID).
    private var live: [ObjectIdentifier: QUICConnection] = [:]
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
    public convenience init(
        credentials: QUICCredentials, loop: any EventLoop, extraSettings: [HTTP3Setting] = [],
        responder: HTTP3Responder? = nil
    ) {
        var config = HTTP3ServerConfiguration(credentials: { _, _, _ in credentials })
        config.extraSettings = extraSettings
        if let responder {
            config.onRequest = { stream in Self.answer(stream, with: responder) }
        }
        self.init(configuration: config, loop: loop)
    }

    private static func answer(_ stream: HTTP3Stream, with responder: @escaping HTTP3Responder) {
        stream.onData = { stream.consumed($0.readableBytes) }
        stream.onEnd = {
            let answer = responder(stream.field(":method") ?? "", stream.field(":path") ?? "")
            let fields =
                [(":status", String(answer.status)), ("content-length", String(answer.body.count))]
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
        // No SO_REUSEADDR: on UDP it would let a second process bind the same port without an error.
        try await start { try await $0.bind(host: host, port: port).get() }
    }

    /// Serves on a UDP socket that is already bound (socket activation: `fdgram/N`); returns its port.
    public func start(boundSocket fd: Int32) async throws -> Int {
        try await start { try await $0.withBoundSocket(fd).get() }
    }

    private func start(_ open: (DatagramBootstrap) async throws -> any Channel) async throws -> Int {
        let endpoint = self
        let bootstrap = DatagramBootstrap(group: loop)
            .quicSocketOptions(coalesced: false)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(DatagramReader(endpoint: endpoint))
                }
            }
        let ch = try await open(bootstrap)
        try await loop.submit {
            endpoint.channel = ch
            endpoint.startSweeping()
        }.get()
        return ch.localAddress?.port ?? 0
    }

    /// Closes the socket at once; connections end without a word.
    public func stop() async {
        sweep?.cancel()
        try? await channel?.close()
    }

    private var sweep: RepeatedTask?

    /// A safety net under ngtcp2's timers: a connection the peer has not sent to for longer than the idle and
    /// handshake timeouts together is closed, whatever its timers say. (Under heavy load one connection was once
    /// seen to outlive its timers; the cause was not found.)
    fileprivate func startSweeping() {
        let limit = configuration.idleTimeout + configuration.handshakeTimeout + .seconds(1)
        let interval = max(.seconds(1), min(configuration.idleTimeout, configuration.handshakeTimeout))
        sweep = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
            guard let self else { return }
            let now = NIODeadline.now()
            for conn in self.live.values where now - conn.lastActivity > limit {
                conn.close(sendingClose: false)
            }
        }
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

    /// One line per open connection (handshake, draining, time since the peer last sent, timer armed), for
    /// diagnosing a connection that outlives its timers. Read on the endpoint's loop.
    public var connectionSummaries: [String] {
        let now = NIODeadline.now()
        return live.values.map { $0.summary(now: now) }
    }

    private func checkDrained() {
        guard shuttingDown, live.isEmpty, !drainWaiters.isEmpty else { return }
        let w = drainWaiters
        drainWaiters = []
        for c in w { c.resume() }
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let channel else { return }
        forEachDatagram(envelope) { bytes in
            var vc = ngtcp2_version_cid()
            let rv = ngtcp2_pkt_decode_version_cid(&vc, bytes.baseAddress, bytes.count, 18)
            if rv == NGTCP2_ERR_VERSION_NEGOTIATION {
                sendVersionNegotiation(vc, to: envelope.remoteAddress)
                return
            }
            guard rv == 0 else { return }
            let dcid = Array(UnsafeBufferPointer(start: vc.dcid, count: vc.dcidlen))
            if let conn = connections[dcid] {
                conn.read(bytes, from: envelope.remoteAddress)
                return
            }
            if bytes[0] & 0x80 == 0 {
                // A short-header packet for a connection we do not know (lost state, or long gone).
                sendStatelessReset(dcid: dcid, triggerLength: bytes.count, to: envelope.remoteAddress)
                return
            }
            guard !shuttingDown else { return }
            var hd = ngtcp2_pkt_hd()
            guard ngtcp2_accept(&hd, bytes.baseAddress, bytes.count) == 0 else { return }
            var retry: (odcid: ngtcp2_cid, scid: ngtcp2_cid)?
            if hd.token.len > 0, hd.token.base[0] == UInt8(NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
                // The address is validated: the client echoed our Retry token.
                var odcid = ngtcp2_cid()
                let ok = envelope.remoteAddress.withSockAddr { sa, len in
                    ngtcp2_crypto_verify_retry_token(
                        &odcid, hd.token.base, hd.token.len, secret, secret.count, hd.version,
                        sa, ngtcp2_socklen(len), &hd.dcid, 10 * 1_000_000_000, quicTimestamp())
                }
                guard ok == 0 else { return }
                retry = (odcid, hd.dcid)
            } else if pendingHandshakes >= configuration.retryThreshold {
                // Too many handshakes under way: make the client prove its address before we keep any state.
                sendRetry(hd, to: envelope.remoteAddress)
                return
            }
            guard let local = channel.localAddress,
                let conn = try? QUICServerConnection(
                    endpoint: self, header: hd, local: local, remote: envelope.remoteAddress,
                    retry: retry)
            else { return }
            connections[dcid] = conn
            connections[conn.scid] = conn
            live[ObjectIdentifier(conn)] = conn
            pendingHandshakes += 1
            conn.read(bytes, from: envelope.remoteAddress)
        }
    }

    /// Secret for Retry tokens and stateless reset tokens; new per endpoint (tokens do not outlive it).
    let secret: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    /// Connections created whose handshake has not completed.
    private var pendingHandshakes = 0
    /// Retry packets sent (address validation under load).
    public private(set) var retriesSent = 0

    /// The stateless reset token for one of our connection IDs (RFC 9000 10.3.2: derived, so a reset can be sent
    /// without the connection's state).
    public func statelessResetToken(for cid: [UInt8]) -> [UInt8] {
        var token = [UInt8](repeating: 0, count: Int(NGTCP2_STATELESS_RESET_TOKENLEN))
        var c = ngtcp2_cid()
        cid.withUnsafeBufferPointer { ngtcp2_cid_init(&c, $0.baseAddress, $0.count) }
        _ = ngtcp2_crypto_generate_stateless_reset_token(&token, secret, secret.count, &c)
        return token
    }

    private func sendDatagram(_ bytes: ArraySlice<UInt8>, to remote: SocketAddress) {
        var buf = allocator.buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        send(buf, segmentSize: nil, to: remote)
    }

    private func sendVersionNegotiation(_ vc: ngtcp2_version_cid, to remote: SocketAddress) {
        var out = [UInt8](repeating: 0, count: 256)
        var versions: [UInt32] = [UInt32(NGTCP2_PROTO_VER_V1)]
        let n = ngtcp2_pkt_write_version_negotiation(
            &out, out.count, UInt8.random(in: 0...255), vc.scid, vc.scidlen,
            vc.dcid, vc.dcidlen, &versions, versions.count)
        if n > 0 { sendDatagram(out[0..<Int(n)], to: remote) }
    }

    private func sendStatelessReset(dcid: [UInt8], triggerLength: Int, to remote: SocketAddress) {
        // Smaller than what triggered it, so two endpoints cannot loop; too small a trigger gets nothing.
        let minimum = Int(NGTCP2_STATELESS_RESET_TOKENLEN) + Int(NGTCP2_MIN_STATELESS_RESET_RANDLEN) + 1
        guard triggerLength > minimum, dcid.count > 0 else { return }
        let length = min(triggerLength - 1, 43)
        let random = (0..<(length - Int(NGTCP2_STATELESS_RESET_TOKENLEN))).map { _ in UInt8.random(in: 0...255) }
        let token = statelessResetToken(for: dcid)
        var out = [UInt8](repeating: 0, count: 64)
        let n = ngtcp2_pkt_write_stateless_reset(&out, out.count, token, random, random.count)
        if n > 0 { sendDatagram(out[0..<Int(n)], to: remote) }
    }

    private func sendRetry(_ hd: ngtcp2_pkt_hd, to remote: SocketAddress) {
        var hd = hd
        var scid = ngtcp2_cid()
        let bytes = (0..<18).map { _ in UInt8.random(in: 0...255) }
        bytes.withUnsafeBufferPointer { ngtcp2_cid_init(&scid, $0.baseAddress, $0.count) }
        var token = [UInt8](repeating: 0, count: 256)
        let tokenLength = remote.withSockAddr { sa, len in
            ngtcp2_crypto_generate_retry_token(
                &token, secret, secret.count, hd.version, sa, ngtcp2_socklen(len), &scid,
                &hd.dcid, quicTimestamp())
        }
        guard tokenLength > 0 else { return }
        var out = [UInt8](repeating: 0, count: 512)
        let n = ngtcp2_crypto_write_retry(
            &out, out.count, hd.version, &hd.scid, &scid, &hd.dcid, token, Int(tokenLength))
        guard n > 0 else { return }
        retriesSent += 1
        sendDatagram(out[0..<Int(n)], to: remote)
    }

    func send(_ buffer: ByteBuffer, segmentSize: Int?, to remote: SocketAddress) {
        let metadata = segmentSize.map {
            AddressedEnvelope<ByteBuffer>.Metadata(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: $0)
        }
        channel?.write(AddressedEnvelope(remoteAddress: remote, data: buffer, metadata: metadata), promise: nil)
    }

    func flush() { channel?.flush() }

    /// A server answers each packet at once (batching answers per read delayed them under load); the socket is
    /// flushed at the end of the read batch.
    func writeAfterReads(_ conn: QUICConnection) { conn.readsDone() }

    fileprivate func readBatchDone() { flush() }

    var allocator: ByteBufferAllocator { channel?.allocator ?? ByteBufferAllocator() }

    func register(_ cid: [UInt8], _ conn: QUICConnection) { connections[cid] = conn }

    func handshakeCompleted() {
        handshakesCompleted += 1
        pendingHandshakes -= 1
    }

    func forget(_ conn: QUICConnection) {
        guard live.removeValue(forKey: ObjectIdentifier(conn)) != nil else { return }
        if !conn.handshakeDone { pendingHandshakes -= 1 }
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
        endpoint.readBatchDone()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors (a client gone) surface here; they concern one peer, not the socket.
    }
}

/// One server-side QUIC connection: accepts the client's Initial, picks credentials by SNI, serves HTTP/3.
final class QUICServerConnection: QUICConnection {
    unowned let endpoint: QUICServerEndpoint
    /// The credentials chosen for this handshake, alive as long as the session uses them.
    private var credentials: QUICCredentials?

    /// `retry`: the original destination CID and our Retry's source CID, when the client came back with a token.
    init(
        endpoint: QUICServerEndpoint, header hd: ngtcp2_pkt_hd, local: SocketAddress, remote: SocketAddress,
        retry: (odcid: ngtcp2_cid, scid: ngtcp2_cid)? = nil
    ) throws {
        self.endpoint = endpoint
        let config = endpoint.configuration
        let extras =
            config.extensionForNewConnection?() ?? (extension: config.extension, settings: config.extraSettings)
        super.init(sink: endpoint, local: local, remote: remote, extraSettings: extras.settings)
        maxPeerBidiStreams = UInt64(config.maxConcurrentStreams)
        ext = extras.extension
        var scidC = ngtcp2_cid()
        scid.withUnsafeBufferPointer { ngtcp2_cid_init(&scidC, $0.baseAddress, $0.count) }
        var callbacks = commonCallbacks()
        callbacks.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb

        var settings = ngtcp2_settings()
        usher_ngtcp2_settings_default(&settings)
        settings.initial_ts = quicTimestamp()
        // BBR v2 rather than ngtcp2's default CUBIC: 5-10 % more throughput on a 100 MiB download here (CUBIC
        // kept backing off).
        settings.cc_algo = NGTCP2_CC_ALGO_BBR2
        if QUICServerEndpoint.debugLog { usher_ngtcp2_settings_log_to_stderr(&settings) }
        var params = ngtcp2_transport_params()
        usher_ngtcp2_transport_params_default(&params)
        params.initial_max_stream_data_bidi_local = 256 * 1024
        params.initial_max_stream_data_bidi_remote = 256 * 1024
        params.initial_max_stream_data_uni = 256 * 1024
        params.initial_max_data = 4 * 1024 * 1024
        params.initial_max_streams_bidi = UInt64(config.maxConcurrentStreams)
        // HTTP/3 needs 3 unidirectional streams from the client; an extension's (WebTransport) need more.
        params.initial_max_streams_uni = extras.extension == nil ? 3 : 100
        params.max_idle_timeout = UInt64(max(config.idleTimeout.nanoseconds, 0))
        params.original_dcid = hd.dcid
        if let retry {
            params.original_dcid = retry.odcid
            params.retry_scid = retry.scid
            params.retry_scid_present = 1
        }
        settings.handshake_timeout = UInt64(max(config.handshakeTimeout.nanoseconds, 0))
        settings.token = hd.token
        if extras.settings.contains(where: { $0.id == HTTP3Codepoint.settingsH3Datagram && $0.value == 1 }) {
            // HTTP/3 datagrams need QUIC DATAGRAM frames (RFC 9297 section 2.1.1).
            params.max_datagram_frame_size = 65535
        }
        var dcid = hd.scid
        var c: OpaquePointer?
        let rv = usher_ngtcp2_conn_server_new(
            &c, &dcid, &scidC, path, hd.version, &callbacks, &settings, &params, nil, userData)
        guard rv == 0, let c else { throw QUICError("ngtcp2_conn_server_new: \(rv)") }
        conn = c

        let s = try makeSession(server: true)
        // The certificate depends on the server name the client asks for, known once its hello is in.
        gnutls_handshake_set_post_client_hello_function(s) { session in
            guard let session,
                let ref = gnutls_session_get_ptr(session)?.assumingMemoryBound(to: ngtcp2_crypto_conn_ref.self),
                let user = ref.pointee.user_data
            else { return GNUTLS_E_INTERNAL_ERROR }
            let me = Unmanaged<QUICConnection>.fromOpaque(user).takeUnretainedValue() as! QUICServerConnection
            return me.chooseCredentials(session)
        }
        try attach(s)
    }

    deinit { releaseProtocolState() }

    /// Picks the certificate for the client's server name (SNI).
    func chooseCredentials(_ session: gnutls_session_t) -> Int32 {
        var name = [CChar](repeating: 0, count: 256)
        var length = name.count
        var type: UInt32 = 0
        let serverName =
            gnutls_server_name_get(session, &name, &length, &type, 0) == 0
            ? String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
        self.serverName = serverName
        guard let chosen = endpoint.configuration.credentials(serverName, localAddress, remoteAddress) else {
            return GNUTLS_E_NO_CERTIFICATE_FOUND
        }
        credentials = chosen
        return gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(chosen.cred))
    }

    override func handshakeDidComplete() -> Int32 {
        handshakeDone = true
        endpoint.handshakeCompleted()
        return endpoint.configuration.onRequest == nil ? 0 : startHTTP3(server: true)
    }

    override func headersReceived(_ stream: HTTP3Stream) {
        endpoint.configuration.onRequest?(stream)
    }

    override func http3Settings() -> HTTP3ConnectionSettings {
        var settings = super.http3Settings()
        settings.enableConnectProtocol = endpoint.configuration.enableConnectProtocol
        settings.maxFieldSectionSize = endpoint.configuration.maxFieldSectionSize
        return settings
    }
}
