import Testing

@testable import UsherCore

@Suite("Admin API config paths")
struct ConfigTraversalTests {
    func root() throws -> JSONValue {
        .object([
            "config": try JSONValue.parse(
                #"{"apps":{"http":{"servers":{"a":{"listen":[":1",":2"],"routes":[{"@id":"r0"}]}}}}}"#)
        ])
    }

    func run(_ method: ConfigTraversal.Method, _ path: String, _ body: String? = nil) throws -> (JSONValue, JSONValue?)
    {
        var r = try root()
        let got = try ConfigTraversal.access(&r, method: method, path: path, body: body.map { try JSONValue.parse($0) })
        return (r["config"]!, got)
    }

    @Test("GET reads objects, arrays and elements")
    func get() throws {
        #expect(try run(.get, "/config/apps/http/servers/a/listen").1?.serialized() == #"[":1",":2"]"#)
        #expect(try run(.get, "/config/apps/http/servers/a/listen/1").1 == .string(":2"))
        #expect(try run(.get, "/config/apps/nope").1 == .null)
    }

    @Test("POST appends to arrays (each element with ...) and sets keys")
    func post() throws {
        #expect(
            try run(.post, "/config/apps/http/servers/a/listen", #"":3""#).0["apps"]?["http"]?["servers"]?["a"]?[
                "listen"]?.serialized() == #"[":1",":2",":3"]"#)
        #expect(
            try run(.post, "/config/apps/http/servers/a/listen/...", #"[":3",":4"]"#).0["apps"]?["http"]?["servers"]?[
                "a"]?["listen"]?.arrayValue?.count == 4)
        #expect(
            try run(.post, "/config/apps/http/servers/b", #"{"listen":[":9"]}"#).0["apps"]?["http"]?["servers"]?["b"]
                != nil)
    }

    @Test("PUT inserts and refuses to overwrite; PATCH replaces only what exists; DELETE removes")
    func putPatchDelete() throws {
        #expect(
            try run(.put, "/config/apps/http/servers/a/listen/0", #"":0""#).0["apps"]?["http"]?["servers"]?["a"]?[
                "listen"]?.serialized() == #"[":0",":1",":2"]"#)
        #expect { try run(.put, "/config/apps/http/servers/a", "{}") } throws: { ($0 as? AdminError)?.status == 409 }
        #expect { try run(.patch, "/config/apps/http/servers/zz", "{}") } throws: { ($0 as? AdminError)?.status == 404 }
        #expect(
            try run(.patch, "/config/apps/http/servers/a/listen/1", #"":7""#).0["apps"]?["http"]?["servers"]?["a"]?[
                "listen"]?.serialized() == #"[":1",":7"]"#)
        #expect(
            try run(.delete, "/config/apps/http/servers/a/listen/0").0["apps"]?["http"]?["servers"]?["a"]?["listen"]?
                .serialized() == #"[":2"]"#)
        #expect(try run(.delete, "/config/apps/http").0["apps"]?.serialized() == "{}")
        #expect { try run(.delete, "/config/apps/tls") } throws: { ($0 as? AdminError)?.status == 404 }
    }

    @Test(
        "bad indexes and paths are 400s naming the path",
        arguments: [
            ("/config/apps/http/servers/a/listen/01", "invalid array index '01'"),
            ("/config/apps/http/servers/a/listen/9", "array index out of bounds: 9"),
            (
                "/config/apps/http/servers/a/listen/0/x/y",
                "invalid traversal path at: config/apps/http/servers/a/listen/0/x"
            ),
        ])
    func badPaths(path: String, message: String) {
        #expect {
            try run(.get, path)
        } throws: { e in
            guard let a = e as? AdminError else { return false }
            return a.status == 400 && a.message.contains(message)
        }
    }

    @Test("@id index maps IDs to paths and refuses duplicates")
    func ids() throws {
        let idx = try ConfigTraversal.indexIDs(try root()["config"]!)
        #expect(idx == ["r0": "/config/apps/http/servers/a/routes/0"])
        #expect(throws: AdminError.self) {
            try ConfigTraversal.indexIDs(try JSONValue.parse(#"[{"@id":"x"},{"@id":"x"}]"#))
        }
    }
}

@Suite("Placeholders")
struct ReplacerTests {
    struct Fixed: PlaceholderProvider {
        func placeholderValue(_ key: String) -> String? { key == "a" ? "A" : key == "empty" ? "" : nil }
    }

    func replacer() -> Replacer {
        let r = Replacer()
        r.add(Fixed())
        r.set("x.y", "XY")
        return r
    }

