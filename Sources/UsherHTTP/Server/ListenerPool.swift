import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import UsherCore
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// Limits and timeouts a connection runs with, fixed when it is accepted.
struct ConnectionSettings: Sendable {
    var maxHeaderBytes = 16 * 1024
    var readTimeout: TimeAmount?
    var readHeaderTimeout: TimeAmount? = .minutes(1)
    var readIdleTimeout: TimeAmount? = .minutes(1)
    var writeTimeout: TimeAmount?
    var writeIdleTimeout: TimeAmount? = .minutes(1)
    var idleTimeout: TimeAmount? = .minutes(5)
    /// Request body bytes buffered before reading pauses.
    var bodyWindow = 256 * 1024
    var scheme = "http"
    /// Files may go out with sendfile(2): the connection is cleartext TCP.
    var zeroCopy = true
    var tcpKeepAlive: (interval: Int, idle: Int, count: Int)?
    /// `enable_webtransport`: new HTTP/3 connections offer WebTransport.
    var webTransport = false
    /// `listener_wrappers`: what each connection goes through before HTTP reads it.
    var listenerPlan = ListenerPlan()
}

/// A connection a listener keeps track of, so stopping the listener can close it gracefully or at once.
/// Both calls arrive on the connection's event loop.
protocol ServedConnection: AnyObject {
    var eventLoop: any EventLoop { get }
    /// Idle connections close now, busy ones after their current responses (HTTP/2: GOAWAY).
    func shutdown()
    /// Closes now, whatever is in flight.
    func forceClose()
}

/// Moves a value into a `Sendable` closure when the program guarantees it is only touched on one event loop.
struct LoopConfined<T>: @unchecked Sendable {
    let value: T
}

/// One bound address and the server its connections currently dispatch to. A config reload that keeps the
/// address swaps the server here; open connections keep going and their next request sees the new routes.
final class ListenerSlot: Sendable {
    private struct State {
        var server: HTTPServerInstance?
        var closing = false
        var connections: [ObjectIdentifier: (loop: any EventLoop, connection: LoopConfined<any ServedConnection>)] = [:]
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let address: NetworkAddress
    /// HTTP/3: the address's port over UDP.
    let http3: Bool
    private let state: Mutex<State>

    init(address: NetworkAddress, server: HTTPServerInstance, http3: Bool = false) {
        self.address = address
        self.http3 = http3
        self.state = Mutex(State(server: server))
    }

    var currentServer: HTTPServerInstance? { state.withLock { $0.closing ? nil : $0.server } }
    var isClosing: Bool { state.withLock { $0.closing } }

    func setServer(_ server: HTTPServerInstance) { state.withLock { $0.server = server } }

    func register(_ connection: any ServedConnection) {
        let loop = connection.eventLoop
        state.withLock { $0.connections[ObjectIdentifier(connection)] = (loop, LoopConfined(value: connection)) }
    }

    func unregister(_ connection: any ServedConnection) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.connections[ObjectIdentifier(connection)] = nil
            guard s.connections.isEmpty else { return [] }
            let w = s.drainWaiters
            s.drainWaiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Stops dispatching: idle connections close now, busy ones after their current response.
    func close() {
        let conns = state.withLock { s in
            s.closing = true
            return Array(s.connections.values)
        }
        for c in conns {
            c.loop.execute { c.connection.value.shutdown() }
        }
    }

    var openConnections: Int { state.withLock { $0.connections.count } }

    /// Waits until every connection has closed.
    func waitForDrain() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s in
                if s.connections.isEmpty { return true }
                s.drainWaiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    /// Closes every connection now, busy or not.
    func forceClose() {
        let conns = state.withLock { Array($0.connections.values) }
        for c in conns {
            c.loop.execute { c.connection.value.forceClose() }
        }
    }
}

/// Bound listeners shared by successive configs, reference-counted by address.
final class ListenerPool: Sendable {
    private struct Entry {
        /// The TCP listener; none for HTTP/3, whose socket closes once its connections have drained.
        let channel: (any Channel)?
        let slot: ListenerSlot
        var refs: Int
        let unixPath: String?
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// The listener for `address`, bound now if no config holds it yet.
    func acquire(_ address: NetworkAddress, server: HTTPServerInstance, group: any EventLoopGroup) async throws
        -> ListenerSlot
    {
        let key = address.description
        if let slot = reuse(key) { return slot }
        let slot = ListenerSlot(address: address, server: server)
        let (channel, unixPath) = try await Self.bind(address, slot: slot, group: group)
        entries.withLock { $0[key] = Entry(channel: channel, slot: slot, refs: 1, unixPath: unixPath) }
        return slot
    }

