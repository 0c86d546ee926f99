public import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif
import NIOPosix
import NIOSSL
import NIOHTTP2
import Synchronization
import UsherHTTP
public import UsherCore

/// Transports to upstreams (`http.reverse_proxy.transport.*`, inline key `protocol`).
public protocol ProxyTransport: Module {}

public enum ProxyTransports: ModuleNamespace {
    public static let prefix = "http.reverse_proxy.transport"
    public static let inlineKey: String? = "protocol"
    public typealias Instance = any ProxyTransport
}

/// `http.reverse_proxy.transport.http`: HTTP/1.1 to upstreams, in cleartext or TLS, with pooled keep-alive
/// connections.
public struct HTTPTransport: ProxyTransport, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.transport.http"
    /// `dial_timeout`: longest wait for a connection. Default: 3s.
    public var dialTimeout: ConfigDuration?
    /// `response_header_timeout`: longest wait for the response head after the request is sent. Default: none.
    public var responseHeaderTimeout: ConfigDuration?
    /// `keepalive.enabled`: reuse connections. Default: true.
    public var keepAlive: Bool
    /// `keepalive.max_idle_conns_per_host`: idle connections kept per upstream (and event loop). Default: 32.
    public var maxIdlePerHost: Int
    /// `keepalive.idle_timeout`: how long an idle connection is kept. Default: 2m.
    public var idleTimeout: ConfigDuration?
    /// `tls`: speak TLS to upstreams.
    public var tls: UpstreamTLS?
    /// `resolver`: nameservers for upstream host names (else the system resolver).
    public var resolver: UpstreamResolver?
    /// `read_timeout`: longest wait for the next bytes from an upstream (head or body). Default: none.
    public var readTimeout: ConfigDuration?
    /// `write_timeout`: longest wait for an upstream to take more of the request. Default: none.
    public var writeTimeout: ConfigDuration?
    /// `max_conns_per_host`: most HTTP/1.1 connections open to one upstream (dialling, busy or idle); requests
    /// beyond wait for one to close. Default: 0 (no limit).
    public var maxConnsPerHost = 0
    /// `proxy_protocol`: `v1` or `v2` to send a PROXY header naming the client first. Connections are then pooled
    /// per client connection, as in Caddy.
    public var proxyProtocol: String?
    /// `local_address`: the IP address connections to upstreams come from.
    public var localAddress: SocketAddress?
    /// `versions`: HTTP versions to speak: `1.1`, `2` (over TLS, by ALPN), `h2c` (HTTP/2 in cleartext, prior
    /// knowledge). Default: `["1.1", "2"]` (so cleartext upstreams get HTTP/1.1).
    public var versions: [String] = ["1.1", "2"]
    /// Built from `tls` when provisioned: ALPN by `versions`, and one offering only HTTP/1.1 for upgrades.
    var tlsContext: NIOSSLContext?
    var tlsContextHTTP1: NIOSSLContext?

    enum CodingKeys: String, CodingKey {
        case dialTimeout = "dial_timeout", responseHeaderTimeout = "response_header_timeout", keepalive, versions
        case readBuffer = "read_buffer", writeBuffer = "write_buffer", maxResponseHeaderSize = "max_response_header_size"
        case tls, compression, proxyProtocol = "proxy_protocol", localAddress = "local_address", resolver
        case maxConnsPerHost = "max_conns_per_host", expectContinueTimeout = "expect_continue_timeout"
        case dialFallbackDelay = "dial_fallback_delay", forwardProxyURL = "forward_proxy_url", networkProxy = "network_proxy"
        case readTimeout = "read_timeout", writeTimeout = "write_timeout"
    }

    enum KeepAliveKeys: String, CodingKey {
        case enabled, probeInterval = "probe_interval", maxIdleConns = "max_idle_conns"
        case maxIdleConnsPerHost = "max_idle_conns_per_host", idleTimeout = "idle_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.forwardProxyURL, .networkProxy])
        resolver = try c.decodeIfPresent(UpstreamResolver.self, forKey: .resolver)
        readTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readTimeout)
        writeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeTimeout)
        dialTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout)
        tls = try c.decodeIfPresent(UpstreamTLS.self, forKey: .tls)
        maxConnsPerHost = try c.decodeIfPresent(Int.self, forKey: .maxConnsPerHost) ?? 0
        proxyProtocol = try c.decodeIfPresent(String.self, forKey: .proxyProtocol)
        if proxyProtocol == "" { proxyProtocol = nil }
        if let v = proxyProtocol, v != "v1" && v != "v2" { throw c.error(.proxyProtocol, "proxy_protocol must be v1 or v2, not \(v)") }
        if let local = try c.decodeIfPresent(String.self, forKey: .localAddress), !local.isEmpty {
            guard let a = try? SocketAddress(ipAddress: local, port: 0) else {
                throw c.error(.localAddress, "not an IP address: \(local)")
            }
            localAddress = a
        }
        responseHeaderTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .responseHeaderTimeout)
        versions = try c.decodeIfPresent([String].self, forKey: .versions) ?? ["1.1", "2"]
        for v in versions where !["1.1", "2", "h2c", "3"].contains(v) {
            throw c.error(.versions, "unsupported HTTP version \(v) (1.1, 2, h2c and 3 are)")
        }
        if versions.isEmpty { throw c.error(.versions, "no HTTP versions listed") }
        // As in Caddy: HTTP/3 to an upstream is all or nothing, and needs TLS.
        if versions.contains("3") && versions.count > 1 {
            throw c.error(.versions, "if HTTP/3 is enabled to the upstream, no other HTTP versions are supported")
        }
        // Buffer sizes and the other tuning knobs of Go's transport have no equivalent to set here.
        _ = try c.decodeIfPresent(Int.self, forKey: .readBuffer)
        _ = try c.decodeIfPresent(Int.self, forKey: .writeBuffer)
        _ = try c.decodeIfPresent(Int.self, forKey: .maxResponseHeaderSize)
        _ = try c.decodeIfPresent(Bool.self, forKey: .compression)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .expectContinueTimeout)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialFallbackDelay)
        keepAlive = true
        maxIdlePerHost = 32
        if c.contains(.keepalive) {
            let k = try c.nestedContainer(keyedBy: KeepAliveKeys.self, forKey: .keepalive)
            keepAlive = try k.decodeIfPresent(Bool.self, forKey: .enabled) ?? true
            _ = try k.decodeIfPresent(ConfigDuration.self, forKey: .probeInterval)
            _ = try k.decodeIfPresent(Int.self, forKey: .maxIdleConns)
            maxIdlePerHost = try k.decodeIfPresent(Int.self, forKey: .maxIdleConnsPerHost) ?? 32
            idleTimeout = try k.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout)
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        if versions == ["3"] && tls == nil {
            throw ConfigError("versions [\"3\"] needs tls: HTTP/3 runs over QUIC, which is always encrypted")
        }
        try await tls?.provision(context)
        var alpn: [String] = []
        if versions.contains("2") { alpn.append("h2") }
        if versions.contains("1.1") { alpn.append("http/1.1") }
        tlsContext = try tls?.makeContext(alpn: alpn)
        tlsContextHTTP1 = try tls?.makeContext(alpn: ["http/1.1"])
    }



    /// Whether a connection to `port` speaks TLS (`tls` set and the port not in `except_ports`).
    func usesTLS(port: Int) -> Bool {
        guard let tls, tlsContext != nil else { return false }
        return !tls.exceptPorts.contains(String(port))
    }

    /// Gives a new connection (or HTTP/2 stream) the transport's read and write timeouts.
    func applyTimeouts(_ c: UpstreamConnection) {
        c.readTimeout = readTimeout.flatMap { $0.nanoseconds > 0 ? .nanoseconds($0.nanoseconds) : nil }
        c.writeTimeout = writeTimeout.flatMap { $0.nanoseconds > 0 ? .nanoseconds($0.nanoseconds) : nil }
    }

    /// Whether HTTP/2 is offered: by ALPN over TLS (`2` listed), or with prior knowledge in cleartext (`h2c`).
    func offersHTTP2(toTLS tls: Bool) -> Bool {
        tls ? versions.contains("2") : versions.contains("h2c")
    }

    /// The defaults, for a handler without `transport`.
    init() {
        keepAlive = true
        maxIdlePerHost = 32
    }
}

