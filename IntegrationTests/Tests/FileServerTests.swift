import Foundation
import Testing

/// A directory tree for file_server tests: an index, a listing-only folder, a text file with gzip and zstd
/// sidecars, a 1 MiB binary, a hidden file, and a secret outside the root reachable by a symlink.
struct SiteTree {
    let base: URL
    var root: URL { base.appendingPathComponent("root") }
    let big: Data

    init() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("usher-site-\(UUID().uuidString)")
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
        big = Data(bytes)
        let root = base.appendingPathComponent("root")
        let fm = FileManager.default
        try fm.createDirectory(at: base.appendingPathComponent("root/sub/deeper"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("outside"), withIntermediateDirectories: true)
        try "<h1>home</h1>\n".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try "abcdefghijklmnopqrstuvwxyz".write(
            to: root.appendingPathComponent("alpha.txt"), atomically: true, encoding: .utf8)
        try Data("gzip-sidecar".utf8).write(to: root.appendingPathComponent("alpha.txt.gz"))
        try Data("zstd-sidecar".utf8).write(to: root.appendingPathComponent("alpha.txt.zst"))
        try "b".write(to: root.appendingPathComponent("sub/b.txt"), atomically: true, encoding: .utf8)
        try "a longer file".write(to: root.appendingPathComponent("sub/a.txt"), atomically: true, encoding: .utf8)
        try "SECRET=1".write(to: root.appendingPathComponent(".env"), atomically: true, encoding: .utf8)
        try "top secret".write(to: base.appendingPathComponent("outside/secret.txt"), atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(
            atPath: root.appendingPathComponent("link.txt").path,
            withDestinationPath: base.appendingPathComponent("outside/secret.txt").path)
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("outdir").path, withDestinationPath: "../outside")
        try fm.createSymbolicLink(
            atPath: root.appendingPathComponent("inside-rel.txt").path, withDestinationPath: "alpha.txt")
        try fm.createSymbolicLink(
            atPath: root.appendingPathComponent("inside-abs.txt").path,
            withDestinationPath: root.appendingPathComponent("alpha.txt").path)
        try big.write(to: root.appendingPathComponent("big.bin"))
    }
}

@Suite("file_server and encode against a real directory tree", .serialized)
struct FileServerTests {
    struct Case {
        var name: String
        var path: String
        var args: [String] = []
        var status: Int
        var headers: [String: String] = [:]
        var absent: [String] = []
        var body: String?
        var bodyContains: [String] = []
    }

