import Foundation
import Testing

/// A peer process driven by lines: commands on its stdin, answers read from its stdout with a timeout.
final class LinePeer: @unchecked Sendable {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lock = NSCondition()
    private var buffer = ""
    private var eof = false

    init(_ args: [String]) throws {
        // A peer that exits must not take the test process down with SIGPIPE when it is written to.
        signal(SIGPIPE, SIG_IGN)
        process.executableURL = URL(fileURLWithPath: packageRoot.appendingPathComponent(".venv/bin/python").path)
        process.arguments = [packageRoot.appendingPathComponent("IntegrationTests/interop/ws_peer.py").path] + args
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        output.fileHandleForReading.readabilityHandler = { [weak self] h in
            guard let self else { return }
            let data = h.availableData
            self.lock.lock()
            if data.isEmpty { self.eof = true } else { self.buffer += String(decoding: data, as: UTF8.self) }
            self.lock.broadcast()
            self.lock.unlock()
            if data.isEmpty { h.readabilityHandler = nil }
        }
        try launch(process)
    }

    func send(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    /// The next line, or `nil` after `timeout` seconds or at end of output.
    func readLine(timeout: TimeInterval = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while true {
            if let nl = buffer.firstIndex(of: "\n") {
                let line = String(buffer[..<nl])
                buffer.removeSubrange(...nl)
                return line
            }
            if eof || !lock.wait(until: deadline) { return nil }
        }
    }

    /// Sends `send TEXT` and returns the answer line.
    func echo(_ text: String) -> String? {
        send("send \(text)")
        return readLine()
    }

    /// Ends the client (stdin closes) and waits for it.
    func finish() {
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

@Suite("reverse_proxy WebSockets", .serialized)
struct ReverseProxyWebSocketTests {
    /// A config with a plain route on /other answering `other`, and (when `proxy`) the proxy for everything else.
    static func config(port: Int, echo: Int, other: String, proxy: Bool) -> String {
        let proxyRoute =
            proxy
            ? """
            , {"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(echo)"}], "stream_close_delay": "1s"}]}
            """ : #", {"handle": [{"handler": "static_response", "body": "no proxy"}]}"#
        return """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "protocols": ["h1", "h2c"],
              "routes": [{"match": [{"path": ["/other"]}], "handle": [{"handler": "static_response", "body": "\(other)"}]}\(proxyRoute)]}}}}}
            """
    }

    @Test(
        "echo through the proxy over HTTP/1.1 and HTTP/2; counted in num_requests; kept across a reload that keeps the handler; closed with 1001 after stream_close_delay once it is gone"
    )
    func webSockets() throws {
        let echoPort = freePort()
        let echo = try Backend(
            packageRoot.appendingPathComponent(".venv/bin/python").path,
            [packageRoot.appendingPathComponent("IntegrationTests/interop/ws_peer.py").path, "echo", String(echoPort)],
            port: echoPort)
        defer { echo.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: Self.config(port: port, echo: echoPort, other: "other A", proxy: true), waitPort: port)
        defer { s.stop() }
        let h1 = try LinePeer(["client", "ws://127.0.0.1:\(port)/chat"])
        let h2 = try LinePeer(["h2client", String(port), "/chat"])
        defer { h1.finish(); h2.finish() }
        #expect(h1.readLine() == "open")
        #expect(h2.readLine() == "open")
        #expect(h1.echo("one over http/1.1") == "recv one over http/1.1")
        #expect(h2.echo("one over h2") == "recv one over h2")
        let big = String(repeating: "0123456789", count: 20000)
        let bigEcho = h2.echo(big)
        #expect(bigEcho == "recv " + big, "echo of \(bigEcho?.count ?? -1) bytes")
        let upstream = "127.0.0.1:\(echoPort)"
        #expect(try upstreamStatus(s)[upstream]?["num_requests"] as? Int == 2)

        // A reload that changes another route keeps the handler, and with it both connections.
        let reload = try admin(
            s, "POST", "/load",
            body: Self.config(port: port, echo: echoPort, other: "other B", proxy: true)
                .replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress))
        #expect(reload.status == 200, "\(reload.body)")
        #expect(try curl(["http://127.0.0.1:\(port)/other"]).body == "other B")
        // Past stream_close_delay, so a tunnel wrongly released by the reload would be closed by now.
        Thread.sleep(forTimeInterval: 1.5)
        #expect(h1.echo("two") == "recv two")
        #expect(h2.echo("two") == "recv two")
        #expect(try upstreamStatus(s)[upstream]?["num_requests"] as? Int == 2)

        // The client closing its WebSocket ends the tunnel; the count goes back down.
        h1.finish()
        #expect(try eventually(5) { try upstreamStatus(s)[upstream]?["num_requests"] as? Int == 1 })

        // A config without the handler: the tunnel lives on for stream_close_delay, then gets Close 1001.
        let removed = Date()
        let drop = try admin(
            s, "POST", "/load",
            body: Self.config(port: port, echo: echoPort, other: "other C", proxy: false)
                .replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress))
        #expect(drop.status == 200, "\(drop.body)")
        #expect(try curl(["http://127.0.0.1:\(port)/chat"]).body == "no proxy")
        #expect(h2.echo("three") == "recv three")
        h2.send("wait")
        #expect(h2.readLine(timeout: 10) == "closed 1001")
        let lived = Date().timeIntervalSince(removed)
        #expect(lived >= 0.9 && lived < 5, "\(lived)")
    }

    @Test("an HTTP/1.1 upgrade the upstream refuses is answered like any response, and the connection is not reused")
    func refusedUpgrade() throws {
        let plain = try Backend.nginx("no websockets here")
        defer { plain.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(plain.port)"}]}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let request =
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        let (response, closed) = try rawExchange(port: port, Array(request.utf8), timeout: 5)
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(response)")
        #expect(response.hasSuffix("no websockets here"), "\(response)")
        #expect(closed)
    }
}
