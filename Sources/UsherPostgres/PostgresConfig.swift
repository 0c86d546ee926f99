import Logging
public import UsherCore

/// `caddy.storage.postgres`: certificates, keys, ACME state and locks in one PostgreSQL database, so a fleet of
/// instances shares them (one order per name, any instance answers the CA's challenge, all serve the same
/// certificate). The schema is created, and migrated, by whichever instance first connects.
public struct PostgresStorageModule: StorageModule, Provisioner {
    public static let moduleID: ModuleID = "caddy.storage.postgres"

    /// `connection_string`: a libpq connection URI (`postgres://user:pass@host:5432/db?sslmode=verify-full`) or
    /// key/value string (`host=db port=5432 user=usher dbname=usher`). The separate fields below override it.
    public var connectionString: String?
    /// `host`: server name or IP address. Default: `localhost`.
    public var host: String?
    /// `port`: server port. Default: 5432.
    public var port: Int?
    /// `user`: role to connect as. Default: `postgres`.
    public var user: String?
    /// `password`: the role's password. Default: none.
    public var password: String?
    /// `dbname`: database. Default: the user name.
    public var dbname: String?
    /// `sslmode`: `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full` (libpq's meanings).
    /// Default: `prefer`.
    public var sslmode: String?
    /// `sslrootcert`: PEM file of the CAs that `verify-ca` and `verify-full` trust. Default: the system's.
    public var sslrootcert: String?
    /// `query_timeout`: how long one storage operation may take before it fails (a schema migration gets at least
    /// 30s). Default: 3s.
    public var queryTimeout: ConfigDuration?
    /// `lock_timeout`: how long a lock outlives its holder's last renewal; a holder renews every third of it, so a
    /// holder that dies loses its locks this long after. Default: 60s.
    public var lockTimeout: ConfigDuration?
    /// `max_connections`: connections this process keeps to the database at most. Default: 10.
    public var maxConnections: Int?

    /// What the fields say, resolved.
    public private(set) var settings: PostgresSettings

    package enum CodingKeys: String, CodingKey, CaseIterable {
        case connectionString = "connection_string", host, port, user, password, dbname, sslmode, sslrootcert
        case queryTimeout = "query_timeout", lockTimeout = "lock_timeout", maxConnections = "max_connections"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        connectionString = try c.decodeIfPresent(String.self, forKey: .connectionString)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        user = try c.decodeIfPresent(String.self, forKey: .user)
        password = try c.decodeIfPresent(String.self, forKey: .password)
        dbname = try c.decodeIfPresent(String.self, forKey: .dbname)
        sslmode = try c.decodeIfPresent(String.self, forKey: .sslmode)
        sslrootcert = try c.decodeIfPresent(String.self, forKey: .sslrootcert)
        queryTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .queryTimeout)
        lockTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .lockTimeout)
        maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections)

        var s = PostgresSettings()
        if let cs = connectionString, !cs.isEmpty {
            do {
                try s.apply(connectionString: cs)
            } catch let e as PostgresConfigError {
                throw c.error(.connectionString, e.message)
            }
        }
        if let host, !host.isEmpty { s.host = host }
        if let port {
            guard (1...65535).contains(port) else { throw c.error(.port, "\(port) is not a port number") }
            s.port = port
        }
        if let user, !user.isEmpty { s.user = user }
        if let password { s.password = password }
        if let dbname, !dbname.isEmpty { s.database = dbname }
        if let sslmode, !sslmode.isEmpty {
            guard let mode = PostgresSettings.SSLMode(rawValue: sslmode) else {
                throw c.error(
                    .sslmode, "unknown sslmode \(sslmode) (disable, allow, prefer, require, verify-ca, verify-full)")
            }
            s.sslmode = mode
        }
        if let sslrootcert, !sslrootcert.isEmpty { s.sslrootcert = sslrootcert }
        if let queryTimeout {
            guard queryTimeout.nanoseconds > 0 else { throw c.error(.queryTimeout, "must be positive") }
            s.queryTimeout = queryTimeout.duration
        }
        if let lockTimeout {
            guard lockTimeout.nanoseconds >= 1_000_000_000 else {
                throw c.error(.lockTimeout, "must be at least 1s")
            }
            s.lockTimeout = lockTimeout.duration
        }
        if let maxConnections {
            guard maxConnections >= 1 else { throw c.error(.maxConnections, "must be at least 1") }
            s.maxConnections = maxConnections
        }
        settings = s
    }

    /// Connects and brings the schema up to date when a config is loaded to run, so an unreachable database or
    /// bad credentials refuse the config instead of surfacing at the first certificate.
    public mutating func provision(_ context: ProvisionContext) async throws {
        guard context.mode == .run else { return }
        do {
            try await makePostgresStorage(context).prepare()
        } catch {
            throw ConfigError("\(error)")
        }
    }

    public func makeStorage(_ context: ProvisionContext) throws -> any Storage {
        try makePostgresStorage(context)
    }

    func makePostgresStorage(_ context: ProvisionContext) throws -> PostgresStorage {
        let pools = context.services.service(PostgresPools.self) { PostgresPools() }
        let logger = context.logger("storage.postgres")
        let database: PostgresDatabase
        do {
            database = try pools.database(for: settings, group: context.eventLoopGroup, logger: logger)
        } catch {
            throw ConfigError("\(settings): \(error)")
        }
        return PostgresStorage(settings: settings, database: database, logger: logger)
    }
}

