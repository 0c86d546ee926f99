import Testing

@testable import UsherHTTP

/// CEL's semantics on expressions that need no request (the differential tests against Caddy cover requests).
@Suite struct CELTests {
    struct NoHost: CELHost {
        func macro(_ name: String, _ call: CELExpr, _ args: [CELExpr], _ compiler: inout CELCompiler) throws
            -> CELCompiled?
        { nil }
        func placeholder(_ key: String) -> (Request?) -> CELValue { { _ in .string(key) } }
    }

    func eval(_ source: String) throws -> CELValue {
        var compiler = CELCompiler(host: NoHost())
        let c = try compiler.compile(try CELParser.parse(source))
        return c.eval(nil, CELFrame(compiler.slotCount))
    }

    func error(_ source: String) -> String? {
        do {
            _ = try eval(source)
            return nil
        } catch let issue as CELIssue {
            return formatCELIssue(issue, source: source)
        } catch {
            return "\(error)"
        }
    }

    @Test(
        "values and operators",
        arguments: [
            ("1 + 2 * 3 == 7", true), ("(1 + 2) * 3 == 9", true), ("7 / 2 == 3 && 7 % 2 == 1", true),
            ("-7 / 2 == -3 && -7 % 2 == -1", true), ("2u * 3u == 6u", true), ("1.5 + 1.5 == 3.0", true),
            ("'a' + 'b' == 'ab'", true), ("b'a' + b'b' == b'ab'", true), ("[1] + [2] == [1, 2]", true),
            ("'abc' < 'abd' && 'b' > 'abc'", true), ("1 in [1, 2] && !(3 in [1, 2])", true),
            ("'k' in {'k': 1}", true), ("{'a': {'b': [1, 2]}}.a.b[1] == 2", true), ("[1, 'a'] == [1, 'a']", true),
            ("{1: 'x'}[1] == 'x'", true), ("dyn(1) == 1.0 && dyn(1u) == 1", true), ("dyn(1) == 'a'", false),
            ("true ? false : true", false), ("!!true", true), ("--1 == 1", true),
            ("0x1F == 31 && 0x1Fu == 31u", true), ("1e3 == 1000.0 && .5 == 0.5", true),
            ("'\\x41\\u00e9\\101\\t' == 'A\u{e9}A\\t'", true), ("r'\\d' == '\\\\d'", true),
            ("'''a'b''' == \"a'b\"", true), ("size('héllo') == 5 && size(b'h\\xc3\\xa9') == 3", true),
            ("'héllo'.charAt(1) == 'é' && 'héllo'.indexOf('l') == 2", true),
            ("'a,b,c'.split(',', 2) == ['a', 'b,c']", true), ("'aXbXc'.replace('X', '-', 1) == 'a-bXc'", true),
            ("'  x \\n'.trim() == 'x'", true), ("['a', 'b'].join() == 'ab'", true),
            ("[3, 1, 2].sort() == [1, 2, 3] && [1, 1, 2].distinct() == [1, 2]", true),
            ("[[1], [2, 3]].flatten() == [1, 2, 3] && lists.range(3) == [0, 1, 2]", true),
            ("math.greatest(1, 5, 3) == 5 && math.least([4, 2]) == 2 && math.abs(-3) == 3", true),
            ("math.ceil(1.2) == 2.0 && math.round(-1.5) == -2.0 && math.trunc(-1.7) == -1.0", true),
            ("[1, 2, 3].all(x, x > 0) && [1, 2, 3].exists_one(x, x == 2)", true),
            ("[1, 2, 3].map(x, x * 2) == [2, 4, 6] && [1, 2, 3].filter(x, x % 2 == 1) == [1, 3]", true),
            ("[1, 2, 3].map(x, x > 1, x * 10) == [20, 30]", true), ("{'a': 1, 'b': 2}.all(k, k.size() == 1)", true),
            ("cel.bind(x, 'abc', x.size() + x.size()) == 6", true), ("has({'a': 1}.a) && !has({'a': 1}.b)", true),
            ("int('42') + int(3.9) + int(2u) == 47 && uint(7) == 7u && double('2.5') == 2.5", true),
            ("string(1.5) == '1.5' && string(100000000000000000000.0) == '1e+20' && string(true) == 'true'", true),
            (
                "string(1000000.0) == '1e+06' && string(1234567.0) == '1.234567e+06' && string(123456.7) == '123456.7'",
                true
            ),
            ("string(0.00001) == '1e-05' && string(0.0001) == '0.0001' && string(-2.5) == '-2.5'", true),
            ("string(duration('1h')) == '3600s' && string(100000.0) == '100000'", true),
            ("type(1) == int && type('a') == string && type([]) == list && type(type(1)) == type", true),
            ("timestamp('2024-02-29T12:34:56Z').getFullYear() == 2024", true),
            (
                "timestamp('2024-02-29T12:34:56Z').getMonth() == 1 && timestamp('2024-02-29T12:34:56Z').getDate() == 29",
                true
            ),
            ("timestamp('2024-03-03T00:00:00Z').getDayOfWeek() == 0", true),
            ("timestamp('2024-01-01T10:00:00+02:00').getHours() == 8", true),
            ("timestamp('2024-01-01T00:00:00Z').getHours('+05:30') == 5", true),
            ("duration('1h30m').getMinutes() == 90 && duration('1.5s') == duration('1500ms')", true),
            ("timestamp('2024-01-01T00:00:01Z') - timestamp('2024-01-01T00:00:00Z') == duration('1s')", true),
            ("string(timestamp('2024-01-01T00:00:00.5Z')) == '2024-01-01T00:00:00.5Z'", true),
            ("'abc'.matches('^a.c$') && !'abc'.matches('^b')", true),
            // A deciding side wins over an error on the other, in either order.
            ("1 / 0 == 1 || true", true), ("true || 1 / 0 == 1", true), ("false && 1 / 0 == 1", false),
            ("1 / 0 == 1 && false", false),
        ])
    func values(_ source: String, _ expected: Bool) throws {
        guard case .bool(let b) = try eval(source) else {
            Issue.record("\(source) gave \(try eval(source))")
            return
        }
        #expect(b == expected, "\(source)")
    }

