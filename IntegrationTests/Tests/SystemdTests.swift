import Foundation
import Testing

@Suite("systemd: sd_notify messages and watchdog pings on a NOTIFY_SOCKET", .serialized)
struct SystemdTests {
    @Test("READY after start, RELOADING/READY around reloads (a failed one too), STOPPING on SIGTERM, WATCHDOG pings")
    func notify() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-notify-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let socketPath = dir.appendingPathComponent("notify").path
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        listener.arguments = [
            packageRoot.appendingPathComponent("IntegrationTests/interop/notify_listen.py").path, socketPath, "30",
        ]
        let out = Pipe()
        listener.standardOutput = out
        try launch(listener)
        // Wait for the socket before usher starts.
        let ready = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socketPath) && Date() < ready {
            Thread.sleep(forTimeInterval: 0.02)
        }

        let port = freePort()
        let config = { (body: String) in
            """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": [{"handle": [{"handler": "static_response", "body": "\(body)"}]}]}}}}}
            """
        }
        let s = try UsherProcess(
            config: config("one"), waitPort: port,
            environment: ["NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "200000"])
        Thread.sleep(forTimeInterval: 0.6)
        let reload = try admin(
            s, "POST", "/load", body: config("two").replacingOccurrences(of: "{{ADMIN}}", with: s.adminAddress))
        #expect(reload.status == 200)
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "two")
        let bad = try admin(
            s, "POST", "/load",
            body: #"{"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:1"], "bogus": 1}}}}}"#)
        #expect(bad.status == 400)
        #expect(s.stop() == 0)
        listener.waitUntilExit()
        let lines = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(
            separator: "\n")
        let messages = lines.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8), options: .fragmentsAllowed) as? String
        }
        .filter { $0 != "listening" }
        let states = messages.filter { !$0.hasPrefix("WATCHDOG=1") }
        func has(_ i: Int, _ field: String) -> Bool {
            i < states.count && states[i].split(separator: "\n").contains { $0.hasPrefix(field) }
        }
        #expect(states.count == 7, "\(states)")
        #expect(has(0, "STATUS=loading"))
        #expect(has(1, "READY=1") && has(1, "MAINPID=\(s.pid)"), "\(states)")
        #expect(has(2, "RELOADING=1") && has(2, "MONOTONIC_USEC="), "\(states)")
        #expect(has(3, "READY=1") && has(3, "STATUS=serving (configuration generation 2)"), "\(states)")
        #expect(has(4, "RELOADING=1"), "\(states)")
        #expect(has(5, "READY=1") && has(5, "STATUS=reload failed"), "\(states)")
        #expect(has(6, "STOPPING=1"), "\(states)")
        // WatchdogSec=200ms: a ping every 100 ms while running (about a second here).
        #expect(messages.filter { $0 == "WATCHDOG=1" }.count >= 4, "\(messages)")
    }

    @Test("socket activation with systemd-socket-activate: fd/3 serves HTTP over TCP, fdgram/3 serves HTTP/3 over UDP")
    func socketActivation() throws {
        let pki = try TestPKI()
        let (tcpPort, udpPort) = (freePort(), freePort())
        let dir = pki.dir
        try
            #"{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {"listen": ["fd/3"], "routes": [{"handle": [{"handler": "static_response", "body": "inherited {http.request.local.port}"}]}]}}}}}"#
            .write(to: dir.appendingPathComponent("tcp.json"), atomically: true, encoding: .utf8)
        try """
        {"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {"listen": ["fdgram/3"], "tls_connection_policies": [{}],
          "routes": [{"handle": [{"handler": "static_response", "body": "inherited over QUIC"}]}]}}},
          "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
        """.write(to: dir.appendingPathComponent("udp.json"), atomically: true, encoding: .utf8)
        // systemd-socket-activate closes descriptors it inherits, which confuses Foundation's child tracking: it
        // runs detached instead, known by its pid (which usher then takes over: it is exec'd in place).
        func activate(_ args: [String]) throws -> Int32 {
            let quoted = (["/usr/bin/systemd-socket-activate"] + args).map { "'\($0)'" }.joined(separator: " ")
            let log = dir.appendingPathComponent("activate-\(args.count).log").path
            let r = try runCommand("/bin/sh", ["-c", "setsid \(quoted) > '\(log)' 2>&1 < /dev/null & echo $!"])
            guard let pid = Int32(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw TestFailure(r.stderr)
            }
            return pid
        }
        let tcp = try activate([
            "-l", "127.0.0.1:\(tcpPort)", usherBinary, "run", "--config", dir.appendingPathComponent("tcp.json").path,
        ])
        defer { kill(tcp, SIGKILL) }
        let udp = try activate([
            "-d", "-l", "127.0.0.1:\(udpPort)", usherBinary, "run", "--config",
            dir.appendingPathComponent("udp.json").path,
        ])
        defer { kill(udp, SIGKILL) }
        let bound = Date().addingTimeInterval(10)
        while (!portOpen(tcpPort) || !((try? udpBound(udpPort)) ?? false)) && Date() < bound {
            Thread.sleep(forTimeInterval: 0.05)
        }
        // systemd-socket-activate starts usher on the first connection (TCP) or datagram (UDP).
        #expect(
            try curl(["--retry", "3", "--retry-connrefused", "http://127.0.0.1:\(tcpPort)/"]).body
                == "inherited \(tcpPort)")
        var served: [[String: Any]] = []
        for _ in 0..<3 where served.first?["head"] as? String != "inherited over QUIC" {
            served = (try? h3Request(port: udpPort, "/", timeout: 20)) ?? []
        }
        let logs = (try? String(contentsOf: dir.appendingPathComponent("activate-7.log"), encoding: .utf8)) ?? ""
        #expect(served.first?["head"] as? String == "inherited over QUIC", "\(served) \(logs.suffix(1500))")
    }

    @Test(
        "the journald encoder prefixes each line with its syslog priority: console underneath loses its timestamp, JSON keeps it"
    )
    func journaldEncoder() throws {
        let port = freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-journald-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let console = dir.appendingPathComponent("console.log").path, json = dir.appendingPathComponent("json.log").path
        // Nothing listens on the upstream port: the proxy logs an error for the 502.
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"},
                 "logging": {"logs": {
                   "default": {"writer": {"output": "file", "filename": "\(console)"},
                               "encoder": {"format": "journald", "wrap": {"format": "console"}}},
                   "json": {"writer": {"output": "file", "filename": "\(json)"}, "encoder": {"format": "journald"}, "include": ["http.log.error"]}}},
                 "apps": {"http": {"servers": {"web": {"listen": ["127.0.0.1:\(port)"],
                   "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(freePort())"}]}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        #expect(try curl(["http://127.0.0.1:\(port)/"]).status == 502)
        Thread.sleep(forTimeInterval: 0.3)
        let consoleLines = ((try? String(contentsOfFile: console, encoding: .utf8)) ?? "").split(separator: "\n")
        // Console fields are tab-separated: with the timestamp left out, the (coloured) level comes first.
        #expect(consoleLines.contains { $0.hasPrefix("<6>\u{1B}[34mINFO\u{1B}[0m\tserving") }, "\(consoleLines)")
        #expect(consoleLines.contains { $0.hasPrefix("<3>") && $0.contains("http.log.error") }, "\(consoleLines)")
        #expect(consoleLines.allSatisfy { $0.hasPrefix("<") && !$0.dropFirst(3).first!.isNumber }, "\(consoleLines)")
        let jsonLines = ((try? String(contentsOfFile: json, encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(jsonLines.count == 1 && jsonLines[0].hasPrefix(#"<3>{"level":"error","ts":"#), "\(jsonLines)")
    }
}
