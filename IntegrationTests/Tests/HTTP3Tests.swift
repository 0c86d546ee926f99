import Foundation
import Testing

/// Runs `h3_request.py` (aioquic) against 127.0.0.1:`port` and decodes one JSON object per response.
/// The authority (and SNI) is a.test unless `extra` names another.
func h3Request(port: Int, _ path: String, _ extra: [String] = [], timeout: TimeInterval = 90) throws -> [[String: Any]] {
    let script = packageRoot.appendingPathComponent("IntegrationTests/interop/h3_request.py").path
    let authority = extra.contains("--authority") ? [] : ["--authority", "a.test"]
    let r = try runCommand(venvPython, [script, String(port), path] + authority + extra, timeout: timeout)
    guard r.status == 0 else { throw TestFailure("h3_request.py \(path) \(extra): status \(r.status): \(r.stderr.suffix(1500))") }
    return try r.stdout.split(separator: "\n").map {
        guard let o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else { throw TestFailure("not JSON: \($0)") }
        return o
    }
}

/// The resident set size of a process, in KiB.
func residentKiB(_ pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
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
            let r = try runCommand("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                                        "-keyout", "localhost.key", "-out", "localhost.crt", "-days", "2",
                                                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], cwd: pki.dir)
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

    @Test("requests run through the handler chain over HTTP/3; SNI picks the certificate; Alt-Svc on HTTP/1.1 and HTTP/2")
    func basics() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(config: try Self.config(pki, port: port, routes: """
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
        let g = try runCommand("/usr/bin/gtlsclient", ["--timeout=3s", "--exit-on-all-streams-close", "--download=\(dl.path)",
                                                       "127.0.0.1", String(port), "https://localhost:\(port)/file.txt"],
                               timeout: 30)
        let body = try? String(contentsOf: dl.appendingPathComponent("file.txt"), encoding: .utf8)
        #expect(body == "HTTP/3.0 GET /file.txt localhost", "\(g.stderr.suffix(2000))")
    }

    @Test("no HTTP/3 without TLS or without h3 in protocols: no UDP socket, no Alt-Svc")
    func disabled() throws {
        let pki = try TestPKI()
        let (tlsPort, plainPort) = (freePort(), freePort())
        let s = try UsherProcess(config: """
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
        let s = try UsherProcess(config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#),
                                 waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let size = 10 * 1024 * 1024
        let post = try h3Request(port: port, "/?size=300000&checksum=1", ["--method", "POST", "--body-size", String(size),
                                                               "--trailer", "x-sum=42", "--trailer", "x-note=done"])
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
        #expect(big.first?["length"] as? Int == 5000000)
        #expect(big.first?["fnv"] as? String == fnvOfX(5000000))

        let upload = pki.dir.appendingPathComponent("upload.bin")
        try Data((0..<1_000_000).map { UInt8($0 % 251) }).write(to: upload)
        let g = try runCommand("/usr/bin/gtlsclient", ["--timeout=3s", "--exit-on-all-streams-close", "-m", "POST", "-d", upload.path,
                                                       "127.0.0.1", String(port), "https://localhost:\(port)/?size=10"],
                               timeout: 30)
        #expect(g.stderr.contains("[x-request-bytes: 1000000]"), "\(g.stderr.suffix(2000))")
    }

    @Test("clients that vanish mid-upload: the server serves others, and memory returns near its idle level")
    func vanishingClients() throws {
        let pki = try TestPKI()
        let port = freePort()
        // A short idle timeout, so the abandoned connections are reaped within the test.
        let s = try UsherProcess(config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#,
                                                     extra: #", "idle_timeout": "2s""#),
                                 waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        _ = try h3Request(port: port, "/?size=1000", ["--count", "20"])
        let idle = residentKiB(s.pid)
        for _ in 0..<10 {
            _ = try h3Request(port: port, "/", ["--method", "POST", "--body-size", "4000000", "--stall"])
        }
        let ok = try h3Request(port: port, "/?size=1000")
        #expect(ok.first?["status"] as? Int == 200)
        Thread.sleep(forTimeInterval: 4)
        let after = residentKiB(s.pid)
        #expect(after < idle + 16 * 1024, "idle \(idle) KiB, after \(after) KiB")
        #expect(try h3Request(port: port, "/?size=10").first?["length"] as? Int == 10)
    }

    @Test("a reload that moves the server lets a slow HTTP/3 response finish, then closes the old UDP socket")
    func gracefulReload() throws {
        let pki = try TestPKI()
        let (port, next) = (freePort(), freePort())
        let s = try UsherProcess(config: try Self.config(pki, port: port, routes: #"[{"handle": [{"handler": "test_stream"}]}]"#),
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
        try slow.run()
        Thread.sleep(forTimeInterval: 0.5)
        let newConfig = try Self.config(pki, port: next, routes: #"[{"handle": [{"handler": "static_response", "body": "moved"}]}]"#)
            .replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress)
        let load = try admin(s, "POST", "/load", body: newConfig)
        #expect(load.status == 200, "\(load.body)")
        slow.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let done = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(done?["length"] as? Int == 1310720, "\(text.prefix(300))")
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