    @Test(
        "replaceKnown keeps unknown placeholders; replaceAll empties them",
        arguments: [
            ("{a}-{x.y}-{nope}", "A-XY-{nope}", "A-XY-"),
            (#"\{a\}"#, "{a}", "{a}"),
            ("{a", "{a", "{a"),
            ("no braces", "no braces", "no braces"),
            ("{a{a}}", "{aA}", "}"),
        ])
    func replace(input: String, known: String, all: String) {
        #expect(replacer().replaceKnown(input) == known)
        #expect(replacer().replaceAll(input) == all)
    }

    @Test("replaceOrError refuses unknown and (if asked) empty values")
    func orError() throws {
        #expect(throws: PlaceholderError.self) { try replacer().replaceOrError("{nope}") }
        #expect(throws: PlaceholderError.self) { try replacer().replaceOrError("{empty}", errorOnEmpty: true) }
        #expect(try replacer().replaceOrError("{empty}") == "")
    }

    @Test("global placeholders: env, system, time")
    func globals() {
        ProcessEnvironment.set("USHER_TEST_VAR", "v1")
        let r = Replacer()
        #expect(r.replaceAll("{env.USHER_TEST_VAR}") == "v1")
        #expect(r.replaceAll("{system.os}/{system.slash}") == "linux//")
        #expect(Int(r.replaceAll("{time.now.unix}"))! > 1_700_000_000)
        #expect(r.replaceAll("{time.now.http}").hasSuffix(" GMT"))
    }
}

@Suite("Network addresses")
struct NetworkAddressTests {
    @Test(
        "parses Caddy's listen syntax",
        arguments: [
            (":8080", "tcp", "", 8080, 8080),
            ("127.0.0.1:8080", "tcp", "127.0.0.1", 8080, 8080),
            ("[::1]:8080", "tcp", "::1", 8080, 8080),
            (":8000-8003", "tcp", "", 8000, 8003),
            ("udp/:443", "udp", "", 443, 443),
            ("unix//run/x.sock", "unix", "/run/x.sock", 0, 0),
            ("tcp4/0.0.0.0:1", "tcp4", "0.0.0.0", 1, 1),
        ])
    func parse(text: String, network: String, host: String, start: Int, end: Int) throws {
        let a = try NetworkAddress(parsing: text)
        #expect(a.network == network)
        #expect(a.host == host)
        #expect(a.startPort == start)
        #expect(a.endPort == end)
    }

    @Test("expands port ranges and prints addresses back")
    func expand() throws {
        let a = try NetworkAddress(parsing: ":8000-8002")
        #expect(a.expanded().map(\.description) == [":8000", ":8001", ":8002"])
        #expect(try NetworkAddress(parsing: "[::1]:80").description == "[::1]:80")
    }

    @Test("rejects malformed ports", arguments: [":99999", ":80-70", ":x", "bogus/:80"])
    func bad(text: String) {
        #expect(throws: AddressError.self) { try NetworkAddress(parsing: text) }
    }
}

@Suite("Logging")
struct LoggingTests {
    func sink(include: [String] = [], exclude: [String] = []) -> LogSink {
        LogSink(
            name: "t", level: .info, include: include, exclude: exclude, encoder: JSONLogEncoderModule().makeEncoder(),
            writer: DiscardLogWriter(), writerKey: "discard")
    }

    @Test("include and exclude select loggers by namespace, the longest match deciding")
    func allows() {
        #expect(sink().allows("http.log.access.log0"))
        #expect(sink(include: ["http.log.access.log0"]).allows("http.log.access.log0"))
        #expect(!sink(include: ["http.log.access.log0"]).allows("http.log.access.log1"))
        #expect(!sink(include: ["http.log.access"]).allows("http.log.accessx"))
        #expect(!sink(exclude: ["http.log.access.log0"]).allows("http.log.access.log0"))
        #expect(sink(exclude: ["http.log.access.log0"]).allows("http.handlers"))
        #expect(sink(include: ["http"], exclude: ["http.log"]).allows("http.handlers.x"))
        #expect(!sink(include: ["http"], exclude: ["http.log"]).allows("http.log.access"))
    }

    @Test("JSON encoder writes level, ts, logger, msg then fields in order")
    func jsonEncoding() {
        var out: [UInt8] = []
        let entry = LogEntry(
            level: .info, time: WallTime(seconds: 1_700_000_000, nanoseconds: 500_000_000), logger: "http.log.access",
            message: "handled request",
            fields: [
                LogField("status", 200), LogField("duration", .duration(0.25)),
                LogField("request", .object([LogField("uri", "/a<b")])),
            ])
        JSONLogEncoderModule().makeEncoder().encode(entry, into: &out)
        #expect(
            String(decoding: out, as: UTF8.self)
                == #"{"level":"info","ts":1700000000.5,"logger":"http.log.access","msg":"handled request","status":200,"duration":0.25,"request":{"uri":"/a<b"}}"#
                + "\n")
    }

    @Test(
        "time formats follow Go layouts",
        arguments: [
            (GoTimeLayout.rfc3339, "2023-11-14T22:13:20Z"),
            (GoTimeLayout.commonLog, "14/Nov/2023:22:13:20 +0000"),
            (GoTimeLayout.wallMilli, "2023/11/14 22:13:20.123"),
            ("Mon Jan _2 15:04:05 2006", "Tue Nov 14 22:13:20 2023"),
        ])
    func timeFormats(layout: String, expected: String) {
        #expect(
            GoTimeLayout.format(WallTime(seconds: 1_700_000_000, nanoseconds: 123_456_789), layout: layout) == expected)
    }

    @Test(
        "durations print as Go does",
        arguments: [(1.5, "1.5s"), (0.25, "250ms"), (90, "1m30s"), (3725, "1h2m5s"), (0.000001, "1µs")])
    func goDurations(seconds: Double, expected: String) {
        #expect(formatGoDuration(seconds) == expected)
    }
}