/// Why an upstream exchange failed, and whether another upstream may be tried.
struct UpstreamError: Error, CustomStringConvertible {
    let description: String
    /// Nothing was sent that the upstream could have acted on (a dial failure), so trying another is safe.
    let retryable: Bool
    /// The failure was a timeout (the client gets 504 rather than 502).
    var timedOut = false
}

/// One request/response exchange with an upstream, as the proxy drives it: request parts out, response parts in.
/// An HTTP/1.1 connection, an HTTP/2 stream (through NIO's codec) or an HTTP/3 stream. Calls happen on the loop of
/// the request.
protocol UpstreamExchange: AnyObject {
    /// The next response part; `nil` after the end.
    func next() async throws -> HTTPClientResponsePart?
    /// Sends a request part, waiting while the upstream cannot take more.
    func write(_ part: HTTPClientRequestPart, flush: Bool) async throws
    /// Abandons the exchange (the connection for HTTP/1.1, the stream otherwise).
    func close()
    /// The response head did not come in time: fail the exchange.
    func timeOut()
    /// Whether a timeout ended the exchange.
    var timedOut: Bool { get }
    /// After a `101`: the raw byte tunnel (HTTP/1.1 only).
    func becomeTunnel() throws -> UpstreamTunnel
}

extension UpstreamConnection: UpstreamExchange {}

