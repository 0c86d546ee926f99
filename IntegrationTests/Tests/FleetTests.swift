import Foundation
import Testing

/// Instances on their own loopback addresses (127.0.0.2, .3, …) sharing one PostgreSQL database, with the same
/// HTTP and HTTPS ports, as machines behind DNS would be.
struct FleetMember {
    let process: UsherProcess
    let ip: String

    init(
        ip: String, http: Int, https: Int, storage: String, names: [String], issuer: String,
        environment: [String: String] = [:], extraTLS: String = ""
    ) throws {
        self.ip = ip
        process = try UsherProcess(
            config: FleetMember.config(
                ip: ip, http: http, https: https, storage: storage, names: names, issuer: issuer, extraTLS: extraTLS),
            environment: environment)
    }

    static func config(
        ip: String, http: Int, https: Int, storage: String, names: [String], issuer: String, extraTLS: String = ""
    ) -> String {
        let hosts = names.map { "\"\($0)\"" }.joined(separator: ",")
        let site =
            names.isEmpty
            ? ""
            : """
            , "s": {"listen": ["\(ip):\(https)"], "routes": [{"match": [{"host": [\(hosts)]}],
                "handle": [{"handler": "static_response", "body": "\(ip) {http.request.host}"}]}]}
            """
        return """
            {"admin": {"listen": "{{ADMIN}}"}, "storage": \(storage), "apps": {
              "http": {"http_port": \(http), "https_port": \(https), "servers": {
                "plain": {"listen": ["\(ip):\(http)"], "routes": [{"handle": [{"handler": "static_response", "status_code": 404}]}]}\(site)}},
              "tls": {"automation": {"policies": [{"issuers": [\(issuer)]}]}\(extraTLS)}}}
            """
    }

    var log: String { process.log }
}

func pebbleIssuer(_ pebble: Pebble) -> String {
    """
    {"module": "acme", "ca": "\(pebble.directory)", "email": "fleet@example.com",
     "trusted_roots_pem_files": ["\(pebble.apiCA)"], "challenges": {"tls-alpn": {"disabled": true}}}
    """
}

func occurrences(_ needle: String, in haystack: String) -> Int { haystack.components(separatedBy: needle).count - 1 }

@Suite("Fleets: instances sharing certificates, ACME state and locks through PostgreSQL", .serialized)
struct FleetTests {
    let pg: Postgres

    init() throws { pg = try Postgres.shared.get() }

    @Test(
        "three instances on 127.0.0.2–4 start together: pebble issues one certificate, all serve its serial; a fourth started later serves it with no new order"
    )
    func threeInstancesOneOrder() throws {
        let db = try pg.newDatabase()
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        try pebble.setA("fleet.test", "127.0.0.3")
        let issuer = pebbleIssuer(pebble)
        let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        // Started together: every instance provisions, finds no certificate and asks for the lock at once.
        let started = IndexedResults<FleetMember>()
        DispatchQueue.concurrentPerform(iterations: ips.count) { i in
            started.set(
                i,
                Result {
                    try FleetMember(
                        ip: ips[i], http: http, https: https, storage: pg.storage(db), names: ["fleet.test"],
                        issuer: issuer)
                })
        }
        let fleet = try started.all()
        defer { for m in fleet { m.process.stop() } }
        let root = try pebble.rootFile()
        var serials: [String] = []
        for m in fleet {
            #expect(
                waitUntil(90) {
                    (try? verifiedSerial(host: m.ip, port: https, name: "fleet.test", caFile: root)) != nil
                },
                "\(m.ip):\n\(m.log.suffix(3000))")
            serials.append(try verifiedSerial(host: m.ip, port: https, name: "fleet.test", caFile: root) ?? "none")
        }
        #expect(Set(serials).count == 1, "\(serials)")
        #expect(pebble.issuedCount == 1, "\(pebble.log.suffix(3000))")
        let obtained = fleet.map { occurrences("certificate obtained successfully", in: $0.log) }
        #expect(obtained.reduce(0, +) == 1, "\(obtained)")
        // Only the holder ordered; the others waited for its lock and loaded its result.
        #expect(occurrences("waiting for lock held by another holder", in: fleet.map(\.log).joined()) >= 1)
        // The certificate, key and account are rows of the shared database, under certmagic's keys.
        let keys = try pg.psql("SELECT key FROM usher_storage ORDER BY key", database: db)
        #expect(keys.contains("certificates/\(pebble.issuerKey)/fleet.test/fleet.test.crt"), "\(keys)")
        #expect(keys.contains("certificates/\(pebble.issuerKey)/fleet.test/fleet.test.key"))
        #expect(keys.contains("acme/\(pebble.issuerKey)/users/fleet@example.com/fleet.json"), "\(keys)")
        #expect(try pg.psql("SELECT count(*) FROM usher_locks", database: db).hasPrefix("0"))

