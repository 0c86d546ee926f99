public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
public import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

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
        idleTimeout =
            transport.idleTimeout.flatMap { $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil }
            ?? .minutes(2)
    }

    /// HTTP/2 connections by event loop and address (a connecting one is a future the next requests share);
    /// a `nil` result means the upstream chose HTTP/1.1 by ALPN.
    private let http2 = Mutex<[ObjectIdentifier: [String: EventLoopFuture<HTTP2Upstream?>]]>([:])
    /// HTTP/3 connections (`versions ["3"]`).
    let http3: HTTP3UpstreamPool

    /// A connection (or HTTP/2 stream) to `address` on `loop`: an idle one if there is one (`reused`), else a new
    /// one. `upgrade`: the request switches protocols, which only HTTP/1.1 can carry.
    func acquire(_ address: String, on loop: any EventLoop, upgrade: Bool = false) async throws -> (
        any UpstreamExchange, reused: Bool
    ) {
        if transport.fastCGI != nil { return try await acquireHTTP1(address, on: loop, upgrade: false) }
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
    private func http2Stream(_ address: String, on loop: any EventLoop) async throws -> (
        UpstreamConnection, reused: Bool
    )? {
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
                } catch  where !dialing && attempt == 0 {
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

    private func acquireHTTP1(_ address: String, on loop: any EventLoop, upgrade: Bool) async throws -> (
        UpstreamConnection, reused: Bool
    ) {
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
            guard (d[key]?.byAddress[connection.address]?.count ?? 0) < transport.maxIdlePerHost else {
                return (false, false)
            }
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
                    if let since = p.connection.idleSince, now - since < idleTimeout {
                        acc.1.append(p)
                    } else {
                        acc.0.append(p)
                    }
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
    func dial(_ address: String, on loop: any EventLoop, timeout: TimeAmount? = nil) async throws -> UpstreamConnection
    {
        let (channel, _, _) = try await connect(address, on: loop, timeout: timeout, http1Only: true)
        return try addHTTP1(to: channel, address: address)
    }

    /// Puts the HTTP/1.1 client codec and an ``UpstreamConnection`` on a connected channel.
    func addHTTP1(to channel: any Channel, address: String) throws -> UpstreamConnection {
        let connection = UpstreamConnection(address: address)
        transport.applyTimeouts(connection)
        do {
            let sync = channel.pipeline.syncOperations
            if let fastCGI = transport.fastCGI {
                try sync.addHandler(FastCGIClientCodec(transport: fastCGI))
            } else {
                // Header values are checked where they are made (the handler strips CR/LF from header ops);
                // those from the client were checked by the server's parser.
                try sync.addHTTPClientHandlers(
                    leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false)
            }
            try sync.addHandler(connection)
        } catch {
            channel.close(promise: nil)
            throw UpstreamError(description: "dialing \(address): \(error)", retryable: true)
        }
        return connection
    }

    /// Connects (and shakes hands, for TLS): the channel, whether it is TLS, and the protocol ALPN chose.
    private func connect(
        _ key: String, on loop: any EventLoop, timeout: TimeAmount?,
        http1Only: Bool
    ) async throws -> (any Channel, Bool, String?) {
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
        let timeout =
            timeout ?? transport.dialTimeout.flatMap {
                $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil
            } ?? .seconds(3)
        let host = parsed.isUnixNetwork ? "" : (parsed.host.isEmpty ? "127.0.0.1" : parsed.host)
        let context = http1Only ? transport.tlsContextHTTP1 : transport.tlsContext
        let tls: (NIOSSLContext, String?)? =
            transport.usesTLS(port: parsed.startPort)
            ? context.map { ($0, transport.tls?.sni(for: host)) } : nil
        let handshake = loop.makePromise(of: String?.self)
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.autoRead, value: false)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if let local = transport.localAddress, !parsed.isUnixNetwork { bootstrap = bootstrap.bind(to: local) }
        bootstrap =
            bootstrap
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
                channel = try await bootstrap.connect(to: try SocketAddress(ipAddress: ips[0], port: parsed.startPort))
                    .get()
            } else {
                channel = try await bootstrap.connect(host: host, port: parsed.startPort).get()
            }
        } catch {
            handshake.fail(error)
            let timedOut =
                (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
            throw UpstreamError(description: "dialing \(address): \(error)", retryable: true, timedOut: timedOut)
        }
        guard tls != nil else {
            handshake.succeed(nil)
            return (channel, false, nil)
        }
        // The handshake is part of dialing: a failure means nothing was sent, so another upstream may be tried.
        // It needs reading, which is otherwise left to the connection's handler.
        channel.read()
        let limit =
            transport.tls?.handshakeTimeout.flatMap {
                $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil
            } ?? .seconds(10)
        let timer = loop.scheduleTask(in: limit) { handshake.fail(ChannelError.connectTimeout(limit)) }
        defer { timer.cancel() }
        do {
            let negotiated = try await handshake.futureResult.get()
            return (channel, true, negotiated)
        } catch {
            channel.close(promise: nil)
            let timedOut =
                (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
            throw UpstreamError(
                description: "TLS handshake with \(address): \(error)", retryable: true, timedOut: timedOut)
        }
    }
}