/// One HTTP/1.1 connection to an upstream, used by one request at a time. Reads only on demand (auto-read is off),
/// so a slow client slows the upstream instead of filling memory. Every call happens on the channel's loop.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let address: String
    /// An HTTP/2 stream rather than a connection: used once, never pooled.
    let isStream: Bool
    private var context: ChannelHandlerContext?
    private var buffered = CircularBuffer<HTTPClientResponsePart>()
    /// Body bytes in `buffered`; reading pauses above ``highWatermark``.
    private var bufferedBytes = 0
    private var waiter: CheckedContinuation<HTTPClientResponsePart?, any Error>?
    private let writability = WritabilityGate()
    private(set) var closed = false
    /// Set by the pool while the connection is idle.
    var idleSince: NIODeadline?
    /// `read_timeout` and `write_timeout` of the transport.
    var readTimeout: TimeAmount?
    var writeTimeout: TimeAmount?
    private var ioTimer: Scheduled<Void>?

    /// Response bytes held for a slow client before the upstream is no longer read.
    static let highWatermark = 64 * 1024

    init(address: String, isStream: Bool = false) {
        self.address = address
        self.isStream = isStream
    }

    var channel: (any Channel)? { context?.channel }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { context.read() }
    }
    func handlerRemoved(context: ChannelHandlerContext) {
        teardown(nil)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        // Reading starts at once: a TLS handshake needs it, and an idle connection should notice a close.
        context.read()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown(nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        teardown(error)
        context.close(promise: nil)
    }

    private func teardown(_ error: (any Error)?) {
        guard !closed else { return }
        closed = true
        ioTimer?.cancel()
        let e = error ?? UpstreamError(description: "upstream closed the connection", retryable: false)
        waiter?.resume(throwing: e)
        waiter = nil
        writability.fail(e)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let w = waiter {
            waiter = nil
            ioTimer?.cancel()
            w.resume(returning: part)
        } else {
            if case .body(let b) = part { bufferedBytes += b.readableBytes }
            buffered.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Reading goes on while little is held: the socket stays registered for reads (no epoll change per
        // response), an idle pooled connection notices the upstream closing it, and a slow client still stops
        // the upstream once ``highWatermark`` bytes wait.
        if bufferedBytes < Self.highWatermark { context.read() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writability.open()
        }
        context.fireChannelWritabilityChanged()
    }

    /// The next response part, from what was read already or from the socket.
    func next() async throws -> HTTPClientResponsePart? {
        if let part = buffered.popFirst() {
            if case .body(let b) = part {
                let wasAbove = bufferedBytes >= Self.highWatermark
                bufferedBytes -= b.readableBytes
                if wasAbove && bufferedBytes < Self.highWatermark { context?.read() }
            }
            return part
        }
        guard !closed, let context else {
            throw UpstreamError(description: "upstream closed the connection", retryable: false)
        }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            armIOTimer(readTimeout, "timeout reading from upstream")
            context.read()
        }
    }

    /// Writes a request part, waiting while the socket is not writable.
    func write(_ part: HTTPClientRequestPart, flush: Bool) async throws {
        guard !closed, let context else { throw UpstreamError(description: "upstream closed the connection", retryable: false) }
        context.write(wrapOutboundOut(part), promise: nil)
        if flush || !context.channel.isWritable { context.flush() }
        if !context.channel.isWritable {
            armIOTimer(writeTimeout, "timeout writing to upstream")
            defer { ioTimer?.cancel() }
            try await writability.wait()
        }
    }

    func close() { context?.close(promise: nil) }

    /// After a `101` head: HTTP gives way to a raw byte tunnel on the same socket.
    func becomeTunnel() throws -> UpstreamTunnel {
        guard !closed, let context else { throw UpstreamError(description: "upstream closed the connection", retryable: false) }
        let tunnel = UpstreamTunnel()
        let sync = context.pipeline.syncOperations
        try sync.addHandler(tunnel, position: .before(self))
        if let encoder = try? sync.handler(type: HTTPRequestEncoder.self) {
            sync.removeHandler(encoder, promise: nil)
        }
        if let validator = try? sync.handler(type: NIOHTTPRequestHeadersValidator.self) {
            sync.removeHandler(validator, promise: nil)
        }
        if let decoder = try? sync.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self) {
            sync.removeHandler(decoder, promise: nil)
        }
        closed = true
        sync.removeHandler(self, promise: nil)
        return tunnel
    }

    /// Set when the response head did not come in time (`response_header_timeout`), or a read or write took
    /// longer than `read_timeout`/`write_timeout`.
    private(set) var timedOut = false

    private func armIOTimer(_ limit: TimeAmount?, _ why: String) {
        guard let limit, let loop = context?.eventLoop else { return }
        ioTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: loop)
        ioTimer = loop.scheduleTask(in: limit) {
            let me = bound.value
            me.timedOut = true
            me.teardown(UpstreamError(description: why, retryable: false, timedOut: true))
            me.context?.close(promise: nil)
        }
    }

    /// Gives up on the exchange: the head did not arrive in time.
    func timeOut() {
        timedOut = true
        teardown(UpstreamError(description: "timeout awaiting response headers", retryable: false))
        context?.close(promise: nil)
    }

    /// Whether the connection can carry another request: open, and nothing unasked-for arrived while idle.
    var reusable: Bool { !closed && buffered.isEmpty && context?.channel.isActive == true }
}

