import Testing
import UsherCaddyfile

/// `caddyfile-grammar/lexer/*.lexertest`: each input's tokens (line, kind, text), or the error it must give.
@Suite("Lexer vectors")
struct LexerVectorTests {
    static let cases = (try? vectors("lexer", ext: "lexertest")) ?? []

    @Test("vector files are present")
    func present() throws {
        #expect(try vectors("lexer", ext: "lexertest").count >= 15)
    }

    @Test("tokens match the vector", arguments: cases.map(\.name))
    func vector(_ name: String) throws {
        let v = Self.cases.first { $0.name == name }!
        let expected = v.expected.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        do {
            let tokens = try CaddyfileLexer.tokenize(v.input, filename: "Testfile")
            let got = tokens.map { t -> String in
                let kind: String
                switch t.quote {
                case "\"": kind = "quoted"
                case "`": kind = "backtick"
                case "<": kind = "heredoc"
                default: kind = "word"
                }
                return "\(t.line)\t\(kind)\t\(jsonString(t.text))"
            }
            #expect(got == expected, "\(name)")
        } catch {
            #expect(expected == ["error: \(error)"], "\(name)")
        }
    }
}
