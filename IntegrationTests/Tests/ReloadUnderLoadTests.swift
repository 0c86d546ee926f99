import Foundation
import Testing

/// Counts response bodies by content, so the run shows every response came from one of the two configs.
let wrkCounterScript = """
    local counts = {}
    local threads = {}
    function setup(thread)
      table.insert(threads, thread)
    end
    function init(args)
      a = 0; b = 0; other = 0
    end
    function response(status, headers, body)
      if body == "config A" then a = a + 1 elseif body == "config B" then b = b + 1 else other = other + 1 end
    end
    function done(summary, latency, requests)
      local ta, tb, to = 0, 0, 0
      for _, t in ipairs(threads) do
        ta = ta + t:get("a"); tb = tb + t:get("b"); to = to + t:get("other")
      end
      io.write(string.format("BODIES a=%d b=%d other=%d\\n", ta, tb, to))
      io.write(string.format("ERRORS connect=%d read=%d write=%d timeout=%d status=%d\\n",
        summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status))
    end
    """

@Suite(
    "Config reloads under load", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk"), "needs wrk")
)
struct ReloadUnderLoadTests {
    @Test("wrk for 10 s while the config is swapped 20 times: no socket errors, no non-2xx, every body from A or B")
    func reloadUnderLoad() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "config A"), waitPort: port)
        defer { s.stop() }
        let script = s.dir.appendingPathComponent("count.lua")
        try wrkCounterScript.write(to: script, atomically: true, encoding: .utf8)

        let wrk = Process()
        wrk.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
        wrk.arguments = ["-t2", "-c32", "-d10s", "--timeout", "5s", "-s", script.path, "http://127.0.0.1:\(port)/"]
        let out = Pipe()
        wrk.standardOutput = out
        try launch(wrk)

        Thread.sleep(forTimeInterval: 0.5)
        var swaps = 0
        for i in 0..<20 {
            let body = i % 2 == 0 ? "config B" : "config A"
            let r = try admin(s, "POST", "/load", body: simpleConfig(port: port, body: body, admin: s.adminAddress))
            #expect(r.status == 200, "swap \(i): \(r.body)")
            swaps += 1
            Thread.sleep(forTimeInterval: 0.4)
        }
        wrk.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(swaps == 20)
        #expect(!text.contains("Socket errors"), "wrk reported socket errors:\n\(text)")
        #expect(!text.contains("Non-2xx"), "wrk reported non-2xx responses:\n\(text)")
        #expect(text.contains("ERRORS connect=0 read=0 write=0 timeout=0 status=0"), "\(text)")
        let bodies = text.split(separator: "\n").first { $0.hasPrefix("BODIES") }.map(String.init) ?? ""
        #expect(bodies.hasSuffix("other=0"), "\(bodies)")
        // Both configs served a real share of the load.
        let counts = bodies.split(separator: " ").dropFirst().compactMap { Int($0.split(separator: "=").last ?? "") }
        #expect(counts.count == 3 && counts[0] > 1000 && counts[1] > 1000, "\(bodies)")
    }
}

/// Open file descriptors of a process.
func openFDs(pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

@Suite("Connection churn", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk"), "needs wrk"))
struct ConnectionChurnTests {
    @Test("thousands of short connections leave no descriptors or memory behind")
    func noLeaks() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "churn"), waitPort: port)
        defer { s.stop() }
        func churn() throws -> Int {
            let r = try runCommand(
                "/usr/bin/wrk", ["-t1", "-c16", "-d3s", "-H", "Connection: close", "http://127.0.0.1:\(port)/"],
                timeout: 30)
            let line = r.stdout.split(separator: "\n").first { $0.contains("requests in") } ?? ""
            return Int(line.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "0") ?? 0
        }
        _ = try churn()
        Thread.sleep(forTimeInterval: 0.5)
        let fdsBefore = openFDs(pid: s.pid)
        let rssBefore = residentKiB(pid: s.pid)
        let requests = try churn() + churn()
        Thread.sleep(forTimeInterval: 0.5)
        #expect(requests > 2000, "only \(requests) connections were made")
        #expect(openFDs(pid: s.pid) <= fdsBefore, "descriptors leaked")
        let growth = residentKiB(pid: s.pid) - rssBefore
        // A leak of even 256 bytes per connection would show over this many connections.
        #expect(growth < max(2048, requests / 4), "RSS grew \(growth) KiB over \(requests) connections")
    }
}
