import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `wt_peer.py PORT ARGS...` (aioquic) and returns its JSON result.
func wtPeer(_ port: Int, _ args: [String], timeout: TimeInterval = 120) throws -> [String: Any] {
    let script = packageRoot.appendingPathComponent("IntegrationTests/interop/wt_peer.py").path
    let r = try runCommand(venvPython, [script, String(port)] + args, timeout: timeout)
    guard r.status == 0, let line = r.stdout.split(separator: "\n").last,
        let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    else {
        throw TestFailure("wt_peer.py \(args) failed (\(r.status)): \(r.stdout.suffix(500)) \(r.stderr.suffix(1500))")
    }
    return obj
}

/// A WebTransport session held open by `wt_peer.py PORT hold`, driven line by line.
final class HeldSession {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var buffered = Data()

    init(port: Int) throws {
        process.executableURL = URL(fileURLWithPath: venvPython)
        process.arguments = [
            packageRoot.appendingPathComponent("IntegrationTests/interop/wt_peer.py").path, String(port), "hold",
        ]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try launch(process)
    }

    /// The next JSON line the peer prints (nil after `timeout` seconds).
    func next(timeout: TimeInterval = 15) -> [String: Any]? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let nl = buffered.firstIndex(of: 0x0A) {
                let line = buffered[..<nl]
                buffered = Data(buffered[(nl + 1)...])
                return (try? JSONSerialization.jsonObject(with: line)) as? [String: Any]
            }
            // Wait for output without blocking past the deadline.
            var pfd = pollfd(fd: output.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ms = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
            guard poll(&pfd, 1, ms) > 0 else { continue }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            buffered += chunk
        }
        return nil
    }

    func send(_ command: String) {
        input.fileHandleForWriting.write(Data((command + "\n").utf8))
    }

    /// Ends the peer: its standard input closes (it closes the session and exits), and it is killed if it lingers.
    func stop() {
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        // SIGKILL: the test runner's blocked signals are inherited, SIGTERM may never arrive.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        while process.isRunning { Thread.sleep(forTimeInterval: 0.05) }
    }
}

@Suite(
    "WebTransport passthrough in reverse_proxy: aioquic client, usher's echo handler and an aioquic server upstream",
    .serialized)
struct WebTransportTests {
    /// Ports of one setup: the echo server, proxies to it and to aioquic, a proxy to nothing, and servers with
    /// WebTransport off and without the option.
    struct Ports {
        let echo = freePort(), proxy = freePort(), proxyAio = freePort(), proxyDead = freePort(), proxyH2 = freePort()
        let off = freePort(), absent = freePort(), dead = freePort(), retry = freePort()
    }