    @Test("status, headers and bytes for index, listing, ranges, validators, sidecars and traversal attempts")
    func table() throws {
        let tree = try SiteTree()
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "file_server", "root": "\(tree.root.path)", "hide": [".env"], "browse": {},
                    "precompressed": {"gzip": {}, "zstd": {}}, "precompressed_order": ["zstd", "gzip"]}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let etag = try curl(["http://127.0.0.1:\(port)/alpha.txt"]).header("ETag") ?? "missing"
        let lastModified = try curl(["http://127.0.0.1:\(port)/alpha.txt"]).header("Last-Modified") ?? "missing"
        let cases: [Case] = [
            Case(
                name: "index", path: "/", status: 200,
                headers: ["Content-Type": "text/html; charset=utf-8", "Content-Length": "14"],
                body: "<h1>home</h1>\n"),
            Case(
                name: "file", path: "/alpha.txt", status: 200,
                headers: [
                    "Content-Type": "text/plain; charset=utf-8", "Accept-Ranges": "bytes", "Content-Length": "26",
                    "Vary": "Accept-Encoding", "Last-Modified": lastModified,
                ],
                body: "abcdefghijklmnopqrstuvwxyz"),
            Case(name: "directory without slash", path: "/sub", status: 308, headers: ["Location": "/sub/"]),
            Case(
                name: "file with slash", path: "/alpha.txt/?x=1", status: 308, headers: ["Location": "/alpha.txt?x=1"]),
            Case(name: "index file with explicit name", path: "/index.html", status: 200, body: "<h1>home</h1>\n"),
            Case(
                name: "listing as HTML", path: "/sub/", status: 200,
                headers: ["Content-Type": "text/html; charset=utf-8"],
                bodyContains: ["<a href=\"./a.txt\">a.txt</a>", "<a href=\"./deeper/\">deeper/</a>"]),
            Case(
                name: "listing as JSON, by size descending", path: "/sub/?sort=size&order=desc",
                args: ["-H", "Accept: application/json"],
                status: 200, headers: ["Content-Type": "application/json; charset=utf-8"],
                bodyContains: [#""name":"a.txt","size":13,"url":"./a.txt""#, #""is_dir":true"#]),
            Case(
                name: "single range", path: "/alpha.txt", args: ["-H", "Range: bytes=2-4"], status: 206,
                headers: ["Content-Range": "bytes 2-4/26", "Content-Length": "3"], body: "cde"),
            Case(
                name: "suffix range", path: "/alpha.txt", args: ["-H", "Range: bytes=-3"], status: 206,
                headers: ["Content-Range": "bytes 23-25/26"], body: "xyz"),
            Case(
                name: "multipart ranges", path: "/alpha.txt", args: ["-H", "Range: bytes=0-1,24-"], status: 206,
                bodyContains: [
                    "Content-Range: bytes 0-1/26\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nab",
                    "Content-Range: bytes 24-25/26\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nyz",
                ]),
            Case(
                name: "unsatisfiable range", path: "/alpha.txt", args: ["-H", "Range: bytes=100-"], status: 416,
                headers: ["Content-Range": "bytes */26"], body: "invalid range: failed to overlap\n"),
            Case(
                name: "If-None-Match", path: "/alpha.txt", args: ["-H", "If-None-Match: \(etag)"], status: 304,
                absent: ["Content-Type", "Content-Length", "Last-Modified"], body: ""),
            Case(
                name: "If-Modified-Since", path: "/alpha.txt", args: ["-H", "If-Modified-Since: \(lastModified)"],
                status: 304, body: ""),
            Case(name: "If-Match mismatch", path: "/alpha.txt", args: ["-H", "If-Match: \"other\""], status: 412),
            Case(
                name: "If-Range mismatch serves everything", path: "/alpha.txt",
                args: ["-H", "Range: bytes=0-1", "-H", "If-Range: \"stale\""], status: 200,
                body: "abcdefghijklmnopqrstuvwxyz"),
            Case(
                name: "gzip sidecar", path: "/alpha.txt", args: ["-H", "Accept-Encoding: gzip"], status: 200,
                headers: [
                    "Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8", "Vary": "Accept-Encoding",
                ],
                body: "gzip-sidecar"),
            Case(
                name: "zstd sidecar preferred", path: "/alpha.txt", args: ["-H", "Accept-Encoding: gzip, zstd"],
                status: 200,
                headers: ["Content-Encoding": "zstd"], body: "zstd-sidecar"),
            Case(
                name: "q-values beat preference", path: "/alpha.txt",
                args: ["-H", "Accept-Encoding: gzip;q=1, zstd;q=0.5"], status: 200,
                headers: ["Content-Encoding": "gzip"]),
            Case(
                name: "HEAD", path: "/alpha.txt", args: ["-I"], status: 200, headers: ["Content-Length": "26"], body: ""
            ),
            Case(
                name: "POST is not allowed", path: "/alpha.txt", args: ["-X", "POST"], status: 405,
                headers: ["Allow": "GET, HEAD"]),
            Case(name: "dot-dot", path: "/../outside/secret.txt", args: ["--path-as-is"], status: 404),
            Case(name: "encoded dot-dot", path: "/%2e%2e/outside/secret.txt", args: ["--path-as-is"], status: 404),
            Case(
                name: "encoded slash and dot-dot", path: "/sub/..%2f..%2foutside/secret.txt", args: ["--path-as-is"],
                status: 404),
            Case(name: "symlink out of the root", path: "/link.txt", status: 404),
            Case(name: "directory symlink out of the root", path: "/outdir/secret.txt", status: 404),
            Case(
                name: "relative symlink inside the root", path: "/inside-rel.txt", status: 200,
                body: "abcdefghijklmnopqrstuvwxyz"),
            Case(
                name: "absolute symlink inside the root", path: "/inside-abs.txt", status: 200,
                body: "abcdefghijklmnopqrstuvwxyz"),
            Case(name: "hidden file", path: "/.env", status: 404),
            Case(name: "NUL byte", path: "/alpha.txt%00.html", status: 400),
            Case(name: "missing", path: "/nope", status: 404),
        ]
        for c in cases {
            let r = try curl(c.args + ["http://127.0.0.1:\(port)\(c.path)"])
            #expect(r.status == c.status, "\(c.name): status \(r.status)")
            for (name, value) in c.headers {
                #expect(r.header(name) == value, "\(c.name): \(name) is \(r.header(name) ?? "absent")")
            }
            for name in c.absent { #expect(r.header(name) == nil, "\(c.name): \(name) should be absent") }
            if let body = c.body { #expect(r.body == body, "\(c.name): body \(r.body.prefix(200))") }
            for part in c.bodyContains {
                #expect(r.body.contains(part), "\(c.name): body lacks \(part): \(r.body.prefix(600))")
            }
            #expect(!r.body.contains("top secret") && !r.body.contains("SECRET=1"), "\(c.name) leaked a refused file")
        }
    }

    @Test("large files arrive intact over HTTP/1.1 (sendfile), HTTP/2 and TLS, and in ranges")
    func largeFiles() throws {
        let tree = try SiteTree()
        let pki = try TestPKI()
        let (plain, secure) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "plain": {"listen": ["127.0.0.1:\(plain)"], "protocols": ["h1", "h2c"],
                    "routes": [{"handle": [{"handler": "file_server", "root": "\(tree.root.path)"}]}]},
                  "secure": {"listen": ["127.0.0.1:\(secure)"], "tls_connection_policies": [{}],
                    "routes": [{"handle": [{"handler": "file_server", "root": "\(tree.root.path)"}]}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
                """, waitPort: plain)
        defer { s.stop() }
        let out = tree.base.appendingPathComponent("download")
        for args in [
            ["--http1.1", "http://127.0.0.1:\(plain)/big.bin"],
            ["--http2-prior-knowledge", "http://127.0.0.1:\(plain)/big.bin"],
            ["-k", "--http2", "https://127.0.0.1:\(secure)/big.bin"],
            ["-k", "--http1.1", "https://127.0.0.1:\(secure)/big.bin"],
        ] {
            let r = try runCommand("/usr/bin/curl", ["-s", "-o", out.path, "-w", "%{http_code}"] + args, timeout: 60)
            #expect(r.stdout == "200", "\(args)")
            #expect(try Data(contentsOf: out) == tree.big, "\(args): bytes differ")
        }
        let r = try runCommand(
            "/usr/bin/curl",
            ["-s", "-o", out.path, "-H", "Range: bytes=100000-899999", "http://127.0.0.1:\(plain)/big.bin"])
        #expect(r.status == 0)
        #expect(try Data(contentsOf: out) == tree.big.subdata(in: 100000..<900000))
    }

    @Test("encode: gzip and zstd stream compressed bodies that decode to the original; small and binary bodies pass")
    func encode() throws {
        let tree = try SiteTree()
        let text = String(repeating: "All work and no play makes Jack a dull boy. ", count: 4000)
        try text.write(to: tree.root.appendingPathComponent("long.txt"), atomically: true, encoding: .utf8)
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [
                    {"match": [{"path": ["/stream"]}], "handle": [{"handler": "encode", "encodings": {"gzip": {}}},
                      {"handler": "headers", "response": {"set": {"Content-Type": ["text/plain"]}}}, {"handler": "test_stream"}]},
                    {"handle": [{"handler": "encode", "encodings": {"gzip": {"level": 6}, "zstd": {}}, "prefer": ["zstd", "gzip"]},
                                {"handler": "file_server", "root": "\(tree.root.path)"}]}]}}}}}
                """, waitPort: port, binary: usherTestBinary)
        defer { s.stop() }
        let gz = try curl([
            "-H", "Accept-Encoding: gzip", "http://127.0.0.1:\(port)/long.txt", "-o", "/dev/null", "-D", "-",
        ])
        #expect(gz.header("Content-Encoding") == "gzip")
        #expect(gz.header("Accept-Ranges") == nil)
        #expect(gz.headerValues("Vary") == ["Accept-Encoding"])
        #expect(gz.header("ETag")?.hasSuffix("-gzip\"") == true, "\(gz.header("ETag") ?? "")")
        for enc in ["gzip", "zstd"] {
            let file = tree.base.appendingPathComponent("body.\(enc)")
            let r = try runCommand(
                "/usr/bin/curl",
                ["-s", "-H", "Accept-Encoding: \(enc)", "-o", file.path, "http://127.0.0.1:\(port)/long.txt"])
            #expect(r.status == 0)
            let size = (try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
            #expect(size > 0 && size < text.utf8.count / 10, "\(enc): \(size) bytes")
            let decoded = try runCommand(enc == "gzip" ? "/usr/bin/gzip" : "/usr/bin/zstd", ["-dc", file.path])
            #expect(decoded.stdout == text, "\(enc) did not decode to the original")
        }
        #expect(
            try curl([
                "-H", "Accept-Encoding: gzip, zstd", "http://127.0.0.1:\(port)/long.txt", "-o", "/dev/null", "-D", "-",
            ])
            .header("Content-Encoding") == "zstd")
        // The client's copy of the suffixed ETag still validates.
        let etag = gz.header("ETag") ?? ""
        #expect(
            try curl([
                "-H", "Accept-Encoding: gzip", "-H", "If-None-Match: \(etag)", "http://127.0.0.1:\(port)/long.txt",
            ]).status == 304)
        // Too short, or not a text type: sent as is.
        let small = try curl(["-H", "Accept-Encoding: gzip", "http://127.0.0.1:\(port)/alpha.txt"])
        #expect(small.header("Content-Encoding") == nil)
        #expect(small.body == "abcdefghijklmnopqrstuvwxyz")
        #expect(
            try curl(["-H", "Accept-Encoding: gzip", "-o", "/dev/null", "-D", "-", "http://127.0.0.1:\(port)/big.bin"])
                .header("Content-Encoding") == nil)
        #expect(
            try curl([
                "-H", "Accept-Encoding: gzip", "-H", "Cache-Control: no-transform", "-o", "/dev/null", "-D", "-",
                "http://127.0.0.1:\(port)/long.txt",
            ]).header("Content-Encoding") == nil)

        // Streaming: a 4 MiB response trickling out over ~6 s shows compressed bytes within the first second.
        let partial = tree.base.appendingPathComponent("partial.gz")
        let slow = try runCommand(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "1.5", "-H", "Accept-Encoding: gzip", "-o", partial.path,
                "http://127.0.0.1:\(port)/stream?size=4194304&delay=100",
            ])
        #expect(slow.status == 28, "curl should have timed out mid-stream")
        let got = (try? FileManager.default.attributesOfItem(atPath: partial.path)[.size] as? Int) ?? 0
        #expect(got > 0, "nothing arrived before the response was complete: the body was buffered")
    }