/// An upstream connection after a protocol switch: raw bytes both ways, read on demand.
final class UpstreamTunnel: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var buffered = CircularBuffer<ByteBuffer>()
    private var waiter: CheckedContinuation<ByteBuffer?, any Error>?
    private let writability = WritabilityGate()
    private(set) var closed = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        teardown()
        context.close(promise: nil)
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        waiter?.resume(returning: nil)
        waiter = nil
        writability.fail(UpstreamError(description: "upstream closed the connection", retryable: false))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard buffer.readableBytes > 0 else { return }
        if let w = waiter {
            waiter = nil
            w.resume(returning: buffer)
        } else {
            buffered.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if waiter != nil { context.read() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writability.open() }
        context.fireChannelWritabilityChanged()
    }

    /// The next bytes from the upstream; `nil` once it has closed.
    func next() async throws -> ByteBuffer? {
        if let b = buffered.popFirst() { return b }
        guard !closed, let context else { return nil }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            context.read()
        }
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard !closed, let context else { throw UpstreamError(description: "upstream closed the connection", retryable: false) }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        if !context.channel.isWritable { try await writability.wait() }
    }

    /// Sends `last` (if any), then closes.
    func close(sending last: ByteBuffer?) {
        guard let context else { return }
        let channel = context.channel
        if let last, !closed {
            context.writeAndFlush(wrapOutboundOut(last)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
        teardown()
    }
}

/// A connection parked in the pool; only touched on its own event loop.
struct PooledConnection: @unchecked Sendable {
    let connection: UpstreamConnection
    let loop: any EventLoop
}

/// Idle keep-alive connections by event loop and upstream address, so a request reuses a connection on the loop
/// it already runs on. Idle time is stamped on release and checked on reuse; one sweep per loop closes what stays
/// idle past `idle_timeout`.
final class ConnectionPool: Sendable {
    let transport: HTTPTransport
    private struct LoopIdle {
        var byAddress: [String: [PooledConnection]] = [:]
        var sweepArmed = false
    }
    private let idle = Mutex<[ObjectIdentifier: LoopIdle]>([:])
    private let idleTimeout: TimeAmount

    /// Counts connections per upstream when `max_conns_per_host` is set.
    private let limiter: ConnectionLimiter?

    init(transport: HTTPTransport) {
        self.transport = transport
        http3 = HTTP3UpstreamPool(transport: transport)
        limiter = transport.maxConnsPerHost > 0 ? ConnectionLimiter(max: transport.maxConnsPerHost) : nil
        idleTimeout = transport.idleTimeout.flatMap { $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil } ?? .minutes(2)
    }

    /// HTTP/2 connections by event loop and address (a connecting one is a future the next requests share);
    /// a `nil` result means the upstream chose HTTP/1.1 by ALPN.
    private let http2 = Mutex<[ObjectIdentifier: [String: EventLoopFuture<HTTP2Upstream?>]]>([:])
    /// HTTP/3 connections (`versions ["3"]`).
    let http3: HTTP3UpstreamPool

    /// A connection (or HTTP/2 stream) to `address` on `loop`: an idle one if there is one (`reused`), else a new
    /// one. `upgrade`: the request switches protocols, which only HTTP/1.1 can carry.
    func acquire(_ address: String, on loop: any EventLoop, upgrade: Bool = false) async throws -> (any UpstreamExchange, reused: Bool) {
        if transport.versions == ["3"] {
            return try await http3.stream(address, on: loop)
        }
        if !upgrade, transport.offersHTTP2(toTLS: transport.usesTLS(port: Self.port(of: address))) {
            if let stream = try await http2Stream(address, on: loop) { return stream }
        }
        return try await acquireHTTP1(address, on: loop, upgrade: upgrade)
    }

    private static func port(of key: String) -> Int {
        let address = key.firstRange(of: "->").map { String(key[$0.upperBound...]) } ?? key
        return (try? NetworkAddress(parsing: address)).map(\.startPort) ?? 0
    }

    /// A new stream on the HTTP/2 connection to `address`, dialling it first if needed; `nil` when the upstream
    /// speaks only HTTP/1.1.
    private func http2Stream(_ address: String, on loop: any EventLoop) async throws -> (UpstreamConnection, reused: Bool)? {
        let key = ObjectIdentifier(loop)
        for attempt in 0..<2 {
            var dialing = false
            let future: EventLoopFuture<HTTP2Upstream?> = http2.withLock { d in
                if let f = d[key]?[address] { return f }
                let promise = loop.makePromise(of: HTTP2Upstream?.self)
                d[key, default: [:]][address] = promise.futureResult
                dialing = true
                // Dialling sets up the pipeline, which must happen on the channel's loop.
                Task(executorPreference: EventLoopTaskExecutor.forLoop(loop)) { [self] in
                    do { promise.succeed(try await dialHTTP2(address, on: loop)) } catch { promise.fail(error) }
                }
                return promise.futureResult
            }
            let upstream: HTTP2Upstream?
            do {
                upstream = try await future.get()
            } catch {
                forgetHTTP2(address, key: key, future)
                throw error
            }
            guard let upstream else { return nil }
            if upstream.isUsable {
                do {
                    let stream = try await upstream.openStream()
                    transport.applyTimeouts(stream)
                    return (stream, !dialing)
                } catch where !dialing && attempt == 0 {
                    // The shared connection went away under us: dial again.
                }
            }
            forgetHTTP2(address, key: key, future)
        }
        throw UpstreamError(description: "dialing \(address): HTTP/2 connection unusable", retryable: true)
    }

    private func forgetHTTP2(_ address: String, key: ObjectIdentifier, _ future: EventLoopFuture<HTTP2Upstream?>) {
        http2.withLock { d in
            if d[key]?[address] === future { d[key]?[address] = nil }
        }
    }

    /// Dials for HTTP/2: prior knowledge in cleartext, ALPN over TLS (which may pick HTTP/1.1: `nil`).
    private func dialHTTP2(_ address: String, on loop: any EventLoop) async throws -> HTTP2Upstream? {
        let (channel, secure, protocolName) = try await connect(address, on: loop, timeout: nil, http1Only: false)
        if secure && protocolName != "h2" {
            // ALPN chose HTTP/1.1: this connection joins the HTTP/1.1 pool, and HTTP/2 is not tried again.
            let conn = try addHTTP1(to: channel, address: address)
            release(conn, reusable: true, loop: loop)
            return nil
        }
        do {
            return try HTTP2Upstream(channel: channel, address: address, secure: secure)
        } catch {
            channel.close(promise: nil)
            throw UpstreamError(description: "dialing \(address): \(error)", retryable: true)
        }
    }

    private func acquireHTTP1(_ address: String, on loop: any EventLoop, upgrade: Bool) async throws -> (UpstreamConnection, reused: Bool) {
        let key = ObjectIdentifier(loop)
        let now = NIODeadline.now()
        while let pooled = idle.withLock({ $0[key]?.byAddress[address]?.popLast() }) {
            let c = pooled.connection
            if c.reusable, let since = c.idleSince, now - since < idleTimeout {
                c.idleSince = nil
                return (c, true)
            }
            c.close()
        }
        if let limiter {
            try await limiter.reserve(address) { [self] in closeOneIdle(address) }
            do {
                let c = try await dial(address, on: loop)
                c.channel?.closeFuture.whenComplete { _ in limiter.free(address) }
                return (c, false)
            } catch {
                limiter.free(address)
                throw error
            }
        }
        return (try await dial(address, on: loop), false)
    }

    /// Closes one idle connection to `address` (on whichever loop has one), to make room under the limit.
    private func closeOneIdle(_ address: String) {
        let victim = idle.withLock { d -> PooledConnection? in
            for key in d.keys {
                if let p = d[key]?.byAddress[address]?.popLast() { return p }
            }
            return nil
        }
        if let victim { victim.loop.execute { victim.connection.close() } }
    }

    /// Parks a connection whose exchange completed cleanly; otherwise closes it. An HTTP/2 or HTTP/3 stream just
    /// ends.
    func release(_ exchange: any UpstreamExchange, reusable: Bool, loop: any EventLoop) {
        guard let connection = exchange as? UpstreamConnection else {
            if !reusable { exchange.close() }
            return
        }
        // Under max_conns_per_host a waiting request needs the slot more than the pool needs another idle connection.
        let wanted = limiter?.hasWaiters(connection.address) ?? false
        guard reusable, transport.keepAlive, connection.reusable, !connection.isStream, !wanted else {
            connection.close()
            return
        }
        connection.idleSince = .now()
        let key = ObjectIdentifier(loop)
        let (kept, arm) = idle.withLock { d -> (Bool, Bool) in
            guard (d[key]?.byAddress[connection.address]?.count ?? 0) < transport.maxIdlePerHost else { return (false, false) }
            d[key, default: LoopIdle()].byAddress[connection.address, default: []]
                .append(PooledConnection(connection: connection, loop: loop))
            let arm = !d[key]!.sweepArmed
            d[key]!.sweepArmed = true
            return (true, arm)
        }
        if !kept { connection.close() }
        if arm { scheduleSweep(on: loop) }
    }

    private func scheduleSweep(on loop: any EventLoop) {
        loop.scheduleTask(in: idleTimeout) { [self] in sweep(loop) }
    }

    /// Closes this loop's connections idle past the timeout; runs again while any are left.
    private func sweep(_ loop: any EventLoop) {
        let key = ObjectIdentifier(loop)
        let now = NIODeadline.now()
        let (expired, again) = idle.withLock { d -> ([PooledConnection], Bool) in
            guard var entry = d[key] else { return ([], false) }
            var expired: [PooledConnection] = []
            for (address, list) in entry.byAddress {
                let (old, fresh) = list.reduce(into: ([PooledConnection](), [PooledConnection]())) { acc, p in
                    if let since = p.connection.idleSince, now - since < idleTimeout { acc.1.append(p) } else { acc.0.append(p) }
                }
                expired += old
                entry.byAddress[address] = fresh.isEmpty ? nil : fresh
            }
            entry.sweepArmed = !entry.byAddress.isEmpty
            d[key] = entry
            return (expired, entry.sweepArmed)
        }
        for p in expired { p.connection.close() }
        if again { scheduleSweep(on: loop) }
    }

    /// Closes every idle connection and the HTTP/2 and HTTP/3 connections (the handler is being unloaded).
    func closeAll() {
        http3.closeAll()
        let all = idle.withLock { d -> [PooledConnection] in
            let v = d.values.flatMap { $0.byAddress.values.flatMap { $0 } }
            d.removeAll()
            return v
        }
        for p in all { p.loop.execute { p.connection.close() } }
        let shared = http2.withLock { d -> [EventLoopFuture<HTTP2Upstream?>] in
            let v = d.values.flatMap { $0.values }
            d.removeAll()
            return v
        }
        for f in shared { f.whenSuccess { $0?.close() } }
    }

    /// A new HTTP/1.1 connection to `address` on `loop`, waiting at most `timeout` (else `dial_timeout`, 3s).
    func dial(_ address: String, on loop: any EventLoop, timeout: TimeAmount? = nil) async throws -> UpstreamConnection {
        let (channel, _, _) = try await connect(address, on: loop, timeout: timeout, http1Only: true)
        return try addHTTP1(to: channel, address: address)
    }

    /// Puts the HTTP/1.1 client codec and an ``UpstreamConnection`` on a connected channel.
    func addHTTP1(to channel: any Channel, address: String) throws -> UpstreamConnection {
        let connection = UpstreamConnection(address: address)
        transport.applyTimeouts(connection)
        do {
            let sync = channel.pipeline.syncOperations
            // Header values are checked where they are made (the handler strips CR/LF from header ops);
            // those from the client were checked by the server's parser.
            try sync.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false)
            try sync.addHandler(connection)
        } catch {
            channel.close(promise: nil)
            throw UpstreamError(description: "dialing \(address): \(error)", retryable: true)
        }
        return connection
    }

    /// Connects (and shakes hands, for TLS): the channel, whether it is TLS, and the protocol ALPN chose.
    private func connect(_ key: String, on loop: any EventLoop, timeout: TimeAmount?,
                         http1Only: Bool) async throws -> (any Channel, Bool, String?) {
        // A pool key "client->upstream" (proxy_protocol) names the client to announce.
        var address = key
        var proxyHeader: ByteBuffer?
        if let r = key.firstRange(of: "->"), let version = transport.proxyProtocol {
            address = String(key[r.upperBound...])
            proxyHeader = ProxyProtocolHeader.make(version: version, source: String(key[..<r.lowerBound]))
        }
        let parsed: NetworkAddress
        do {
            parsed = try NetworkAddress(parsing: address)
        } catch {
            throw UpstreamError(description: "invalid upstream address \(address): \(error)", retryable: true)
        }
        let timeout = timeout ?? transport.dialTimeout.flatMap { $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil } ?? .seconds(3)
        let host = parsed.isUnixNetwork ? "" : (parsed.host.isEmpty ? "127.0.0.1" : parsed.host)
        let context = http1Only ? transport.tlsContextHTTP1 : transport.tlsContext
        let tls: (NIOSSLContext, String?)? = transport.usesTLS(port: parsed.startPort)
            ? context.map { ($0, transport.tls?.sni(for: host)) } : nil
        let handshake = loop.makePromise(of: String?.self)
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.autoRead, value: false)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if let local = transport.localAddress, !parsed.isUnixNetwork { bootstrap = bootstrap.bind(to: local) }
        bootstrap = bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let proxyHeader {
                        try channel.pipeline.syncOperations.addHandler(ProxyHeaderWriter(header: proxyHeader))
                    }
                    if let (context, sni) = tls {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: sni))
                        try sync.addHandler(HandshakeWaiter(promise: handshake))
                    }
                }
            }
        let channel: any Channel
        do {
            if parsed.isUnixNetwork {
                channel = try await bootstrap.connect(unixDomainSocketPath: parsed.host).get()
            } else if let ip = try? SocketAddress(ipAddress: host, port: parsed.startPort) {
                // An IP literal needs no resolver round (getaddrinfo and Happy Eyeballs) on every dial.
                channel = try await bootstrap.connect(to: ip).get()
            } else if let resolver = transport.resolver {
                let ips = try await DNSLookup.addresses(host, ipv4: true, ipv6: true, resolver: resolver)
                channel = try await bootstrap.connect(to: try SocketAddress(ipAddress: ips[0], port: parsed.startPort)).get()
            } else {
                channel = try await bootstrap.connect(host: host, port: parsed.startPort).get()
            }
        } catch {
            handshake.fail(error)
            let timedOut = (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
            throw UpstreamError(description: "dialing \(address): \(error)", retryable: true, timedOut: timedOut)
        }
        guard tls != nil else {
            handshake.succeed(nil)
            return (channel, false, nil)
        }
        // The handshake is part of dialing: a failure means nothing was sent, so another upstream may be tried.
        // It needs reading, which is otherwise left to the connection's handler.
        channel.read()
        let limit = transport.tls?.handshakeTimeout.flatMap { $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil } ?? .seconds(10)
        let timer = loop.scheduleTask(in: limit) { handshake.fail(ChannelError.connectTimeout(limit)) }
        defer { timer.cancel() }
        do {
            let negotiated = try await handshake.futureResult.get()
            return (channel, true, negotiated)
        } catch {
            channel.close(promise: nil)
            let timedOut = (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
            throw UpstreamError(description: "TLS handshake with \(address): \(error)", retryable: true, timedOut: timedOut)
        }
    }
}

