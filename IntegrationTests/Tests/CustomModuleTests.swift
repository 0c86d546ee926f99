import Foundation
import Testing

/// Builds the third-party fixture package (its own `http.handlers.hello` module and a custom binary) with the
/// public API only, then checks the binary lists and runs the module; then builds it again through the
/// `usher-build` plugin. One build at a time: two full builds at once starve the rest of the test run.
@Suite("Custom modules from a separate package", .serialized, .timeLimit(.minutes(20)))
struct CustomModuleTests {
    @Test("the fixture builds into a binary whose list-modules shows http.handlers.hello, and it answers")
    func fixtureBinary() throws {
        let fixture = packageRoot.appendingPathComponent("IntegrationTests/Fixtures/ExampleModule")
        let scratch = packageRoot.appendingPathComponent(".build-fixture")
        // Without manifest caching the build re-plans every time, so source files added to usher since the
        // scratch folder was last used are seen (a cached plan misses them and the build fails).
        let build = try runCommand(
            "/usr/bin/env",
            [
                "swift", "build", "--package-path", fixture.path, "--scratch-path", scratch.path,
                "--disable-build-manifest-caching",
            ],
            environment: ["USHER_PACKAGE_PATH": packageRoot.path], timeout: 1100)
        #expect(build.status == 0, "swift build failed:\n\(build.stdout.suffix(3000))\n\(build.stderr.suffix(3000))")
        let binary = scratch.appendingPathComponent("debug/usher-hello").path

        let list = try runCommand(binary, ["list-modules", "--packages", "--versions"])
        #expect(list.status == 0)
        #expect(list.stdout.contains("http.handlers.hello 1.0.0 example.com/hello"))
        #expect(list.stdout.contains("http.handlers.static_response"))
        #expect(list.stdout.contains("Non-standard modules: 1"))

        let port = freePort()
        let config = """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
              "routes": [{"handle": [{"handler": "hello", "name": "{http.request.uri.query.who}", "status": 201}]}]}}}}}
            """
        let s = try UsherProcess(config: config, waitPort: port, binary: binary)
        defer { s.stop() }
        let r = try curl(["http://127.0.0.1:\(port)/?who=Usher"])
        #expect(r.status == 201)
        #expect(r.body == "Hello, Usher!")

        // The module's own validation runs like any other's.
        let bad = try admin(
            s, "POST", "/load",
            body: """
                {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "hello", "status": 99}]}]}}}}}
                """)
        #expect(bad.status == 400)
        #expect(
            bad.body.contains(
                "apps.http.servers.s.routes[0].handle[0] (http.handlers.hello): status: 99 is not a final status code"),
            "\(bad.body)")

        // The package's Caddyfile directive: ordered before respond, with a matcher and its own argument check.
        let caddyfile =
            "{\n\tadmin \(s.adminAddress)\n}\nhttp://127.0.0.1:\(port) {\n\tbind 127.0.0.1\n"
            + "\trespond \"fallback\"\n\thello /greet/* {path.1} 202\n}\n"
        let loaded = try admin(s, "POST", "/load", body: caddyfile, headers: ["Content-Type: text/caddyfile"])
        #expect(loaded.status == 200, "\(loaded.body)")
        let greeted = try curl(["http://127.0.0.1:\(port)/greet/Swift"])
        #expect(greeted.status == 202)
        #expect(greeted.body == "Hello, Swift!")
        #expect(try curl(["http://127.0.0.1:\(port)/other"]).body == "fallback")
        let badDirective = try admin(
            s, "POST", "/adapt", body: ":80 {\n\thello you soon\n}\n",
            headers: ["Content-Type: text/caddyfile"])
        #expect(
            badDirective.body.contains(
                "parsing caddyfile tokens for 'hello': status must be a number, not 'soon', at Caddyfile:2"),
            "\(badDirective.body)")
    }

    @Test(
        "swift package usher-build --with the fixture package: the plugin finds its bundle and builds a binary whose list-modules shows it"
    )
    func plugin() throws {
        let output = packageRoot.appendingPathComponent(".build-plugin/usher-hello-custom")
        try? FileManager.default.removeItem(at: output)
        // Its own scratch path: the test runner holds the lock on .build.
        let build = try runCommand(
            "/usr/bin/env",
            [
                "swift", "package", "--package-path", packageRoot.path, "--scratch-path",
                packageRoot.appendingPathComponent(".build-plugin").path,
                "--allow-writing-to-package-directory", "usher-build", "--with",
                "IntegrationTests/Fixtures/ExampleModule", "--debug",
                "--output", output.path,
            ], environment: ["USHER_PACKAGE_PATH": packageRoot.path], timeout: 1500)
        #expect(build.status == 0, "usher-build failed:\n\(build.stdout.suffix(3000))\n\(build.stderr.suffix(3000))")
        #expect(build.stdout.contains("with HelloModule.HelloModules"), "\(build.stdout.suffix(1000))")
        let list = try runCommand(output.path, ["list-modules", "--packages", "--versions"])
        #expect(list.stdout.contains("http.handlers.hello 1.0.0 example.com/hello"), "\(list.stdout)")
        #expect(list.stdout.contains("http.handlers.reverse_proxy"))
        // A path without a package, and a URL without a version, are refused by name.
        let bad = try runCommand(
            "/usr/bin/env",
            [
                "swift", "package", "--package-path", packageRoot.path, "--scratch-path",
                packageRoot.appendingPathComponent(".build-plugin").path,
                "--allow-writing-to-package-directory", "usher-build", "--with", "/nonexistent/mod",
            ], timeout: 600)
        #expect(bad.status != 0)
        #expect(
            (bad.stdout + bad.stderr).contains("--with /nonexistent/mod: no Package.swift in /nonexistent/mod"),
            "\(bad.stderr.suffix(1500))")
    }
}
