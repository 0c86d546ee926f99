import Testing

@testable import UsherCore

@Suite("JSON values")
struct JSONTests {
    @Test("round-trips documents, keeping key order and number literals")
    func roundTrip() throws {
        let text = #"{"b":1,"a":[true,false,null,"x"],"n":1.50,"big":12345678901234567890,"e":1e3}"#
        let v = try JSONValue.parse(text)
        #expect(v.serialized() == text)
        #expect(v["b"] == .number(JSONNumber(1)))
        #expect(v["e"]?.description == "1e3")
        if case .number(let n) = v["e"]! { #expect(n.int == 1000) }
    }

    @Test("decodes escapes and surrogate pairs")
    func escapes() throws {
        let v = try JSONValue.parse(#""a\"b\\c\/d\n\t\u00e9\ud83d\ude00""#)
        #expect(v == .string("a\"b\\c/d\n\té😀"))
    }

    @Test("escapes HTML characters as Go does")
    func htmlEscaping() {
        #expect(JSONValue.string("<a>&").serialized() == #""\u003ca\u003e\u0026""#)
        #expect(JSONValue.string("<a>").serialized(.init(escapeHTML: false)) == #""<a>""#)
    }

    @Test("pretty-prints with tabs like caddy adapt --pretty")
    func pretty() throws {
        let v = try JSONValue.parse(#"{"a":{"b":[1,2]},"c":{},"d":[]}"#)
        #expect(
            v.serialized(.pretty)
                == "{\n\t\"a\": {\n\t\t\"b\": [\n\t\t\t1,\n\t\t\t2\n\t\t]\n\t},\n\t\"c\": {},\n\t\"d\": []\n}")
    }

    @Test(
        "reports syntax errors with line and column",
        arguments: [
            ("{\"a\": }", 1, 7),
            ("{\n  \"a\": 1,\n}", 3, 1),
            ("[1 2]", 1, 4),
            ("\"abc", 1, 5),
            ("{} x", 1, 4),
        ])
    func syntaxErrors(input: String, line: Int, column: Int) {
        #expect {
            try JSONValue.parse(input)
        } throws: { error in
            guard let e = error as? JSONSyntaxError else { return false }
            return e.line == line && e.column == column
        }
    }

    @Test("refuses nesting deeper than the limit instead of overflowing the stack")
    func depth() {
        let deep = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
        #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(deep) }
    }

    @Test("later duplicate keys win, in the first key's position")
    func duplicates() throws {
        let v = try JSONValue.parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(v.serialized() == #"{"a":3,"b":2}"#)
    }
}
