import Foundation

/// PostgreSQL 15 from Debian on a loopback port with a data directory of its own, password authentication
/// (scram-sha-256) and fsync off; run as the `postgres` user when the tests run as root (initdb refuses root).
/// Each test takes a database of its own with ``newDatabase()``.
final class Postgres: @unchecked Sendable {
    static let bin = "/usr/lib/postgresql/15/bin"
    let dir: URL
    let port = freePort()
    let password = "pw-" + UUID().uuidString.prefix(8)
    private var server: Process?
    private let lock = NSLock()
    private var databases = 0

    /// One server for the whole test run, started on first use and shut down (not killed, so no backend is
    /// left behind) when the test process exits.
    static let shared: Result<Postgres, any Error> = Result {
        let pg = try Postgres()
        atexit {
            if case .success(let pg) = Postgres.shared {
                pg.stop()
                try? FileManager.default.removeItem(at: pg.dir)
            }
        }
        return pg
    }

    /// With `tls` (PEM certificate and key files), the server takes TLS connections only (`hostssl`; plain ones
    /// are rejected).
    let tls: (certificate: String, key: String)?

    init(tls: (certificate: String, key: String)? = nil) throws {
        self.tls = tls
        dir = URL(fileURLWithPath: "/tmp").appendingPathComponent("usher-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try password.write(to: dir.appendingPathComponent("pw"), atomically: true, encoding: .utf8)
        if let tls {
            try FileManager.default.copyItem(
                atPath: tls.certificate, toPath: dir.appendingPathComponent("server.crt").path)
            try FileManager.default.copyItem(atPath: tls.key, toPath: dir.appendingPathComponent("server.key").path)
            chmod(dir.appendingPathComponent("server.key").path, 0o600)
        }
        if getuid() == 0 {
            _ = try runCommand("/bin/chown", ["-R", "postgres:postgres", dir.path])
        }
        let r = try runCommand(
            "/usr/bin/env",
            asPostgres([
                Self.bin + "/initdb", "-D", dir.appendingPathComponent("data").path, "-U", "postgres",
                "-A", "scram-sha-256", "--pwfile", dir.appendingPathComponent("pw").path, "-N", "-E", "UTF8",
            ]), timeout: 60)
        guard r.status == 0 else { throw TestFailure("initdb failed: \(r.stdout)\(r.stderr)") }
        if tls != nil {
            try """
            hostssl all all 127.0.0.1/32 scram-sha-256
            hostnossl all all 127.0.0.1/32 reject

            """.write(to: dir.appendingPathComponent("data/pg_hba.conf"), atomically: false, encoding: .utf8)
        }
        try start()
    }

    private func asPostgres(_ args: [String]) -> [String] {
        getuid() == 0 ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + args : args
    }

    var logFile: URL { dir.appendingPathComponent("postgres.log") }
    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Starts the server (again, after ``stop()``) and waits until it takes connections.
    func start() throws {
        if !FileManager.default.fileExists(atPath: logFile.path) {
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: logFile)
        log.seekToEndOfFile()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // setpriv execs postgres itself, so the signal stop() sends reaches the postmaster.
        p.arguments = asPostgres(
            [
                Self.bin + "/postgres", "-D", dir.appendingPathComponent("data").path, "-p", "\(port)",
                "-k", dir.path, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB",
            ]
                + (tls == nil
                    ? []
                    : [
                        "-c", "ssl=on", "-c", "ssl_cert_file=\(dir.path)/server.crt", "-c",
                        "ssl_key_file=\(dir.path)/server.key",
                    ]))
        p.standardOutput = log
        p.standardError = log
        try launch(p)
        lock.withLock { server = p }
        let deadline = Date().addingTimeInterval(30)
        while (try? psql("SELECT 1"))?.trimmingCharacters(in: .whitespacesAndNewlines) != "1" {
            guard Date() < deadline, p.isRunning else { throw TestFailure("postgres did not start: \(self.log)") }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Stops the server (fast shutdown: open connections are closed).
    func stop() {
        guard let p = lock.withLock({ server }) else { return }
        if p.isRunning {
            kill(p.processIdentifier, SIGINT)
            p.waitUntilExit()
        }
        lock.withLock { server = nil }
    }

    /// Runs SQL with psql (tuples only, unaligned) in `database`.
    @discardableResult
    func psql(_ sql: String, database: String = "postgres") throws -> String {
        let r = try runCommand(
            "/usr/bin/psql",
            [
                "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", database, "-tAX", "-v", "ON_ERROR_STOP=1",
                "-c", sql,
            ], environment: ["PGPASSWORD": password], timeout: 20)
        guard r.status == 0 else { throw TestFailure("psql \(sql): \(r.stderr)") }
        return r.stdout
    }

    /// A new, empty database for one test.
    func newDatabase() throws -> String {
        let name = lock.withLock {
            databases += 1
            return "usher_\(databases)"
        }
        try psql("CREATE DATABASE \(name)")
        return name
    }

    /// `caddy.storage.postgres` JSON for `database` (`password` overrides the right one; `port` another port).
    /// `queryTimeout` is generous by default: the whole test run shares two cores.
    func storage(
        _ database: String, password: String? = nil, port: Int? = nil, queryTimeout: String = "15s", extra: String = ""
    ) -> String {
        """
        {"module": "postgres", "connection_string": "postgres://postgres:\(password ?? self.password)@127.0.0.1:\(port ?? self.port)/\(database)?sslmode=disable", "query_timeout": "\(queryTimeout)"\(extra)}
        """
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}