/// Connection settings after the connection string and fields are combined.
public struct PostgresSettings: Sendable, Hashable, CustomStringConvertible {
    /// libpq's `sslmode` values.
    public enum SSLMode: String, Sendable, Hashable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var host = "localhost"
    public var port = 5432
    public var user = "postgres"
    public var password: String?
    public var database: String?
    public var sslmode = SSLMode.prefer
    public var sslrootcert: String?
    public var queryTimeout: Duration = .seconds(3)
    public var lockTimeout: Duration = .seconds(60)
    public var maxConnections = 10

    public init() {}

    /// The server's socket when `host` is a directory (as in libpq), else nil.
    var unixSocketPath: String? { host.hasPrefix("/") ? host + "/.s.PGSQL.\(port)" : nil }

    /// `user@host:port/db`: what error messages name (never the password).
    public var description: String { "postgres \(user)@\(host):\(port)/\(database ?? user)" }

    /// Applies a libpq connection string: a `postgres://` or `postgresql://` URI, or `key=value` pairs.
    mutating func apply(connectionString s: String) throws {
        if s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") {
            try applyURI(s)
        } else {
            for (k, v) in try Self.keyValuePairs(s) { try set(k, v) }
        }
    }

    private mutating func applyURI(_ s: String) throws {
        var rest = Substring(s.hasPrefix("postgres://") ? s.dropFirst(11) : s.dropFirst(13))
        var query = Substring("")
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let info = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = info.firstIndex(of: ":") {
                user = try Self.unescape(info[..<colon])
                password = try Self.unescape(info[info.index(after: colon)...])
            } else {
                user = try Self.unescape(info)
            }
        }
        if !rest.isEmpty {
            let (h, p) = splitHostPort(String(rest))
            if !h.isEmpty { host = h }
            if !p.isEmpty { try set("port", p) }
        }
        if !path.isEmpty { database = try Self.unescape(path) }
        for pair in query.split(separator: "&") where !pair.isEmpty {
            guard let eq = pair.firstIndex(of: "=") else { throw PostgresConfigError("\(pair): expected key=value") }
            try set(String(pair[..<eq]), try Self.unescape(pair[pair.index(after: eq)...]))
        }
    }

    private mutating func set(_ key: String, _ value: String) throws {
        switch key {
        case "host": host = value
        case "port":
            guard let p = Int(value), (1...65535).contains(p) else {
                throw PostgresConfigError("\(value) is not a port")
            }
            port = p
        case "user": user = value
        case "password": password = value
        case "dbname": database = value
        case "sslmode":
            guard let m = SSLMode(rawValue: value) else { throw PostgresConfigError("unknown sslmode \(value)") }
            sslmode = m
        case "sslrootcert": sslrootcert = value
        case "connect_timeout", "application_name": break
        default: throw PostgresConfigError("unsupported connection parameter \(key)")
        }
    }

    /// A URI component with `%XX` escapes decoded (`+` stays a plus, as libpq reads it).
    static func unescape(_ s: Substring) throws -> String {
        guard let decoded = URLEscaping.unescape(String(s), mode: .path) else {
            throw PostgresConfigError("bad percent-encoding in \(s)")
        }
        return decoded
    }

    /// `key=value` pairs separated by spaces; values may be single-quoted with `\'` and `\\` escapes.
    static func keyValuePairs(_ s: String) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var i = s.startIndex
        func skipSpaces() {
            while i < s.endIndex, s[i] == " " || s[i] == "\t" || s[i] == "\n" { i = s.index(after: i) }
        }
        skipSpaces()
        while i < s.endIndex {
            var key = ""
            while i < s.endIndex, s[i] != "=", s[i] != " " {
                key.append(s[i])
                i = s.index(after: i)
            }
            skipSpaces()
            guard i < s.endIndex, s[i] == "=" else { throw PostgresConfigError("\(key): expected key=value") }
            i = s.index(after: i)
            skipSpaces()
            var value = ""
            if i < s.endIndex, s[i] == "'" {
                i = s.index(after: i)
                var closed = false
                while i < s.endIndex {
                    let ch = s[i]
                    i = s.index(after: i)
                    if ch == "\\", i < s.endIndex {
                        value.append(s[i])
                        i = s.index(after: i)
                    } else if ch == "'" {
                        closed = true
                        break
                    } else {
                        value.append(ch)
                    }
                }
                guard closed else { throw PostgresConfigError("\(key): unterminated quoted value") }
            } else {
                while i < s.endIndex, s[i] != " " {
                    value.append(s[i])
                    i = s.index(after: i)
                }
            }
            out.append((key, value))
            skipSpaces()
        }
        return out
    }
}

struct PostgresConfigError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
