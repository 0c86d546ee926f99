import Foundation
import Testing

@Suite("reverse_proxy over TLS and HTTP/2 to Caddy upstreams", .serialized)
struct ReverseProxyTLSTests {
    @Test("TLS upstreams: verified against the given CA, refused without it, insecure_skip_verify, server_name as SNI")
    func tlsUpstream() throws {
        let caddyPort = freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-caddy-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
        {
        \tadmin off
        \tskip_install_trust
        \thttp_port \(freePort())
        }
        localhost:\(caddyPort), other.test:\(caddyPort) {
        \tbind 127.0.0.1
        \ttls internal
        \trespond "caddy over {http.request.tls.proto} sni={http.request.tls.server_name} host={host}"
        }

        """.write(to: dir.appendingPathComponent("Caddyfile"), atomically: true, encoding: .utf8)
        setenv("XDG_DATA_HOME", dir.path, 1)
        let caddy = try Backend(
            packageRoot.appendingPathComponent(".venv/bin/caddy").path,
            ["run", "--config", dir.appendingPathComponent("Caddyfile").path], port: caddyPort, cwd: dir)
        unsetenv("XDG_DATA_HOME")
        defer { caddy.stop() }
        let root = dir.appendingPathComponent("caddy/pki/authorities/local/root.crt")
        #expect(eventually(10) { FileManager.default.fileExists(atPath: root.path) })
        let ports = (0..<5).map { _ in freePort() }
        func site(_ i: Int, _ tls: String, versions: String = #"["1.1"]"#) -> String {
            """
            "s\(i)": {"listen": ["127.0.0.1:\(ports[i])"], "routes": [{"handle": [{"handler": "reverse_proxy",
              "upstreams": [{"dial": "localhost:\(caddyPort)"}],
              "transport": {"protocol": "http", "tls": \(tls), "versions": \(versions)},
              "headers": {"request": {"set": {"Host": ["{http.reverse_proxy.upstream.hostport}"]}}}}]}]}
            """
        }
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  \(site(0, #"{"ca": {"provider": "file", "pem_files": ["\#(root.path)"]}}"#)),
                  \(site(1, "{}")),
                  \(site(2, #"{"insecure_skip_verify": true}"#)),
                  \(site(3, #"{"root_ca_pem_files": ["\#(root.path)"], "server_name": "other.test"}"#)),
                  \(site(4, #"{"ca": {"provider": "file", "pem_files": ["\#(root.path)"]}}"#, versions: #"["1.1", "2"]"#))}}}}
                """, waitPort: ports[4])
        defer { s.stop() }
        let verified = try curl(["http://127.0.0.1:\(ports[0])/"])
        #expect(verified.status == 200)
        #expect(verified.body == "caddy over http/1.1 sni=localhost host=localhost", "\(verified.body)")
        // The system roots do not know Caddy's internal CA.
        let refused = try curl(["http://127.0.0.1:\(ports[1])/"])
        #expect(refused.status == 502)
        let insecure = try curl(["http://127.0.0.1:\(ports[2])/"])
        #expect(
            insecure.status == 200 && insecure.body.hasPrefix("caddy over http/1.1 sni=localhost"), "\(insecure.body)")
        let named = try curl(["http://127.0.0.1:\(ports[3])/"])
        #expect(named.status == 200 && named.body.hasPrefix("caddy over http/1.1 sni=other.test"), "\(named.body)")
        // With 2 listed, ALPN settles on h2: eight requests at once on a cold pool, all carried as streams.
        let h2 = try runCommand(
            "/usr/bin/curl",
            ["-s", "-m", "10", "-Z", "--parallel-immediate"]
                + Array(repeating: "http://127.0.0.1:\(ports[4])/", count: 8), timeout: 30)
        #expect(
            h2.stdout.components(separatedBy: "caddy over h2 sni=localhost host=localhost").count == 9, "\(h2.stdout)")
    }

    @Test("h2c upstreams: HTTP/2 with prior knowledge in cleartext, request and response bodies both ways")
    func h2cUpstream() throws {
        let caddyPort = freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-caddy-h2c-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
        {
        \tadmin off
        \tauto_https off
        \tservers {
        \t\tprotocols h1 h2c
        \t}
        }
        http://:\(caddyPort) {
        \tbind 127.0.0.1
        \trespond "caddy over {http.request.proto} {method} {header.Content-Length}"
        }

        """.write(to: dir.appendingPathComponent("Caddyfile"), atomically: true, encoding: .utf8)
        let caddy = try Backend(
            packageRoot.appendingPathComponent(".venv/bin/caddy").path,
            ["run", "--config", dir.appendingPathComponent("Caddyfile").path], port: caddyPort, cwd: dir)
        defer { caddy.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(caddyPort)"}],
                    "transport": {"protocol": "http", "versions": ["h2c", "2"]}}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let get = try curl(["http://127.0.0.1:\(port)/"])
        #expect(get.body == "caddy over HTTP/2.0 GET ", "\(get.body)")
        #expect(get.header("Via") == "2.0 Usher")
        let post = try curl(["--data-binary", "hello h2c", "http://127.0.0.1:\(port)/"])
        #expect(post.body == "caddy over HTTP/2.0 POST 9", "\(post.body)")
    }
}
