import Foundation
import Testing
import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore

/// A bounded property test standing in for a fuzzer: random and mutated Caddyfiles go through the lexer, the
/// parser, the formatter and the whole adapter. Each input must give a result or an error; a crash (trap) fails
/// the run, and the time limit catches a hang. The seed is fixed so a failure is repeatable; `USHER_FUZZ_SEED`
/// and `USHER_FUZZ_ITERATIONS` explore further.
@Suite("Fuzzing the Caddyfile front end", .timeLimit(.minutes(3)))
struct FuzzTests {
    struct SplitMix64 {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    static let seed = UInt64(ProcessInfo.processInfo.environment["USHER_FUZZ_SEED"] ?? "") ?? 0x5eed_cadd_f11e
    static let iterations = Int(ProcessInfo.processInfo.environment["USHER_FUZZ_ITERATIONS"] ?? "") ?? 4000

    /// Pieces the generator strings together: syntax that stresses the lexer and parser, and real directive names
    /// so that inputs reach the directive parsers.
    static let pieces: [String] = [
        "{", "}", "{\n", "}\n", "\n", " ", "\t", "\"", "`", "\\", "\\\n", "#", "<<", "<<END\n", "END", "\r\n",
        "(", ")", "&(", "@m", "@m ", "*", "/", ":", ":80", "example.com", "localhost", "{$HOME}", "{$X:def}",
        "{args[0]}", "{args[:]}", "{block}", "{blocks.a}", "import s", "(s) {\n", "respond", "reverse_proxy",
        "handle", "route", "header", "tls", "log", "matcher", "not", "path", "host", "file_server", "php_fastcgi",
        "handle_errors", "invoke", "&(r) {\n", "order", "servers", "bind", "root", "redir", "rewrite", "uri",
        "map", "vars", "encode", "1", "200", "5xx", "http://", "https://", "[::1]", "-1", "é", "\u{0}", "😀",
    ]

    static func randomInput(_ rng: inout SplitMix64) -> String {
        var s = ""
        for _ in 0..<(1 + rng.below(60)) { s += pieces[rng.below(pieces.count)] }
        return s
    }

    static func mutate(_ base: String, _ rng: inout SplitMix64) -> String {
        var b = Array(base.utf8)
        for _ in 0..<(1 + rng.below(6)) {
            guard !b.isEmpty else { break }
            let i = rng.below(b.count)
            switch rng.below(5) {
            case 0: b.remove(at: i)
            case 1:
                let syntax = Array("{}\"`\\\n #<@*".utf8)
                b.insert(syntax[rng.below(syntax.count)], at: i)
            case 2: b[i] = UInt8(truncatingIfNeeded: rng.next())
            case 3:
                let j = min(b.count, i + rng.below(40))
                b.insert(contentsOf: b[i..<j], at: j)
            default:
                let j = min(b.count, i + rng.below(40))
                b.removeSubrange(i..<j)
            }
        }
        // Keep imports away from file globs, so the fuzzer never reads the working directory.
        let text = String(decoding: b, as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.contains("import") ? String(line).replacingAll("*", with: "x") : String(line)
        }.joined(separator: "\n")
    }

    /// Runs one input through everything; returns whether it adapted.
    @discardableResult
    static func exercise(_ input: String) -> Bool {
        if ProcessInfo.processInfo.environment["USHER_FUZZ_TRACE"] != nil {
            FileHandle.standardError.write(Data(("INPUT " + JSONValue.string(input).serialized(.compact) + "\n").utf8))
        }
        _ = try? CaddyfileLexer.tokenize(input, filename: "Fuzzfile")
        _ = try? CaddyfileParser.parse(filename: "Fuzzfile", input: input)
        _ = CaddyfileFormatter.format(input)
        return (try? adapt(input, filename: "Fuzzfile")) != nil
    }

    @Test("random inputs give results or errors, never a crash or hang")
    func randomInputs() {
        var rng = SplitMix64(state: Self.seed)
        var adapted = 0
        let start = ContinuousClock.now
        for _ in 0..<Self.iterations {
            if Self.exercise(Self.randomInput(&rng)) { adapted += 1 }
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .seconds(120), "\(Self.iterations) inputs took \(elapsed)")
        // Most random inputs are errors; some must get through so the deeper code is reached.
        #expect(adapted > 0)
    }

    @Test("mutated golden Caddyfiles give results or errors, never a crash or hang")
    func mutatedInputs() throws {
        var corpus =
            try vectors("adapt", ext: "caddyfiletest").map(\.input)
            + vectors("parser", ext: "parsertest").map(\.input)
        // More seeds: any directory of `.caddyfiletest` files (e.g. Caddy's own adapt cases).
        if let dir = ProcessInfo.processInfo.environment["USHER_FUZZ_CORPUS"],
            let names = try? FileManager.default.contentsOfDirectory(atPath: dir)
        {
            for n in names.sorted() {
                guard let text = try? String(contentsOfFile: dir + "/" + n, encoding: .utf8),
                    let r = text.range(of: "----------")
                else { continue }
                corpus.append(String(text[..<r.lowerBound]))
            }
        }
        #expect(!corpus.isEmpty)
        var rng = SplitMix64(state: Self.seed ^ 0xFFFF)
        var adapted = 0
        for _ in 0..<Self.iterations {
            if Self.exercise(Self.mutate(corpus[rng.below(corpus.count)], &rng)) { adapted += 1 }
        }
        #expect(adapted > Self.iterations / 20, "only \(adapted) of \(Self.iterations) mutants adapted")
    }

    @Test("deeply nested and very long inputs stay bounded")
    func pathological() {
        Self.exercise(String(repeating: "{", count: 5000) + String(repeating: "}", count: 5000))
        Self.exercise(
            ":80 {\n" + String(repeating: "\troute {\n", count: 300) + "respond x\n"
                + String(repeating: "}\n", count: 301))
        Self.exercise(":80 {\n" + String(repeating: "\trespond /x \"y\"\n", count: 3000) + "}\n")
        Self.exercise(String(repeating: "a ", count: 100_000))
        Self.exercise("\"" + String(repeating: "\\", count: 10001))
        Self.exercise("<<" + String(repeating: "E", count: 10000) + "\n")
    }
}
