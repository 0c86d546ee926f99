import Foundation
import Testing

/// Certificates made with the openssl CLI for one test: two server certificates (a.test, ECDSA, tag "a";
/// b.test and *.b.test, RSA, organization "Bee Org"), a client CA with a client certificate, and a rogue client
/// certificate from another CA.
struct TestPKI {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func openssl(_ args: [String]) throws { try runOpenSSL(args, in: dir) }
        let ec = opensslNewP256Key
        try openssl(
            ["req", "-x509"] + ec + [
                "-keyout", "a.key", "-out", "a.crt", "-days", "2", "-subj", "/CN=a.test",
                "-addext", "subjectAltName=DNS:a.test",
            ])
        try openssl([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "b.key", "-out", "b.crt", "-days", "2",
            "-subj", "/CN=b.test/O=Bee Org", "-addext", "subjectAltName=DNS:b.test,DNS:*.b.test",
        ])
        for ca in ["ca", "rogue-ca"] {
            try openssl(
                ["req", "-x509"] + ec + [
                    "-keyout", "\(ca).key", "-out", "\(ca).crt", "-days", "2", "-subj", "/CN=\(ca)",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                ])
        }
        try "extendedKeyUsage=clientAuth\n".write(
            to: dir.appendingPathComponent("client.ext"), atomically: true, encoding: .utf8)
        for (name, ca) in [("client", "ca"), ("rogue", "rogue-ca")] {
            try openssl(["req"] + ec + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial",
                "-out", "\(name).crt", "-days", "2", "-extfile", "client.ext",
            ])
        }
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// A certificate's DER bytes in base64, as `trusted_ca_certs` wants them.
    func base64DER(_ name: String) throws -> String {
        let r = try runCommand(
            "/usr/bin/openssl", ["x509", "-in", path(name), "-outform", "DER", "-out", path(name + ".der")])
        guard r.status == 0 else { throw TestFailure(r.stderr) }
        return try Data(contentsOf: URL(fileURLWithPath: path(name + ".der"))).base64EncodedString()
    }
}

/// `openssl s_client` against 127.0.0.1:`port`: what it printed (handshake summary and peer certificate).
func sClient(
    host: String = "127.0.0.1", port: Int, serverName: String?, alpn: String? = nil, extra: [String] = []
) throws -> String {
    var args = ["s_client", "-connect", "\(host):\(port)"]
    if let serverName { args += ["-servername", serverName] } else { args += ["-noservername"] }
    if let alpn { args += ["-alpn", alpn] }
    let r = try runCommand("/usr/bin/openssl", args + extra, input: Data(), timeout: 15)
    return r.stdout + r.stderr
}

