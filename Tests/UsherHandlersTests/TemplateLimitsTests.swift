import Foundation
import Testing

@testable import UsherHandlers

/// What a page (or an upstream's response run as one) can make the server do is bounded: nesting, steps, output,
/// sizes that functions produce, and integer edge cases that would trap in Swift but wrap in Go.
@Suite("templates: bounded whatever the text says")
struct TemplateLimitsTests {
    func run(_ text: String) throws -> String {
        try GoTemplate(name: "t", text: text, functions: TemplateRun.functions).execute(.null)
    }

    func failure(_ text: String) -> String {
        do {
            _ = try run(text)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test("nesting: parentheses and blocks past 1,000 levels are parse errors, not a stack overflow")
    func nesting() {
        let parens = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        #expect(failure("{{" + parens + "}}").contains("max expression depth exceeded"))
        let ifs = String(repeating: "{{if 1}}", count: 5000) + "x" + String(repeating: "{{end}}", count: 5000)
        #expect(failure(ifs).contains("max nesting depth exceeded"))
        // 100 levels are fine.
        let fine = String(repeating: "{{if 1}}", count: 100) + "x" + String(repeating: "{{end}}", count: 100)
        #expect((try? run(fine)) == "x")
    }

    @Test("steps and output: an endless range and a runaway page end with an error")
    func stepsAndOutput() {
        #expect(failure("{{range 1000000000000}}{{end}}").contains("execution ran more than 20000000 steps"))
        #expect(failure("{{range 100}}{{repeat 1048576 \"x\"}}{{end}}").contains("output over 64 MiB"))
        #expect(failure("{{repeat 100000000 \"xx\"}}").contains("repeat: result over 64 Mi"))
        #expect(failure("{{until 100000000 | len}}").contains("until: result over"))
        #expect(failure("{{seq 100000000}}").contains("seq: more than"))
        #expect(failure("{{indent 100000000 \"a\\nb\"}}").contains("indent: result over"))
    }

    @Test("integers wrap as Go's do (recorded from Caddy), never trap")
    func integerEdges() throws {
        #expect(
            try run(
                "{{add 9223372036854775807 1}}|{{div -9223372036854775808 -1}}|{{mod -9223372036854775808 -1}}|{{trunc -9223372036854775808 \"abc\"}}|{{add1 9223372036854775807}}"
            ) == "-9223372036854775808|-9223372036854775808|0|abc|-9223372036854775808")
        #expect(try run("{{printf \"%10d|\" 5}}") == "         5|")
        #expect(try run("{{printf \"%99999999999999999999d|\" 5}}") == "%!(NOVERB)%!(EXTRA int=5)")
        #expect(try run("{{seq 9223372036854775806 9223372036854775807}}") == "9223372036854775806 9223372036854775807")
    }

    @Test("markdown and front matter nested past their bounds fail instead of recursing for ever")
    func documents() {
        #expect(throws: (any Error).self) { try Markdown.html(String(repeating: ">", count: 100_000) + " deep\n") }
        #expect((try? Markdown.html(String(repeating: ">", count: 50) + " fine\n"))?.contains("fine") == true)
        #expect(throws: (any Error).self) {
            try FrontMatter.split("---\nk: " + String(repeating: "[", count: 100_000) + "\n---\n")
        }
        #expect(throws: (any Error).self) {
            try FrontMatter.split("+++\nk = " + String(repeating: "[", count: 100_000) + "\n+++\n")
        }
        #expect(throws: (any Error).self) {
            try FrontMatter.split("{\n\"k\": " + String(repeating: "[", count: 100_000) + "\n}\n")
        }
    }
}
