import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `interop/hostile.py` with `args` and returns the JSON object it prints.
func hostile(_ args: [String], timeout: TimeInterval = 60) throws -> [String: Any] {
    let script = packageRoot.appendingPathComponent("IntegrationTests/interop/hostile.py").path
    let r = try runCommand(venvPython, [script] + args, timeout: timeout)
    guard r.status == 0, let line = r.stdout.split(separator: "\n").last,
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    else {
        throw TestFailure("hostile.py \(args.joined(separator: " ")) failed: \(r.stdout) \(r.stderr)")
    }
    return object
}

/// A server with an h1+h2c listener, a TLS one (h1, h2) and a cleartext HTTP/1.1-only one, all answering `ok`, with
/// `extra` server fields.
private func hardenedServer(extra: String = "", binary: String = usherBinary) throws -> (
    UsherProcess, cleartext: Int, tls: Int, plain: Int
) {
    let pki = try TestPKI()
    let (clear, tls, plain) = (freePort(), freePort(), freePort())
    let s = try UsherProcess(
        config: """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
              "clear": {"listen": ["127.0.0.1:\(clear)"], "protocols": ["h1", "h2c"]\(extra),
                "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]},
              "plain": {"listen": ["127.0.0.1:\(plain)"], "protocols": ["h1"]\(extra),
                "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]},
              "tls": {"listen": ["127.0.0.1:\(tls)"], "protocols": ["h1", "h2"]\(extra), "tls_connection_policies": [{}],
                "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]}}},
              "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
            """, waitPort: tls, binary: binary)
    return (s, clear, tls, plain)
}

private func seconds(_ value: Any?) -> Double? { (value as? NSNumber)?.doubleValue }

/// A front server proxying everything to an upstream server (in the same process) whose route is `upstreamHandler`;
/// returns the process and the front's port.
private func proxyPair(upstreamHandler: String, binary: String = usherBinary) throws -> (UsherProcess, Int) {
    let (port, upstream) = (freePort(), freePort())
    let s = try UsherProcess(
        config: """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
              "front": {"listen": ["127.0.0.1:\(port)"], "routes": [
                {"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upstream)"}]}]}]},
              "up": {"listen": ["127.0.0.1:\(upstream)"], "routes": [{"handle": [\(upstreamHandler)]}]}}}}}
            """, waitPort: port, binary: binary)
    return (s, port)
}

/// Every kind of stall before the first request, each on its own connection at once; the seconds until the server
/// closed each (nil: still open at `limit`), labelled with the kind and port.
private func stallEverywhere(clear: Int, tls: Int, plain: Int, limit: Int) throws -> [(String, Double?)] {
    let stalls: [(String, Int)] = [
        ("bare", clear), ("bare", plain), ("tls_no_hello", tls), ("tls_no_preface", tls),
        ("h2c_partial_preface", clear), ("h2_no_stream", clear),
    ]
    let results = try runConcurrently(
        stalls.map { kind, port in
            { try hostile(["stall", kind, String(port), String(limit)], timeout: TimeInterval(limit + 20)) }
        })
    return zip(stalls, results).map { stall, out in ("\(stall.0) on \(stall.1): \(out)", seconds(out["closed_after"])) }
}

@Suite("Hardening: every connection bounded in memory and time, whatever the peer sends", .serialized)
struct HardeningTests {
    @Test(
        "1. after an HTTP/2 connection error, 1000 MB more on the socket raise RSS by at most 16 MiB and it closes within 2 s (h2c and TLS)"
    )
    func afterConnectionError() throws {
        let (s, clear, tls, _) = try hardenedServer()
        defer { s.stop() }
        let cases: [(String, [String])] = [
            ("window_update0 h2c", ["window_update0", String(clear)]),
            ("window_update0 tls", ["window_update0", String(tls), "--tls"]),
            ("continuation h2c", ["continuation", String(clear)]),
            ("settings_ack tls", ["settings_ack", String(tls), "--tls"]),
            ("ping_flood h2c", ["ping_flood", String(clear)]),
        ]
        for (name, args) in cases {
            let before = residentKiB(pid: s.pid)
            let sampler = RSSSampler(pid: s.pid)
            let out = try hostile(["after-error"] + args)
            let peak = sampler.stop()
            // The flood's GOAWAY comes after the client stopped reading.
            #expect(name.hasPrefix("ping_flood") || out["goaway_code"] is NSNumber, "\(name): no GOAWAY: \(out)")
            let closed = seconds(out["closed_after"])
            #expect(closed != nil && closed! <= 2, "\(name): \(out)")
            #expect(peak - before <= 16 * 1024, "\(name): RSS \(before) → \(peak) KiB: \(out)")
        }
        #expect(try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(clear)/"]).body == "ok")
    }