    @Test(
        "errors at run time are values",
        arguments: [
            ("1 / 0 == 1", "division by zero"), ("5 % 0 == 1", "modulus by zero"),
            ("9223372036854775807 + 1 > 0", "integer overflow"), ("0u - 1u > 0u", "unsigned integer overflow"),
            ("-9223372036854775808 / -1 > 0", "integer overflow"), ("[1][2] == 1", "index out of range: 2"),
            ("{'a': 1}['b'] == 1", "no such key: b"), ("int('x') == 1", "cannot convert \"x\" to int"),
            ("dyn('a') + 1 == 2", "no such overload"), ("{'a': 1, 'a': 2}.size() == 1", "Failed with repeated key"),
            ("1 / 0 == 1 || false", "division by zero"),
        ])
    func runtimeErrors(_ source: String, _ message: String) throws {
        guard case .error(let m) = try eval(source) else {
            Issue.record("\(source) did not fail")
            return
        }
        #expect(m.contains(message), "\(source): \(m)")
    }

    @Test("compile errors read as cel-go's, with the position")
    func compileErrors() {
        #expect(
            error("1 + \"a\"")
                == "ERROR: <input>:1:3: found no matching overload for '_+_' applied to '(int, string)'\n | 1 + \"a\"\n | ..^"
        )
        #expect(error("[1].map(x, y)")?.contains("undeclared reference to 'y'") == true)
        #expect(error("a.b.c")?.hasPrefix("ERROR: <input>:1:1: undeclared reference to 'a'") == true)
        #expect(error("1 +\n  ")?.hasPrefix("ERROR: <input>:2:3: Syntax error: mismatched input '<EOF>'") == true)
        #expect(error("'unterminated")?.contains("token recognition error") == true)
        #expect(error("'\\q'")?.contains("token recognition error") == true)
        #expect(error("if == 1")?.contains("reserved identifier: if") == true)
        #expect(error("has(1)")?.contains("invalid argument to has() macro") == true)
        #expect(error("[1].all(1, true)")?.contains("argument must be a simple name") == true)
        #expect(error("'a'.matches('(')")?.contains("invalid regular expression") == true)
        #expect(error("99999999999999999999 > 1")?.contains("invalid int literal") == true)
        let deep = String(repeating: "(", count: 300) + "1" + String(repeating: ")", count: 300) + " == 1"
        #expect(error(deep)?.contains("recursion limit") == true)
        #expect(error("true ? 'a' : dyn(1)") == nil)
    }

    @Test("placeholders become ph() calls as Caddy's regular expression makes them")
    func placeholderExpansion() {
        #expect(ExpressionMatcher.expandPlaceholders("{path} == '/'") == "ph(req, \"path\") == '/'")
        #expect(
            ExpressionMatcher.expandPlaceholders("{http.request.header.X-A} + {a.b}")
                == "ph(req, \"http.request.header.X-A\") + ph(req, \"a.b\")")
        // One letter is too short; a backslash keeps the braces; an adjacent second placeholder is left alone.
        #expect(ExpressionMatcher.expandPlaceholders("{a} == 1") == "{a} == 1")
        #expect(ExpressionMatcher.expandPlaceholders("'\\{path}' == x") == "'{path}' == x")
        #expect(ExpressionMatcher.expandPlaceholders("{ab}{cd}") == "ph(req, \"ab\"){cd}")
        #expect(ExpressionMatcher.expandPlaceholders("x{ab}") == "xph(req, \"ab\")")
    }
}
