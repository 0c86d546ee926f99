import Foundation
import Testing

/// A CA of our own whose leaf names an `openssl ocsp` responder, and that responder on a loopback port.
final class OCSPResponder: TestDaemon, @unchecked Sendable {
    let port = freePort()

    /// `revoked`: the responder reports the leaf revoked. `namedPort`: the responder port the leaf names, when
    /// not this responder's.
    init(name: String, revoked: Bool = false, namedPort: Int? = nil) throws {
        try super.init(prefix: "usher-ocsp")
        let dir = self.dir
        func openssl(_ args: [String]) throws { try runOpenSSL(args, in: dir) }
        try openssl(
            ["req", "-x509"] + opensslNewP256Key + [
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=OCSP test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
        try openssl(["req"] + opensslNewP256Key + ["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=\(name)"])
        try "subjectAltName=DNS:\(name)\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:\(namedPort ?? port)/\n".write(
            to: dir.appendingPathComponent("leaf.ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.crt", "-days", "1", "-extfile", "leaf.ext",
        ])
        let chain =
            try String(contentsOf: dir.appendingPathComponent("leaf.crt"), encoding: .utf8)
            + String(contentsOf: dir.appendingPathComponent("ca.crt"), encoding: .utf8)
        try chain.write(to: dir.appendingPathComponent("chain.pem"), atomically: true, encoding: .utf8)
        // The responder's database: the leaf, valid ("V"), with its expiry as YYMMDDHHMMSSZ.
        let info = try runCommand(
            "/usr/bin/openssl", ["x509", "-in", "leaf.crt", "-noout", "-serial", "-enddate", "-dateopt", "iso_8601"],
            cwd: dir
        ).stdout
        let serial = info.split(separator: "\n").first { $0.hasPrefix("serial=") }!.dropFirst(7)
        let end = info.split(separator: "\n").first { $0.hasPrefix("notAfter=") }!.dropFirst(9)
        let digits = end.filter(\.isNumber).dropFirst(2).prefix(12)
        let entry = revoked ? "R\t\(digits)Z\t\(digits.prefix(6))000000Z" : "V\t\(digits)Z\t"
        try "\(entry)\t\(serial)\tunknown\t/CN=\(name)\n".write(
            to: dir.appendingPathComponent("index.txt"), atomically: true, encoding: .utf8)
        try start(
            "/usr/bin/openssl",
            [
                "ocsp", "-index", "index.txt", "-port", "\(port)", "-rsigner", "ca.crt", "-rkey", "ca.key", "-CA",
                "ca.crt", "-ignore_err", "-nmin", "60",
            ])
        // Not probed by connecting: OpenSSL 3.0's responder stalls on a connection that closes without a request.
        guard waitUntil(10, { self.log.contains("waiting for OCSP client connections") }) else {
            throw TestFailure("openssl ocsp did not start: \(self.log)")
        }
    }

    var chain: String { dir.appendingPathComponent("chain.pem").path }
    var key: String { dir.appendingPathComponent("leaf.key").path }
}

@Suite("OCSP stapling", .serialized)
struct OCSPTests {
    func config(_ r: OCSPResponder, port: Int, disabled: Bool = false, policy: String = "{}") -> String {
        """
        {"admin": {"listen": "{{ADMIN}}"}, "apps": {
          "http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "tls_connection_policies": [{}],
            "routes": [{"handle": [{"handler": "static_response", "body": "stapled"}]}]}}},
          "tls": {"disable_ocsp_stapling": \(disabled), "automation": {"policies": [\(policy)]},
            "certificates": {"load_files": [{"certificate": "\(r.chain)", "key": "\(r.key)"}]}}}}
        """
    }

    /// What `openssl s_client -status` says about the stapled response.
    func status(_ port: Int) throws -> String {
        try sClient(port: port, serverName: "ocsp.test", extra: ["-status"])
    }

    @Test(
        "a loaded certificate naming a responder is stapled (openssl s_client -status), kept in storage across a restart; disable_ocsp_stapling turns it off"
    )
    func stapling() throws {
        let responder = try OCSPResponder(name: "ocsp.test")
        let port = freePort()
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("usher-ocsp-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let env = ["XDG_DATA_HOME": data.path]
        var s = try UsherProcess(config: config(responder, port: port), waitPort: port, environment: env)
        var out = ""
        #expect(
            try waitUntil(20) {
                out = try status(port)
                return out.contains("OCSP Response Status: successful")
            }, "\(out)\n--- usher:\n\(s.log.suffix(2000))\n--- responder:\n\(responder.log.suffix(2000))")
        #expect(out.contains("Cert Status: good"), "\(out)")
        #expect(out.contains("Responder Id: CN = OCSP test CA"), "\(out)")
        // certmagic's place for it: ocsp/<name>-<hash of the certificate PEM>.
        let folder = data.appendingPathComponent("usher/ocsp")
        let stored = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        #expect(stored.count == 1 && stored[0].hasPrefix("ocsp.test-"), "\(stored)")

        // Restarted with the responder gone, the stored response is stapled at once.
        s.stop()
        responder.stop()
        s = try UsherProcess(config: config(responder, port: port), waitPort: port, environment: env)
        #expect(
            try waitUntil(10) {
                out = try status(port)
                return out.contains("Cert Status: good")
            }, "\(out)\n\(s.log)")
        s.stop()

        // Turned off: no response is sent, and a client that did not ask is unaffected.
        s = try UsherProcess(config: config(responder, port: port, disabled: true), waitPort: port, environment: env)
        defer { s.stop() }
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try status(port).contains("OCSP response: no response sent"))
    }

    @Test(
        "an automation policy's ocsp_overrides sends the request elsewhere; its disable_ocsp_stapling staples nothing")
    func policyOptions() throws {
        let dead = freePort()
        let responder = try OCSPResponder(name: "ocsp.test", namedPort: dead)
        let port = freePort()
        var s = try UsherProcess(
            config: config(
                responder, port: port,
                policy: #"{"ocsp_overrides": {"http://127.0.0.1:\#(dead)/": "http://127.0.0.1:\#(responder.port)/"}}"#),
            waitPort: port)
        var out = ""
        #expect(
            try waitUntil(20) {
                out = try status(port)
                return out.contains("Cert Status: good")
            }, "\(out)\n\(s.log.suffix(2000))")
        s.stop()

        let direct = try OCSPResponder(name: "ocsp.test")
        s = try UsherProcess(
            config: config(direct, port: port, policy: #"{"disable_ocsp_stapling": true}"#), waitPort: port)
        defer { s.stop() }
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try status(port).contains("OCSP response: no response sent"))
        #expect(!direct.log.contains("Received request"))
    }

    @Test("a revoked certificate's response is not stapled, and the status is logged")
    func revoked() throws {
        let responder = try OCSPResponder(name: "ocsp.test", revoked: true)
        let port = freePort()
        let s = try UsherProcess(config: config(responder, port: port), waitPort: port)
        defer { s.stop() }
        #expect(waitUntil(20) { s.log.contains("OCSP status is not good") }, "\(s.log)\n\(responder.log)")
        #expect(s.log.contains(#""status":"revoked""#))
        #expect(responder.log.contains("Received request"))
        #expect(try status(port).contains("OCSP response: no response sent"))
    }
}