        let late = try FleetMember(
            ip: "127.0.0.5", http: http, https: https, storage: pg.storage(db), names: ["fleet.test"], issuer: issuer)
        defer { late.process.stop() }
        #expect(
            waitUntil(30) {
                (try? verifiedSerial(host: late.ip, port: https, name: "fleet.test", caFile: root)) == serials.first
            }, "\(late.log.suffix(3000))")
        #expect(pebble.issuedCount == 1)
        #expect(!late.log.contains("obtaining certificate") && !late.log.contains("certificate obtained"))
    }

    @Test(
        "HTTP-01 for a name whose DNS points at an instance that did not order it: that instance answers from the shared database"
    )
    func challengeAnsweredByAnotherInstance() throws {
        let db = try pg.newDatabase()
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        try pebble.setA("elsewhere.test", "127.0.0.3")
        let issuer = pebbleIssuer(pebble)
        // .3 manages no site at all; .2 orders.
        let answering = try FleetMember(
            ip: "127.0.0.3", http: http, https: https, storage: pg.storage(db), names: [], issuer: issuer)
        defer { answering.process.stop() }
        let ordering = try FleetMember(
            ip: "127.0.0.2", http: http, https: https, storage: pg.storage(db), names: ["elsewhere.test"],
            issuer: issuer)
        defer { ordering.process.stop() }
        #expect(
            waitUntil(60) { ordering.log.contains("certificate obtained successfully") },
            "\(ordering.log.suffix(3000))\n--- .3:\n\(answering.log.suffix(2000))\n--- pebble:\n\(pebble.log.suffix(2000))"
        )
        #expect(answering.log.contains(#""msg":"served key authentication""#))
        #expect(answering.log.contains(#""distributed":true"#))
        #expect(!ordering.log.contains("served key authentication"))
        #expect(
            try verifiedSerial(host: "127.0.0.2", port: https, name: "elsewhere.test", caFile: pebble.rootFile())
                != nil)
        // The challenge row is removed once the order is done.
        #expect(
            waitUntil(5) {
                (try? pg.psql("SELECT count(*) FROM usher_storage WHERE key LIKE '%challenge_tokens%'", database: db))?
                    .hasPrefix("0") == true
            })
    }

    @Test(
        "TLS-ALPN-01 for a name whose DNS points at another instance: that instance builds the challenge certificate from the shared database"
    )
    func tlsALPNAnsweredByAnotherInstance() throws {
        let db = try pg.newDatabase()
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        try pebble.setA("alpn.test", "127.0.0.3")
        try pebble.setA("own.test", "127.0.0.3")
        let issuer = """
            {"module": "acme", "ca": "\(pebble.directory)", "email": "fleet@example.com",
             "trusted_roots_pem_files": ["\(pebble.apiCA)"], "challenges": {"http": {"disabled": true}}}
            """
        // .3 has a site of its own (so its HTTPS port speaks TLS) but not alpn.test, which .2 orders.
        let answering = try FleetMember(
            ip: "127.0.0.3", http: http, https: https, storage: pg.storage(db), names: ["own.test"], issuer: issuer)
        defer { answering.process.stop() }
        #expect(
            waitUntil(60) { answering.log.contains("certificate obtained successfully") },
            "\(answering.log.suffix(3000))")
        let ordering = try FleetMember(
            ip: "127.0.0.2", http: http, https: https, storage: pg.storage(db), names: ["alpn.test"], issuer: issuer)
        defer { ordering.process.stop() }
        #expect(
            waitUntil(60) { ordering.log.contains("certificate obtained successfully") },
            "\(ordering.log.suffix(3000))\n--- .3:\n\(answering.log.suffix(3000))\n--- pebble:\n\(pebble.log.suffix(2000))"
        )
        #expect(ordering.log.contains(#""challenge_type":"tls-alpn-01""#))
        #expect(answering.log.contains("serving distributed tls-alpn-01 challenge"), "\(answering.log.suffix(3000))")
        #expect(answering.log.contains(#""identifier":"alpn.test""#))
        #expect(
            try verifiedSerial(host: "127.0.0.2", port: https, name: "alpn.test", caFile: pebble.rootFile()) != nil)
        #expect(
            waitUntil(5) {
                (try? pg.psql("SELECT count(*) FROM usher_storage WHERE key LIKE '%challenge_tokens%'", database: db))?
                    .hasPrefix("0") == true
            })
    }

    @Test(
        "kill -9 of the instance holding the lock mid-order: another instance takes the lock when its lease lapses and completes the order"
    )
    func killedHolderLockLapses() throws {
        let db = try pg.newDatabase()
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        try pebble.setA("kill.test", "127.0.0.3")
        let issuer = pebbleIssuer(pebble)
        let storage = pg.storage(db, extra: #", "lock_timeout": "4s""#)
        let holder = try FleetMember(
            ip: "127.0.0.2", http: http, https: https, storage: storage, names: ["kill.test"], issuer: issuer,
            environment: ["USHER_DEBUG_PAUSE_AFTER_ORDER": "600"])
        #expect(waitUntil(30) { holder.log.contains("debug: pausing after new order") }, "\(holder.log.suffix(3000))")
        let owner = try pg.psql("SELECT owner FROM usher_locks WHERE name = 'issue_cert_kill.test'", database: db)
        #expect(owner.contains(":\(holder.process.pid):"), "\(owner)")
        kill(holder.process.pid, SIGKILL)
        holder.process.process.waitUntilExit()
        let killedAt = Date()

        let taker = try FleetMember(
            ip: "127.0.0.3", http: http, https: https, storage: storage, names: ["kill.test"], issuer: issuer)
        defer { taker.process.stop() }
        #expect(
            waitUntil(60) { taker.log.contains("certificate obtained successfully") },
            "\(taker.log.suffix(3000))\n--- pebble:\n\(pebble.log.suffix(2000))")
        // It had to wait for the dead holder's lease (4s) to lapse first.
        #expect(taker.log.contains("waiting for lock held by another holder"))
        #expect(Date().timeIntervalSince(killedAt) >= 3)
        #expect(
            try verifiedSerial(host: "127.0.0.3", port: https, name: "kill.test", caFile: pebble.rootFile()) != nil)
        #expect(pebble.issuedCount == 1)
        #expect(try pg.psql("SELECT count(*) FROM usher_locks", database: db).hasPrefix("0"))
    }

    @Test(
        "fencing: a holder frozen past its lease (SIGSTOP) wakes after another instance stored its certificate; its own write is refused"
    )
    func fencedStaleHolder() throws {
        let db = try pg.newDatabase()
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        try pebble.setA("fence.test", "127.0.0.3")
        let issuer = pebbleIssuer(pebble)
        let storage = pg.storage(db, extra: #", "lock_timeout": "3s""#)
        let stale = try FleetMember(
            ip: "127.0.0.2", http: http, https: https, storage: storage, names: ["fence.test"], issuer: issuer,
            environment: ["USHER_DEBUG_PAUSE_AFTER_ORDER": "8"])
        defer { stale.process.stop() }
        #expect(waitUntil(30) { stale.log.contains("debug: pausing after new order") }, "\(stale.log.suffix(3000))")
        let staleToken = try pg.psql(
            "SELECT token FROM usher_locks WHERE name = 'issue_cert_fence.test'", database: db
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        kill(stale.process.pid, SIGSTOP)
        let winner = try FleetMember(
            ip: "127.0.0.3", http: http, https: https, storage: storage, names: ["fence.test"], issuer: issuer)
        defer { winner.process.stop() }
        let winnerDone = waitUntil(60) { winner.log.contains("certificate obtained successfully") }
        kill(stale.process.pid, SIGCONT)
        #expect(winnerDone, "\(winner.log.suffix(3000))")
        let root = try pebble.rootFile()
        let served = try verifiedSerial(host: "127.0.0.3", port: https, name: "fence.test", caFile: root)
        // The woken holder finishes its own order, and its first write under the lapsed lock is refused.
        #expect(
            waitUntil(60) { stale.log.contains("write refused: lock lapsed and was taken over") },
            "\(stale.log.suffix(4000))")
        #expect(stale.log.contains("lock lost"))
        #expect(stale.log.contains(#""token":"\#(staleToken)""#), "\(staleToken)")
        // The stored certificate is still the winner's, and the stale holder ends up serving it too.
        let stored = try pg.psql(
            "SELECT convert_from(value, 'UTF8') FROM usher_storage WHERE key LIKE 'certificates/%/fence.test.crt'",
            database: db)
        let storedSerial = try runCommand(
            "/usr/bin/openssl", ["x509", "-noout", "-serial"], input: Data(stored.utf8)
        ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(storedSerial == served, "\(storedSerial) vs \(served ?? "none")")
        #expect(
            waitUntil(60) {
                (try? verifiedSerial(host: "127.0.0.2", port: https, name: "fence.test", caFile: root)) == served
            }, "\(stale.log.suffix(3000))")
    }

    @Test(
        "PostgreSQL stopped: loaded certificates keep being served, a reload fails naming the database and keeps the running config; after it returns, reloads and issuance work"
    )
    func databaseDown() throws {
        let own = try Postgres()
        let db = try own.newDatabase()
        let https = freePort()
        func config(_ names: [String]) -> String {
            FleetMember.config(
                ip: "127.0.0.2", http: freePort(), https: https,
                storage: own.storage(db, queryTimeout: "2s"),
                names: names, issuer: #"{"module": "internal"}"#)
        }
        let s = try UsherProcess(config: config(["down.test"]))
        defer { s.stop() }
        func serial(_ name: String) -> String? {
            guard let out = try? sClient(host: "127.0.0.2", port: https, serverName: name),
                out.contains("-----BEGIN CERTIFICATE-----")
            else { return nil }
            return try? runCommand("/usr/bin/openssl", ["x509", "-noout", "-serial"], input: Data(out.utf8)).stdout
        }
        #expect(waitUntil(30) { serial("down.test") != nil }, "\(s.log.suffix(3000))")
        let before = serial("down.test")

        own.stop()
        #expect(serial("down.test") == before)
        let reload = try admin(
            s, "POST", "/load",
            body: config(["down.test", "down2.test"]).replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress))
        #expect(reload.status >= 400)
        #expect(reload.body.contains("postgres postgres@127.0.0.1:\(own.port)/\(db)"), "\(reload.body)")
        #expect(reload.body.contains("cannot connect"), "\(reload.body)")
        #expect(s.log.contains("cannot connect"))
        // The running config stays.
        #expect(serial("down.test") == before)
        #expect(serial("down2.test") == nil)

        try own.start()
        let again = try admin(
            s, "POST", "/load",
            body: config(["down.test", "down2.test"]).replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress))
        #expect(again.status == 200, "\(again.body)")
        #expect(waitUntil(30) { serial("down2.test") != nil }, "\(s.log.suffix(3000))")
        #expect(serial("down.test") == before)
        #expect(
            try own.psql("SELECT count(*) FROM usher_storage WHERE key LIKE '%down2.test.crt'", database: db)
                .hasPrefix("1"))
    }

    @Test("bad credentials or an unreachable database at start: the load fails with an error naming it")
    func badDatabaseAtStart() throws {
        let db = try pg.newDatabase()
        for (storage, expected) in [
            (pg.storage(db, password: "wrong"), #"password authentication failed for user "postgres""#),
            (pg.storage(db, port: freePort()), "Connection refused"),
        ] {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-badpg-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let file = dir.appendingPathComponent("c.json")
            try """
            {"admin": {"disabled": true}, "storage": \(storage), "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(freePort())"]}}}}}
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(
                usherBinary, ["run", "--config", file.path],
                environment: ["XDG_DATA_HOME": dir.path, "XDG_CONFIG_HOME": dir.path], timeout: 30)
            #expect(r.status != 0)
            let out = r.stdout + r.stderr
            #expect(out.contains("postgres postgres@127.0.0.1:"), "\(out)")
            #expect(out.contains(expected), "\(out)")
            #expect(!out.contains("wrong"), "the password must not be printed: \(out)")
        }
    }

    @Test(
        "admin.config.load (caddy.config_loaders.http) with load_delay: an instance runs the config a URL serves, follows its changes, and keeps the good one when a bad one is served"
    )
    func configFromURL() throws {
        let site = FileManager.default.temporaryDirectory.appendingPathComponent("usher-cfgsrv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: site, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: site) }
        let (source, served) = (freePort(), freePort())
        let loader = """
            "config": {"load": {"module": "http", "url": "http://127.0.0.1:\(source)/fleet.json",
              "header": {"X-Fleet": ["{env.FLEET_NAME}"]}}, "load_delay": "300ms"}
            """
        // The fetched config names the loader too, so the instance keeps polling (as in Caddy); its admin
        // address comes from the instance's environment.
        func publish(_ body: String, handler: String = "static_response") throws {
            try """
            {"admin": {\(loader)}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(served)"],
              "routes": [{"handle": [{"handler": "\(handler)", "body": "\(body)"}]}]}}}}}
            """.write(to: site.appendingPathComponent("fleet.json"), atomically: true, encoding: .utf8)
        }
        try publish("v1")
        // The config source logs each request's X-Fleet header, which the loader fills from the environment.
        let configServer = try UsherProcess(
            config: """
                {"admin": {"disabled": true}, "apps": {"http": {"servers": {"c": {"listen": ["127.0.0.1:\(source)"],
                  "logs": {}, "routes": [{"handle": [{"handler": "file_server", "root": "\(site.path)"}]}]}}}}}
                """, waitPort: source)
        defer { configServer.stop() }
        let s = try UsherProcess(
            config: #"{"admin": {"listen": "{{ADMIN}}", \#(loader)}}"#, environment: ["FLEET_NAME": "edge-7"])
        defer { s.stop() }
        func body() -> String? { (try? curl(["-s", "http://127.0.0.1:\(served)/"]))?.body }
        #expect(waitUntil(15) { body()?.hasPrefix("v1") == true }, "\(s.log.suffix(3000))")
        #expect(configServer.log.contains(#""X-Fleet":["edge-7"]"#), "\(configServer.log.suffix(2000))")
        #expect(s.log.contains("successfully applied dynamically-loaded config"))

        try publish("v2")
        #expect(waitUntil(15) { body()?.hasPrefix("v2") == true }, "\(s.log.suffix(3000))")
        // A config that fails to load is logged; the running one stays, and polling goes on.
        try publish("v3", handler: "no_such_handler")
        #expect(
            waitUntil(15) { s.log.contains("failed to run dynamically-loaded config") }, "\(s.log.suffix(3000))")
        #expect(s.log.contains("no_such_handler"))
        #expect(body()?.hasPrefix("v2") == true)
        try publish("v4")
        #expect(waitUntil(15) { body()?.hasPrefix("v4") == true }, "\(s.log.suffix(3000))")
        // Pulled configs are not saved for --resume (as in Caddy).
        let autosave =
            (try? String(contentsOf: s.dir.appendingPathComponent("xdg-config/usher/autosave.json"), encoding: .utf8))
            ?? ""
        #expect(!autosave.contains("static_response"), "\(autosave)")
        // The source being away is logged and retried; the running config stays.
        configServer.stop()
        #expect(
            waitUntil(20) { s.log.contains("failed loading dynamic config; will retry") }, "\(s.log.suffix(3000))")
        #expect(body()?.hasPrefix("v4") == true)
    }

    @Test(
        "sslmode verify-full with sslrootcert: connects to a TLS-only PostgreSQL whose certificate chains to the CA; another CA or sslmode=disable is refused"
    )
    func tlsToDatabase() throws {
        let pki = FileManager.default.temporaryDirectory.appendingPathComponent("usher-pgtls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: pki, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: pki) }
        func openssl(_ args: [String]) throws { try runOpenSSL(args, in: pki) }
        for ca in ["ca", "other-ca"] {
            try openssl(
                ["req", "-x509"] + opensslNewP256Key + [
                    "-keyout", "\(ca).key", "-out", "\(ca).crt", "-days", "2", "-subj", "/CN=\(ca)",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                ])
        }
        try openssl(["req"] + opensslNewP256Key + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=db"])
        try "subjectAltName=IP:127.0.0.1\n".write(
            to: pki.appendingPathComponent("ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext",
        ])
        let own = try Postgres(
            tls: (pki.appendingPathComponent("server.crt").path, pki.appendingPathComponent("server.key").path))
        let db = try own.newDatabase()
        func export(_ query: String) throws -> CommandResult {
            let cfg = pki.appendingPathComponent("c-\(UUID().uuidString).json")
            try """
            {"storage": {"module": "postgres", "connection_string": "postgres://postgres:\(own.password)@127.0.0.1:\(own.port)/\(db)?\(query)"}}
            """.write(to: cfg, atomically: true, encoding: .utf8)
            return try runCommand(
                usherBinary, ["storage", "export", "-c", cfg.path, "-o", pki.appendingPathComponent("out.tar").path],
                timeout: 30)
        }
        let good = try export("sslmode=verify-full&sslrootcert=\(pki.path)/ca.crt")
        #expect(good.status == 0, "\(good.stderr)")
        // The server takes TLS connections only (pg_hba `hostssl`), so that success went over verified TLS.
        let wrongCA = try export("sslmode=verify-full&sslrootcert=\(pki.path)/other-ca.crt")
        #expect(wrongCA.status != 0)
        #expect(
            wrongCA.stderr.contains("cannot connect") && wrongCA.stderr.lowercased().contains("certificate"),
            "\(wrongCA.stderr)")
        let plain = try export("sslmode=disable")
        #expect(plain.status != 0)
        #expect(plain.stderr.contains("no encryption") || plain.stderr.contains("pg_hba.conf"), "\(plain.stderr)")
    }

    @Test("usher storage export from file_system, import into postgres and back: every certificate stays usable")
    func exportImport() throws {
        let db = try pg.newDatabase()
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("usher-move-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        let https = freePort()
        func serve(_ storage: String) throws -> (serial: String?, log: String) {
            let s = try UsherProcess(
                config: FleetMember.config(
                    ip: "127.0.0.2", http: freePort(), https: https, storage: storage,
                    names: ["move.test", "b.move.test"],
                    issuer: #"{"module": "internal"}"#))
            defer { s.stop() }
            var serials: [String] = []
            _ = waitUntil(30) {
                serials = ["move.test", "b.move.test"].compactMap { name in
                    guard let out = try? sClient(host: "127.0.0.2", port: https, serverName: name),
                        out.contains("-----BEGIN CERTIFICATE-----")
                    else { return nil }
                    return try? runCommand("/usr/bin/openssl", ["x509", "-noout", "-serial"], input: Data(out.utf8))
                        .stdout
                }
                return serials.count == 2
            }
            return (serials.count == 2 ? serials.joined() : nil, s.log)
        }
        func storageConfig(_ storage: String) throws -> String {
            let path = base.appendingPathComponent("storage-\(UUID().uuidString).json")
            try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
            try #"{"storage": \#(storage)}"#.write(to: path, atomically: true, encoding: .utf8)
            return path.path
        }
        let fsA = #"{"module": "file_system", "root": "\#(base.appendingPathComponent("a").path)"}"#
        let fsB = #"{"module": "file_system", "root": "\#(base.appendingPathComponent("b").path)"}"#
        let original = try serve(fsA)
        #expect(original.serial != nil, "\(original.log.suffix(3000))")

        let tar1 = base.appendingPathComponent("fs.tar").path
        var r = try runCommand(usherBinary, ["storage", "export", "-c", try storageConfig(fsA), "-o", tar1])
        #expect(r.status == 0, "\(r.stderr)")
        r = try runCommand(usherBinary, ["storage", "import", "-c", try storageConfig(pg.storage(db)), "-i", tar1])
        #expect(r.status == 0, "\(r.stderr)")
        let fromPG = try serve(pg.storage(db))
        #expect(fromPG.serial == original.serial, "\(fromPG.log.suffix(3000))")
        #expect(!fromPG.log.contains("certificate obtained"))

        let tar2 = base.appendingPathComponent("pg.tar").path
        r = try runCommand(usherBinary, ["storage", "export", "-c", try storageConfig(pg.storage(db)), "-o", tar2])
        #expect(r.status == 0, "\(r.stderr)")
        r = try runCommand(usherBinary, ["storage", "import", "-c", try storageConfig(fsB), "-i", tar2])
        #expect(r.status == 0, "\(r.stderr)")
        let back = try serve(fsB)
        #expect(back.serial == original.serial, "\(back.log.suffix(3000))")
        #expect(!back.log.contains("certificate obtained"))
        // Byte for byte: what went in comes out.
        let list1 = try runCommand("/usr/bin/tar", ["-tf", tar1]).stdout.split(separator: "\n").sorted()
        let list2 = try runCommand("/usr/bin/tar", ["-tf", tar2]).stdout.split(separator: "\n").sorted()
        #expect(list1 == list2)
        #expect(list1.contains { $0.hasSuffix("move.test.key") })
    }
}

/// Results of concurrent starts, collected by index.
final class IndexedResults<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Int: Result<T, any Error>] = [:]

    func set(_ i: Int, _ r: Result<T, any Error>) { lock.withLock { results[i] = r } }

    func all() throws -> [T] {
        try lock.withLock { try results.keys.sorted().map { try results[$0]!.get() } }
    }
}