    static func server(_ port: Int, webTransport: Bool?, _ handler: String) -> String {
        let option = webTransport.map { #""enable_webtransport": \#($0),"# } ?? ""
        return """
            {"listen": ["127.0.0.1:\(port)"], \(option) "tls_connection_policies": [{}],
             "routes": [{"handle": [\(handler)]}]}
            """
    }

    static func proxy(to port: Int, versions: String = #"["3"]"#, extra: String = "", upstreams: String? = nil)
        -> String
    {
        """
        {"handler": "reverse_proxy", "upstreams": \(upstreams ?? #"[{"dial": "127.0.0.1:\#(port)"}]"#),
         "headers": {"request": {"set": {"X-Up": ["from-proxy"]}}, "response": {"set": {"X-Down": ["{http.reverse_proxy.upstream.hostport}"]}}} \(extra),
         "transport": {"protocol": "http", "versions": \(versions), "tls": {"insecure_skip_verify": true, "server_name": "localhost"}}}
        """
    }

    /// Round robin with one retry (for an unreachable upstream beside the echo).
    static let retryExtra = #", "load_balancing": {"selection_policy": {"policy": "round_robin"}, "retries": 1}"#

    static func config(_ pki: TestPKI, _ p: Ports, aioquic: Int, proxyExtra: String = "", more: String = "") throws
        -> String
    {
        _ = try HTTP3Tests.config(pki, port: p.echo, routes: "[]")  // makes localhost.crt
        return """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
              "echo": \(server(p.echo, webTransport: true, #"{"handler": "webtransport"}"#)),
              "proxy": \(server(p.proxy, webTransport: true, proxy(to: p.echo, extra: proxyExtra))),
              "aio": \(server(p.proxyAio, webTransport: true, proxy(to: aioquic))),
              "dead": \(server(p.proxyDead, webTransport: true, proxy(to: p.dead))),
              "h2": \(server(p.proxyH2, webTransport: true, proxy(to: p.echo, versions: #"["1.1", "2"]"#))),
              "retry": \(server(p.retry, webTransport: true, proxy(to: p.echo, extra: retryExtra,
                                                                      upstreams: #"[{"dial": "127.0.0.1:\#(p.dead)"}, {"dial": "127.0.0.1:\#(p.echo)"}]"#))),
              "off": \(server(p.off, webTransport: false, #"{"handler": "static_response", "body": "off"}"#)),
              "absent": \(server(p.absent, webTransport: nil, #"{"handler": "static_response", "body": "absent"}"#))
              \(more)}},
              "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("localhost.crt"))", "key": "\(pki.path("localhost.key"))"}]}}}}
            """
    }

    static func aioquicServer(_ pki: TestPKI) throws -> (Backend, URL) {
        _ = try HTTP3Tests.config(pki, port: 0, routes: "[]")
        let port = freePort()
        let events = pki.dir.appendingPathComponent("wt-events.jsonl")
        let script = packageRoot.appendingPathComponent("IntegrationTests/interop/wt_server.py").path
        let b = try Backend(
            venvPython, [script, String(port), pki.path("localhost.crt"), pki.path("localhost.key"), events.path],
            port: port, udp: true)
        return (b, events)
    }

    static func numRequests(_ s: UsherProcess, _ port: Int) throws -> Int? {
        let r = try admin(s, "GET", "/reverse_proxy/upstreams")
        let list = try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [[String: Any]] ?? []
        return list.first { $0["address"] as? String == "127.0.0.1:\(port)" }?["num_requests"] as? Int
    }

    @Test(
        "echo through the proxy to usher's handler and to aioquic: 8 × 1 MiB bidi streams, uni both ways, a server-opened stream, 1000 datagrams, reset codes, close code and reason both ways, proxy headers"
    )
    func echo() throws {
        let pki = try TestPKI()
        let (aio, events) = try Self.aioquicServer(pki)
        defer { aio.stop() }
        let p = Ports()
        let s = try UsherProcess(
            config: try Self.config(pki, p, aioquic: aio.port), waitPort: p.absent, binary: usherTestBinary)
        defer { s.stop() }
        for (port, servedBy) in [(p.proxy, "Usher"), (p.proxyAio, "aioquic")] {
            let r = try wtPeer(port, ["echo", "8", "1048576"])
            #expect(r["status"] as? String == "200", "\(r) \(s.log.suffix(2000))")
            #expect(r["bidi_intact"] as? Int == 8, "\(r)")
            #expect(r["uni_back"] as? [String] == ["reply:client reply", "uni hello"], "\(r)")
            #expect(r["server_bidi"] as? String == "server bidi", "\(r)")
            // Datagrams are unreliable and the Python peers at both ends lose some when the machine is busy (CI runs
            // saw 725 and 862 of 1000 back, with nothing lost by the proxy); what the proxy forwards is checked
            // exactly below, from its own counts (1001 up, 0 dropped). Here: the round trip works under load.
            #expect((r["datagrams_back"] as? Int ?? 0) >= 600, "\(r)")
            #expect(r["reset_back"] as? Int != nil && r["reset_back"] as? Int == r["reset_sent"] as? Int, "\(r)")
            let close = r["server_close"] as? [String: Any]
            #expect(close?["code"] as? Int == 4242 && close?["reason"] as? String == "done with the echo", "\(r)")
            let fields = r["fields"] as? [String: String] ?? [:]
            #expect(fields["x-echo-forwarded-for"] == "127.0.0.1", "\(fields)")
            #expect(fields["x-echo-via"] == "3.0 Usher", "\(fields)")
            #expect(fields["x-echo-up"] == "from-proxy", "\(fields)")
            #expect(fields["via"] == "3.0 Usher", "\(fields)")
            #expect(fields["sec-webtransport-http3-draft"] == "draft02", "\(fields)")
            #expect(fields["wt-protocol"] == "\"chat\"", "\(fields)")
            #expect(fields["x-down"] == "127.0.0.1:\(port == p.proxy ? p.echo : aio.port)", "\(fields)")
            #expect((fields["server"] ?? fields["x-served-by"]).map { $0 == servedBy } ?? false, "\(fields)")
            // The client closes: code and reason reach the upstream.
            let c = try wtPeer(port, ["close"])
            #expect(c["closed"] as? Bool == true, "\(c)")
        }
        Thread.sleep(forTimeInterval: 0.5)
        #expect(
            s.log.contains(
                #""msg":"webtransport echo session closed","aborted":false,"code":"77","reason":"client says bye""#),
            "\(s.log.suffix(3000))")
        let aioEvents = (try? String(contentsOf: events, encoding: .utf8)) ?? ""
        #expect(aioEvents.contains(#"{"closed": {"code": 77, "reason": "client says bye"}}"#), "\(aioEvents)")
        // One line per session at its end, with what went through.
        let ended = s.log.split(separator: "\n").filter { $0.contains(#""msg":"webtransport session ended""#) }
        #expect(ended.count == 4, "\(ended)")
        let echoes = ended.filter { $0.contains(#""close_code":"4242""#) }
        #expect(
            echoes.count == 2
                && echoes.allSatisfy {
                    $0.contains(#""bytes_up":8388652,"#) && $0.contains(#""datagrams_up":1001,"#)
                        && $0.contains(#""datagrams_dropped":0,"#) && $0.contains(#""closed_by":"upstream""#)
                },
            "\(echoes)")
        #expect(
            ended.filter { $0.contains(#""close_code":"77""#) && $0.contains(#""closed_by":"client""#) }.count == 2,
            "\(ended)")
    }

    @Test("a session counts as one request in flight while open, none after; 100 concurrent sessions through one proxy")
    func accounting() throws {
        let pki = try TestPKI()
        let p = Ports()
        let s = try UsherProcess(
            config: try Self.config(pki, p, aioquic: p.dead), waitPort: p.absent, binary: usherTestBinary)
        defer { s.stop() }
        #expect(try Self.numRequests(s, p.echo) == 0)
        let held = try HeldSession(port: p.proxy)
        defer { held.stop() }
        #expect(held.next()?["status"] as? String == "200")
        #expect(try Self.numRequests(s, p.echo) == 1)
        let metricsURL = "http://\(s.adminAddress)/metrics"
        let echo = ["upstream": "127.0.0.1:\(p.echo)"]
        let open = try Scrape(metricsURL)
        #expect(open.families["usher_reverse_proxy_webtransport_sessions_active"] == "gauge")
        #expect(open.value("usher_reverse_proxy_webtransport_sessions_active", echo) == 1)
        #expect(open.value("usher_reverse_proxy_webtransport_sessions_total", echo) == 1)
        held.send("echo")
        #expect(held.next()?["echo"] as? String == "still here")
        held.send("close")
        #expect(held.next()?["closed"] as? Bool == true)
        var n = try Self.numRequests(s, p.echo)
        for _ in 0..<50 where n != 0 {
            Thread.sleep(forTimeInterval: 0.1)
            n = try Self.numRequests(s, p.echo)
        }
        #expect(n == 0)
        let closed = try Scrape(metricsURL)
        #expect(closed.value("usher_reverse_proxy_webtransport_sessions_active", echo) == 0)
        #expect((closed.value("usher_reverse_proxy_webtransport_streams_total", echo) ?? 0) >= 1)
        #expect(
            (closed.value(
                "usher_reverse_proxy_webtransport_bytes_total", echo.merging(["direction": "up"]) { a, _ in a }) ?? 0)
                > 0)
        let many = try wtPeer(p.proxy, ["sessions", "100"], timeout: 180)
        #expect(many["ok"] as? Int == 100, "\(many) \(s.log.suffix(2000))")
        n = try Self.numRequests(s, p.echo)
        for _ in 0..<100 where n != 0 {
            Thread.sleep(forTimeInterval: 0.1)
            n = try Self.numRequests(s, p.echo)
        }
        #expect(n == 0)
        let after = try Scrape(metricsURL)
        #expect(after.value("usher_reverse_proxy_webtransport_sessions_total", echo) == 101)
        #expect(after.value("usher_reverse_proxy_webtransport_sessions_active", echo) == 0)
    }

    @Test(
        "refusals: an unbound upstream gives 502 at once (with a retry the next upstream serves), a transport without HTTP/3 502, the upstream's 403 passes, WebTransport off 501; with it off the SETTINGS bytes are plain HTTP/3's"
    )
    func refusals() throws {
        let pki = try TestPKI()
        let (aio, _) = try Self.aioquicServer(pki)
        defer { aio.stop() }
        let p = Ports()
        let s = try UsherProcess(
            config: try Self.config(pki, p, aioquic: aio.port), waitPort: p.absent, binary: usherTestBinary)
        defer { s.stop() }
        let started = Date()
        let dead = try wtPeer(p.proxyDead, ["status"])
        #expect(dead["status"] as? String == "502", "\(dead)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(try wtPeer(p.proxyH2, ["status"])["status"] as? String == "502")
        // With a retry, an unreachable upstream costs nothing: whichever comes first, the session opens.
        for _ in 0..<3 {
            #expect(try wtPeer(p.retry, ["status"])["status"] as? String == "200", "\(s.log.suffix(1500))")
        }
        // The upstream's own refusal is passed on.
        let forbidden = try wtPeer(p.proxyAio, ["status", "/forbidden"])
        #expect(forbidden["status"] as? String == "403", "\(forbidden)")
        #expect((forbidden["fields"] as? [String: String])?["x-served-by"] == "aioquic", "\(forbidden)")
        #expect(s.log.contains("needs the HTTP/3 transport"), "\(s.log.suffix(2000))")
        #expect(try wtPeer(p.off, ["status"])["status"] as? String == "501")
        #expect(try wtPeer(p.absent, ["status"])["status"] as? String == "501")

        let off = try wtPeer(p.off, ["settings"])
        let absent = try wtPeer(p.absent, ["settings"])
        let on = try wtPeer(p.proxy, ["settings"])
        // Off is byte for byte what a server without the option sends, and carries nothing of WebTransport.
        #expect(off["control_hex"] as? String == absent["control_hex"] as? String, "\(off) \(absent)")
        // Stream type 0, SETTINGS of 11 bytes: max field section 16384, QPACK 0/0, Extended CONNECT (for WebSockets).
        #expect(off["control_hex"] as? String == "00040b0680004000010007000801", "\(off)")
        #expect((off["settings"] as? [String: Int])?.keys.sorted() == ["0x1", "0x6", "0x7", "0x8"], "\(off)")
        #expect(off["max_datagram_frame_size"] is NSNull || off["max_datagram_frame_size"] as? Int == nil, "\(off)")
        #expect(off["initial_max_streams_uni"] as? Int == 3)
        let onSettings = on["settings"] as? [String: Int] ?? [:]
        for id in ["0x8", "0x33", "0xffd277", "0x2b603742", "0xc671706a", "0x14e9cd29", "0x2c7cf000"] {
            #expect(onSettings[id] == 1, "\(id) in \(onSettings)")
        }
        #expect(on["max_datagram_frame_size"] as? Int == 65535)
        #expect(on["initial_max_streams_uni"] as? Int == 100)
    }

    @Test(
        "a reload that keeps the handler keeps the session; removing it sends WT_DRAIN_SESSION, then closes after stream_close_delay"
    )
    func reload() throws {
        let pki = try TestPKI()
        let p = Ports()
        let extra = #", "stream_close_delay": "1s""#
        let base = try Self.config(pki, p, aioquic: p.dead, proxyExtra: extra)
        let s = try UsherProcess(config: base, waitPort: p.absent, binary: usherTestBinary)
        defer { s.stop() }
        let held = try HeldSession(port: p.proxy)
        defer { held.stop() }
        #expect(held.next()?["status"] as? String == "200")
        // Another server changes; the proxy's handler stays as it was.
        let extraPort = freePort()
        let kept = try Self.config(
            pki, p, aioquic: p.dead, proxyExtra: extra,
            more: ", \"extra\": "
                + Self.server(extraPort, webTransport: nil, #"{"handler": "static_response", "body": "x"}"#)
        )
        .replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress)
        #expect((try? admin(s, "POST", "/load", body: kept))?.status == 200, "\(s.log.suffix(3000))")
        Thread.sleep(forTimeInterval: 1.5)
        held.send("echo")
        #expect(held.next()?["echo"] as? String == "still here", "\(s.log.suffix(2000))")
        // Now the proxy route is gone: drained at once, closed a second later.
        let gone = kept.replacingOccurrences(
            of: Self.proxy(to: p.echo, extra: extra), with: #"{"handler": "static_response", "body": "gone"}"#)
        #expect(gone != kept)
        let reloaded = Date()
        #expect((try? admin(s, "POST", "/load", body: gone))?.status == 200, "\(s.log.suffix(3000))")
        let end = held.next(timeout: 10)
        let took = Date().timeIntervalSince(reloaded)
        #expect(end?["ended_by_server"] as? Bool == true, "\(String(describing: end)) \(s.log.suffix(2000))")
        #expect(end?["drained"] as? Bool == true, "\(String(describing: end))")
        #expect(took > 0.9 && took < 5, "\(took)")
        let close = end?["server_close"] as? [String: Any]
        #expect(
            close?["code"] as? Int == 0 && close?["reason"] as? String == "proxy handler unloaded",
            "\(String(describing: end))")
    }

    @Test(
        "Caddyfile: servers { enable_webtransport } with reverse_proxy https://… { transport http { versions 3 } } adapts and runs in the shipped binary; the echo handler is only in the test build"
    )
    func caddyfile() throws {
        let pki = try TestPKI()
        let p = Ports()
        let upstream = try UsherProcess(
            config: try Self.config(pki, p, aioquic: p.dead), waitPort: p.absent, binary: usherTestBinary)
        defer { upstream.stop() }
        let port = freePort()
        let caddyfile = """
            {
            \tadmin {{ADMIN}}
            \tservers {
            \t\tenable_webtransport
            \t}
            }
            localhost:\(port) {
            \ttls \(pki.path("localhost.crt")) \(pki.path("localhost.key"))
            \treverse_proxy https://127.0.0.1:\(p.echo) {
            \t\theader_up X-Up from-caddyfile
            \t\ttransport http {
            \t\t\tversions 3
            \t\t\ttls_insecure_skip_verify
            \t\t}
            \t}
            }
            """
        let s = try UsherProcess(
            config: caddyfile, args: ["--adapter", "caddyfile"], configName: "Caddyfile", waitPort: port)
        defer { s.stop() }
        let adapted = try runCommand(
            usherBinary, ["adapt", "--config", s.dir.appendingPathComponent("Caddyfile").path])
        #expect(adapted.stdout.contains(#""enable_webtransport":true"#), "\(adapted.stdout)")
        #expect(adapted.stdout.contains(#""versions":["3"]"#), "\(adapted.stdout)")
        let r = try wtPeer(port, ["echo", "2", "65536"])
        #expect(r["status"] as? String == "200", "\(r) \(s.log.suffix(2000))")
        #expect(r["bidi_intact"] as? Int == 2)
        #expect((r["fields"] as? [String: String])?["x-echo-up"] == "from-caddyfile")
        let shipped = try runCommand(usherBinary, ["list-modules"])
        #expect(!shipped.stdout.contains("http.handlers.webtransport"))
        #expect(try runCommand(usherTestBinary, ["list-modules"]).stdout.contains("http.handlers.webtransport"))
    }
}
