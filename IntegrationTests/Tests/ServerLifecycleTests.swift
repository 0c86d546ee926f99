import Foundation
import Testing

@Suite("Listeners, shutdown and event loops")
struct ServerLifecycleTests {
    @Test("listen addresses: port ranges, IPv6 loopback and unix sockets")
    func listenForms() throws {
        let start = freePorts(2)
        let p2 = freePort()
        let sock = FileManager.default.temporaryDirectory.appendingPathComponent(
            "usher-\(UUID().uuidString.prefix(8)).sock"
        ).path
        let config = """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {
              "listen": ["127.0.0.1:\(start)-\(start + 1)", "[::1]:\(p2)", "unix/\(sock)"],
              "routes": [{"handle": [{"handler": "static_response", "body": "{http.request.local.port} {http.request.remote.host}"}]}]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: start)
        defer { s.stop() }
        #expect(try curl(["http://127.0.0.1:\(start)/"]).body == "\(start) 127.0.0.1")
        #expect(try curl(["http://127.0.0.1:\(start + 1)/"]).body == "\(start + 1) 127.0.0.1")
        #expect(try curl(["-g", "http://[::1]:\(p2)/"]).body == "\(p2) ::1")
        #expect(try curl(["--unix-socket", sock, "http://localhost/"]).status == 200)
        // A config that drops the unix socket removes its file.
        let drop = """
            {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(start)"]}}}}}
            """
        #expect(try admin(s, "POST", "/load", body: drop).status == 200)
        #expect(!FileManager.default.fileExists(atPath: sock))
        #expect(!portOpen(start + 1))
    }

    @Test("a SIGTERM sent the moment the server first answers still stops it gracefully")
    func earlySignal() throws {
        for _ in 0..<8 {
            let port = freePort()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-sig-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let config = dir.appendingPathComponent("c.json")
            try """
            {"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": [{"handle": [{"handler": "static_response", "body": "up"}]}]}}}}}
            """.write(to: config, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: usherBinary)
            p.arguments = ["run", "--config", config.path]
            let errFile = dir.appendingPathComponent("stderr")
            FileManager.default.createFile(atPath: errFile.path, contents: nil)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = try FileHandle(forWritingTo: errFile)
            try launch(p)
            let deadline = Date().addingTimeInterval(10)
            while !portOpen(port) && Date() < deadline { usleep(200) }
            kill(p.processIdentifier, SIGTERM)
            let stopBy = Date().addingTimeInterval(5)
            while p.isRunning && Date() < stopBy { usleep(1000) }
            let stillRunning = p.isRunning
            if stillRunning { p.interrupt(); kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            #expect(!stillRunning, "SIGTERM right after start-up was lost")
            #expect(
                p.terminationReason == .exit && p.terminationStatus == 0,
                "exited by \(p.terminationReason) \(p.terminationStatus): \((try? String(contentsOf: errFile, encoding: .utf8)) ?? "")"
            )
        }
    }

    @Test("stopping waits for in-flight responses to finish")
    func gracefulShutdown() throws {
        let port = freePort()
        let config = """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": [{"handle": [{"handler": "test_stream"}]}]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: port, binary: usherTestBinary)
        let size = 32 << 20
        // A slow client: 32 MiB at 8 MiB/s takes about four seconds.
        let download = Process()
        download.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        download.arguments = [
            "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--limit-rate", "8M",
            "http://127.0.0.1:\(port)/?size=\(size)&length=known",
        ]
        let out = Pipe()
        download.standardOutput = out
        try launch(download)
        Thread.sleep(forTimeInterval: 0.5)
        let signalledAt = Date()
        kill(s.pid, SIGTERM)
        // New connections are refused at once while the download goes on.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(!portOpen(port))
        download.waitUntilExit()
        #expect(
            Date().timeIntervalSince(signalledAt) > 1, "the download must still have been running when the stop began")
        let result = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(result == "200 \(size)")
        #expect(s.stop() == 0)
    }

    @Test("event loops follow the CPUs the process may use (taskset), not the machine's count")
    func eventLoopsFromAffinity() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") else { return }
        let port = freePort()
        let config = simpleConfig(port: port, body: "x")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-affinity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let adminPort = freePort()
        let f = dir.appendingPathComponent("c.json")
        try config.replacingOccurrences(of: "{{ADMIN}}", with: "127.0.0.1:\(adminPort)").write(
            to: f, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        p.arguments = ["-c", "0", usherBinary, "run", "--config", f.path]
        p.standardError = FileHandle.nullDevice
        var env = ProcessInfo.processInfo.environment
        env["XDG_CONFIG_HOME"] = dir.path
        p.environment = env
        try launch(p)
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        while !portOpen(port) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/task")) ?? []
        let names = tasks.compactMap {
            try? String(contentsOfFile: "/proc/\(p.processIdentifier)/task/\($0)/comm", encoding: .utf8)
        }
        let loops = names.filter { $0.hasPrefix("NIO-ELT-") }
        #expect(loops.count == 1, "threads: \(names)")
    }
}
