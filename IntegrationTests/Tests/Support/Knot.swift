import Foundation

/// Knot DNS (Debian's `knotd`) on a loopback port, authoritative for one zone that takes RFC 2136 updates signed
/// with a TSIG key of its own.
final class Knot: TestDaemon, @unchecked Sendable {
    let port = freePort()
    let zone: String
    let keyName = "usher-key."
    let secret = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()

    init(zone: String) throws {
        self.zone = zone
        try super.init(prefix: "usher-knot")
        let conf = """
            server:
                rundir: "\(dir.path)"
                listen: 127.0.0.1@\(port)
            database:
                storage: "\(dir.path)/db"
            key:
              - id: \(keyName)
                algorithm: hmac-sha256
                secret: \(secret)
            acl:
              - id: update
                key: \(keyName)
                action: update
            template:
              - id: default
                storage: "\(dir.path)"
                file: "%s.zone"
                zonefile-sync: -1
                journal-content: none
            zone:
              - domain: \(zone)
                acl: update
            log:
              - target: stderr
                any: info

            """
        try conf.write(to: dir.appendingPathComponent("knot.conf"), atomically: true, encoding: .utf8)
        try """
        $ORIGIN \(zone).
        $TTL 60
        @ SOA ns1 hostmaster 1 3600 600 86400 60
        @ NS ns1
        ns1 A 127.0.0.1

        """.write(to: dir.appendingPathComponent("\(zone).zone"), atomically: true, encoding: .utf8)
        try start("/usr/sbin/knotd", ["-c", dir.appendingPathComponent("knot.conf").path])
        let deadline = Date().addingTimeInterval(10)
        while (try? txt("ns1." + zone, type: "A")) != ["127.0.0.1"] {
            guard Date() < deadline, process.isRunning else { throw TestFailure("knotd did not start: \(self.log)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    var address: String { "127.0.0.1:\(port)" }

    /// `dns.providers.rfc2136` JSON for this server's zone (with another `key` to see a refusal).
    func provider(key: String? = nil) -> String {
        """
        {"name": "rfc2136", "key_name": "\(keyName)", "key_alg": "hmac-sha256", "key": "\(key ?? secret)",
         "server": "\(address)"}
        """
    }

    /// The records of `name` (TXT unless said), as `kdig +short` prints them, quotes removed.
    func txt(_ name: String, type: String = "TXT") throws -> [String] {
        let r = try runCommand("/usr/bin/kdig", ["@127.0.0.1", "-p", "\(port)", type, name, "+short", "+time=2"])
        return r.stdout.split(separator: "\n").map { $0.replacingOccurrences(of: "\"", with: "") }
    }
}
