import Foundation
import Testing

@Suite("Streaming bodies with bounded memory")
struct StreamingTests {
    static func config(port: Int) -> String {
        """
        {"admin": {"listen": "{{ADMIN}}"},
         "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
           "routes": [{"handle": [{"handler": "test_stream"}]}]}}}}}
        """
    }

    @Test(
        "1 GiB up and 1 GiB down through a handler, the server staying under 64 MiB", arguments: ["chunked", "known"])
    func gigabyteBothWays(length: String) throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let gib = 1 << 30
        // curl streams the upload from a generator (head -c, chunked) and discards the download, counting it.
        let script = """
            head -c \(gib) /dev/zero | curl -s -o /dev/null -w '%{http_code} %{size_download} %header{x-request-bytes}' \
              -H 'Content-Type: application/octet-stream' -X POST -T - \
              'http://127.0.0.1:\(port)/?size=\(gib)&length=\(length)'
            """
        let sampler = RSSSampler(pid: s.pid)
        let r = try runCommand("/bin/sh", ["-c", script], timeout: 300)
        let peak = sampler.stop()
        #expect(r.stdout == "200 \(gib) \(gib)", "\(r.stdout) \(r.stderr)")
        #expect(peak > 0 && peak < 64 * 1024, "peak RSS \(peak) KiB")
    }

    @Test("a large response on a closing connection arrives whole before the close", arguments: ["chunked", "known"])
    func closeAfterLargeResponse(length: String) throws {
        let port = freePort()
        let s = try UsherProcess(config: Self.config(port: port), waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let size = 8 << 20
        let r = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--limit-rate", "8M",
                "-H", "Connection: close", "http://127.0.0.1:\(port)/?size=\(size)&length=\(length)",
            ])
        #expect(r.stdout == "200 \(size)")
    }
}
