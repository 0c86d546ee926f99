import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization
public import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// Storage in PostgreSQL: one row per key (path, bytes, modification time) and one row per held lock.
///
/// Locks are leases: a holder's row carries a fencing token (from a sequence, so every acquisition gets a larger
/// one) and an expiry the holder pushes forward every third of `lock_timeout`. A holder that dies stops renewing,
/// and once the expiry passes another instance takes the row over with a new token. Writes made while holding a
/// lock (inside ``Storage/withLock(_:_:)``) are fenced: the statement writes only if the lock row still carries
/// the writer's token, checked under a row lock in the same statement, so a holder that stalled past its lease
/// cannot overwrite the newer holder's result.
public final class PostgresStorage: TryLockingStorage {
    let settings: PostgresSettings
    let database: PostgresDatabase
    let logger: Logger

    init(settings: PostgresSettings, database: PostgresDatabase, logger: Logger) {
        self.settings = settings
        self.database = database
        self.logger = logger
    }

    public var description: String { "PostgresStorage:" + settings.description }

    /// Connects once (outside the pool, so the server's own error is what a failure reports) and brings the
    /// schema up to date.
    func prepare() async throws { try await database.prepare() }

    // MARK: Keys

    public func store(_ key: String, _ value: [UInt8]) async throws {
        let bytes = ByteBuffer(bytes: value)
        if let (lock, token) = fence() {
            let rows = try await run("store \(key)") {
                try await $0.query(
                    """
                    WITH fence AS (SELECT 1 FROM usher_locks WHERE name = \(lock) AND token = \(token) FOR SHARE)
                    INSERT INTO usher_storage (key, value, modified) SELECT \(key), \(bytes), now() FROM fence
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified
                    RETURNING 1
                    """
                ).gather().count
            }
            if rows == 0 { throw fenced(key, lock, token) }
        } else {
            try await run("store \(key)") {
                try await $0.query(
                    """
                    INSERT INTO usher_storage (key, value, modified) VALUES (\(key), \(bytes), now())
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified
                    """
                ).gather()
            }
        }
    }

    public func load(_ key: String) async throws -> [UInt8] {
        let found = try await run("load \(key)") {
            var buffer: ByteBuffer?
            for try await value in try await $0.query("SELECT value FROM usher_storage WHERE key = \(key)")
                .decode(ByteBuffer.self)
            {
                buffer = value
            }
            return buffer
        }
        guard let found else { throw StorageError.notFound(key) }
        return Array(found.readableBytesView)
    }

    public func delete(_ key: String) async throws {
        let under = Self.likePrefix(key)
        if let (lock, token) = fence() {
            let rows = try await run("delete \(key)") {
                try await $0.query(
                    """
                    WITH fence AS (SELECT 1 FROM usher_locks WHERE name = \(lock) AND token = \(token) FOR SHARE),
                    gone AS (DELETE FROM usher_storage WHERE (key = \(key) OR key LIKE \(under))
                             AND EXISTS (SELECT 1 FROM fence) RETURNING 1)
                    SELECT count(*) FROM fence
                    """
                ).decode(Int.self).gather().first ?? 0
            }
            if rows == 0 { throw fenced(key, lock, token) }
        } else {
            try await run("delete \(key)") {
                try await $0.query("DELETE FROM usher_storage WHERE key = \(key) OR key LIKE \(under)").gather()
            }
        }
    }

    public func exists(_ key: String) async -> Bool {
        let under = Self.likePrefix(key)
        return
            (try? await run("exists \(key)") {
                try await $0.query(
                    "SELECT EXISTS (SELECT 1 FROM usher_storage WHERE key = \(key) OR key LIKE \(under))"
                ).decode(Bool.self).gather().first ?? false
            }) ?? false
    }

