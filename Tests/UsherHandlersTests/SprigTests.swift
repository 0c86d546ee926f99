import Testing

@testable import UsherHandlers

/// Sprig's functions as Caddy 2.11.7's templates run them: each line's output was recorded from Caddy.
@Suite("templates: Sprig's functions, against outputs recorded from Caddy")
struct SprigTests {
    static let recorded: [(String, String)] = [
        (
            "{{upper \"hello\"}} {{lower \"HeLLo\"}} {{title \"hello world\"}} {{trim \"  x  \"}} {{trimPrefix \"ab\" \"abc\"}} {{trimSuffix \"bc\" \"abc\"}}",
            "HELLO hello Hello World x c a"
        ),
        (
            "{{replace \"a\" \"b\" \"banana\"}} {{contains \"an\" \"banana\"}} {{hasPrefix \"ba\" \"banana\"}} {{hasSuffix \"na\" \"banana\"}}",
            "bbnbnb true true true"
        ),
        (
            "{{join \",\" (splitList \"-\" \"a-b-c\")}} {{repeat 3 \"ab\"}} {{substr 1 3 \"abcdef\"}} {{trunc 3 \"abcdef\"}} {{trunc -2 \"abcdef\"}}",
            "a,b,c ababab bc abc ef"
        ),
        (
            "{{quote \"a\" \"b\"}} {{squote \"x\"}} {{nospace \" a b \"}} {{default \"dflt\" \"\"}} {{default \"dflt\" \"set\"}} {{empty \"\"}} {{empty \"x\"}}",
            "\"a\" \"b\" 'x' ab dflt set true false"
        ),
        (
            "{{list 1 \"a\" 2}} {{len (list 1 2 3)}} {{first (list 1 2)}} {{last (list 1 2)}} {{dict \"a\" 1 \"b\" \"x\"}} {{(dict \"k\" \"v\").k}}",
            "[1 a 2] 3 1 2 map[a:1 b:x] v"
        ),
        (
            "{{add 1 2}} {{sub 5 3}} {{mul 2 3}} {{div 7 2}} {{mod 7 2}} {{max 1 5 3}} {{min 4 2 8}} {{add1 5}}",
            "3 2 6 3 1 5 2 6"
        ),
        (
            "{{atoi \"42\"}} {{int \"7\"}} {{toString 5}} {{until 3}} {{seq 3}} {{abbrev 5 \"hello world\"}} {{initials \"hello world\"}}",
            "42 7 5 [0 1 2] 1 2 3 he... hw"
        ),
        (
            "{{trimAll \"$\" \"$5.00$\"}} {{wrap 5 \"hello world again\"}} {{indent 2 \"a\\nb\"}} {{nindent 2 \"x\"}} {{plural \"one\" \"many\" 2}}",
            "5.00 hello\nworld\nagain   a\n  b \n  x many"
        ),
        (
            "{{snakecase \"HelloWorld\"}} {{camelcase \"hello_world\"}} {{kebabcase \"HelloWorld\"}} {{swapcase \"Hello\"}} {{untitle \"Hello World\"}}",
            "hello_world HelloWorld hello-world hELLO hello world"
        ),
        (
            "{{regexMatch \"^a.c$\" \"abc\"}} {{regexReplaceAll \"[0-9]+\" \"a1b22\" \"#\"}} {{regexFind \"[0-9]+\" \"a12b3\"}} {{regexSplit \",\" \"a,b,c\" -1}}",
            "true a#b# 12 [a b c]"
        ),
        (
            "{{b64enc \"hi\"}} {{b64dec \"aGk=\"}} {{sha256sum \"x\"}} {{toJson (dict \"a\" (list 1 2))}} {{toPrettyJson (list 1)}}",
            "aGk= hi 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 {\"a\":[1,2]} [\n  1\n]"
        ),
        (
            "{{splitList \",\" \"a,b\" | join \"+\"}} {{ \"abc\" | upper | printf \"<%s>\" }} {{cat \"a\" \"b\" 1}} {{ternary \"y\" \"n\" true}}",
            "a+b <ABC> a b 1 y"
        ),
    ]

    @Test("each recorded line gives Caddy's output")
    func recordedLines() throws {
        for (text, expected) in Self.recorded {
            let t = try GoTemplate(name: "/sprig.txt", text: text, functions: SprigFunctions.all)
            #expect(try t.execute(.map([:])) == expected, "\(text)")
        }
    }
}
