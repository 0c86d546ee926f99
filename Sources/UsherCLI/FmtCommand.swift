import ArgumentParser
import UsherCaddyfile
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

struct FmtCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fmt",
        abstract: "Formats a Caddyfile as `caddy fmt` does.",
        discussion: "Prints the formatted file, or with --overwrite rewrites it; with --diff prints a line diff. Use - for standard input. Exits 1 if the input was not formatted and --diff was given."
    )

    @Flag(name: [.short, .long], help: "Overwrite the file with the formatted result.") var overwrite = false
    @Flag(name: [.short, .long], help: "Print the differences rather than the formatted file.") var diff = false
    @Argument(help: "The Caddyfile (default: ./Caddyfile; - for standard input).") var file: String?

    func run() async throws {
        let path = file ?? "Caddyfile"
        let input: String
        do {
            input = String(decoding: try ConfigFiles.readFile(path), as: UTF8.self)
        } catch {
            fail(CLIError("reading input file: \(error)"))
        }
        let output = CaddyfileFormatter.format(input)
        if overwrite && path != "-" {
            let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
            guard fd >= 0 else { fail(CLIError("overwriting formatted file: \(String(cString: strerror(errno)))")) }
            writeFully(fd, Array(output.utf8))
            close(fd)
            return
        }
        if diff {
            let d = lineDiff(old: input, new: output)
            if !d.isEmpty {
                writeFully(1, Array(d.utf8))
                Glibc.exit(1)
            }
            return
        }
        writeFully(1, Array(output.utf8))
    }

    /// A simple unified-style diff: lines of the longest common subsequence kept, others marked - and +.
    func lineDiff(old: String, new: String) -> String {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if a == b { return "" }
        var lcs = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in stride(from: a.count - 1, through: 0, by: -1) {
            for j in stride(from: b.count - 1, through: 0, by: -1) {
                lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
            }
        }
        var out = ""
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count && j < b.count && a[i] == b[j] {
                out += "  \(a[i])\n"
                i += 1
                j += 1
            } else if j < b.count && (i == a.count || lcs[i][j + 1] >= lcs[i + 1][j]) {
                out += "+ \(b[j])\n"
                j += 1
            } else {
                out += "- \(a[i])\n"
                i += 1
            }
        }
        return out
    }
}
