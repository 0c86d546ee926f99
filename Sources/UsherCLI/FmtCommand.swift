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
        discussion:
            "Prints the formatted file, or with --overwrite rewrites it; with --diff prints a line diff. Exits 1 when the file was not formatted (unless --overwrite). Use - to format standard input."
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
            fail(CLIError(path == "-" ? "reading stdin: \(error)" : "reading input file: \(error)"))
        }
        let output = CaddyfileFormatter.format(input)
        // As with caddy fmt: standard input is simply formatted.
        if path == "-" {
            writeFully(1, Array(output.utf8))
            return
        }
        if overwrite {
            let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
            guard fd >= 0 else { fail(CLIError("overwriting formatted file: \(String(cString: strerror(errno)))")) }
            writeFully(fd, Array(output.utf8))
            close(fd)
            return
        }
        if diff {
            writeFully(1, Array(Self.lineDiff(old: input, new: output).utf8))
        } else {
            writeFully(1, Array(output.utf8))
        }
        if let d = CaddyfileFormatter.formattingDifference(filename: path, input: input) {
            fail(
                CLIError(
                    "\(path):\(d.line): Caddyfile input is not formatted; Tip: use '--overwrite' to update your Caddyfile in-place instead of previewing it. Consult '--help' for more options"
                ))
        }
    }

    /// The line diff `caddy fmt --diff` prints (aryann/difflib's algorithm, so ties resolve the same way): common
    /// lines prefixed by two spaces, removed lines by `- `, added lines by `+ `.
    static func lineDiff(old: String, new: String) -> String {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var start = 0
        while start < a.count && start < b.count && a[start] == b[start] { start += 1 }
        var end = 0
        var i = a.count - 1
        var j = b.count - 1
        while i > start && j > start && a[i] == b[j] {
            i -= 1
            j -= 1
            end += 1
        }
        let s1 = Array(a[start..<(a.count - end)])
        let s2 = Array(b[start..<(b.count - end)])
        // matrix[i][j]: longest common subsequence of the last i lines of s1 and the last j lines of s2.
        var m = Array(repeating: Array(repeating: 0, count: s2.count + 1), count: s1.count + 1)
        if !s1.isEmpty && !s2.isEmpty {
            for x in 1...s1.count {
                for y in 1...s2.count {
                    m[x][y] = s1[s1.count - x] == s2[s2.count - y] ? m[x - 1][y - 1] + 1 : max(m[x - 1][y], m[x][y - 1])
                }
            }
        }
        var out = ""
        for line in a[..<start] { out += "  \(line)\n" }
        var x = s1.count
        var y = s2.count
        while x > 0 || y > 0 {
            if x > 0 && m[x][y] == m[x - 1][y] {
                out += "- \(s1[s1.count - x])\n"
                x -= 1
            } else if y > 0 && m[x][y] == m[x][y - 1] {
                out += "+ \(s2[s2.count - y])\n"
                y -= 1
            } else {
                out += "  \(s1[s1.count - x])\n"
                x -= 1
                y -= 1
            }
        }
        for line in a[(a.count - end)...] { out += "  \(line)\n" }
        return out
    }
}
