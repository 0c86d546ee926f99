import CNghttp3
import CNgtcp2
import Foundation
public import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// How an HTTP/3 client connection reaches and trusts a server.
public struct HTTP3ClientConfiguration: Sendable {
    /// The name sent as SNI and checked against the certificate; an IP address is checked as such (no SNI sent).
    public var serverName: String
    /// Accept any certificate.
    public var insecureSkipVerify = false
    /// PEM certificates to trust instead of the system's roots.
    public var rootCAPEM: [String]?
    /// A client certificate chain and key (PEM), if the server asks for one.
    public var clientCertificate: (chainPEM: String, keyPEM: String)?
    /// QUIC idle timeout. Default: 30 s.
    public var idleTimeout: TimeAmount = .seconds(30)
    /// How long the handshake may take. Default: 10 s.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Receive windows: per stream and for the connection (bytes). Defaults: 8 MiB and 32 MiB.
    public var streamWindow = 8 << 20
    public var connectionWindow = 32 << 20
    /// SETTINGS to add to nghttp3's (e.g. H3_DATAGRAM and WebTransport's); none leaves the wire untouched.
    public var extraSettings: [HTTP3Setting] = []
    /// Takes the server's WebTransport streams and datagrams (see ``HTTP3Extension``); with one, the server may
    /// open 100 streams of each kind, and H3_DATAGRAM in ``extraSettings`` turns on QUIC datagrams.
    public var `extension`: (any HTTP3Extension)?

    public init(serverName: String) { self.serverName = serverName }
}

/// A client-side HTTP/3 connection over its own UDP socket: ``connect(to:configuration:on:)`` completes the QUIC
/// handshake, ``openStream()`` gives a request stream (``HTTP3Stream/sendRequest(_:hasBody:)``). Everything runs
/// on the connection's event loop; call from there.
public final class HTTP3ClientConnection: QUICDatagramSink, @unchecked Sendable {
    // @unchecked: all state is touched only on `loop`.
    public let loop: any EventLoop
    private let channel: any Channel
    private var connection: QUICClientConnection?
    private var handshake: EventLoopPromise<Void>?
    private var closeWaiters: [EventLoopPromise<Void>] = []
    /// Called once when the connection has closed (on `loop`).
    public var onClose: (() -> Void)?

    private init(loop: any EventLoop, channel: any Channel) {
        self.loop = loop
        self.channel = channel
    }

