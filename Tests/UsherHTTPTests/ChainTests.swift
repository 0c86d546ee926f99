import NIOCore
import NIOHTTP1
import Testing

@testable import UsherCore
@testable import UsherHTTP

@Suite("Handler chains and writers (in memory)")
struct ChainTests {
    @Test("capability lookup walks through wrapping writers")
    func capabilityThroughWrappers() async throws {
        let root = RecordingWriter()
        let counting = CountingResponseWriter(root)
        let recorder = ResponseRecorder(counting) { _, _ in false }
        #expect(recorder.capability((any Flushing).self) === root)
        #expect(recorder.capability((any ResponseAccounting).self) === counting)
        #expect(recorder.capability(ResponseRecorder.self) === recorder)
        // Header changes made through wrappers land on the root.
        recorder.headers.add(name: "X-Through", value: "1")
        #expect(root.headers.first(name: "X-Through") == "1")
        try await recorder.write("abc")
        #expect(counting.bodyBytesWritten == 3)
        #expect(root.bodyString == "abc")
    }

    @Test("a recorder buffers what shouldBuffer selects and replays it")
    func recorderBuffers() async throws {
        let root = RecordingWriter()
        let recorder = ResponseRecorder(root) { status, _ in status.code == 404 }
        try await recorder.writeHead(.notFound)
        try await recorder.write("hidden")
        #expect(root.status == nil)
        #expect(recorder.buffering)
        #expect(String(buffer: recorder.body) == "hidden")
        try await recorder.writeRecordedResponse()
        #expect(root.status == .notFound)
        #expect(root.bodyString == "hidden")
    }

    @Test("routes, groups, terminal and subroutes run in Caddy's order")
    func routeOrder() async throws {
        let chain = try await compileRoutes(
            """
            [
              {"handle": [{"handler": "headers", "response": {"add": {"X-Trace": ["1"]}}}]},
              {"group": "g", "handle": [{"handler": "headers", "response": {"add": {"X-Trace": ["g1"]}}}]},
              {"group": "g", "handle": [{"handler": "headers", "response": {"add": {"X-Trace": ["g2"]}}}]},
              {"match": [{"path": ["/stop"]}], "terminal": true, "handle": [{"handler": "headers", "response": {"add": {"X-Trace": ["stop"]}}}]},
              {"handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "headers", "response": {"add": {"X-Trace": ["sub"]}}}]}]},
                          {"handler": "static_response", "body": "end"}]}
            ]
            """)
        let w1 = RecordingWriter()
        try await chain.serve(try makeRequest(.GET, "/go"), w1)
        #expect(w1.headers["X-Trace"] == ["1", "g1", "sub"])
        #expect(w1.bodyString == "end")
        let w2 = RecordingWriter()
        try await chain.serve(try makeRequest(.GET, "/stop"), w2)
        #expect(w2.headers["X-Trace"] == ["1", "g1", "stop"])
        #expect(w2.status == nil)
    }

    @Test("errors travel up the chain as HandlerError with their status")
    func handlerErrors() async throws {
        let chain = try await compileRoutes(
            #"[{"handle": [{"handler": "error", "status_code": "{http.request.uri.query.c}", "error": "bad {http.request.method}"}]}]"#
        )
        await #expect {
            try await chain.serve(try makeRequest(.GET, "/?c=451"), RecordingWriter())
        } throws: { e in
            guard let h = e as? HandlerError else { return false }
            return h.status == 451 && h.message == "bad GET"
        }
    }

    @Test("the request body can be read by a placeholder and still by later handlers")
    func bodyPlaceholder() async throws {
        var buf = ByteBuffer()
        buf.writeString("payload")
        let chain = try await compileRoutes(
            #"[{"handle": [{"handler": "static_response", "body": "[{http.request.body}]"}]}]"#)
        let r = try makeRequest(.POST, "/", body: [buf])
        let w = RecordingWriter()
        try await chain.serve(r, w)
        #expect(w.bodyString == "[payload]")
        #expect(String(buffer: try await r.body.collect(upTo: 100)) == "payload")
    }
}

@Suite("Path matching as Caddy does it")
struct PathMatchingTests {
    @Test(
        "Go's path.Match globs",
        arguments: [
            ("/a/*", "/a/b", true), ("/a/*", "/a/b/c", false), ("/a/?", "/a/x", true), ("/a/[a-c]x", "/a/bx", true),
            ("/a/[^a-c]x", "/a/bx", false), ("/a/\\*", "/a/*", true), ("*.txt", "notes.txt", true), ("*", "a/b", false),
        ])
    func glob(pattern: String, name: String, expected: Bool) {
        #expect(PathMatching.globMatch(pattern, name) == expected)
    }

    @Test(
        "cleaning keeps trailing slashes and, when asked, doubled slashes",
        arguments: [
            ("/a/../b/", true, "/b/"), ("/a//b", true, "/a/b"), ("/a//b", false, "/a//b"), ("/./a/.", true, "/a"),
            ("/../x", true, "/x"),
        ])
    func clean(path: String, collapse: Bool, expected: String) {
        #expect(PathMatching.cleanPath(path, collapseSlashes: collapse) == expected)
    }

    @Test(
        "request targets decode the path and keep the raw form only when it differs",
        arguments: [
            ("/a%20b?x=1", "/a b", "/a%20b", "x=1"), ("/a%2Fb", "/a/b", "/a%2Fb", ""),
            ("/plain/path", "/plain/path", "/plain/path", ""),
            ("http://h/p?q", "/p", "/p", "q"),
        ])
    func targets(uri: String, path: String, escaped: String, query: String) throws {
        let r = try makeRequest(.GET, uri)
        #expect(r.path == path)
        #expect(r.escapedPath == escaped)
        #expect(r.rawQuery == query)
    }

    @Test("malformed escapes are refused")
    func badEscape() {
        #expect(throws: (any Error).self) { try RequestTarget(parsing: "/a%2") }
    }

    @Test(
        "IP prefixes",
        arguments: [
            ("10.0.0.0/8", "10.9.8.7", true), ("10.0.0.0/8", "11.0.0.1", false), ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("127.0.0.1/8", "127.255.0.1", true), ("192.168.0.0/16", "::ffff:192.168.1.1", false),
        ])
    func prefixes(prefix: String, ip: String, expected: Bool) throws {
        let p = try #require(IPPrefix(prefix))
        let a = try #require(IPAddress(ip))
        #expect(p.contains(a) == expected)
    }

    @Test(
        "IPv6 addresses print in RFC 5952 form",
        arguments: [
            ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"), ("::ffff:1.2.3.4", "::ffff:102:304"), ("0:0:0:0:0:0:0:1", "::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ])
    func ipv6Text(input: String, output: String) throws {
        #expect(try #require(IPAddress(input)).description == output)
    }
}