    public func list(_ prefix: String, recursive: Bool) async throws -> [String] {
        let under = prefix.isEmpty ? "%" : Self.likePrefix(prefix)
        let keys = try await run("list \(prefix)") {
            try await $0.query("SELECT key FROM usher_storage WHERE key LIKE \(under) ORDER BY key")
                .decode(String.self).gather()
        }
        guard !keys.isEmpty else { throw StorageError.notFound(prefix) }
        if recursive {
            // Every prefix of a stored key is a listed directory too, as a walk of the file system lists them.
            var out: [String] = []
            var seen = Set<String>()
            let base = prefix.isEmpty ? 0 : prefix.utf8.count + 1
            for key in keys {
                var end = key.utf8.index(key.utf8.startIndex, offsetBy: base)
                while let slash = key.utf8[end...].firstIndex(of: UInt8(ascii: "/")) {
                    let dir = String(key[..<slash])
                    if seen.insert(dir).inserted { out.append(dir) }
                    end = key.utf8.index(after: slash)
                }
                if seen.insert(key).inserted { out.append(key) }
            }
            return out
        }
        var out: [String] = []
        var seen = Set<String>()
        let base = prefix.isEmpty ? 0 : prefix.utf8.count + 1
        for key in keys {
            let rest = key.utf8.dropFirst(base)
            let child = rest.firstIndex(of: UInt8(ascii: "/")).map { String(key[..<$0]) } ?? key
            if seen.insert(child).inserted { out.append(child) }
        }
        return out
    }

    public func stat(_ key: String) async throws -> StorageKeyInfo {
        let under = Self.likePrefix(key)
        let row = try await run("stat \(key)") {
            try await $0.query(
                """
                SELECT octet_length(value)::int8, extract(epoch FROM modified)::float8, key = \(key)
                FROM usher_storage WHERE key = \(key) OR key LIKE \(under)
                ORDER BY (key = \(key)) DESC, modified DESC LIMIT 1
                """
            ).decode((Int64, Double, Bool).self).gather().first
        }
        guard let (size, modified, terminal) = row else { throw StorageError.notFound(key) }
        let whole = modified.rounded(.down)
        return StorageKeyInfo(
            key: key, modified: WallTime(seconds: Int(whole), nanoseconds: Int((modified - whole) * 1e9)),
            size: terminal ? size : 0, isTerminal: terminal)
    }

    /// `LIKE` pattern for every key under `prefix/`, with `%`, `_` and `\` in the prefix taken literally.
    static func likePrefix(_ prefix: String) -> String {
        var s = ""
        for c in prefix {
            if c == "%" || c == "_" || c == "\\" { s.append("\\") }
            s.append(c)
        }
        return s + "/%"
    }

    // MARK: Locks

    public func lock(_ name: String) async throws {
        try await database.lock(name, storage: self)
    }

    public func unlock(_ name: String) async throws {
        try await database.unlock(name, storage: self)
    }

    public func tryLock(_ name: String) async throws -> Bool {
        try await database.tryLock(name, storage: self)
    }

    /// The innermost lock of this database the current task holds, with its token: what fences a write.
    private func fence() -> (String, Int64)? {
        for name in StorageLockScope.held.reversed() {
            if let token = database.token(of: name) { return (name, token) }
        }
        return nil
    }

    private func fenced(_ key: String, _ lock: String, _ token: Int64) -> StorageError {
        logger.error(
            "write refused: lock lapsed and was taken over",
            metadata: ["key": "\(key)", "lock": "\(lock)", "token": "\(token)"])
        return StorageError.lockLost(
            "\(settings): write of \(key) refused: lock \(lock) (token \(token)) lapsed and another holder has it")
    }

    /// Runs `body` on a pooled connection within `query_timeout`, turning driver errors into storage errors that
    /// name the database and the operation.
    func run<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws
        -> T
    {
        try await database.ensureSchema()
        return try await database.withDeadline(what) { try await body(self.database.client) }
    }
}

/// One database as this process sees it: a connection pool shared by every storage value that names the same
/// settings (configs come and go on reload; the pool stays), the schema state and the locks held.
final class PostgresDatabase: Sendable {
    let settings: PostgresSettings
    let client: PostgresClient
    let group: any EventLoopGroup
    let logger: Logger
    /// Who holds a lock, for people reading `usher_locks`: host, process and a random part.
    let owner: String
    private let runner: Mutex<Task<Void, Never>?> = Mutex(nil)
    private let schemaReady = Mutex(false)
    private let held = Mutex<[String: HeldLock]>([:])

    struct HeldLock {
        var token: Int64
        var renewal: Task<Void, Never>
    }

