import Foundation
import Testing

/// Runs `h3_request.py` (aioquic) against 127.0.0.1:`port` and decodes one JSON object per response.
/// The authority (and SNI) is a.test unless `extra` names another.
func h3Request(port: Int, _ path: String, _ extra: [String] = [], timeout: TimeInterval = 90) throws -> [[String: Any]]
{
    let script = packageRoot.appendingPathComponent("IntegrationTests/interop/h3_request.py").path
    let authority = extra.contains("--authority") ? [] : ["--authority", "a.test"]
    let r = try runCommand(venvPython, [script, String(port), path] + authority + extra, timeout: timeout)
    guard r.status == 0 else {
        throw TestFailure("h3_request.py \(path) \(extra): status \(r.status): \(r.stderr.suffix(1500))")
    }
    return try r.stdout.split(separator: "\n").map {
        guard let o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else {
            throw TestFailure("not JSON: \($0)")
        }
        return o
    }
}

/// Whether some socket is bound to UDP `port`.
func udpBound(_ port: Int) throws -> Bool {
    let r = try runCommand("/usr/bin/ss", ["-Hulnp", "sport = :\(port)"])
    return !r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
}

@Suite("HTTP/3: usher serves QUIC beside its TLS listeners (aioquic, gtlsclient)", .serialized)
struct HTTP3Tests {
    /// A server on `port` with the a.test, b.test and localhost certificates, serving `routes`. (gtlsclient
    /// always asks for localhost.)
    static func config(_ pki: TestPKI, port: Int, routes: String, extra: String = "") throws -> String {
        if !FileManager.default.fileExists(atPath: pki.path("localhost.crt")) {
            let r = try runCommand(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "localhost.key", "-out", "localhost.crt", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                ], cwd: pki.dir)
            guard r.status == 0 else { throw TestFailure(r.stderr) }
        }
        return """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": \(routes), "tls_connection_policies": [{}] \(extra)}}},
              "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"},
                                                       {"certificate": "\(pki.path("b.crt"))", "key": "\(pki.path("b.key"))"},
                                                       {"certificate": "\(pki.path("localhost.crt"))", "key": "\(pki.path("localhost.key"))"}]}}}}
            """
    }

    @Test(
        "requests run through the handler chain over HTTP/3; SNI picks the certificate; Alt-Svc on HTTP/1.1 and HTTP/2")
    func basics() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: try Self.config(
                pki, port: port,
                routes: """
                    [{"match": [{"path": ["/teapot"]}], "handle": [{"handler": "static_response", "status_code": 418, "body": "short and stout"}]},
                     {"handle": [{"handler": "headers", "response": {"set": {"X-Host": ["{http.request.host}"]}}},
                                 {"handler": "static_response", "body": "{http.request.proto} {http.request.method} {http.request.uri} {http.request.tls.server_name}"}]}]
                    """), waitPort: port)
        defer { s.stop() }
        #expect(try udpBound(port))
        let a = try h3Request(port: port, "/x?y=1", ["--authority", "a.test"])
        #expect(a.first?["status"] as? Int == 200)
        #expect(a.first?["head"] as? String == "HTTP/3.0 GET /x?y=1 a.test", "\(a)")
        #expect((a.first?["headers"] as? [String: String])?["x-host"] == "a.test")
        #expect((a.first?["headers"] as? [String: String])?["server"] == "Usher")
        #expect((a.first?["peer_cn"] as? String)?.contains("CN=a.test") == true, "\(a)")
        let b = try h3Request(port: port, "/teapot", ["--authority", "www.b.test"])
        #expect(b.first?["status"] as? Int == 418)
        #expect(b.first?["head"] as? String == "short and stout")
        #expect((b.first?["peer_cn"] as? String)?.contains("CN=b.test") == true, "\(b)")
        // HEAD: the head only.
        let head = try h3Request(port: port, "/", ["--method", "HEAD", "--authority", "a.test"])
        #expect(head.first?["status"] as? Int == 200)
        #expect(head.first?["length"] as? Int == 0)

        // Over TCP, responses advertise the UDP port.
        let h2 = try curl(["-k", "--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/"])
        #expect(h2.httpVersion == "HTTP/2")
        #expect(h2.header("alt-svc") == "h3=\":\(port)\"; ma=2592000")
        let h1 = try curl(["-k", "--http1.1", "--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/"])
        #expect(h1.header("alt-svc") == "h3=\":\(port)\"; ma=2592000")

        // Debian's ngtcp2 client (nghttp3 as well, on its side).
        let dl = pki.dir.appendingPathComponent("dl")
        try FileManager.default.createDirectory(at: dl, withIntermediateDirectories: true)
        let g = try runCommand(
            "/usr/bin/gtlsclient",
            [
                "--timeout=3s", "--exit-on-all-streams-close", "--download=\(dl.path)",
                "127.0.0.1", String(port), "https://localhost:\(port)/file.txt",
            ],
            timeout: 30)
        let body = try? String(contentsOf: dl.appendingPathComponent("file.txt"), encoding: .utf8)
        #expect(body == "HTTP/3.0 GET /file.txt localhost", "\(g.stderr.suffix(2000))")
    }

    @Test("no HTTP/3 without TLS or without h3 in protocols: no UDP socket, no Alt-Svc")
    func disabled() throws {
        let pki = try TestPKI()
        let (tlsPort, plainPort) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "tls": {"listen": ["127.0.0.1:\(tlsPort)"], "protocols": ["h1", "h2"], "tls_connection_policies": [{}],
                          "routes": [{"handle": [{"handler": "static_response", "body": "x"}]}]},
                  "plain": {"listen": ["127.0.0.1:\(plainPort)"], "routes": [{"handle": [{"handler": "static_response", "body": "x"}]}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
                """, waitPort: tlsPort)
        defer { s.stop() }
        #expect(try !udpBound(tlsPort))
        #expect(try !udpBound(plainPort))
        #expect(try curl(["-k", "https://127.0.0.1:\(tlsPort)/"]).header("alt-svc") == nil)
        #expect(try curl(["http://127.0.0.1:\(plainPort)/"]).header("alt-svc") == nil)
    }

    @Test("POST of 10 MiB with request trailers; response trailers; 100 concurrent streams; gtlsclient uploads")
    func bodies() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#),
            waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let size = 10 * 1024 * 1024
        let post = try h3Request(
            port: port, "/?size=300000&checksum=1",
            [
                "--method", "POST", "--body-size", String(size),
                "--trailer", "x-sum=42", "--trailer", "x-note=done",
            ])
        let r = try #require(post.first)
        let headers = r["headers"] as? [String: String] ?? [:]
        #expect(r["status"] as? Int == 200)
        #expect(headers["x-request-bytes"] == String(size))
        // FNV-1a 64 of bytes i % 251 for i < 10 MiB, which the handler computed from what it read.
        #expect(headers["x-request-checksum"] == "d1fe070e4ab59c5", "\(headers)")
        #expect(r["length"] as? Int == 300000)
        #expect(r["trailers"] as? [String: String] == ["x-echo-x-sum": "42", "x-echo-x-note": "done"], "\(r)")

        let many = try h3Request(port: port, "/?size=100000", ["--count", "100"])
        #expect(many.count == 100)
        #expect(many.allSatisfy { $0["status"] as? Int == 200 && $0["length"] as? Int == 100000 })
        // A body that does not fit in the client's initial stream window (256 KiB): credit must come back.
        let big = try h3Request(port: port, "/?size=5000000")
        #expect(big.first?["length"] as? Int == 5_000_000)
        #expect(big.first?["fnv"] as? String == fnvOfX(5_000_000))

        let upload = pki.dir.appendingPathComponent("upload.bin")
        try Data((0..<1_000_000).map { UInt8($0 % 251) }).write(to: upload)
        let g = try runCommand(
            "/usr/bin/gtlsclient",
            [
                "--timeout=3s", "--exit-on-all-streams-close", "-m", "POST", "-d", upload.path,
                "127.0.0.1", String(port), "https://localhost:\(port)/?size=10",
            ],
            timeout: 30)
        #expect(g.stderr.contains("[x-request-bytes: 1000000]"), "\(g.stderr.suffix(2000))")
    }

    @Test("clients that vanish mid-upload: the server serves others, and memory returns near its idle level")
    func vanishingClients() throws {
        let pki = try TestPKI()
        let port = freePort()
        // A short idle timeout, so the abandoned connections are reaped within the test.
        let s = try UsherProcess(
            config: try Self.config(
                pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#,
                extra: #", "idle_timeout": "2s""#),
            waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        _ = try h3Request(port: port, "/?size=1000", ["--count", "20"])
        let idle = residentKiB(pid: s.pid)
        for _ in 0..<10 {
            _ = try h3Request(port: port, "/", ["--method", "POST", "--body-size", "4000000", "--stall"])
        }
        let ok = try h3Request(port: port, "/?size=1000")
        #expect(ok.first?["status"] as? Int == 200)
        Thread.sleep(forTimeInterval: 4)
        let after = residentKiB(pid: s.pid)
        #expect(after < idle + 16 * 1024, "idle \(idle) KiB, after \(after) KiB")
        #expect(try h3Request(port: port, "/?size=10").first?["length"] as? Int == 10)
    }

    @Test(
        "request bodies nobody reads do not use up the connection's flow control: 30 unread 1 MiB uploads in a row on one connection, all answered"
    )
    func unreadBodiesKeepConnectionCredit() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#),
            waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        // The handler answers after 150 ms without reading: by then the client has filled the body's window, and
        // those bytes stay unread until the stream closes (about 256 KiB a request). The connection window is
        // 4 MiB: unless the bytes are credited back when their stream closes, it runs dry after ~16 requests.
        let r = try h3Request(
            port: port, "/?unread=150",
            ["--method", "POST", "--body-size", "1048576", "--count", "30", "--sequential"],
            timeout: 120)
        #expect(
            r.count == 30 && r.allSatisfy { $0["status"] as? Int == 200 && $0["head"] as? String == "unread" },
            "\(r.suffix(3))")
    }

    @Test(
        "Initial floods: past 64 pending handshakes genuine Initials get Retry; bogus ones leave nothing; real clients are served, memory stays bounded"
    )
    func initialFlood() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: try Self.config(
                pki, port: port, routes: #"[{"handle": [{"handler": "static_response", "body": "still here"}]}]"#),
            waitPort: port)
        defer { s.stop() }
        _ = try h3Request(port: port, "/")
        let idle = residentKiB(pid: s.pid)
        let script = packageRoot.appendingPathComponent("IntegrationTests/interop/quic_flood.py").path
        // 20,000 undecryptable Initials: dropped without an answer, and without keeping state (no Retry needed).
        let bogus = try runCommand(venvPython, [script, String(port), "20000", "--bogus"], timeout: 60)
        let bogusResult = try JSONSerialization.jsonObject(with: Data(bogus.stdout.utf8)) as? [String: Int] ?? [:]
        #expect(
            bogusResult["sent"] == 20000 && bogusResult["replies"] == 0, "\(bogus.stdout) \(bogus.stderr.suffix(500))")
        // 2,000 real ClientHellos (aioquic) that never finish: the first 64 start handshakes, the rest get Retry.
        let flood = try runCommand(venvPython, [script, String(port), "2000", "--sni", "a.test"], timeout: 60)
        let result = try JSONSerialization.jsonObject(with: Data(flood.stdout.utf8)) as? [String: Int] ?? [:]
        #expect((result["retries"] ?? 0) >= 2000 - 64 - 16, "\(flood.stdout) \(flood.stderr.suffix(500))")
        let served = try h3Request(port: port, "/", ["--count", "5"])
        #expect(served.count == 5 && served.allSatisfy { $0["head"] as? String == "still here" })
        let after = residentKiB(pid: s.pid)
        #expect(after < idle + 32 * 1024, "idle \(idle) KiB, after the floods \(after) KiB")
        #expect(
            try curl(["-k", "--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/"]).body == "still here")
    }

    @Test("a reload that moves the server lets a slow HTTP/3 response finish, then closes the old UDP socket")
    func gracefulReload() throws {
        let pki = try TestPKI()
        let (port, next) = (freePort(), freePort())
        let s = try UsherProcess(
            config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#),
            waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let script = packageRoot.appendingPathComponent("IntegrationTests/interop/h3_request.py").path
        // 2 s of response (20 chunks, 100 ms apart), started before the reload.
        let slow = Process()
        slow.executableURL = URL(fileURLWithPath: venvPython)
        slow.arguments = [script, String(port), "/?size=1310720&delay=100", "--authority", "a.test"]
        let out = Pipe()
        slow.standardOutput = out
        slow.standardError = FileHandle.nullDevice
        try launch(slow)
        Thread.sleep(forTimeInterval: 0.5)
        let newConfig = try Self.config(
            pki, port: next, routes: #"[{"handle": [{"handler": "static_response", "body": "moved"}]}]"#
        )
        .replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress)
        let load = try admin(s, "POST", "/load", body: newConfig)
        #expect(load.status == 200, "\(load.body)")
        slow.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let done = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(done?["length"] as? Int == 1_310_720, "\(text.prefix(300))")
        #expect(try h3Request(port: next, "/").first?["head"] as? String == "moved")
        let deadline = Date().addingTimeInterval(5)
        while try udpBound(port), Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(try !udpBound(port))
    }
}

/// FNV-1a 64 (hex) of `count` bytes of "x", what test_stream sends.
func fnvOfX(_ count: Int) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for _ in 0..<count { h = (h ^ 0x78) &* 0x100_0000_01b3 }
    return String(h, radix: 16)
}

/// The `h3load` binary next to the test binaries.
var h3loadBinary: String {
    URL(fileURLWithPath: usherBinary).deletingLastPathComponent().appendingPathComponent("h3load").path
}

/// Runs h3load with `args` (JSON output) and decodes its summary.
func h3load(_ args: [String]) throws -> [String: Any] {
    let r = try runCommand(h3loadBinary, ["--json"] + args, timeout: 60)
    guard r.status == 0, let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
        throw TestFailure("h3load \(args): status \(r.status): \(r.stdout) \(r.stderr.suffix(1500))")
    }
    return o
}

@Suite(
    "HTTP/3 client: h3load and reverse_proxy versions [\"3\"] against Caddy 2.6.2, Caddy 2.11.7 and aioquic",
    .serialized)
struct HTTP3ClientTests {
    /// A Caddy (`binary`) serving HTTPS and HTTP/3 on 127.0.0.1 with the a.test certificate, answering
    /// `caddy PROTO URI`; waits until its UDP socket is bound too.
    static func caddy(_ binary: String, _ pki: TestPKI) throws -> Backend {
        let port = freePort()
        let dir = pki.dir.appendingPathComponent("caddy-\(port)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = """
            {"admin": {"disabled": true}, "storage": {"module": "file_system", "root": "\(dir.path)"},
             "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "tls_connection_policies": [{}],
               "routes": [{"handle": [{"handler": "static_response", "body": "caddy {http.request.proto} {http.request.uri}"}]}]}}},
               "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
            """
        let file = dir.appendingPathComponent("caddy.json")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let b = try Backend(binary, ["run", "--config", file.path], port: port, cwd: dir)
        let deadline = Date().addingTimeInterval(10)
        while try !udpBound(port), Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        return b
    }

    /// The aioquic server of `h3_server.py`, with the a.test certificate.
    static func aioquic(_ pki: TestPKI) throws -> Backend {
        let port = freePort()
        let script = packageRoot.appendingPathComponent("IntegrationTests/interop/h3_server.py").path
        return try Backend(
            venvPython, [script, String(port), pki.path("a.crt"), pki.path("a.key")], port: port, udp: true)
    }

    @Test(
        "h3load (usher's QUIC client) against Caddy 2.6.2 and 2.11.7: 400 GETs on 4 connections × 10 streams, every one 200"
    )
    func loadAgainstCaddy() throws {
        let pki = try TestPKI()
        for binary in ["/usr/bin/caddy", packageRoot.appendingPathComponent(".venv/bin/caddy").path] {
            let caddy = try Self.caddy(binary, pki)
            defer { caddy.stop() }
            let r = try h3load([
                "-k", "--sni", "a.test", "-n", "400", "-c", "4", "-m", "10", "https://127.0.0.1:\(caddy.port)/x",
            ])
            #expect(r["succeeded"] as? Int == 400, "\(binary): \(r)")
            #expect(r["errored"] as? Int == 0)
            #expect(r["bytes"] as? Int == 400 * "caddy HTTP/3.0 /x".utf8.count, "\(binary): \(r)")
        }
    }

    @Test(
        "reverse_proxy with versions [\"3\"]: to Caddy 2.6.2 and 2.11.7 (GET), to aioquic (POST 1 MiB, fields both ways)"
    )
    func proxy() throws {
        let pki = try TestPKI()
        let caddy26 = try Self.caddy("/usr/bin/caddy", pki)
        defer { caddy26.stop() }
        let caddy211 = try Self.caddy(packageRoot.appendingPathComponent(".venv/bin/caddy").path, pki)
        defer { caddy211.stop() }
        let aioquic = try Self.aioquic(pki)
        defer { aioquic.stop() }
        let port = freePort()
        func route(_ path: String, _ upstream: Int, verify: Bool) -> String {
            let tls =
                verify
                ? #"{"root_ca_pem_files": ["\#(pki.path("a.crt"))"], "server_name": "a.test"}"#
                : #"{"insecure_skip_verify": true, "server_name": "a.test"}"#
            return """
                {"match": [{"path": ["\(path)*"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upstream)"}],
                  "transport": {"protocol": "http", "versions": ["3"], "tls": \(tls)}}]}
                """
        }
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [\(route("/c26", caddy26.port, verify: true)), \(route("/c211", caddy211.port, verify: false)),
                             \(route("/aio", aioquic.port, verify: true))]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let a = try curl(["http://127.0.0.1:\(port)/c26/one?x=1"])
        #expect(a.status == 200)
        #expect(a.body == "caddy HTTP/3.0 /c26/one?x=1", "\(a.body) \(s.log.suffix(1500))")
        #expect(a.header("via") == "3.0 Usher")
        let b = try curl(["http://127.0.0.1:\(port)/c211/two"])
        #expect(b.body == "caddy HTTP/3.0 /c211/two", "\(b.body) \(s.log.suffix(1500))")
        let upload = pki.dir.appendingPathComponent("one-mib")
        try Data(repeating: 0x61, count: 1 << 20).write(to: upload)
        let c = try curl([
            "-H", "X-Echo-Token: t123", "--data-binary", "@\(upload.path)",
            "http://127.0.0.1:\(port)/aio/post?size=300000",
        ])
        #expect(c.status == 200)
        #expect(c.header("x-served-by") == "aioquic")
        #expect(c.header("x-echo-token") == "t123")
        #expect(
            c.body.hasPrefix("aioquic POST /aio/post?size=300000 1048576y"),
            "\(c.body.prefix(80)) \(s.log.suffix(1500))")
        #expect(c.body.utf8.count == "aioquic POST /aio/post?size=300000 1048576".utf8.count + 300000)
        // A certificate the transport does not trust: no connection, 502.
        let s2port = freePort()
        let s2 = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(s2port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(caddy211.port)"}],
                    "transport": {"protocol": "http", "versions": ["3"], "tls": {"server_name": "a.test"}}}]}]}}}}}
                """, waitPort: s2port)
        defer { s2.stop() }
        #expect(try curl(["http://127.0.0.1:\(s2port)/"]).status == 502)
    }

    @Test("versions [\"3\"] must stand alone and needs tls: bad configs are refused with the JSON path")
    func configErrors() throws {
        for (transport, message) in [
            (#"{"protocol": "http", "versions": ["3", "2"], "tls": {}}"#, "no other HTTP versions"),
            (#"{"protocol": "http", "versions": ["3"]}"#, "needs tls"),
        ] {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-h3cfg-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let file = dir.appendingPathComponent("c.json")
            try """
            {"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(freePort())"], "routes": [{"handle": [
              {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:1"}], "transport": \(transport)}]}]}}}}}
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0)
            #expect((r.stdout + r.stderr).contains(message), "\(r.stdout) \(r.stderr)")
            #expect((r.stdout + r.stderr).contains("transport"), "\(r.stdout) \(r.stderr)")
        }
    }
}
