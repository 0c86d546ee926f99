import Testing
import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore

/// `caddyfile-grammar/adapt/*.caddyfiletest`, in Caddy's two-part format: a Caddyfile, then the JSON Caddy 2.11
/// produces for it (compared as JSON values, key order aside) or the error text it reports (which ours must
/// contain). The expectations were produced by Caddy itself, except for cases named `usher_*`, which cover what
/// only Usher has.
@Suite("Adapt golden cases")
struct AdaptGoldenTests {
    static let cases = (try? vectors("adapt", ext: "caddyfiletest")) ?? []

    @Test("golden files are present")
    func present() throws {
        #expect(try vectors("adapt", ext: "caddyfiletest").count >= 60)
    }

    @Test("adapts to the expected JSON or error", arguments: cases.map(\.name))
    func golden(_ name: String) throws {
        let v = Self.cases.first { $0.name == name }!
        let expected = v.expected.trimmingWhitespace()
        if expected.hasPrefix("{") {
            let want = try JSONValue.parse(Array(expected.utf8))
            let got = try adapt(v.input).config
            #expect(got.sameValue(as: want), "\(name): got \(got.serialized(.compact))")
        } else {
            do {
                let got = try adapt(v.input).config
                Issue.record("\(name): expected error \(expected), got \(got.serialized(.compact))")
            } catch {
                #expect("\(error)".contains(expected), "\(name): \(error)")
            }
        }
    }
}
