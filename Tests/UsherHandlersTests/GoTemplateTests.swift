import Testing

@testable import UsherHandlers

/// Go's text/template as Caddy 2.11.7 runs it: each case's output was recorded by serving the text through Caddy's
/// `templates` handler (nil: Caddy answered 500, a template error). Cases using Sprig's functions (Caddy's `slice`
/// is Sprig's) or Caddy's context are left to the handler's differential test.
@Suite("templates: Go's text/template language, against outputs recorded from Caddy")
struct GoTemplateTests {
    static let recorded: [(String, String?)] = [
        ("plain text only", "plain text only"),
        ("{{\"hello\"}} {{`raw`}} {{1}} {{1.5}} {{true}} {{nil}}", nil),
        ("{{ 3 }}{{- \" trimmed\" -}}   {{\"x\"}}", "3 trimmedx"),
        ("{{/* a comment */}}after", "after"),
        ("{{- /* trimmed comment */ -}}   tight", "tight"),
        ("{{if true}}yes{{else}}no{{end}} {{if 0}}yes{{else if \"\"}}mid{{else}}no{{end}}", "yes no"),
        ("{{$x := \"v\"}}{{$x}} {{$x = \"w\"}}{{$x}}", "v w"),
        ("{{range 3}}{{.}}{{end}}|{{range 0}}x{{else}}empty{{end}}", "012|empty"),
        ("{{range $i := 5}}{{if eq $i 1}}{{continue}}{{end}}{{if eq $i 3}}{{break}}{{end}}{{$i}}{{end}}", "02"),
        ("{{with \"w\"}}[{{.}}]{{end}}{{with \"\"}}x{{else}}none{{end}}", "[w]none"),
        ("{{define \"T\"}}<{{.}}>{{end}}{{template \"T\" \"arg\"}}{{template \"T\"}}", "<arg><<no value>>"),
        ("{{block \"B\" 42}}block {{.}}{{end}}", "block 42"),
        (
            "{{eq 1 1}} {{eq 1 2 3 1}} {{ne \"a\" \"b\"}} {{lt 1 2}} {{le 2 2}} {{gt 1.5 1}} {{ge \"b\" \"a\"}} {{eq 1 1.0}}",
            nil
        ),
        ("{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" \"x\"}} {{or 0 \"\"}} {{not 0}} {{not \"a\"}}", "0 2 x  true false"),
        ("{{print \"a\" \"b\" 1 2 \"c\"}} {{print 1 2}} {{println \"x\" 1}}", "ab1 2c 1 2 x 1\n"),
        (
            "{{printf \"%d|%5d|%-5d|%05d|%x|%X|%o|%b|%+d\" 42 42 42 42 255 255 8 5 3}}",
            "42|   42|42   |00042|ff|FF|10|101|+3"
        ),
        (
            "{{printf \"%s|%10s|%-10s|%.2s|%q|%v|%t\" \"str\" \"r\" \"l\" \"trunc\" \"q\\\"\" 1.25 true}}",
            "str|         r|l         |tr|\"q\\\"\"|1.25|true"
        ),
        (
            "{{printf \"%.2f|%8.3f|%f|%e|%g|%v\" 3.14159 2.5 1.0 12345.678 0.000012 1e21}}",
            "3.14|   2.500|1.000000|1.234568e+04|1.2e-05|1e+21"
        ),
        (
            "{{printf \"%d %s\" \"notint\" 5}} {{printf \"%d\"}} {{printf \"%d\" 1 2}}",
            "%!d(string=notint) %!s(int=5) %!d(MISSING) 1%!(EXTRA int=2)"
        ),
        (
            "{{html \"<a href=\\\"x\\\">&'</a>\"}} {{js \"it's <b>\\n\"}} {{urlquery \"a b&c=d/é\"}}",
            "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt; it\\'s \\u003Cb\\u003E\\u000A a+b%26c%3Dd%2F%C3%A9"
        ),
        ("{{\"a\" | printf \"%s-%s\" \"b\"}} {{1 | eq 1}} {{(print \"x\") | len}}", "b-a true 1"),
        ("{{0x1F}} {{0o17}} {{017}} {{1_000}} {{'a'}} {{-5}} {{+3}} {{1e3}} {{.5}}", "31 15 15 1000 97 -5 3 1000 0.5"),
        ("{{\"\\u00e9\\x41\\t|\"}}", "éA\t|"),
        ("{{with $x := 5}}{{$x}}{{end}}{{if $y := 0}}t{{else}}{{$y}}f{{end}}", "50f"),
        ("{{3.0}} {{100000000.0}} {{1e20}} {{1e-5}} {{0.0001}} {{-0.5}}", "3 1e+08 1e+20 1e-05 0.0001 -0.5"),
    ]

    @Test("every recorded case gives Caddy's output, or an error where Caddy had one")
    func recordedCases() throws {
        for (text, expected) in Self.recorded {
            let result: String?
            do {
                let t = try GoTemplate(name: "/case.txt", text: text)
                result = try t.execute(.map([:]))
            } catch {
                result = nil
            }
            #expect(result == expected, "\(text)")
        }
    }

    @Test("parse errors name the file and line")
    func parseErrors() {
        let cases: [(String, String)] = [
            ("line one\n{{if true}}\nno end", "template: /t.html:3: unexpected EOF"),
            ("{{end}}", "template: /t.html:1: unexpected {{end}}"),
            ("a\nb\n{{nosuchfunc 1}}", "template: /t.html:3: function \"nosuchfunc\" not defined"),
            ("{{\"unterminated}}", "template: /t.html:1: unterminated quoted string"),
        ]
        for (text, message) in cases {
            do {
                _ = try GoTemplate(name: "/t.html", text: text)
                Issue.record("no error for \(text)")
            } catch {
                #expect("\(error)" == message)
            }
        }
    }
}