/// Sends a PROXY protocol header as the connection opens, before anything else (TLS included).
final class ProxyHeaderWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    let header: ByteBuffer

    init(header: ByteBuffer) { self.header = header }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(header), promise: nil)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}

/// PROXY protocol headers (v1 text, v2 binary) with the client as source and an all-zero destination of the same
/// family, as Caddy sends them.
enum ProxyProtocolHeader {
    static func make(version: String, source: String) -> ByteBuffer? {
        guard let src = try? NetworkAddress(parsing: source),
              let ip = try? SocketAddress(ipAddress: src.host, port: src.startPort) else { return nil }
        let v6: Bool
        switch ip {
        case .v6: v6 = true
        default: v6 = false
        }
        var b = ByteBuffer()
        if version == "v1" {
            b.writeString("PROXY \(v6 ? "TCP6" : "TCP4") \(src.host) \(v6 ? "::" : "0.0.0.0") \(src.startPort) 0\r\n")
            return b
        }
        b.writeBytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
        b.writeInteger(UInt8(0x21))  // version 2, PROXY
        b.writeInteger(UInt8(v6 ? 0x21 : 0x11))  // TCP over IPv6 / IPv4
        b.writeInteger(UInt16(v6 ? 36 : 12))
        var addr = [UInt8](repeating: 0, count: v6 ? 16 : 4)
        _ = inet_pton(v6 ? AF_INET6 : AF_INET, src.host, &addr)
        b.writeBytes(addr)
        b.writeBytes([UInt8](repeating: 0, count: v6 ? 16 : 4))
        b.writeInteger(UInt16(src.startPort))
        b.writeInteger(UInt16(0))
        return b
    }
}

