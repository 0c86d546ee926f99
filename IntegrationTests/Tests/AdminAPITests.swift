import Foundation
import Testing

/// A config serving `body` on `port`, with the admin endpoint at `{{ADMIN}}`.
func simpleConfig(port: Int, body: String, admin: String = "{{ADMIN}}", extraServer: String = "") -> String {
    """
    {"admin": {"listen": "\(admin)"},
     "apps": {"http": {"servers": {"srv0": {"listen": ["127.0.0.1:\(port)"]\(extraServer),
       "routes": [{"@id": "main", "handle": [{"handler": "static_response", "body": "\(body)"}]}]}}}}}
    """
}

@Suite("Admin API")
struct AdminAPITests {
    @Test("load, read back, patch, delete and address by @id")
    func configCRUD() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "one"), waitPort: port)
        defer { s.stop() }
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "one")

        // Read back: the document as loaded.
        let listen = try admin(s, "GET", "/config/apps/http/servers/srv0/listen")
        #expect(listen.status == 200)
        #expect(listen.body == "[\"127.0.0.1:\(port)\"]\n")
        #expect(listen.header("Etag")?.hasPrefix("\"/config/apps/http/servers/srv0/listen ") == true)

        // PATCH a nested value; the server answers with it at once.
        #expect(
            try admin(s, "PATCH", "/config/apps/http/servers/srv0/routes/0/handle/0/body", body: "\"two\"").status
                == 200)
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "two")

        // Address the same route through its @id.
        #expect(try admin(s, "GET", "/id/main/handle/0/body").body == "\"two\"\n")
        #expect(try admin(s, "PATCH", "/id/main/handle/0/body", body: "\"three\"").status == 200)
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "three")

        // POST appends to an array; PUT inserts at an index.
        #expect(
            try admin(
                s, "PUT", "/config/apps/http/servers/srv0/routes/0",
                body: #"{"match": [{"path": ["/first"]}], "handle": [{"handler": "static_response", "body": "first"}]}"#
            ).status == 200)
        #expect(try curl(["http://127.0.0.1:\(port)/first"]).body == "first")
        #expect(try curl(["http://127.0.0.1:\(port)/other"]).body == "three")

        // DELETE removes; the routes that remain still serve.
        #expect(try admin(s, "DELETE", "/config/apps/http/servers/srv0/routes/0").status == 200)
        #expect(try curl(["http://127.0.0.1:\(port)/first"]).body == "three")

        // Optimistic concurrency: a stale If-Match is refused with 412.
        let etag = try admin(s, "GET", "/config/apps/http/servers/srv0/routes/0/handle/0/body").header("Etag")!
        #expect(
            try admin(
                s, "PATCH", "/config/apps/http/servers/srv0/routes/0/handle/0/body", body: "\"four\"",
                headers: ["If-Match: \(etag)"]
            ).status == 200)
        #expect(
            try admin(
                s, "PATCH", "/config/apps/http/servers/srv0/routes/0/handle/0/body", body: "\"five\"",
                headers: ["If-Match: \(etag)"]
            ).status == 412)
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "four")

        // POST /load replaces everything.
        let port2 = freePort()
        #expect(
            try admin(s, "POST", "/load", body: simpleConfig(port: port2, body: "loaded", admin: s.adminAddress)).status
                == 200)
        #expect(try curl(["http://127.0.0.1:\(port2)/"]).body == "loaded")
        #expect(!portOpen(port), "the old listener must close when the new config drops it")
    }

    /// A bad config is refused with an error naming where it is, and the running config keeps serving.
    @Test(
        "bad configs are refused with their JSON path and the old config keeps answering",
        arguments: [
            ("{\"apps\": {", "decoding request body: unexpected end of JSON input"),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": [{"handle": [{"handler": "teleport"}]}]}}}}}"#,
                "apps.http.servers.s.routes[0].handle[0]: unknown module http.handlers.teleport"
            ),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": [{"handle": [{"handler": "static_response", "bodyy": "x"}]}]}}}}}"#,
                "apps.http.servers.s.routes[0].handle[0].bodyy (http.handlers.static_response): unknown field"
            ),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": [{"handle": [{"handler": "static_response", "close": "yes"}]}]}}}}}"#,
                "apps.http.servers.s.routes[0].handle[0].close (http.handlers.static_response): expected a boolean, got a string"
            ),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": [{"handle": [{"handler": "tracing"}]}]}}}}}"#,
                "apps.http.servers.s.routes[0].handle[0]: module http.handlers.tracing is not available in this build"
            ),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": [":1"], "packet_conn_wrappers": [{}]}}}}}"#,
                "apps.http.servers.s.packet_conn_wrappers (http): not supported yet"
            ),
            (
                #"{"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:99999"]}}}}}"#,
                #"apps.http.servers.s.listen[0] (http): invalid start port \"99999\""#
            ),
        ])
    func badConfigs(body: String, message: String) throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "still here"), waitPort: port)
        defer { s.stop() }
        let r = try admin(s, "POST", "/load", body: body)
        #expect(r.status == 400)
        #expect(r.body.contains(message), "got \(r.body)")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "still here")
        #expect(try admin(s, "GET", "/config/apps/http/servers/srv0/listen").body == "[\"127.0.0.1:\(port)\"]\n")
    }

    @Test("a listen address already in use refuses the config and keeps the old one serving")
    func addressInUse() throws {
        let port = freePort()
        let blocker = freePort()
        let other = try UsherProcess(config: simpleConfig(port: blocker, body: "other process"), waitPort: blocker)
        defer { other.stop() }
        let s = try UsherProcess(config: simpleConfig(port: port, body: "mine"), waitPort: port)
        defer { s.stop() }
        let bad = """
            {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"servers": {
              "a": {"listen": ["127.0.0.1:\(port)"], "routes": [{"handle": [{"handler": "static_response", "body": "new"}]}]},
              "b": {"listen": ["127.0.0.1:\(blocker)"], "routes": [{"handle": [{"handler": "static_response", "body": "new b"}]}]}}}}}
            """
        let r = try admin(s, "POST", "/load", body: bad)
        #expect(r.status == 400)
        #expect(
            r.body.contains("apps.http.servers.b.listen[0]: listening on 127.0.0.1:\(blocker): address already in use"),
            "got \(r.body)")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "mine")
        #expect(try curl(["http://127.0.0.1:\(blocker)/"]).body == "other process")
    }

    @Test("requests from foreign hosts and origins are refused (DNS rebinding protection)")
    func originChecks() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "x"), waitPort: port)
        defer { s.stop() }
        #expect(try curl(["-H", "Host: evil.example", "http://\(s.adminAddress)/config/"]).status == 403)
        #expect(try curl(["-H", "Origin: http://evil.example", "http://\(s.adminAddress)/config/"]).status == 403)
        let ok = try curl(["-H", "Origin: http://\(s.adminAddress)", "http://\(s.adminAddress)/config/"])
        #expect(ok.status == 200)
        #expect(ok.header("Access-Control-Allow-Origin") == "http://\(s.adminAddress)")
        #expect(try curl(["-H", "Origin: null", "http://\(s.adminAddress)/config/"]).status == 400)
    }

    @Test("enforce_origin requires an allowed Origin on every request")
    func enforceOrigin() throws {
        let port = freePort()
        let config = """
            {"admin": {"listen": "{{ADMIN}}", "enforce_origin": true, "origins": ["https://console.example"]},
             "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: port)
        defer { s.stop() }
        #expect(try curl(["http://\(s.adminAddress)/config/"]).status == 403)
        #expect(
            try curl([
                "-H", "Origin: https://console.example", "-H", "Host: console.example",
                "http://\(s.adminAddress)/config/",
            ]).status == 200)
    }

    @Test("POST /stop shuts the server down")
    func stop() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "x"), waitPort: port)
        #expect(try admin(s, "POST", "/stop").status == 200)
        let deadline = Date().addingTimeInterval(10)
        while s.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!s.process.isRunning)
        #expect(s.process.terminationStatus == 0)
        #expect(!portOpen(port))
    }

    @Test("changes are saved to autosave.json and run --resume picks them up")
    func resume() throws {
        let port = freePort()
        let s = try UsherProcess(config: simpleConfig(port: port, body: "original"), waitPort: port)
        #expect(
            try admin(s, "PATCH", "/config/apps/http/servers/srv0/routes/0/handle/0/body", body: "\"changed\"").status
                == 200)
        let autosave = s.dir.appendingPathComponent("xdg-config/usher/autosave.json")
        let saved = try String(contentsOf: autosave, encoding: .utf8)
        #expect(saved.contains("\"changed\""))
        s.stop()
        // A new process with the same XDG_CONFIG_HOME resumes the saved config rather than the file.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = ["run", "--resume", "--config", s.dir.appendingPathComponent("config.json").path]
        var env = ProcessInfo.processInfo.environment
        env["XDG_CONFIG_HOME"] = s.dir.appendingPathComponent("xdg-config").path
        p.environment = env
        p.standardError = FileHandle.nullDevice
        try launch(p)
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        while !portOpen(port) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "changed")
    }

    @Test("run with no config serves the admin endpoint only")
    func noConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let adminPort = freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = ["run"]
        p.currentDirectoryURL = dir
        var env = ProcessInfo.processInfo.environment
        env["USHER_ADMIN"] = "127.0.0.1:\(adminPort)"
        env["XDG_CONFIG_HOME"] = dir.path
        p.environment = env
        p.standardError = FileHandle.nullDevice
        try launch(p)
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        while !portOpen(adminPort) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let r = try curl(["http://127.0.0.1:\(adminPort)/config/"])
        #expect(r.status == 200)
        #expect(r.body == "null\n")
    }
}