    /// The HTTP/3 (QUIC over UDP) listener on `address`'s port, bound now if no config holds it yet.
    func acquireHTTP3(_ address: NetworkAddress, server: HTTPServerInstance, group: any EventLoopGroup) async throws
        -> ListenerSlot
    {
        let key = Self.http3Key(address)
        if let slot = reuse(key) { return slot }
        let slot = ListenerSlot(address: address, server: server, http3: true)
        let listener = HTTP3Listener(slot: slot, loop: group.next())
        if address.isFDNetwork {
            guard let fd = Int32(address.host) else {
                throw AddressError("invalid file descriptor \"\(address.host)\"")
            }
            try await listener.start(boundSocket: fd)
            entries.withLock { $0[key] = Entry(channel: nil, slot: slot, refs: 1, unixPath: nil) }
            return slot
        }
        let host =
            address.host.isEmpty
            ? (address.network == "tcp4" ? "0.0.0.0" : "::")
            : (address.host == "localhost" ? "127.0.0.1" : address.host)
        do {
            try await listener.start(host: host, port: address.startPort)
        } catch  where address.host.isEmpty && host == "::" {
            try await listener.start(host: "0.0.0.0", port: address.startPort)
        }
        entries.withLock { $0[key] = Entry(channel: nil, slot: slot, refs: 1, unixPath: nil) }
        return slot
    }

    private static func http3Key(_ address: NetworkAddress) -> String { "h3 " + address.description }

    /// The slot already bound under `key`, with one more reference.
    private func reuse(_ key: String) -> ListenerSlot? {
        entries.withLock { e in
            guard var entry = e[key] else { return nil }
            entry.refs += 1
            e[key] = entry
            return entry.slot
        }
    }

    /// Drops one reference; the last one closes the listener (connections finish their current response).
    func release(_ slot: ListenerSlot) async {
        let key = slot.http3 ? Self.http3Key(slot.address) : slot.address.description
        let closing: Entry? = entries.withLock { e in
            guard var entry = e[key] else { return nil }
            entry.refs -= 1
            if entry.refs > 0 {
                e[key] = entry
                return nil
            }
            e[key] = nil
            return entry
        }
        guard let closing else { return }
        try? await closing.channel?.close()
        if let path = closing.unixPath { unlink(path) }
        closing.slot.close()
    }

    private static func bind(_ address: NetworkAddress, slot: ListenerSlot, group: any EventLoopGroup) async throws -> (
        any Channel, String?
    ) {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accept many per wake-up: at 4 (NIO's default) a busy loop takes seconds to let in a burst of new
            // clients, which then wait in the backlog while the connected ones are served.
            .serverChannelOption(.maxMessagesPerRead, value: 128)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let logger = slot.currentServer?.errorLogger ?? Logger(label: "usher.http")
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptBackoff(logger: logger, address: address.description))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let server = slot.currentServer else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    // Cleartext HTTP/1.1 alone needs no guard: its connection handler is added at once and keeps the
                    // first request's deadline on its own timer.
                    var connectionGuard: ConnectionGuard?
                    if server.tls != nil || server.protocols.contains("h2c") {
                        connectionGuard = ConnectionGuard(settings: server.settings)
                        try channel.pipeline.syncOperations.addHandler(connectionGuard!)
                    }
                    try ConnectionPipeline.configure(
                        channel, slot: slot, server: server, connectionGuard: connectionGuard)
                }
            }
        if address.isUnixNetwork {
            let (path, mode) = try NetworkAddress.splitUnixPermissions(address.host)
            unlink(path)
            let channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            chmod(path, mode_t(mode))
            return (channel, path)
        }
        if address.isFDNetwork {
            guard let fd = Int32(address.host) else {
                throw AddressError("invalid file descriptor \"\(address.host)\"")
            }
            let channel = try await bootstrap.withBoundSocket(fd).get()
            return (channel, nil)
        }
        var host = address.host
        if host.isEmpty {
            host = address.network == "tcp4" ? "0.0.0.0" : "::"
        } else if host == "localhost" {
            host = "127.0.0.1"
        }
        do {
            return (try await bootstrap.bind(host: host, port: address.startPort).get(), nil)
        } catch  where address.host.isEmpty && host == "::" {
            // No IPv6 on this host: fall back to all IPv4 addresses.
            return (try await bootstrap.bind(host: "0.0.0.0", port: address.startPort).get(), nil)
        }
    }
}

extension HTTP1Connection: ServedConnection {}

enum HTTP1Pipeline {
    static func configure(
        _ channel: any Channel, slot: ListenerSlot, settings: ConnectionSettings, tls: TLSConnectionInfo? = nil,
        connectionGuard: ConnectionGuard?
    ) throws {
        let executor = EventLoopTaskExecutor.forLoop(channel.eventLoop)
        let connection = HTTP1Connection(
            slot: slot, settings: settings, executor: executor, tls: tls, connectionGuard: connectionGuard
        )
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(HTTP1HeadGuard(connection: connection))
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        try sync.addHandler(connection)
    }
}