    /// Opens a UDP socket towards `address` and completes the handshake.
    public static func connect(
        to address: SocketAddress, configuration: HTTP3ClientConfiguration,
        on loop: any EventLoop
    ) async throws -> HTTP3ClientConnection {
        let reader = ClientDatagramReader()
        let channel = try await DatagramBootstrap(group: loop)
            .quicSocketOptions(coalesced: true)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(reader) }
            }
            .connect(to: address).get()
        let future: EventLoopFuture<HTTP3ClientConnection> = loop.flatSubmit {
            let client = HTTP3ClientConnection(loop: loop, channel: channel)
            reader.client = client
            let promise = loop.makePromise(of: Void.self)
            client.handshake = promise
            do {
                guard let local = channel.localAddress else { throw QUICError("no local address") }
                let conn = try QUICClientConnection(
                    client: client, local: local, remote: address, configuration: configuration)
                client.connection = conn
                conn.writePackets()
                client.flush()
            } catch {
                promise.fail(error)
            }
            let timeout = loop.scheduleTask(in: configuration.handshakeTimeout) {
                client.handshake?.fail(QUICError("handshake with \(address) timed out"))
                client.handshake = nil
                client.close()
            }
            return promise.futureResult.always { _ in timeout.cancel() }.map { client }
        }
        do {
            return try await future.get()
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// A new request stream; throws ``HTTP3StreamsExhaustedError`` when the server's stream limit is reached,
    /// ``HTTP3StreamClosedError`` when the connection is closed or going away.
    public func openStream() throws -> HTTP3Stream {
        guard let connection else { throw HTTP3StreamClosedError() }
        return try connection.openRequestStream()
    }

    /// Whether new requests may start here: open, and no GOAWAY from the server.
    public var isUsable: Bool { connection.map { !$0.closed && !$0.goawayReceived } ?? false }

    /// Request streams open now.
    public var openStreams: Int { connection?.streams.count ?? 0 }

    /// The connection as an extension sees it (datagrams, streams, the server's SETTINGS); nil once closed.
    public var handle: HTTP3ConnectionHandle? { connection?.handle }

    /// Closes with CONNECTION_CLOSE (NO_ERROR); open streams fail.
    public func close() {
        connection?.close(sendingClose: true)
    }

    /// Waits until the connection has closed.
    public func closed() async {
        let promise = loop.makePromise(of: Void.self)
        loop.execute {
            if self.connection == nil { promise.succeed() } else { self.closeWaiters.append(promise) }
        }
        try? await promise.futureResult.get()
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        forEachDatagram(envelope) { connection?.read($0, from: envelope.remoteAddress) }
    }

    fileprivate func refused() {
        guard let handshake else { return }
        self.handshake = nil
        handshake.fail(QUICError("connection refused (nothing listens on the UDP port)"))
        close()
    }

    fileprivate func handshakeDone() {
        handshake?.succeed()
        handshake = nil
    }

    // MARK: QUICDatagramSink

    public var allocator: ByteBufferAllocator { channel.allocator }
    func send(_ buffer: ByteBuffer, segmentSize: Int?, to remote: SocketAddress) {
        let metadata = segmentSize.map {
            AddressedEnvelope<ByteBuffer>.Metadata(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: $0)
        }
        channel.write(AddressedEnvelope(remoteAddress: remote, data: buffer, metadata: metadata), promise: nil)
    }
    func flush() { channel.flush() }
    func register(_ cid: [UInt8], _ conn: QUICConnection) {}
    func statelessResetToken(for cid: [UInt8]) -> [UInt8] {
        (0..<Int(NGTCP2_STATELESS_RESET_TOKENLEN)).map { _ in UInt8.random(in: 0...255) }
    }
    private var owing = false
    func writeAfterReads(_ conn: QUICConnection) { owing = true }

    fileprivate func readBatchDone() {
        if owing {
            owing = false
            connection?.readsDone()
        }
        flush()
    }
    func forget(_ conn: QUICConnection) {
        guard connection === conn else { return }
        connection = nil
        handshake?.fail(QUICError("connection closed during the handshake"))
        handshake = nil
        channel.close(promise: nil)
        for w in closeWaiters { w.succeed() }
        closeWaiters = []
        let callback = onClose
        onClose = nil
        callback?()
    }
}

private final class ClientDatagramReader: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: `client` is set on the channel's loop before the first read.
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    var client: HTTP3ClientConnection?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        client?.receive(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { client?.readBatchDone() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ECONNREFUSED from ICMP: nobody listens. During the handshake that ends the attempt at once; later the
        // idle timer ends the connection (an ICMP message alone is no proof, RFC 9000 section 14.2.1 aside).
        if let e = error as? IOError, e.errnoCode == ECONNREFUSED { client?.refused() }
    }
}

/// One client-side QUIC connection: the client's Initial, server verification by GnuTLS, HTTP/3 requests.
final class QUICClientConnection: QUICConnection {
    unowned let client: HTTP3ClientConnection
    private var credentials: gnutls_certificate_credentials_t?
    private var verifyName: UnsafeMutablePointer<CChar>?

