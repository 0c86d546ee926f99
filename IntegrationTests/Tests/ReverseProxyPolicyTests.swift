import Foundation
import Testing

/// Three `python3 -m http.server` upstreams answering "python A", "python B", "python C", and one usher with a
/// server per selection policy.
final class PolicyBench: @unchecked Sendable {
    let backends: [Backend]
    let server: UsherProcess
    let ports: [String: Int]

    static let policies: [(String, String)] = [
        ("random", #"{"policy": "random"}"#),
        ("random_choose", #"{"policy": "random_choose", "choose": 2}"#),
        ("weighted_round_robin", #"{"policy": "weighted_round_robin", "weights": [3, 1, 0]}"#),
        ("first", #"{"policy": "first"}"#),
        ("ip_hash", #"{"policy": "ip_hash"}"#),
        ("client_ip_hash", #"{"policy": "client_ip_hash"}"#),
        ("uri_hash", #"{"policy": "uri_hash"}"#),
        ("header", #"{"policy": "header", "field": "X-User", "fallback": {"policy": "round_robin"}}"#),
        ("query", #"{"policy": "query", "key": "u"}"#),
        ("cookie", #"{"policy": "cookie", "name": "sticky", "secret": "s3cret", "max_age": "1h"}"#),
    ]

    init() throws {
        backends = try ["python A", "python B", "python C"].map { try Backend.pythonServer($0) }
        var ports: [String: Int] = [:]
        var servers: [String] = []
        let upstreams = backends.map { #"{"dial": "127.0.0.1:\#($0.port)"}"# }.joined(separator: ", ")
        for (name, policy) in Self.policies {
            let port = freePort()
            ports[name] = port
            servers.append(
                """
                "\(name)": {"listen": ["127.0.0.1:\(port)"], "trusted_proxies": {"source": "static", "ranges": ["127.0.0.1/32"]},
                  "client_ip_headers": ["X-Forwarded-For"],
                  "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [\(upstreams)],
                    "load_balancing": {"selection_policy": \(policy)}}]}]}
                """)
        }
        self.ports = ports
        server = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {\(servers.joined(separator: ", "))}}}}
                """, waitPort: ports["cookie"])
    }

    func get(_ policy: String, _ path: String = "/", _ headers: [String] = []) throws -> CurlResponse {
        try curl(headers.flatMap { ["-H", $0] } + ["http://127.0.0.1:\(ports[policy]!)\(path)"])
    }

    func bodies(_ policy: String, _ n: Int, path: String = "/", headers: [String] = []) throws -> [String] {
        try (0..<n).map { _ in try get(policy, path, headers).body }
    }

    func stop() {
        server.stop()
        for b in backends { b.stop() }
    }

    deinit { stop() }
}

/// Starts the bench before the suite's tests and stops it (and its upstreams) after them, even when one fails.
struct PolicyBenchScope: SuiteTrait, TestScoping {
    @TaskLocal static var current: PolicyBench?

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void)
        async throws
    {
        let bench = try PolicyBench()
        defer { bench.stop() }
        try await Self.$current.withValue(bench) { try await function() }
    }

    static func get() throws -> PolicyBench {
        guard let b = current else { throw TestFailure("no policy bench in scope") }
        return b
    }
}

@Suite("reverse_proxy selection policies against three python upstreams", .serialized, PolicyBenchScope())
struct ReverseProxyPolicyTests {

    @Test("random and random_choose spread requests over the upstreams")
    func randomPolicies() throws {
        let b = try PolicyBenchScope.get()
        #expect(Set(try b.bodies("random", 40)) == ["python A", "python B", "python C"])
        #expect(Set(try b.bodies("random_choose", 40)).count >= 2)
    }

    @Test("weighted_round_robin gives turns by weight (3:1:0); first always takes the first")
    func orderedPolicies() throws {
        let b = try PolicyBenchScope.get()
        let got = try b.bodies("weighted_round_robin", 16)
        #expect(got.filter { $0 == "python A" }.count == 12, "\(got)")
        #expect(got.filter { $0 == "python B" }.count == 4, "\(got)")
        #expect(!got.contains("python C"))
        #expect(Set(try b.bodies("first", 10)) == ["python A"])
    }

    @Test("ip_hash, client_ip_hash, uri_hash, header and query keep a key on one upstream and spread different keys")
    func hashingPolicies() throws {
        let b = try PolicyBenchScope.get()
        // One client address: always the same upstream.
        #expect(Set(try b.bodies("ip_hash", 10)).count == 1)
        func spread(_ policy: String, _ request: (Int) -> (path: String, headers: [String])) throws {
            var seen = Set<String>()
            for i in 0..<24 {
                let (path, headers) = request(i)
                let first = try b.get(policy, path, headers).body
                let again = try b.get(policy, path, headers).body
                #expect(first == again, "\(policy) moved key \(i)")
                seen.insert(first)
            }
            #expect(seen.count >= 2, "\(policy) sent every key to \(seen)")
        }
        try spread("client_ip_hash") { ("/", ["X-Forwarded-For: 10.0.0.\($0)"]) }
        try spread("uri_hash") { ("/?page=\($0)", []) }
        try spread("header") { ("/", ["X-User: user\($0)"]) }
        try spread("query") { ("/?u=user\($0)", []) }
        // Without the field, the header policy's fallback (round_robin) decides.
        let fallback = try b.bodies("header", 6)
        #expect(Set(fallback).count == 3, "\(fallback)")
    }

    @Test("cookie: a new client gets Set-Cookie with the upstream's HMAC and sticks to that upstream")
    func cookiePolicy() throws {
        let b = try PolicyBenchScope.get()
        let first = try b.get("cookie")
        let setCookie = first.header("Set-Cookie") ?? ""
        #expect(setCookie.hasPrefix("sticky="))
        #expect(setCookie.hasSuffix("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"), "\(setCookie)")
        let value = String(setCookie.dropFirst("sticky=".count).prefix { $0 != ";" })
        // The value is HMAC-SHA256(secret, dial address), hex, as Caddy computes it.
        let index = ["python A", "python B", "python C"].firstIndex(of: first.body) ?? 0
        let dial = "127.0.0.1:\(b.backends[index].port)"
        let mac = try runCommand(
            "/usr/bin/openssl", ["dgst", "-sha256", "-hmac", "s3cret", "-r"], input: Data(dial.utf8))
        #expect(mac.stdout.split(separator: " ").first.map(String.init) == value)
        for _ in 0..<8 {
            let r = try b.get("cookie", "/", ["Cookie: other=1; sticky=\(value)"])
            #expect(r.body == first.body)
            #expect(r.header("Set-Cookie") == nil)
        }
        // A cookie naming no upstream is replaced.
        #expect(try b.get("cookie", "/", ["Cookie: sticky=nonsense"]).header("Set-Cookie") != nil)
    }

    @Test("least_conn: while one upstream holds a long request, new requests go to the idle one")
    func leastConn() throws {
        let slow = try Backend.eventStream(every: 1.0)
        let quick = try Backend.pythonServer("python A")
        defer { slow.stop(); quick.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(slow.port)"}, {"dial": "127.0.0.1:\(quick.port)"}],
                    "load_balancing": {"selection_policy": {"policy": "least_conn"}}}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        // Requests that land on the quick upstream end at once; the first to land on the slow one stays.
        var held: [Process] = []
        defer { for p in held { p.terminate(); p.waitUntilExit() } }
        let slowAddress = "127.0.0.1:\(slow.port)"
        for _ in 0..<20 where try upstreamStatus(s)[slowAddress]?["num_requests"] as? Int != 1 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            p.arguments = ["-s", "-o", "/dev/null", "--max-time", "8", "http://127.0.0.1:\(port)/events"]
            try launch(p)
            held.append(p)
            _ = eventually(0.5) { (try? upstreamStatus(s)[slowAddress]?["num_requests"] as? Int) == 1 }
        }
        #expect(try upstreamStatus(s)[slowAddress]?["num_requests"] as? Int == 1)
        #expect(Set(try (0..<10).map { _ in try curl(["http://127.0.0.1:\(port)/"]).body }) == ["python A"])
    }
}