    @Test("files changed in place and roots replaced while serving are served from their new contents")
    func replacedRoot() throws {
        let tree = try SiteTree()
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "vars", "root": "\(tree.root.path)"}, {"handler": "file_server"}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        #expect(try curl(["http://127.0.0.1:\(port)/alpha.txt"]).body == "abcdefghijklmnopqrstuvwxyz")
        // Small files are kept in memory; a change in place (same size, even) is still seen at once.
        let handle = try FileHandle(forWritingTo: tree.root.appendingPathComponent("alpha.txt"))
        try handle.write(contentsOf: Data("ABC".utf8))
        try handle.close()
        #expect(try curl(["http://127.0.0.1:\(port)/alpha.txt"]).body == "ABCdefghijklmnopqrstuvwxyz")
        try "abcdefghijklmnopqrstuvwxyz".write(
            to: tree.root.appendingPathComponent("alpha.txt"), atomically: true, encoding: .utf8)
        #expect(try curl(["http://127.0.0.1:\(port)/alpha.txt"]).body == "abcdefghijklmnopqrstuvwxyz")
        let fm = FileManager.default
        try fm.moveItem(at: tree.root, to: tree.base.appendingPathComponent("old-root"))
        try fm.createDirectory(at: tree.root, withIntermediateDirectories: true)
        try "new".write(to: tree.root.appendingPathComponent("beta.txt"), atomically: true, encoding: .utf8)
        // A file only the new root has is found at once (a miss makes the server look at the path again) ...
        #expect(try curl(["http://127.0.0.1:\(port)/beta.txt"]).body == "new")
        // ... and one both have comes from the new root within the recheck interval (250 ms).
        try "replaced".write(to: tree.root.appendingPathComponent("alpha.txt"), atomically: true, encoding: .utf8)
        try fm.moveItem(at: tree.root, to: tree.base.appendingPathComponent("older-root"))
        try fm.moveItem(at: tree.base.appendingPathComponent("old-root"), to: tree.root)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try curl(["http://127.0.0.1:\(port)/alpha.txt"]).body == "abcdefghijklmnopqrstuvwxyz")
    }

    @Test("usher file-server serves a folder with browsing and compression, no config file")
    func fileServerCommand() throws {
        let tree = try SiteTree()
        let port = freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = ["file-server", "--root", tree.root.path, "--listen", "127.0.0.1:\(port)", "--browse"]
        p.standardError = FileHandle.nullDevice
        try launch(p)
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        while !portOpen(port) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(try curl(["http://127.0.0.1:\(port)/alpha.txt"]).body == "abcdefghijklmnopqrstuvwxyz")
        #expect(try curl(["http://127.0.0.1:\(port)/sub/"]).body.contains("a.txt"))
        let text = String(repeating: "compress me ", count: 1000)
        try text.write(to: tree.root.appendingPathComponent("c.txt"), atomically: true, encoding: .utf8)
        #expect(
            try curl(["-H", "Accept-Encoding: gzip", "-o", "/dev/null", "-D", "-", "http://127.0.0.1:\(port)/c.txt"])
                .header("Content-Encoding") == "gzip")
    }
}