    init(
        client: HTTP3ClientConnection, local: SocketAddress, remote: SocketAddress,
        configuration config: HTTP3ClientConfiguration
    ) throws {
        self.client = client
        super.init(sink: client, local: local, remote: remote, extraSettings: config.extraSettings)
        isServer = false
        ext = config.extension
        serverName = config.serverName
        var scidC = ngtcp2_cid()
        scid.withUnsafeBufferPointer { ngtcp2_cid_init(&scidC, $0.baseAddress, $0.count) }
        var dcidC = ngtcp2_cid()
        let dcid = (0..<18).map { _ in UInt8.random(in: 0...255) }
        dcid.withUnsafeBufferPointer { ngtcp2_cid_init(&dcidC, $0.baseAddress, $0.count) }
        var callbacks = commonCallbacks()
        callbacks.client_initial = ngtcp2_crypto_client_initial_cb
        callbacks.recv_retry = ngtcp2_crypto_recv_retry_cb

        var settings = ngtcp2_settings()
        usher_ngtcp2_settings_default(&settings)
        settings.initial_ts = quicTimestamp()
        if QUICServerEndpoint.debugLog { usher_ngtcp2_settings_log_to_stderr(&settings) }
        var params = ngtcp2_transport_params()
        usher_ngtcp2_transport_params_default(&params)
        params.initial_max_stream_data_bidi_local = UInt64(config.streamWindow)
        params.initial_max_stream_data_bidi_remote = 256 * 1024
        params.initial_max_stream_data_uni = 256 * 1024
        params.initial_max_data = UInt64(config.connectionWindow)
        // Servers open no request streams; an extension's (WebTransport) streams are another matter.
        params.initial_max_streams_bidi = config.extension == nil ? 0 : 100
        params.initial_max_streams_uni = config.extension == nil ? 3 : 100
        if config.extraSettings.contains(where: { $0.id == HTTP3Codepoint.settingsH3Datagram && $0.value == 1 }) {
            params.max_datagram_frame_size = 65535
        }
        params.max_idle_timeout = UInt64(max(config.idleTimeout.nanoseconds, 0))
        var c: OpaquePointer?
        let rv = usher_ngtcp2_conn_client_new(
            &c, &dcidC, &scidC, path, UInt32(NGTCP2_PROTO_VER_V1), &callbacks, &settings,
            &params, nil, userData)
        guard rv == 0, let c else { throw QUICError("ngtcp2_conn_client_new: \(rv)") }
        conn = c

        let s = try makeSession(server: false)
        var cred: gnutls_certificate_credentials_t?
        guard gnutls_certificate_allocate_credentials(&cred) == 0, let cred else {
            throw QUICError("allocating credentials")
        }
        credentials = cred
        if let roots = config.rootCAPEM {
            for pem in roots {
                var bytes = Array(pem.utf8)
                let n = bytes.withUnsafeMutableBufferPointer { b -> Int32 in
                    var d = gnutls_datum_t(data: b.baseAddress, size: UInt32(b.count))
                    return gnutls_certificate_set_x509_trust_mem(cred, &d, GNUTLS_X509_FMT_PEM)
                }
                guard n >= 0 else {
                    throw QUICError("loading trusted certificates: \(String(cString: gnutls_strerror(n)))")
                }
            }
        } else if !config.insecureSkipVerify {
            guard gnutls_certificate_set_x509_system_trust(cred) >= 0 else {
                throw QUICError("loading the system's trusted roots")
            }
        }
        if let client = config.clientCertificate {
            try QUICCredentials.addKeyPair(to: cred, chainPEM: client.chainPEM, keyPEM: client.keyPEM)
        }
        guard gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(cred)) == 0 else {
            throw QUICError("setting credentials")
        }
        let name = config.serverName
        let isIP = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        if !isIP && !name.isEmpty {
            let n = Array(name.utf8)
            _ = n.withUnsafeBufferPointer { gnutls_server_name_set(s, GNUTLS_NAME_DNS, $0.baseAddress, $0.count) }
        }
        if !config.insecureSkipVerify {
            // GnuTLS checks the chain and the name (or IP address) during the handshake; it keeps the pointer, so
            // the name lives as long as the session.
            verifyName = strdup(name)
            gnutls_session_set_verify_cert(s, verifyName, 0)
        }
        try attach(s)
    }

    deinit {
        releaseProtocolState()
        if let credentials { gnutls_certificate_free_credentials(credentials) }
        free(verifyName)
    }

    override func handshakeDidComplete() -> Int32 {
        handshakeDone = true
        let rv = startHTTP3(server: false)
        if rv == 0 { client.handshakeDone() }
        return rv
    }

    override func headersReceived(_ stream: HTTP3Stream) {
        stream.onHeaders?()
    }
}
