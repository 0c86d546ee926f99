import Foundation
import Testing

@Suite("reverse_proxy over TLS to a Caddy upstream", .serialized)
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
        let caddy = try Backend(packageRoot.appendingPathComponent(".venv/bin/caddy").path,
                                ["run", "--config", dir.appendingPathComponent("Caddyfile").path], port: caddyPort, cwd: dir)
        unsetenv("XDG_DATA_HOME")
        defer { caddy.stop() }
        let root = dir.appendingPathComponent("caddy/pki/authorities/local/root.crt")
        #expect(eventually(10) { FileManager.default.fileExists(atPath: root.path) })
        let ports = (0..<4).map { _ in freePort() }
        func site(_ i: Int, _ tls: String) -> String {
            """
            "s\(i)": {"listen": ["127.0.0.1:\(ports[i])"], "routes": [{"handle": [{"handler": "reverse_proxy",
              "upstreams": [{"dial": "localhost:\(caddyPort)"}], "transport": {"protocol": "http", "tls": \(tls)},
              "headers": {"request": {"set": {"Host": ["{http.reverse_proxy.upstream.hostport}"]}}}}]}]}
            """
        }
        let s = try UsherProcess(config: """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
              \(site(0, #"{"ca": {"provider": "file", "pem_files": ["\#(root.path)"]}}"#)),
              \(site(1, "{}")),
              \(site(2, #"{"insecure_skip_verify": true}"#)),
              \(site(3, #"{"root_ca_pem_files": ["\#(root.path)"], "server_name": "other.test"}"#))}}}}
            """, waitPort: ports[3])
        defer { s.stop() }
        let verified = try curl(["http://127.0.0.1:\(ports[0])/"])
        #expect(verified.status == 200)
        #expect(verified.body == "caddy over http/1.1 sni=localhost host=localhost", "\(verified.body)")
        // The system roots do not know Caddy's internal CA.
        let refused = try curl(["http://127.0.0.1:\(ports[1])/"])
        #expect(refused.status == 502)
        let insecure = try curl(["http://127.0.0.1:\(ports[2])/"])
        #expect(insecure.status == 200 && insecure.body.hasPrefix("caddy over http/1.1 sni=localhost"), "\(insecure.body)")
        let named = try curl(["http://127.0.0.1:\(ports[3])/"])
        #expect(named.status == 200 && named.body.hasPrefix("caddy over http/1.1 sni=other.test"), "\(named.body)")
    }
}
