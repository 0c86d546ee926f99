import Foundation
import Testing

/// The virtualenv's Python, where scripts/test installs the Python peers (h2, aioquic, ...).
var venvPython: String { packageRoot.appendingPathComponent(".venv/bin/python").path }

@Suite("HTTP/2: TLS and h2c, load, resets, GOAWAY", .serialized)
struct HTTP2Tests {
    @Test("h2c: prior knowledge gets HTTP/2 and HTTP/1.1 still works on the same port; h2c can be the only protocol")
    func h2c() throws {
        let (both, only) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "both": {"listen": ["127.0.0.1:\(both)"], "protocols": ["h1", "h2c"],
                    "routes": [{"handle": [{"handler": "static_response", "body": "{http.request.proto}"}]}]},
                  "only": {"listen": ["127.0.0.1:\(only)"], "protocols": ["h2c"],
                    "routes": [{"handle": [{"handler": "static_response", "body": "{http.request.proto}"}]}]}}}}}
                """, waitPort: both)
        defer { s.stop() }
        let h2 = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(both)/"])
        #expect(h2.httpVersion == "HTTP/2")
        #expect(h2.body == "HTTP/2.0")
        #expect(try curl(["http://127.0.0.1:\(both)/"]).body == "HTTP/1.1")
        let ng = try runCommand("/usr/bin/nghttp", ["-v", "http://127.0.0.1:\(only)/"], timeout: 20)
        #expect(ng.stdout.contains(":status: 200"), "\(ng.stdout)")
        // h1 is off there: an HTTP/1.1 request gets no answer.
        let h1 = try runCommand("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(only)/"])
        #expect(h1.status != 0)
        // Without h2c, prior knowledge is not HTTP/2 (the server answers it as a bad HTTP/1 request).
        let s2port = freePort()
        let s2 = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(s2port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "x"}]}]}}}}}
                """, waitPort: s2port)
        defer { s2.stop() }
        let refused = try runCommand(
            "/usr/bin/curl", ["-s", "--max-time", "5", "--http2-prior-knowledge", "http://127.0.0.1:\(s2port)/"])
        #expect(refused.status != 0)
    }

    @Test("h2load: 10 s at 32 connections × 10 streams over TLS with no errors")
    func h2load() throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "hello, h2load"}]}], "tls_connection_policies": [{}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
                """, waitPort: port)
        defer { s.stop() }
        let r = try runCommand(
            "/usr/bin/h2load", ["-D", "10", "-c", "32", "-m", "10", "https://127.0.0.1:\(port)/"], timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let summary = r.stdout.split(separator: "\n").first { $0.hasPrefix("requests:") }.map(String.init) ?? ""
        #expect(summary.contains("0 failed, 0 errored, 0 timeout"), "\(r.stdout)")
        let done = h2loadSucceeded(r.stdout)
        #expect(done > 1000, "\(summary)")
        #expect(r.stdout.contains("status codes: \(done) 2xx, 0 3xx, 0 4xx, 0 5xx"), "\(r.stdout)")
    }

    @Test(
        "request bodies nobody reads do not use up the connection's window: h2load sends 30 unread 1 MiB uploads one after another on one h2c connection"
    )
    func unreadBodies() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "protocols": ["h1", "h2c"], "routes": [{"handle": [{"handler": "test_stream"}]}]}}}}}
                """, waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let upload = s.dir.appendingPathComponent("upload.bin")
        try Data(repeating: 0x61, count: 1 << 20).write(to: upload)
        // The handler answers after 150 ms without reading (the HTTP/3 test of the same name has the details).
        let r = try runCommand(
            "/usr/bin/h2load",
            [
                "-n", "30", "-c", "1", "-m", "1", "-d", upload.path,
                "http://127.0.0.1:\(port)/?unread=150",
            ], timeout: 90)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(
            r.stdout.contains("requests: 30 total, 30 started, 30 done, 30 succeeded, 0 failed, 0 errored, 0 timeout"),
            "\(r.stdout)")
        #expect(r.stdout.contains("status codes: 30 2xx"), "\(r.stdout)")
    }

    @Test("a stream reset by the client stops its response; the connection and other streams go on")
    func streamReset() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "protocols": ["h1", "h2c"],
                  "routes": [{"match": [{"path": ["/big"]}], "handle": [{"handler": "test_stream"}]},
                             {"handle": [{"handler": "static_response", "body": "small"}]}]}}}}}
                """, waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let r = try runCommand(
            venvPython,
            [
                packageRoot.appendingPathComponent("IntegrationTests/interop/h2_peer.py").path,
                "reset", String(port), "/big?size=67108864", "/small",
            ], timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(result["reset_sent"] as? Bool == true)
        #expect(result["small_status"] as? String == "200")
        #expect(result["small_bytes"] as? Int == 5)
        #expect(result["third_status"] as? String == "200", "a new stream after the reset failed: \(r.stdout)")
        #expect(result["connection_alive"] as? Bool == true)
        // The 64 MiB response stopped: far less than all of it arrived.
        #expect((result["big_bytes_before_end"] as? Int ?? Int.max) < 8 << 20, "\(r.stdout)")
    }

    @Test(
        "stopping, or a reload that drops the listener, sends GOAWAY; the stream in flight completes",
        arguments: ["stop", "reload"])
    func goaway(_ how: String) throws {
        let (port, other) = (freePort(), freePort())
        func config(_ admin: String, _ listen: Int) -> String {
            """
            {"admin": {"listen": "\(admin)"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(listen)"], "protocols": ["h1", "h2c"],
              "routes": [{"handle": [{"handler": "test_stream"}]}]}}}}}
            """
        }
        let s = try UsherProcess(config: config("{{ADMIN}}", port), waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nghttp")
        // -n: the body goes nowhere, so a full stdout pipe cannot stall the stream.
        p.arguments = ["-v", "-n", "http://127.0.0.1:\(port)/?size=655360&delay=100"]
        let out = Pipe()
        p.standardOutput = out
        try launch(p)
        Thread.sleep(forTimeInterval: 0.4)
        if how == "stop" {
            _ = try admin(s, "POST", "/stop")
        } else {
            let r = try admin(s, "POST", "/load", body: config(s.adminAddress, other))
            #expect(r.status == 200, "\(r.body)")
        }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(text.suffix(2000))")
        #expect(text.contains("recv GOAWAY frame"), "\(text.suffix(2000))")
        #expect(text.contains("error_code=NO_ERROR"))
        #expect(text.contains(":status: 200"))
        // All ten 64 KiB chunks arrived after the GOAWAY: the stream was allowed to finish.
        let dataBytes = text.split(separator: "\n").filter { $0.contains("recv DATA frame") }
            .compactMap { line -> Int? in
                guard let r = line.range(of: "length=") else { return nil }
                return Int(line[r.upperBound...].prefix { $0.isNumber })
            }.reduce(0, +)
        #expect(dataBytes == 655360, "\(dataBytes) body bytes")
        if how == "reload" {
            // The new config serves on its own listener; the old one is gone.
            #expect(try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(other)/?size=3"]).body == "xxx")
            #expect(!portOpen(port))
        }
    }
}

/// How many requests h2load's summary line (`requests: N total, … M succeeded, …`) says succeeded.
func h2loadSucceeded(_ output: String) -> Int {
    let summary = output.split(separator: "\n").first { $0.hasPrefix("requests:") } ?? ""
    return summary.split(separator: ",").first { $0.contains("succeeded") }
        .flatMap { Int($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") } ?? 0
}
