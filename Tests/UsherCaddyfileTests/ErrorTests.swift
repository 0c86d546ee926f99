import Foundation
import Testing
import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore

/// Bad Caddyfiles give errors that say what is wrong and where (`file:line`), worded as Caddy words them.
@Suite("Caddyfile errors name the problem and its position")
struct ErrorTests {
    private func error(_ text: String, filename: String = "Caddyfile") -> String {
        do {
            let r = try adapt(text, filename: filename)
            return "no error: \(r.config.serialized(.compact))"
        } catch {
            return "\(error)"
        }
    }

    @Test("unknown directive")
    func unknownDirective() {
        let e = error("localhost {\n\trespond hi\n\tfrobnicate on\n}\n")
        #expect(e == "Caddyfile:3: unrecognized directive: frobnicate")
        // Without braces, a second site is the likely mistake, and the message says so.
        let e2 = error("localhost\nrespond hi\nexample.com\n")
        #expect(e2.hasPrefix("Caddyfile:3: unrecognized directive: example.com\nDid you mean to define a second site?"))
    }

    @Test("unknown subdirective")
    func unknownSubdirective() {
        let e = error("localhost {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tnot_a_thing 1\n\t}\n}\n")
        #expect(
            e == "parsing caddyfile tokens for 'reverse_proxy': unrecognized subdirective not_a_thing, at Caddyfile:3")
    }

    @Test("missing argument")
    func missingArgument() {
        #expect(
            error(":80 {\n\tredir\n}\n")
                == "parsing caddyfile tokens for 'redir': wrong argument count or unexpected line ending after 'redir', at Caddyfile:2"
        )
        #expect(
            error(":80 {\n\troot\n}\n")
                == "parsing caddyfile tokens for 'root': too few arguments; must have at least a root path, at Caddyfile:2"
        )
    }

    @Test("unclosed brace")
    func unclosedBrace() {
        #expect(
            error("localhost {\n\trespond hi\n")
                == "syntax error: unexpected token 'hi', expecting '}', at Caddyfile:2 import chain: ['']")
        #expect(error("localhost {\n\thandle {\n\t\trespond x\n") == "unexpected EOF, at Caddyfile:3")
    }

    @Test("bad heredoc")
    func badHeredoc() {
        #expect(
            error(":80 {\n\trespond <<END!\n\tx\n\tEND!\n}\n")
                == "Caddyfile:2: heredoc marker on line #2 must contain only alphanumeric characters, dashes and underscores; got 'END!'"
        )
        #expect(
            error(":80 {\n\trespond <<END\n\tnever closed\n}\n")
                == "Caddyfile:2: incomplete heredoc <<END on line #5, expected ending marker END")
        #expect(
            error(":80 {\n\trespond <<<END\n\tx\n\tEND\n}\n")
                == "Caddyfile:2: too many '<' for heredoc on line #2; only use two, for example <<END")
    }

    @Test("import cycle, between snippets and between files")
    func importCycle() throws {
        #expect(
            error("(a) {\n\timport b\n}\n(b) {\n\timport a\n}\n:80 {\n\timport a\n}\n")
                == "a cycle of imports exists between Caddyfile:b and Caddyfile:a, at Caddyfile:5 import chain ['Caddyfile:2 (import b)']"
        )

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-cycle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let one = dir.appendingPathComponent("one.caddyfile").path
        let two = dir.appendingPathComponent("two.caddyfile").path
        try "respond one\nimport \(two)\n".write(toFile: one, atomically: true, encoding: .utf8)
        try "import \(one)\n".write(toFile: two, atomically: true, encoding: .utf8)
        let e = error(":80 {\n\timport \(one)\n}\n")
        #expect(e.hasPrefix("a cycle of imports exists between \(two) and \(one), at \(two):1"), "\(e)")
    }

    @Test("unknown matcher, and an unknown matcher module")
    func unknownMatcher() {
        #expect(
            error(":80 {\n\trespond @nope \"x\"\n}\n")
                == "parsing caddyfile tokens for 'respond': unrecognized matcher name: @nope, at Caddyfile:2")
        #expect(
            error(":80 {\n\t@m frobs 1\n\trespond @m \"x\"\n}\n")
                == "getting matcher module 'frobs': module not registered: http.matchers.frobs, at Caddyfile:2")
    }

    @Test("site address with a negative or malformed port")
    func negativePort() {
        #expect(error("localhost:-1 {\n}\n") == "parsing key: port -1 is out of range, at Caddyfile:1")
        #expect(
            error(":80 {\n}\n\nexample.com:http {\n}\n")
                == "parsing key: invalid port 'http': strconv.Atoi: parsing \"http\": invalid syntax, at Caddyfile:4")
    }

    @Test("errors in an imported file name that file and line")
    func importedFilePosition() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-imp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let inc = dir.appendingPathComponent("site.caddyfile").path
        try "respond ok\nfile_server {\n\tbogus\n}\n".write(toFile: inc, atomically: true, encoding: .utf8)
        let e = error(":80 {\n\timport \(inc)\n}\n")
        #expect(
            e
                == "parsing caddyfile tokens for 'file_server': unknown subdirective 'bogus', at \(inc):3 import chain ['Caddyfile:2 (import)']",
            "\(e)")
    }

    @Test("an undefined named route, and ambiguous sites, are located")
    func serverTypeErrors() {
        #expect(
            error(":80 {\n\tinvoke missing\n}\n")
                == "cannot invoke named route 'missing', which was not defined, at Caddyfile:2")
        #expect(
            error("example.com {\n}\nexample.com {\n}\n") == "ambiguous site definition: example.com, at Caddyfile:3")
    }
}