@Suite("TLS: certificates, policies, internal CA, automatic HTTPS", .serialized)
struct TLSTests {
    @Test("ALPN chooses h2 or http/1.1; SNI chooses between two certificates; unknown names get no handshake")
    func alpnAndSNI() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                    "routes": [{"handle": [{"handler": "static_response",
                      "body": "{http.request.proto} {http.request.host} {http.request.scheme} {http.request.tls.version} {http.request.tls.proto} {http.request.tls.server_name}"}]}],
                    "logs": {},
                    "tls_connection_policies": [
                      {"match": {"sni": ["a.test"]}, "certificate_selection": {"any_tag": ["a"]}},
                      {"match": {"sni": ["b.test", "*.b.test"]}, "certificate_selection": {"subject_organization": ["Bee Org"]}, "protocol_min": "tls1.3"},
                      {}
                    ]}}},
                  "tls": {"certificates": {
                    "load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))", "tags": ["a"]}],
                    "load_pem": [{"certificate": \(jsonString(try String(contentsOfFile: pki.path("b.crt"), encoding: .utf8))),
                                  "key": \(jsonString(try String(contentsOfFile: pki.path("b.key"), encoding: .utf8)))}]}}}}
                """, waitPort: port)
        defer { s.stop() }

        let h2 = try curl([
            "--http2", "--cacert", pki.path("a.crt"), "--resolve", "a.test:\(port):127.0.0.1",
            "https://a.test:\(port)/",
        ])
        #expect(h2.status == 200)
        #expect(h2.httpVersion == "HTTP/2")
        #expect(h2.body == "HTTP/2.0 a.test https tls1.3 h2 a.test")
        let h1 = try curl([
            "--http1.1", "--cacert", pki.path("a.crt"), "--resolve", "a.test:\(port):127.0.0.1",
            "https://a.test:\(port)/",
        ])
        #expect(h1.httpVersion == "HTTP/1.1")
        #expect(h1.body == "HTTP/1.1 a.test https tls1.3 http/1.1 a.test")
        // The wildcard covers x.b.test, and curl verifies it against b.test's certificate.
        let wild = try curl([
            "--cacert", pki.path("b.crt"), "--resolve", "x.b.test:\(port):127.0.0.1", "https://x.b.test:\(port)/",
        ])
        #expect(wild.body == "HTTP/2.0 x.b.test https tls1.3 h2 x.b.test")
        // The access log carries what the handshake settled, as Caddy's does.
        #expect(s.log.contains(#""tls":{"version":772,"proto":"h2","server_name":"a.test"}"#), "\(s.log.suffix(1500))")

        let a = try sClient(port: port, serverName: "a.test", alpn: "h2")
        #expect(a.contains("subject=CN = a.test"), "\(a)")
        #expect(a.contains("ALPN protocol: h2"), "\(a)")
        let b = try sClient(port: port, serverName: "b.test", alpn: "http/1.1")
        #expect(b.contains("subject=CN = b.test, O = Bee Org"), "\(b)")
        #expect(b.contains("ALPN protocol: http/1.1"), "\(b)")
        // b.test's policy sets protocol_min tls1.3: a TLS 1.2 client is turned away there, not at a.test.
        #expect(try sClient(port: port, serverName: "b.test", extra: ["-tls1_2"]).contains("subject=") == false)
        #expect(try sClient(port: port, serverName: "a.test", extra: ["-tls1_2"]).contains("Protocol  : TLSv1.2"))
        // No certificate covers c.test: no certificate is shown, and the client is told why.
        let c = try sClient(port: port, serverName: "c.test")
        #expect(c.contains("subject=") == false)
        #expect(c.contains("unrecognized name"), "\(c)")

        // nghttp negotiates h2 by ALPN on its own; without SNI it gets a certificate all the same.
        let ng = try runCommand(
            "/usr/bin/nghttp", ["-v", "--no-verify-peer", "https://127.0.0.1:\(port)/"], timeout: 20)
        #expect(ng.stdout.contains("The negotiated protocol: h2"), "\(ng.stdout)")
        #expect(ng.stdout.contains(":status: 200"))
    }

    @Test("mutual TLS: client certificates from the trusted CA are accepted, others and none are refused")
    func mutualTLS() throws {
        let pki = try TestPKI()
        let (required, optional, pool) = (freePort(), freePort(), freePort())
        let caDER = try pki.base64DER("ca.crt")
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"servers": {
                    "req": {"listen": ["127.0.0.1:\(required)"],
                      "routes": [{"handle": [{"handler": "static_response", "body": "hello {http.request.tls.client.subject} {http.request.tls.client.fingerprint}"}]}],
                      "tls_connection_policies": [{"client_authentication": {"trusted_ca_certs_pem_files": ["\(pki.path("ca.crt"))"]}}]},
                    "opt": {"listen": ["127.0.0.1:\(optional)"],
                      "routes": [{"handle": [{"handler": "static_response", "body": "optional"}]}],
                      "tls_connection_policies": [{"client_authentication": {"trusted_ca_certs": ["\(caDER)"], "mode": "verify_if_given"}}]},
                    "pool": {"listen": ["127.0.0.1:\(pool)"],
                      "routes": [{"handle": [{"handler": "static_response", "body": "pool"}]}],
                      "tls_connection_policies": [{"client_authentication": {"ca": {"provider": "combined", "sources": [
                        {"provider": "file", "pem_files": ["\(pki.path("ca.crt"))"]}, {"provider": "inline", "trusted_ca_certs": []}]}}}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
                """, waitPort: required)
        defer { s.stop() }
        let base = ["--cacert", pki.path("a.crt")]
        func url(_ port: Int) -> [String] { ["--resolve", "a.test:\(port):127.0.0.1", "https://a.test:\(port)/"] }

        let ok = try curl(base + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")] + url(required))
        #expect(ok.status == 200)
        let fp = try runCommand(
            "/usr/bin/openssl", ["x509", "-in", pki.path("client.crt"), "-noout", "-fingerprint", "-sha256"])
        let fingerprint =
            fp.stdout.split(separator: "=").last.map { $0.replacingOccurrences(of: ":", with: "").lowercased() }?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        #expect(ok.body == "hello CN=client \(fingerprint)")
        // Client authentication turns strict SNI on: a Host other than the handshake's name is misdirected.
        let misdirected = try curl(
            base + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key"), "-H", "Host: b.test"]
                + url(required))
        #expect(misdirected.status == 421)
        let none = try runCommand("/usr/bin/curl", ["-s", "--max-time", "10"] + base + url(required))
        #expect(none.status != 0, "a client without a certificate was let in")
        let rogue = try runCommand(
            "/usr/bin/curl",
            ["-s", "--max-time", "10", "--cert", pki.path("rogue.crt"), "--key", pki.path("rogue.key")] + base
                + url(required))
        #expect(rogue.status != 0, "a certificate from an untrusted CA was accepted")

        #expect(try curl(base + url(optional)).body == "optional")
        #expect(
            try curl(base + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")] + url(optional)).status
                == 200)
        // Caddy's newer form: a CA pool source (here a combined pool holding a file source) in require_and_verify.
        #expect(
            try curl(base + ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")] + url(pool)).body
                == "pool")
        #expect(try runCommand("/usr/bin/curl", ["-s", "--max-time", "10"] + base + url(pool)).status != 0)
        #expect(
            try runCommand(
                "/usr/bin/curl",
                ["-s", "--max-time", "10", "--cert", pki.path("rogue.crt"), "--key", pki.path("rogue.key")]
                    + base + url(pool)
            ).status != 0)
        let rogueOptional = try runCommand(
            "/usr/bin/curl",
            ["-s", "--max-time", "10", "--cert", pki.path("rogue.crt"), "--key", pki.path("rogue.key")] + base
                + url(optional))
        #expect(rogueOptional.status != 0, "verify_if_given accepted an untrusted certificate")
    }

    @Test("automatic HTTPS: an internal CA issues for the site, the chain verifies with the root, HTTP redirects")
    func internalCA() throws {
        let (httpPort, httpsPort) = (freePort(), freePort())
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-data-\(UUID().uuidString)")
        let s = try UsherProcess(
            config: """
                {
                \tadmin {{ADMIN}}
                \thttp_port \(httpPort)
                \thttps_port \(httpsPort)
                }
                localhost {
                \trespond "secure {http.request.proto}"
                }

                """, configName: "Caddyfile", waitPort: httpsPort, environment: ["USHER_DATA": data.path])
        defer { s.stop() }
        let ca = data.appendingPathComponent("pki/authorities/local")
        let root = ca.appendingPathComponent("root.crt").path
        let r = try curl(["--cacert", root, "https://localhost:\(httpsPort)/"])
        #expect(r.status == 200)
        #expect(r.body == "secure HTTP/2.0")

        // The stored chain is leaf + intermediate; openssl verifies the leaf through the intermediate to the root.
        let chain = try String(
            contentsOf: data.appendingPathComponent("certificates/local/localhost/localhost.crt"), encoding: .utf8)
        let blocks = chain.components(separatedBy: "-----END CERTIFICATE-----").filter { $0.contains("BEGIN") }
        #expect(blocks.count == 2)
        let leaf = data.appendingPathComponent("leaf.pem")
        try (blocks[0] + "-----END CERTIFICATE-----\n").write(to: leaf, atomically: true, encoding: .utf8)
        let verify = try runCommand(
            "/usr/bin/openssl",
            [
                "verify", "-CAfile", root, "-untrusted",
                ca.appendingPathComponent("intermediate.crt").path, leaf.path,
            ])
        #expect(verify.stdout.contains("OK"), "\(verify.stdout) \(verify.stderr)")
        let text = try runCommand("/usr/bin/openssl", ["x509", "-in", leaf.path, "-noout", "-ext", "subjectAltName"])
        #expect(text.stdout.contains("DNS:localhost"))

        let redirect = try curl(["http://localhost:\(httpPort)/some/path?q=1"])
        #expect(redirect.status == 308)
        #expect(redirect.header("Location") == "https://localhost:\(httpsPort)/some/path?q=1")

        // `usher trust` finds the same root in the same data directory.
        let trust = try runCommand(usherBinary, ["trust", "--data-dir", data.path])
        #expect(trust.status == 0)
        #expect(trust.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == root)

        // A restart reuses the stored CA and certificate instead of making new ones.
        let rootBefore = try String(contentsOfFile: root, encoding: .utf8)
        let leafBefore = chain
        _ = s.stop()
        let again = try UsherProcess(
            config: "{\n\thttp_port \(httpPort)\n\thttps_port \(httpsPort)\n}\nlocalhost {\n\trespond ok\n}\n",
            configName: "Caddyfile", waitPort: httpsPort, environment: ["USHER_DATA": data.path])
        defer { again.stop() }
        #expect(try curl(["--cacert", root, "https://localhost:\(httpsPort)/"]).body == "ok")
        #expect(try String(contentsOfFile: root, encoding: .utf8) == rootBefore)
        #expect(
            try String(
                contentsOf: data.appendingPathComponent("certificates/local/localhost/localhost.crt"), encoding: .utf8)
                == leafBefore)
    }

    @Test("global storage file_system: the internal CA and its certificates live under the configured root")
    func configuredStorage() throws {
        let (httpPort, httpsPort) = (freePort(), freePort())
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("usher-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let s = try UsherProcess(
            config: """
                {
                \tadmin {{ADMIN}}
                \thttp_port \(httpPort)
                \thttps_port \(httpsPort)
                \tstorage file_system \(root.path)
                }
                localhost {
                \trespond stored
                }

                """, configName: "Caddyfile", waitPort: httpsPort)
        defer { s.stop() }
        let caRoot = root.appendingPathComponent("pki/authorities/local/root.crt").path
        #expect(try curl(["--cacert", caRoot, "https://localhost:\(httpsPort)/"]).body == "stored")
        for file in [
            "pki/authorities/local/root.key", "pki/authorities/local/intermediate.crt",
            "certificates/local/localhost/localhost.crt", "certificates/local/localhost/localhost.key",
            "certificates/local/localhost/localhost.json",
        ] {
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(file).path), "\(file)")
        }
        // Keys are private to the server's user.
        let attrs = try FileManager.default.attributesOfItem(
            atPath: root.appendingPathComponent("pki/authorities/local/root.key").path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        // Nothing went to the default data directory.
        #expect(!FileManager.default.fileExists(atPath: s.dir.appendingPathComponent("xdg-data/usher/pki").path))
    }

    @Test(
        "usher trust --install puts the root in the system store, curl then trusts the site, usher untrust removes it",
        .enabled(if: getuid() == 0, "writes to /usr/local/share/ca-certificates"))
    func systemTrust() throws {
        let (httpPort, httpsPort) = (freePort(), freePort())
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-data-\(UUID().uuidString)")
        let s = try UsherProcess(
            config: "{\n\thttp_port \(httpPort)\n\thttps_port \(httpsPort)\n}\nlocalhost {\n\trespond trusted\n}\n",
            configName: "Caddyfile", waitPort: httpsPort, environment: ["USHER_DATA": data.path])
        defer { s.stop() }
        let installed = "/usr/local/share/ca-certificates/usher-local-root.crt"
        defer { _ = try? runCommand(usherBinary, ["untrust"]) }
        // Without the root in the store, curl refuses the internal certificate.
        #expect(try runCommand("/usr/bin/curl", ["-s", "https://localhost:\(httpsPort)/"]).status == 60)
        let trust = try runCommand(usherBinary, ["trust", "--install", "--data-dir", data.path])
        #expect(trust.status == 0, "\(trust.stderr)")
        #expect(FileManager.default.fileExists(atPath: installed))
        #expect(try curl(["https://localhost:\(httpsPort)/"]).body == "trusted")
        let untrust = try runCommand(usherBinary, ["untrust"])
        #expect(untrust.status == 0)
        #expect(!FileManager.default.fileExists(atPath: installed))
        #expect(try runCommand("/usr/bin/curl", ["-s", "https://localhost:\(httpsPort)/"]).status == 60)
    }

    @Test("internal certificates are renewed before they expire, and handshakes pick up the new one")
    func renewal() throws {
        let (port, httpPort) = (freePort(), freePort())
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-data-\(UUID().uuidString)")
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": \(httpPort), "servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                    "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "static_response", "body": "ok"}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [{"module": "internal", "lifetime": "6s"}]}]}}}}
                """, waitPort: port, environment: ["USHER_DATA": data.path])
        defer { s.stop() }
        func serial() throws -> String {
            let out = try sClient(port: port, serverName: "localhost")
            let cert = try runCommand("/usr/bin/openssl", ["x509", "-noout", "-serial"], input: Data(out.utf8))
            return cert.stdout
        }
        let first = try serial()
        #expect(first.hasPrefix("serial="))
        Thread.sleep(forTimeInterval: 6)
        let second = try serial()
        #expect(second.hasPrefix("serial="))
        #expect(first != second, "the certificate was not renewed")
        #expect(s.log.contains("certificate renewed successfully"))
        let root = data.appendingPathComponent("pki/authorities/local/root.crt").path
        #expect(
            try curl(["--cacert", root, "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/"]).body
                == "ok")
    }

    @Test("bad TLS config names what and where, and a running config survives it")
    func badConfig() throws {
        let pki = try TestPKI()
        let port = freePort()
        let good = """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": [{"handle": [{"handler": "static_response", "body": "good"}]}], "tls_connection_policies": [{}]}}},
              "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
            """
        let s = try UsherProcess(config: good, waitPort: port)
        defer { s.stop() }
        let cases: [(String, String)] = [
            (
                #""tls": {"certificates": {"load_files": [{"certificate": "/nonexistent.crt", "key": "x"}]}}"#,
                "apps.tls.certificates.load_files[0].certificate (tls.certificates.load_files): reading certificate file /nonexistent.crt: no such file or directory"
            ),
            (
                #""tls": {"certificates": {"load_files": [{"certificate": "\#(pki.path("a.crt"))", "key": "\#(pki.path("b.key"))"}]}}"#,
                "private key does not match the certificate's public key"
            ),
            (
                #""tls": {"certificates": {"load_pem": [{"certificate": "not pem", "key": "x"}]}}"#,
                "apps.tls.certificates.load_pem[0] (tls.certificates.load_pem): load_pem[0]: no valid certificate in PEM data"
            ),
        ]
        for (tls, message) in cases {
            let bad = """
                {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "bad"}]}], "tls_connection_policies": [{}]}}}, \(tls)}}
                """
            let r = try admin(s, "POST", "/load", body: bad)
            #expect(r.status == 400)
            #expect(r.body.contains(message), "\(r.body)")
        }
        let policy = try admin(
            s, "POST", "/load",
            body: """
                {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "tls_connection_policies": [{"protocol_min": "tls1.3", "protocol_max": "tls1.2"}]}}}}}
                """)
        #expect(
            policy.body.contains(
                "apps.http.servers.s.tls_connection_policies[0].protocol_min (http): protocol min (tls1.3) cannot be greater than protocol max (tls1.2)"
            ), "\(policy.body)")
        #expect(try curl(["-k", "https://127.0.0.1:\(port)/"]).body == "good")
    }
}

/// A Swift string as a JSON string literal.
func jsonString(_ s: String) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: [s]), as: UTF8.self).dropFirst().dropLast().description
}
