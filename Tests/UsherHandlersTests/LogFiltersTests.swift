import Foundation
import Testing
import UsherCore

@testable import UsherHandlers

/// The log field filters on the edge cases of Go's parsers that Caddy's filters inherit (addresses, URIs,
/// cookies), and the filter encoder's walk of nested fields. The common cases are compared with Caddy itself in
/// `LoggingDifferentialTests`.
@Suite("log field filters: Go's address, URI and cookie rules, and nested field paths")
struct LogFiltersTests {
    func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
        try ConfigDecoder(registry: nil).decode(T.self, from: try JSONValue.parse(json), path: [])
    }

    func text(_ f: LogField?) -> String {
        guard let f else { return "(deleted)" }
        var out: [UInt8] = []
        JSONLogEncoderModule().makeEncoder().encode(
            LogEntry(level: .info, logger: "", message: "", fields: [f]), into: &out)
        let line = String(decoding: out, as: UTF8.self)
        // The entry's own keys come first; keep the field.
        return String(line[line.range(of: "\"msg\":\"\",")!.upperBound...].dropLast(2))
    }

    @Test("ip_mask: prefixes, ports, lists, mapped addresses, and Go's <nil> when no mask is set")
    func ipMask() throws {
        let f = try decode(IPMaskLogFilter.self, #"{"ipv4_cidr": 16, "ipv6_cidr": 32}"#)
        #expect(f.mask("192.168.1.77") == "192.168.0.0")
        #expect(f.mask("192.168.1.77:8080") == "192.168.0.0:8080")
        #expect(f.mask("[2001:db8:aa:bb::1]:443") == "[2001:db8::]:443")
        #expect(f.mask("::ffff:10.1.2.3") == "10.1.0.0")
        #expect(f.mask("203.0.113.9,2001:db8::1 , unknown") == "203.0.0.0, 2001:db8::, unknown")
        #expect(f.mask("fe80::1%eth0") == "fe80::1%eth0")
        let v4only = try decode(IPMaskLogFilter.self, #"{"ipv4_cidr": 8}"#)
        #expect(v4only.mask("2001:db8::1") == "<nil>")
        #expect(v4only.mask("10.9.8.7") == "10.0.0.0")
        let tooLong = try decode(IPMaskLogFilter.self, #"{"ipv4_cidr": 40}"#)
        #expect(tooLong.mask("10.9.8.7") == "<nil>")
    }

    @Test("query: parameters sorted and re-escaped as net/url writes them; the path kept when it is valid")
    func query() throws {
        let none = try decode(QueryLogFilter.self, #"{"actions": []}"#)
        #expect(none.process("/p?b=2&a=1&a=0") == "/p?a=1&a=0&b=2")
        #expect(none.process("/p?") == "/p?")
        #expect(none.process("/p") == "/p")
        #expect(none.process("/p?a=%zz&b=1&c") == "/p?b=1&c=")
        #expect(none.process("/p?x=1;y=2&z=3") == "/p?z=3")
        #expect(none.process("/a%2Fb+c?q=a+b&r=%2F") == "/a%2Fb+c?q=a+b&r=%2F")
        #expect(none.process("/ä?x") == "/%C3%A4?x=")
        #expect(none.process("/%zz?a=1") == "/%zz?a=1")
        let actions = try decode(
            QueryLogFilter.self,
            #"{"actions": [{"type": "delete", "parameter": "token"}, {"type": "replace", "parameter": "s", "value": "x y"}, {"type": "hash", "parameter": "u"}]}"#
        )
        #expect(actions.process("/p?token=1") == "/p")
        #expect(actions.process("/p?s=1&s=2&u=bob") == "/p?s=x+y&s=x+y&u=\(logFilterHash("bob"))")
        #expect(logFilterHash("bob") == "81b637d8")
        #expect(throws: ConfigError.self) {
            try decode(QueryLogFilter.self, #"{"actions": [{"type": "scramble", "parameter": "x"}]}"#)
        }
    }

    @Test("cookie: read and written again as net/http does, one header out")
    func cookie() throws {
        let f = try decode(
            CookieLogFilter.self,
            #"{"actions": [{"type": "delete", "name": "b"}, {"type": "replace", "name": "a", "value": "v w"}]}"#)
        let out = f.filter(LogField("Cookie", .array([.string("a=1; b=2"), .string("c=\"3\"; =x; d")])))
        #expect(text(out) == #""Cookie":["a=\"v w\"; c=\"3\"; d="]"#)
        #expect(text(f.filter(LogField("Cookie", .array([.string("b=1")])))) == #""Cookie":[]"#)
        #expect(text(f.filter(LogField("Cookie", .array([.string("REDACTED")])))) == #""Cookie":["REDACTED="]"#)
        // Not an array of strings: left alone.
        #expect(text(f.filter(LogField("Cookie", .string("a=1")))) == #""Cookie":"a=1""#)
    }

    @Test("set_cookie: the value replaced in place, quotes and attributes kept; unreadable lines kept")
    func setCookie() throws {
        let f = try decode(
            SetCookieLogFilter.self,
            #"{"actions": [{"type": "replace", "name": "theme", "value": "dark"}, {"type": "delete", "name": "t"}, {"type": "hash", "name": "s"}]}"#
        )
        #expect(f.filterLine("theme=\"light\"; Max-Age=60") == "theme=\"dark\"; Max-Age=60")
        #expect(f.filterLine(" s = v ; Secure") == " s = \(logFilterHash(" v")) ; Secure")
        #expect(f.filterLine("t=1; Path=/") == nil)
        #expect(f.filterLine("not a cookie") == "not a cookie")
        #expect(f.filterLine("bad\\=1") == "bad\\=1")
    }

    @Test("the filter encoder follows > paths into objects, takes an object whole, and leaves others untouched")
    func encoderPaths() throws {
        func module<T: LogFieldFilterModule>(_ t: T.Type, _ json: String) throws -> any LogFieldFilterModule {
            try decode(t, json)
        }
        func leaf(_ f: any LogFieldFilterModule) -> FieldFilterNode { FieldFilterNode(filter: f, children: []) }
        let headers = FieldFilterNode(
            filter: try module(RenameLogFilter.self, #"{"name": "h"}"#),
            children: [("X", leaf(try module(DeleteLogFilter.self, "{}")))])
        let request = FieldFilterNode(
            filter: nil, children: [("uri", leaf(try module(HashLogFilter.self, "{}"))), ("headers", headers)])
        let root = FieldFilterNode(
            filter: nil,
            children: [
                ("request", request), ("status", leaf(try module(HashLogFilter.self, "{}"))),
                ("size", leaf(try module(DeleteLogFilter.self, "{}"))),
            ])
        let encoder = FilterLogEncoder(wrapped: JSONLogEncoderModule().makeEncoder(), filters: root)
        let entry = LogEntry(
            level: .info, time: WallTime(seconds: 0, nanoseconds: 0), logger: "l", message: "m",
            fields: [
                LogField(
                    "request",
                    .object([
                        LogField("uri", "/x"), LogField("headers", .object([LogField("X", .array(["1"]))])),
                        LogField("method", "GET"),
                    ])),
                LogField("status", 200), LogField("size", 5), LogField("after", .bool(true)),
            ])
        var out: [UInt8] = []
        encoder.encode(entry, into: &out)
        #expect(
            String(decoding: out, as: UTF8.self)
                == #"{"level":"info","ts":0,"logger":"l","msg":"m","request":{"uri":"\#(logFilterHash("/x"))","h":{"X":["1"]},"method":"GET"},"status":200,"after":true}"#
                + "\n")
        // Encoders that cannot filter while writing get a filtered copy: the same line.
        var copied: [UInt8] = []
        var copy = entry
        copy.fields = try #require(root.rewritten(entry.fields))
        JSONLogEncoderModule().makeEncoder().encode(copy, into: &copied)
        #expect(copied == out)
        // An entry with no filtered field goes through as it is.
        var plain: [UInt8] = []
        encoder.encode(
            LogEntry(level: .info, time: entry.time, logger: "l", message: "m", fields: [LogField("a", 1)]),
            into: &plain)
        #expect(
            String(decoding: plain, as: UTF8.self) == #"{"level":"info","ts":0,"logger":"l","msg":"m","a":1}"# + "\n")
    }
}