    @Test(
        "2. with read_header_timeout 3s every stall before the first request (TCP, TLS, preface, h2c, no stream) is closed within 4 s"
    )
    func preRequestStalls() throws {
        let (s, clear, tls, plain) = try hardenedServer(extra: #", "read_header_timeout": "3s", "idle_timeout": "5s""#)
        defer { s.stop() }
        for (what, closed) in try stallEverywhere(clear: clear, tls: tls, plain: plain, limit: 10) {
            #expect(closed != nil && closed! <= 4, "\(what)")
            #expect(closed == nil || closed! >= 2.5, "closed before the deadline: \(what)")
        }
    }

    @Test(
        "2. with default timeouts every stall before the first request is closed within Caddy's 60 s (read_header_timeout 1m)"
    )
    func preRequestStallsDefaults() throws {
        let (s, clear, tls, plain) = try hardenedServer()
        defer { s.stop() }
        for (what, closed) in try stallEverywhere(clear: clear, tls: tls, plain: plain, limit: 70) {
            #expect(closed != nil && closed! >= 58 && closed! <= 62, "\(what)")
        }
    }

    @Test(
        "3. out of descriptors: a health check on a kept-alive connection answers within 1 s and the server uses under 1 CPU-s in 15 s"
    )
    func acceptBackoff() throws {
        // The server runs with 256 descriptors; 320 idle connections wait beyond them.
        let wrapper = FileManager.default.temporaryDirectory.appendingPathComponent(
            "usher-nofile-\(UUID().uuidString).sh")
        try "#!/bin/sh\nulimit -n 256\nexec \"\(usherBinary)\" \"$@\"\n".write(
            to: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper.path, 0o755)
        defer { try? FileManager.default.removeItem(at: wrapper) }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "healthy"}]}]}}}}}
                """, waitPort: port, binary: wrapper.path)
        defer { s.stop() }
        let out = try hostile(["fd_exhaust", String(port), String(s.pid), "320", "15"], timeout: 60)
        #expect((out["first_status"] as? String)?.hasPrefix("HTTP/1.1 200") == true, "\(out)")
        #expect((out["opened"] as? Int ?? 0) >= 300, "\(out)")
        #expect((out["health_status"] as? String)?.hasPrefix("HTTP/1.1 200") == true, "\(out)")
        #expect(seconds(out["health_after"]).map { $0 <= 1 } == true, "\(out)")
        #expect(seconds(out["cpu_seconds"]).map { $0 < 1 } == true, "\(out)")
        #expect((out["fresh_status"] as? String)?.hasPrefix("HTTP/1.1 200") == true, "accepting did not resume: \(out)")
        #expect(s.log.contains("accept failed; pausing the listener"), "\(s.log.suffix(2000))")
    }

    @Test(
        "4. the HTTP/2 idle timeout closes a connection whose client never acknowledges a PING within idle_timeout + 2 s"
    )
    func idleWithoutPingAck() throws {
        let (s, clear, _, _) = try hardenedServer(extra: #", "idle_timeout": "2s""#)
        defer { s.stop() }
        let out = try hostile(["idle_no_ack", String(clear), "15"])
        #expect(out["status"] as? String == "answered", "\(out)")
        #expect(out["goaway"] as? Bool == true, "\(out)")
        let closed = seconds(out["closed_after"])
        #expect(closed != nil && closed! >= 1.5 && closed! <= 4, "\(out)")
    }

    @Test(
        "5. an absolute-form request is routed and proxied by its request-line authority, not by Host (0 requests to the Host's site)"
    )
    func absoluteForm() throws {
        let (port, upstream) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "front": {"listen": ["127.0.0.1:\(port)"], "automatic_https": {"disable": true}, "routes": [
                    {"match": [{"host": ["a.example"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upstream)"}]}]},
                    {"match": [{"host": ["b.example"]}], "handle": [{"handler": "static_response", "body": "site b"}]}]},
                  "up": {"listen": ["127.0.0.1:\(upstream)"], "routes": [
                    {"handle": [{"handler": "static_response", "body": "upstream saw {http.request.host} {http.request.uri}"}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let r = try rawExchange(
            port: port,
            Array("GET http://a.example/p?q=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n".utf8))
        #expect(r.response.hasPrefix("HTTP/1.1 200"), "\(r.response)")
        #expect(r.response.hasSuffix("upstream saw a.example /p?q=1"), "\(r.response)")
        #expect(!r.response.contains("site b"))
    }

    @Test(
        "6. through reverse_proxy, a request followed by bytes that do not parse, or by a request after Connection: close or HTTP/1.0, gets its response (1 response, then at most one 400)"
    )
    func pipelinedAfterProxy() throws {
        let (s, port) = try proxyPair(upstreamHandler: #"{"handler": "test_stream"}"#, binary: usherTestBinary)
        defer { s.stop() }
        // The upstream answers after 200 ms, long after the bytes that follow the request have arrived.
        let request = "GET /?unread=200 HTTP/1.1\r\nHost: x\r\n\r\n"
        let garbage = try rawExchange(port: port, Array((request + "\u{1}\u{2} not http\r\n\r\n").utf8))
        #expect(garbage.response.hasPrefix("HTTP/1.1 200"), "\(garbage.response)")
        #expect(garbage.response.contains("unread"), "\(garbage.response)")
        #expect(garbage.response.components(separatedBy: "HTTP/1.1 400").count == 2, "\(garbage.response)")
        #expect(garbage.closed)

        let afterClose = try rawExchange(
            port: port, Array(("GET /?unread=200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + request).utf8))
        #expect(afterClose.response.hasPrefix("HTTP/1.1 200"), "\(afterClose.response)")
        #expect(afterClose.response.components(separatedBy: "HTTP/1.1 ").count == 2, "\(afterClose.response)")
        #expect(afterClose.closed)

        let http10 = try rawExchange(
            port: port, Array("GET /?unread=200 HTTP/1.0\r\n\r\nGET /?unread=200 HTTP/1.0\r\n\r\n".utf8))
        #expect(
            http10.response.hasPrefix("HTTP/1.0 200") || http10.response.hasPrefix("HTTP/1.1 200"), "\(http10.response)"
        )
        #expect(http10.response.hasSuffix("unread"), "\(http10.response)")
        #expect(!http10.response.contains(" 400 "), "\(http10.response)")
    }

    @Test(
        "7. Transfer-Encoding other than a lone chunked gets 501, and HTTP/1.0 with Transfer-Encoding gets 400; neither reaches the upstream (0 upstream requests)"
    )
    func strictTransferEncoding() throws {
        let (s, port) = try proxyPair(upstreamHandler: #"{"handler": "static_response", "body": "reached"}"#)
        defer { s.stop() }
        let body = "5\r\nhello\r\n0\r\n\r\n"
        for te in ["identity, chunked", "gzip, chunked", "chunked, chunked", "identity"] {
            let r = try rawExchange(
                port: port, Array("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \(te)\r\n\r\n\(body)".utf8))
            // NIO's parser refuses a repeated chunked itself, with 400.
            let expected = te == "chunked, chunked" ? ["HTTP/1.1 400", "HTTP/1.1 501"] : ["HTTP/1.1 501"]
            #expect(expected.contains { r.response.hasPrefix($0) }, "\(te): \(r.response)")
            #expect(!r.response.contains("reached"))
        }
        let twoLines = try rawExchange(
            port: port,
            Array(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\(body)"
                    .utf8))
        #expect(twoLines.response.hasPrefix("HTTP/1.1 501"), "\(twoLines.response)")
        let old = try rawExchange(
            port: port, Array("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(body)".utf8))
        #expect(old.response.hasPrefix("HTTP/1.1 400"), "\(old.response)")
        #expect(!old.response.contains("reached"))
        #expect(old.closed)
        // A lone chunked still works.
        let ok = try rawExchange(
            port: port,
            Array("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n\(body)".utf8))
        #expect(ok.response.hasPrefix("HTTP/1.1 200") && ok.response.hasSuffix("reached"), "\(ok.response)")
    }

    @Test(
        "8. streams past the advertised 250 are refused one by one with REFUSED_STREAM; no GOAWAY, and the connection goes on"
    )
    func streamLimit() throws {
        let (s, clear, _, _) = try hardenedServer()
        defer { s.stop() }
        let out = try hostile(["stream_limit", String(clear), "260"])
        #expect(out["advertised"] as? Int == 250, "\(out)")
        #expect(out["goaway"] as? Bool == false, "\(out)")
        #expect(out["answered"] as? Int == 250, "\(out)")
        #expect(out["refused"] as? [Int] == (250..<260).map { 1 + 2 * $0 }, "\(out)")
        #expect(out["after"] as? String == "answered", "\(out)")
    }

    @Test(
        "9. admin /load: 56 MB is refused with 413 raising RSS by at most 16 MiB; a 12 MB config of 1.5 M objects gets 400 and RSS returns within 48 MiB"
    )
    func adminLoadLimits() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "still"}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        func objects(_ count: Int) -> Data {
            var d = Data(#"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": ["#.utf8)
            d.reserveCapacity(count * 8 + 100)
            let one = Data(#"{"a":1},"#.utf8)
            for _ in 0..<count { d.append(one) }
            d.append(Data(#"{}]}}}}}"#.utf8))
            return d
        }
        let huge = s.dir.appendingPathComponent("huge.json")
        try objects(7_000_000).write(to: huge)
        let large = s.dir.appendingPathComponent("large.json")
        try objects(1_500_000).write(to: large)

        let before = residentKiB(pid: s.pid)
        var sampler = RSSSampler(pid: s.pid)
        let refused = try curl([
            "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@\(huge.path)",
            "http://\(s.adminAddress)/load",
        ])
        var peak = sampler.stop()
        #expect(refused.status == 413, "\(refused.status) \(refused.body)")
        #expect(peak - before <= 16 * 1024, "RSS \(before) → \(peak) KiB")

        sampler = RSSSampler(pid: s.pid)
        let bad = try curl([
            "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@\(large.path)",
            "http://\(s.adminAddress)/load",
        ])
        peak = sampler.stop()
        #expect(bad.status == 400, "\(bad.status) \(bad.body.prefix(300))")
        Thread.sleep(forTimeInterval: 1)
        let after = residentKiB(pid: s.pid)
        #expect(after - before <= 48 * 1024, "RSS \(before) → peak \(peak) → \(after) KiB")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "still")
    }

    @Test("test hygiene: processes the tests start have no signal blocked, so SIGTERM stops them")
    func childSignalMask() throws {
        // Block SIGTERM on this thread, as the thread that spawned the leftover servers had it.
        var term = sigset_t(), saved = sigset_t()
        sigemptyset(&term)
        sigaddset(&term, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &term, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        let r = try runCommand("/bin/grep", ["^SigBlk", "/proc/self/status"])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "SigBlk:\t0000000000000000", "\(r.stdout)")
    }

    @Test(
        "fuzz: 20 s of mutated HTTP/1.1 heads and HTTP/2 frames crash nothing; the server answers after, RSS grows by at most 32 MiB"
    )
    func fuzz() throws {
        let (s, clear, _, _) = try hardenedServer(extra: #", "read_header_timeout": "2s""#)
        defer { s.stop() }
        let before = residentKiB(pid: s.pid)
        let seed = Int(ProcessInfo.processInfo.environment["USHER_FUZZ_SEED"] ?? "") ?? Int.random(in: 0..<1_000_000)
        let out = try hostile(["fuzz", String(clear), "20", String(seed)], timeout: 60)
        #expect((out["cases"] as? Int ?? 0) > 500, "seed \(seed): \(out)")
        Thread.sleep(forTimeInterval: 2.5)
        #expect(try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(clear)/"]).body == "ok", "seed \(seed)")
        #expect(try curl(["http://127.0.0.1:\(clear)/"]).body == "ok", "seed \(seed)")
        let after = residentKiB(pid: s.pid)
        #expect(after - before <= 32 * 1024, "seed \(seed): RSS \(before) → \(after) KiB")
        #expect(s.process.isRunning, "seed \(seed): \(s.log.suffix(2000))")
    }
}

/// Runs `jobs` on threads of their own, all at once, and returns their results in order.
func runConcurrently<T>(_ jobs: [() throws -> T]) throws -> [T] {
    let box = ResultsBox<T>(count: jobs.count)
    let group = DispatchGroup()
    for (i, job) in jobs.enumerated() {
        group.enter()
        nonisolated(unsafe) let run = job
        Thread {
            box.set(i, Result { try run() })
            group.leave()
        }.start()
    }
    group.wait()
    return try box.results.map { try $0!.get() }
}

private final class ResultsBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var results: [Result<T, any Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<T, any Error>) { lock.lock(); results[i] = r; lock.unlock() }
}
