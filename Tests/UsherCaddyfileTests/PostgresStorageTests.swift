import Testing
import UsherCaddyfile
import UsherCore
import UsherPostgres
import UsherStandard

/// `caddy.storage.postgres`: its Caddyfile block, and how its JSON (connection string and fields) is read.
@Suite("postgres storage config")
struct PostgresStorageTests {
    func decode(_ storage: String) throws -> PostgresSettings {
        let registry = try ModuleRegistry(bundles: [CoreModules.self, StandardModules.self])
        let config = try ConfigDecoder(registry: registry).decode(
            UsherConfig.self, from: try JSONValue.parse(Array(#"{"storage": \#(storage)}"#.utf8)))
        return try #require(config.storage?.module as? PostgresStorageModule).settings
    }

    @Test("the global storage option adapts to caddy.storage.postgres with durations in nanoseconds")
    func caddyfile() throws {
        let json = try adapt(
            """
            {
            \tstorage postgres "postgres://usher@db.internal/usher?sslmode=verify-full" {
            \t\tsslrootcert /etc/usher/db-ca.pem
            \t\tlock_timeout 30s
            \t\tquery_timeout 2s
            \t\tmax_connections 4
            \t}
            }
            example.com {
            \trespond hi
            }

            """
        ).config.serialized(.compact)
        #expect(
            json.contains(
                #""storage":{"connection_string":"postgres://usher@db.internal/usher?sslmode=verify-full","lock_timeout":30000000000,"max_connections":4,"module":"postgres","query_timeout":2000000000,"sslrootcert":"/etc/usher/db-ca.pem"}"#
            ), "\(json)")
        do {
            _ = try adapt("{\n\tstorage postgres {\n\t\tdatabase x\n\t}\n}\n")
            Issue.record("no error")
        } catch {
            #expect("\(error)".contains("unrecognized subdirective 'database'") && "\(error)".contains("Caddyfile:3"))
        }
    }

    @Test("a URI connection string: user, percent-encoded password, host, port, database and query parameters")
    func uri() throws {
        let s = try decode(
            #"{"module": "postgres", "connection_string": "postgresql://fleet:p%40ss%2Fw@db.example:6543/certs?sslmode=verify-ca&sslrootcert=/ca.pem"}"#
        )
        #expect(s.user == "fleet" && s.password == "p@ss/w" && s.host == "db.example" && s.port == 6543)
        #expect(s.database == "certs" && s.sslmode == .verifyCA && s.sslrootcert == "/ca.pem")
        #expect(s.description == "postgres fleet@db.example:6543/certs")
        #expect(s.queryTimeout == .seconds(3) && s.lockTimeout == .seconds(60))
    }

    @Test("a key=value connection string with a quoted value; fields override it")
    func keyValue() throws {
        let s = try decode(
            #"{"module": "postgres", "connection_string": "host=10.0.0.5 port=5433 user=u password='a b\\' c' dbname=d", "dbname": "other", "lock_timeout": "10s"}"#
        )
        #expect(s.host == "10.0.0.5" && s.port == 5433 && s.user == "u")
        #expect(s.password == "a b' c", "\(s.password ?? "")")
        #expect(s.database == "other" && s.lockTimeout == .seconds(10))
    }

    @Test("bad values are errors naming the JSON path")
    func errors() {
        func error(_ storage: String) -> String {
            do {
                _ = try decode(storage)
                return "no error"
            } catch { return "\(error)" }
        }
        let mode = error(#"{"module": "postgres", "sslmode": "sometimes"}"#)
        #expect(mode.contains("storage.sslmode") && mode.contains("unknown sslmode sometimes"), "\(mode)")
        let port = error(#"{"module": "postgres", "connection_string": "postgres://h:99999/d"}"#)
        #expect(port.contains("storage.connection_string") && port.contains("99999 is not a port"), "\(port)")
        let param = error(#"{"module": "postgres", "connection_string": "host=h target_session_attrs=any"}"#)
        #expect(param.contains("unsupported connection parameter target_session_attrs"), "\(param)")
        let lock = error(#"{"module": "postgres", "lock_timeout": "100ms"}"#)
        #expect(lock.contains("storage.lock_timeout") && lock.contains("at least 1s"), "\(lock)")
    }
}
