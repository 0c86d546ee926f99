import Foundation
import Testing

/// HTTP/1.1 behaviour on the wire: framing, keep-alive, pipelining, limits and timeouts, against raw sockets.
@Suite("HTTP/1.1 on the wire")
struct HTTP1ProtocolTests {
    static func config(port: Int, extra: String = "") -> String {
        """
        {"admin": {"listen": "{{ADMIN}}"},
         "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"]\(extra),
           "routes": [
             {"match": [{"path": ["/echo"]}], "handle": [{"handler": "static_response", "body": "[{http.request.body}]"}]},
             {"handle": [{"handler": "static_response", "body": "ok {http.request.uri.path}"}]}]}}}}}
        """
    }

    func request(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test("keep-alive and pipelined requests are answered in order on one connection")
    func pipelining() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        let (out, closed) = try rawExchange(
            port: port,
            request(
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                    + "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    + "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        #expect(closed)
        let bodies = out.components(separatedBy: "\r\n\r\n").dropFirst().map {
            $0.components(separatedBy: "HTTP/1.1").first ?? ""
        }
        #expect(bodies == ["ok /a", "[hello]", "[abcde]", "ok /b"])
        #expect(out.components(separatedBy: "HTTP/1.1 200 OK").count == 5)
    }

    @Test("two thousand pipelined requests in one write are all answered, in order")
    func deepPipelining() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        var batch = ""
        for i in 0..<2000 { batch += "GET /r\(i) HTTP/1.1\r\nHost: x\r\n\r\n" }
        batch += "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let (out, closed) = try rawExchange(port: port, request(batch), timeout: 20)
        #expect(closed)
        let bodies = out.components(separatedBy: "\r\n\r\n").dropFirst().map {
            $0.components(separatedBy: "HTTP/1.1").first ?? ""
        }
        #expect(bodies.count == 2001)
        #expect(bodies.first == "ok /r0")
        #expect(bodies.dropLast().last == "ok /r1999")
        #expect(bodies.last == "ok /last")
    }

    @Test("a response of unknown length is chunked; HEAD gets headers only")
    func framing() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        let big = String(repeating: "x", count: 10_000)
        let (out, _) = try rawExchange(
            port: port,
            request(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.count)\r\nConnection: close\r\n\r\n\(big)"))
        #expect(out.contains("Transfer-Encoding: chunked\r\n"))
        #expect(out.hasSuffix("\r\n0\r\n\r\n"))
        let (head, _) = try rawExchange(port: port, request("HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        #expect(head.contains("Content-Length: 5\r\n"))
        #expect(head.hasSuffix("\r\n\r\n"))
    }

    @Test("Expect: 100-continue gets an interim 100 before the body is sent")
    func expectContinue() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        let (out, _) = try rawExchange(
            port: port,
            request(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            ),
            chunks: [(request("abc"), 0.5)])
        #expect(out.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"))
        #expect(out.hasSuffix("[abc]"))
    }

    @Test(
        "bad input is refused",
        arguments: [
            ("malformed request line", "GARBAGE\r\n\r\n", "HTTP/1.1 400 "),
            (
                "both Content-Length and Transfer-Encoding (request smuggling)",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.1 400 "
            ),
            (
                "conflicting Content-Length values",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", "HTTP/1.1 400 "
            ),
            ("missing Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
            ("unknown Expect", "GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", "HTTP/1.1 417 "),
            ("invalid percent-encoding", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 "),
            (
                "unsupported transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "HTTP/1.1 501 "
            ),
        ])
    func badInput(name: String, raw: String, statusLine: String) throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        let (out, closed) = try rawExchange(port: port, request(raw))
        #expect(out.hasPrefix(statusLine), "\(name): \(out)")
        #expect(closed, "\(name): the connection must close")
        // The server is unharmed.
        #expect(try curl(["http://127.0.0.1:\(port)/after"]).body == "ok /after")
    }

    @Test("headers over max_header_bytes get 431")
    func oversizedHeaders() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port, extra: #", "max_header_bytes": 4096"#), waitPort: port)
        defer { s.stop() }
        let field = String(repeating: "a", count: 5000)
        let (out, closed) = try rawExchange(port: port, request("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(field)\r\n\r\n"))
        #expect(out.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        #expect(closed)
        // A head that never ends is cut off too, before it grows without bound.
        let (out2, closed2) = try rawExchange(
            port: port, request("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "b", count: 100_000)))
        #expect(out2.hasPrefix("HTTP/1.1 431 "))
        #expect(closed2)
        // Within the limit is fine.
        #expect(
            try curl(["-H", "X-Small: \(String(repeating: "c", count: 1000))", "http://127.0.0.1:\(port)/"]).status
                == 200)
    }

    @Test("a client that sends its headers slowly is cut off after read_header_timeout")
    func slowloris() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: Self.config(port: port, extra: #", "read_header_timeout": "1s""#), waitPort: port)
        defer { s.stop() }
        let start = Date()
        // One header line every 400 ms: it never finishes within the timeout.
        let drip = (0..<10).map { (Array("X-Drip-\($0): 1\r\n".utf8), 0.4) }
        let (out, closed) = try rawExchange(
            port: port, request("GET / HTTP/1.1\r\nHost: x\r\n"), timeout: 6, chunks: drip)
        let elapsed = Date().timeIntervalSince(start)
        #expect(closed)
        #expect(out.hasPrefix("HTTP/1.1 408 ") || out.isEmpty)
        #expect(elapsed < 4.5, "cut off after \(elapsed)s")
    }

    @Test("idle keep-alive connections are closed after idle_timeout")
    func idleTimeout() throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port, extra: #", "idle_timeout": "1s""#), waitPort: port)
        defer { s.stop() }
        let start = Date()
        let (out, closed) = try rawExchange(port: port, request("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), timeout: 5)
        #expect(out.contains("ok /a"))
        #expect(closed)
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test("a large body streams through with bounded memory")
    func streamingBody() throws {
        // 64 MiB through the echo placeholder would be buffered by design; use a handler that does not read the
        // body and check the server discards it and stays small.
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port)
        defer { s.stop() }
        let file = s.dir.appendingPathComponent("big.bin")
        FileManager.default.createFile(atPath: file.path, contents: nil)
        let h = try FileHandle(forWritingTo: file)
        let chunk = Data(repeating: 0x61, count: 1 << 20)
        for _ in 0..<64 { h.write(chunk) }
        try h.close()
        let r = try curl(["--data-binary", "@\(file.path)", "http://127.0.0.1:\(port)/sink"])
        #expect(r.status == 200)
        #expect(r.body == "ok /sink")
        let rss = residentKiB(pid: s.pid)
        #expect(rss < 64 * 1024, "RSS \(rss) KiB after a 64 MiB upload")
    }
}

/// Resident memory of a process in KiB, from /proc.
func residentKiB(pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}