    /// Schema versions, applied in order inside one transaction under an advisory lock, so instances starting
    /// together migrate once. Append; never edit a released step.
    static let migrations: [String] = [
        // 1: keys. "C" collation makes the primary key's order byte order, so `LIKE 'prefix/%'` uses the index.
        """
        CREATE TABLE IF NOT EXISTS usher_storage (
            key text COLLATE "C" PRIMARY KEY,
            value bytea NOT NULL,
            modified timestamptz NOT NULL DEFAULT now()
        )
        """,
        // 2: leased locks with fencing tokens.
        """
        CREATE SEQUENCE IF NOT EXISTS usher_lock_tokens;
        CREATE TABLE IF NOT EXISTS usher_locks (
            name text PRIMARY KEY,
            token bigint NOT NULL,
            owner text NOT NULL,
            acquired timestamptz NOT NULL DEFAULT now(),
            expires timestamptz NOT NULL
        )
        """,
    ]

    init(settings: PostgresSettings, group: any EventLoopGroup, logger: Logger) throws {
        self.settings = settings
        self.group = group
        self.logger = logger
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        owner = "\(String(cString: host)):\(getpid()):\(UInt32.random(in: 0...UInt32.max))"
        var config: PostgresClient.Configuration
        if let socket = settings.unixSocketPath {
            config = .init(
                unixSocketPath: socket, username: settings.user, password: settings.password,
                database: settings.database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch try Self.tls(settings) {
            case nil: tls = .disable
            case (let t, required: false)?: tls = .prefer(t)
            case (let t, required: true)?: tls = .require(t)
            }
            config = .init(
                host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                database: settings.database, tls: tls)
        }
        config.options.maximumConnections = settings.maxConnections
        config.options.connectTimeout = settings.queryTimeout
        config.options.additionalStartupParameters = Self.startupParameters(settings)
        client = PostgresClient(configuration: config, eventLoopGroup: group, backgroundLogger: logger)
        let client = self.client
        runner.withLock { $0 = Task { await client.run() } }
    }

    deinit { runner.withLock { $0?.cancel() } }

    /// The server cancels a statement that outlives `query_timeout` too, so a stuck one frees its connection.
    static func startupParameters(_ s: PostgresSettings) -> [(String, String)] {
        let ms =
            s.queryTimeout.components.seconds * 1000 + s.queryTimeout.components.attoseconds / 1_000_000_000_000_000
        return [("statement_timeout", "\(ms)"), ("application_name", "usher")]
    }

    /// What `sslmode` asks for: no TLS (`nil`), or this configuration, required or only preferred.
    static func tls(_ s: PostgresSettings) throws -> (TLSConfiguration, required: Bool)? {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch s.sslmode {
        case .disable: return nil
        case .allow, .prefer, .require: tls.certificateVerification = .none
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if let root = s.sslrootcert, s.sslmode == .verifyCA || s.sslmode == .verifyFull {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root))
            } catch {
                throw PostgresConfigError("sslrootcert \(root): \(error)")
            }
        }
        return (tls, required: s.sslmode != .allow && s.sslmode != .prefer)
    }

    /// Connects directly (not through the pool, whose retries would hide the reason) and migrates if this
    /// process has not yet: every config load checks that the database answers.
    func prepare() async throws {
        let connection: PostgresConnection
        do {
            connection = try await withDeadline("connect", late: { try? await $0.close() }) {
                try await self.connectOnce()
            }
        } catch {
            throw StorageError.failed("\(settings): cannot connect: \(Self.describe(error))")
        }
        defer { Task { try? await connection.close() } }
        if schemaReady.withLock({ $0 }) { return }
        try await migrate(connection)
    }

    private func connectOnce() async throws -> PostgresConnection {
        var config: PostgresConnection.Configuration
        if let socket = settings.unixSocketPath {
            config = .init(
                unixSocketPath: socket, username: settings.user, password: settings.password,
                database: settings.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch try Self.tls(settings) {
            case nil: tls = .disable
            case (let t, required: false)?: tls = .prefer(try NIOSSLContext(configuration: t))
            case (let t, required: true)?: tls = .require(try NIOSSLContext(configuration: t))
            }
            config = .init(
                host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                database: settings.database, tls: tls)
        }
        config.options.connectTimeout = .init(settings.queryTimeout)
        config.options.additionalStartupParameters = Self.startupParameters(settings)
        return try await PostgresConnection.connect(on: group.any(), configuration: config, id: 0, logger: logger)
    }

    private func migrate(_ connection: PostgresConnection) async throws {
        do {
            // Schema changes wait on other sessions' locks and run once: more than one query's time is fair.
            try await withDeadline("migrate schema", atLeast: .seconds(30)) {
                try await connection.withTransaction(logger: self.logger) { c in
                    // One migrator at a time across the fleet; the lock ends with the transaction.
                    try await c.query("SELECT pg_advisory_xact_lock(7512410953), 1", logger: self.logger)
                    try await c.query(
                        "CREATE TABLE IF NOT EXISTS usher_schema (version integer NOT NULL)", logger: self.logger)
                    var version = 0
                    for try await v in try await c.query("SELECT version FROM usher_schema", logger: self.logger)
                        .decode(Int.self)
                    {
                        version = v
                    }
                    if version > Self.migrations.count {
                        throw StorageError.failed(
                            "schema version \(version) is newer than this usher knows (\(Self.migrations.count))")
                    }
                    for (i, step) in Self.migrations.enumerated() where i + 1 > version {
                        for statement in step.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                            try await c.query(PostgresQuery(unsafeSQL: String(statement)), logger: self.logger)
                        }
                    }
                    if version == 0 {
                        try await c.query(
                            "INSERT INTO usher_schema (version) VALUES (\(Self.migrations.count))", logger: self.logger)
                    } else if version < Self.migrations.count {
                        try await c.query(
                            "UPDATE usher_schema SET version = \(Self.migrations.count)", logger: self.logger)
                    }
                }
            }
        } catch let e as StorageError {
            throw StorageError.failed("\(settings): \(e)")
        } catch {
            throw StorageError.failed("\(settings): migrating the schema: \(Self.describe(error))")
        }
        schemaReady.withLock { $0 = true }
    }

    /// The first operation of a process that did not provision (e.g. `usher storage import`) migrates too.
    func ensureSchema() async throws {
        if schemaReady.withLock({ $0 }) { return }
        try await prepare()
        schemaReady.withLock { $0 = true }
    }

    /// Runs `body`, failing with an error naming `what` if it takes longer than `query_timeout`. The body is
    /// cancelled then but not awaited: a connection stuck on a dead network must not hold the caller.
    /// `late`: given a result that arrives after the deadline, which nobody else will see (a connection to close).
    func withDeadline<T: Sendable>(
        _ what: String, atLeast: Duration = .zero, late: (@Sendable (T) async -> Void)? = nil,
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let timeout = max(settings.queryTimeout, atLeast)
        let settings = self.settings
        let work = Task { try await body() }
        let outcome = ResumeOnce<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                outcome.set(continuation)
                Task {
                    let result = await work.result
                    if !outcome.resume(with: result), let late, case .success(let value) = result {
                        await late(value)
                    }
                }
                Task {
                    try? await Task.sleep(for: timeout)
                    if outcome.resume(
                        with: .failure(StorageError.failed("\(settings): \(what): no answer within \(timeout)")))
                    {
                        work.cancel()
                    }
                }
            }
        } onCancel: {
            work.cancel()
        }
    }

    /// What a driver error says, without the driver's redaction of server messages.
    static func describe(_ error: any Error) -> String {
        if let e = error as? StorageError { return e.description }
        if let e = error as? PSQLError {
            if let message = e.serverInfo?[.message] {
                let state = e.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return message + state
            }
            if let underlying = e.underlying { return "\(e.code): \(underlying)" }
            return "\(e.code)"
        }
        return "\(error)"
    }

    // MARK: Locks

    func token(of name: String) -> Int64? { held.withLock { $0[name]?.token } }

    private var leaseSeconds: Double {
        Double(settings.lockTimeout.components.seconds)
            + Double(settings.lockTimeout.components.attoseconds) / 1e18
    }

    /// One attempt: the lock row is inserted, or taken over if its lease lapsed; the new token when taken.
    private func attempt(_ name: String, storage: PostgresStorage) async throws -> Int64? {
        let lease = leaseSeconds
        let owner = self.owner
        let token = try await storage.run("lock \(name)") {
            try await $0.query(
                """
                INSERT INTO usher_locks AS l (name, token, owner, acquired, expires)
                VALUES (\(name), nextval('usher_lock_tokens'), \(owner), now(),
                        now() + make_interval(secs => \(lease)))
                ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, owner = EXCLUDED.owner,
                    acquired = EXCLUDED.acquired, expires = EXCLUDED.expires
                WHERE l.expires < now()
                RETURNING token
                """
            ).decode(Int64.self).gather().first
        }
        if let token {
            let renewal = Task { await self.renew(name, token: token, storage: storage) }
            held.withLock { $0[name] = HeldLock(token: token, renewal: renewal) }
            logger.debug("lock acquired", metadata: ["lock": "\(name)", "token": "\(token)"])
        }
        return token
    }

    func tryLock(_ name: String, storage: PostgresStorage) async throws -> Bool {
        try await attempt(name, storage: storage) != nil
    }

    func lock(_ name: String, storage: PostgresStorage) async throws {
        var waitingLogged = false
        var failingSince: ContinuousClock.Instant?
        while true {
            try Task.checkCancellation()
            var token: Int64?
            do {
                token = try await attempt(name, storage: storage)
            } catch let e as StorageError {
                // A short outage is waited out; one longer than a lease is reported (any lock taken before it
                // began has lapsed by then anyway).
                let since = failingSince ?? .now
                failingSince = since
                if ContinuousClock.now - since > max(settings.lockTimeout, settings.queryTimeout * 2) {
                    throw StorageError.failed("taking lock \(name): \(e)")
                }
                logger.error("taking lock failed; retrying", metadata: ["lock": "\(name)", "error": "\(e)"])
            }
            if token != nil { return }
            if !waitingLogged {
                logger.info("waiting for lock held by another holder", metadata: ["lock": "\(name)"])
                waitingLogged = true
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 400...700)))
        }
    }

    /// Pushes the lease forward every third of `lock_timeout` until unlocked or lost.
    private func renew(_ name: String, token: Int64, storage: PostgresStorage) async {
        let lease = leaseSeconds
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(lease / 3))
            if Task.isCancelled { return }
            do {
                let kept = try await storage.run("renew lock \(name)") {
                    try await $0.query(
                        """
                        UPDATE usher_locks SET expires = now() + make_interval(secs => \(lease))
                        WHERE name = \(name) AND token = \(token) RETURNING 1
                        """
                    ).gather().count
                }
                if kept == 0 {
                    logger.error(
                        "lock lost: its lease lapsed and another instance took it; writes under it will be refused",
                        metadata: ["lock": "\(name)", "token": "\(token)"])
                    return
                }
            } catch {
                logger.error("renewing lock failed", metadata: ["lock": "\(name)", "error": "\(error)"])
            }
        }
    }

    func unlock(_ name: String, storage: PostgresStorage) async throws {
        guard let mine = held.withLock({ $0.removeValue(forKey: name) }) else { return }
        mine.renewal.cancel()
        try await storage.run("unlock \(name)") {
            try await $0.query("DELETE FROM usher_locks WHERE name = \(name) AND token = \(mine.token)").gather()
        }
    }
}

/// The databases this process talks to, one pool each; a `SharedServices` entry, so reloads reuse them.
final class PostgresPools: Sendable {
    private let databases = Mutex<[PostgresSettings: PostgresDatabase]>([:])

    func database(for settings: PostgresSettings, group: any EventLoopGroup, logger: Logger) throws
        -> PostgresDatabase
    {
        try databases.withLock {
            if let db = $0[settings] { return db }
            let db = try PostgresDatabase(settings: settings, group: group, logger: logger)
            $0[settings] = db
            return db
        }
    }
}

extension AsyncSequence where Self: Sendable {
    /// Every element, in order.
    func gather() async throws -> [Element] {
        var out: [Element] = []
        for try await e in self { out.append(e) }
        return out
    }
}

/// A continuation resumed by whichever of two racers finishes first.
final class ResumeOnce<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func set(_ c: CheckedContinuation<T, any Error>) { continuation.withLock { $0 = c } }

    /// Resumes with `result` unless already resumed; says whether this call did it.
    @discardableResult
    func resume(with result: Result<T, any Error>) -> Bool {
        guard let c = continuation.withLock({ $0.take() }) else { return false }
        c.resume(with: result)
        return true
    }
}
