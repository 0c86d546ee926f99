import CUsherSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `caddy.logging.writers.net`: sends entries to a TCP, UDP or Unix socket (`tcp/host:port`, `udp/host:port`,
/// `unix//path`). Writing never blocks the caller: entries queue for a thread of the writer's own, which
/// reconnects after a failure (at most every 10 s, as Caddy does) and meanwhile writes them to stderr.
public struct NetWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.net"
    /// `address`: a network address; global placeholders (`{env.*}`) are replaced. Required.
    public var address: String
    /// `dial_timeout`: how long a connection attempt may take. Default: the kernel's.
    public var dialTimeout: ConfigDuration
    /// `soft_start`: start even when the address cannot be reached (entries go to stderr until it can).
    /// Default: false, and an unreachable address refuses the config.
    public var softStart: Bool
    let parsed: NetworkAddress

    package enum CodingKeys: String, CodingKey {
        case address, dialTimeout = "dial_timeout", softStart = "soft_start"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        address = try c.decodeIfPresent(String.self, forKey: .address) ?? ""
        dialTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout) ?? .zero
        softStart = try c.decodeIfPresent(Bool.self, forKey: .softStart) ?? false
        let replaced: String
        do { replaced = try Replacer().replaceOrError(address, errorOnEmpty: true) } catch {
            throw c.error(.address, "invalid host in address: \(error)")
        }
        do { parsed = try NetworkAddress(parsing: replaced) } catch {
            throw c.error(.address, "parsing network address '\(replaced)': \(error)")
        }
        if parsed.portRangeSize != 1 { throw c.error(.address, "multiple ports not supported") }
        if parsed.isFDNetwork || parsed.network.hasPrefix("ip") {
            throw c.error(.address, "network \(parsed.network) cannot carry a log")
        }
        if dialTimeout.nanoseconds < 0 { throw c.error(.dialTimeout, "timeout cannot be less than 0") }
    }

    public var writerKey: String { "net:" + parsed.description }

    public func openWriter() throws -> any LogWriter {
        let writer = NetLogWriter(address: parsed, timeoutMS: Int32(clamping: dialTimeout.nanoseconds / 1_000_000))
        do {
            try writer.connectNow()
        } catch {
            if !softStart { throw error }
            writeFully(
                2,
                Array(
                    "[ERROR] net log writer failed to connect: \(error) (will retry connection and print errors here in the meantime)\n"
                        .utf8))
        }
        writer.start()
        return writer
    }
}

/// The connection and queue behind a net writer.
final class NetLogWriter: LogWriter, @unchecked Sendable {
    // @unchecked: `fd` and `lastRedial` belong to the sending thread once it runs (before, to `openWriter`);
    // the queue is behind its mutex.
    let address: NetworkAddress
    let timeoutMS: Int32
    private var fd: Int32 = -1
    private var lastRedial = WallTime(seconds: 0, nanoseconds: 0)

    private struct Queue {
        var entries: [[UInt8]] = []
        var bytes = 0
        var closed = false
    }
    private let queue = Mutex(Queue())
    private let wake = Semaphore()
    /// Entries waiting beyond this go to stderr instead, so a slow or silent peer costs bounded memory.
    static let maxQueuedBytes = 8 << 20

    var isTerminal: Bool { false }

    init(address: NetworkAddress, timeoutMS: Int32) {
        self.address = address
        self.timeoutMS = timeoutMS
    }

    func connectNow() throws {
        let port = Int32(address.startPort)
        let fd = c_usher_dial(address.network, address.host, port, timeoutMS)
        guard fd >= 0 else { throw SystemError("dial \(address.network) \(address.joinHostPort())") }
        self.fd = fd
    }

    func start() {
        startDetachedThread { [self] in run() }
    }

    func write(_ bytes: [UInt8]) {
        let queued = queue.withLock { q -> Bool in
            guard !q.closed, q.bytes + bytes.count <= Self.maxQueuedBytes else { return false }
            q.entries.append(bytes)
            q.bytes += bytes.count
            return true
        }
        if queued { wake.signal() } else { writeFully(2, bytes) }
    }

    func close() {
        queue.withLock { $0.closed = true }
        wake.signal()
    }

    private func run() {
        while true {
            wake.wait()
            let (batch, closed) = queue.withLock { q -> ([[UInt8]], Bool) in
                let b = q.entries
                q.entries = []
                q.bytes = 0
                return (b, q.closed)
            }
            for entry in batch { send(entry) }
            if closed {
                if fd >= 0 { Glibc.close(fd) }
                fd = -1
                return
            }
        }
    }

    /// Caddy's `redialerConn.Write`: the open connection, else a new one if the last attempt is 10 s old, else
    /// stderr.
    private func send(_ bytes: [UInt8]) {
        if fd >= 0, sendAll(fd, bytes) { return }
        let now = WallTime.now()
        if now.seconds - lastRedial.seconds > 10 {
            lastRedial = now
            let newFD = c_usher_dial(address.network, address.host, Int32(address.startPort), timeoutMS)
            if newFD >= 0, sendAll(newFD, bytes) {
                if fd >= 0 { Glibc.close(fd) }
                fd = newFD
                return
            }
            if newFD >= 0 { Glibc.close(newFD) }
        }
        writeFully(2, bytes)
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.send(fd, buf.baseAddress! + off, buf.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                off += n
            }
            return true
        }
    }
}

/// A counting semaphore on a mutex and condition variable, for a thread that sleeps until there is work.
final class Semaphore: @unchecked Sendable {
    // @unchecked: the pthread objects are used only under their own locking discipline.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var count = 0

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    func signal() {
        pthread_mutex_lock(&mutex)
        count += 1
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    func wait() {
        pthread_mutex_lock(&mutex)
        while count == 0 { pthread_cond_wait(&cond, &mutex) }
        count = 0
        pthread_mutex_unlock(&mutex)
    }
}

/// Runs `body` on a new detached thread, for work that sleeps until it has something to do.
func startDetachedThread(_ body: @escaping @Sendable () -> Void) {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
    if rc == 0 {
        pthread_detach(thread)
    } else {
        Unmanaged<Box>.fromOpaque(box).takeRetainedValue().body()
    }
}