/// Counts open connections per upstream against `max_conns_per_host`; requests over the limit wait, first come
/// first served, for one to close.
final class ConnectionLimiter: Sendable {
    private struct Host {
        var open = 0
        var waiters: [(id: Int, resume: CheckedContinuation<Void, any Error>)] = []
    }
    private let max: Int
    private let hosts = Mutex<(byAddress: [String: Host], nextID: Int)>(([:], 0))

    init(max: Int) { self.max = max }

    /// Takes a slot for a new connection to `address`, waiting while all are taken (`makeRoom` may close an idle
    /// one). Throws when the waiting task is cancelled.
    func reserve(_ address: String, makeRoom: @Sendable () -> Void) async throws {
        let id = hosts.withLock { h -> Int? in
            if h.byAddress[address, default: Host()].open < max {
                h.byAddress[address, default: Host()].open += 1
                return nil
            }
            h.nextID += 1
            return h.nextID
        }
        guard let id else { return }
        makeRoom()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let granted = hosts.withLock { h -> Bool in
                    // A slot may have come free meanwhile.
                    if h.byAddress[address, default: Host()].open < max {
                        h.byAddress[address, default: Host()].open += 1
                        return true
                    }
                    h.byAddress[address, default: Host()].waiters.append((id, c))
                    return false
                }
                if granted { c.resume() }
            }
        } onCancel: {
            let waiter = hosts.withLock { h -> CheckedContinuation<Void, any Error>? in
                guard let i = h.byAddress[address]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return h.byAddress[address]!.waiters.remove(at: i).resume
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    func hasWaiters(_ address: String) -> Bool {
        hosts.withLock { !($0.byAddress[address]?.waiters.isEmpty ?? true) }
    }

    /// A connection to `address` closed (or its dial failed): the slot goes to the first waiter, if any.
    func free(_ address: String) {
        let next = hosts.withLock { h -> CheckedContinuation<Void, any Error>? in
            guard var host = h.byAddress[address] else { return nil }
            if !host.waiters.isEmpty {
                let w = host.waiters.removeFirst()
                h.byAddress[address] = host
                return w.resume
            }
            host.open -= 1
            h.byAddress[address] = host.open > 0 ? host : nil
            return nil
        }
        next?.resume()
    }
}
