import Testing
import UsherCaddyfile

/// `caddyfile-grammar/parser/*.parsertest`: the server blocks (keys, braces, segments' token texts) an input
/// parses into, or the error it must give.
@Suite("Parser vectors")
struct ParserVectorTests {
    static let cases = (try? vectors("parser", ext: "parsertest")) ?? []

    @Test("vector files are present")
    func present() throws {
        #expect(try vectors("parser", ext: "parsertest").count >= 15)
    }

    @Test("blocks match the vector", arguments: cases.map(\.name))
    func vector(_ name: String) throws {
        let v = Self.cases.first { $0.name == name }!
        let expected = v.expected.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        do {
            let blocks = try CaddyfileParser.parse(filename: "Testfile", input: v.input)
            var got: [String] = []
            for b in blocks {
                let keys = "[" + b.keys.map { jsonString($0.text) }.joined(separator: ",") + "]"
                got.append("\(b.isNamedRoute ? "route" : "block") keys=\(keys) braces=\(b.hasBraces)")
                for seg in b.segments {
                    got.append("  segment [" + seg.map { jsonString($0.text) }.joined(separator: ",") + "]")
                }
            }
            #expect(got == expected, "\(name)")
        } catch {
            #expect(expected == ["error: \(error)"], "\(name)")
        }
    }
}
