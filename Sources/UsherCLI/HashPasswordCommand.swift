import ArgumentParser
import UsherCore
import UsherHandlers

#if canImport(Glibc)
import Glibc
#endif

/// `usher hash-password`: `caddy hash-password` — prints a hash for `basic_auth` accounts.
struct HashPasswordCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password", abstract: "Hashes a password and writes the hash to stdout.",
        discussion:
            "Reads the password from --plaintext, else from the terminal (asked twice, not echoed) or one line of standard input."
    )

    @Option(name: [.short, .long], help: "The password to hash (default: read it).") var plaintext: String?
    @Option(name: [.short, .long], help: "argon2id or bcrypt.") var algorithm = "bcrypt"
    @Option(name: .customLong("bcrypt-cost"), help: "bcrypt's cost, 4–31.") var bcryptCost = 14
    @Option(name: .customLong("argon2id-time"), help: "Argon2id passes.") var argon2idTime: UInt32 = 1
    @Option(name: .customLong("argon2id-memory"), help: "Argon2id memory in KiB.") var argon2idMemory: UInt32 =
        46 * 1024
    @Option(name: .customLong("argon2id-threads"), help: "Argon2id lanes.") var argon2idThreads: UInt8 = 1
    @Option(name: .customLong("argon2id-keylen"), help: "Argon2id key length in bytes.") var argon2idKeylen: UInt32 = 32

    func run() async throws {
        var password = Array((plaintext ?? "").utf8)
        if password.isEmpty {
            if isatty(0) == 1 {
                let first = readSecret("Enter password: ")
                let second = readSecret("Confirm password: ")
                guard first == second else { fail(CLIError("password does not match")) }
                password = first
            } else {
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while read(0, &byte, 1) == 1 && byte != UInt8(ascii: "\n") { line.append(byte) }
                password = line
            }
            if password.isEmpty { fail(CLIError("plaintext is required")) }
        }
        let hasher: any PasswordHash
        switch algorithm {
        case "bcrypt": hasher = BcryptHash(cost: bcryptCost)
        case "argon2id":
            hasher = Argon2idHash(
                time: argon2idTime, memory: argon2idMemory, threads: UInt32(argon2idThreads),
                keyLength: Int(argon2idKeylen))
        default: fail(CLIError("unrecognized hash algorithm: \(algorithm)"))
        }
        do {
            writeFully(1, Array((try hasher.hash(password) + "\n").utf8))
        } catch {
            fail(error)
        }
    }

    /// A line from the terminal with echo off.
    private func readSecret(_ prompt: String) -> [UInt8] {
        writeFully(2, Array(prompt.utf8))
        var saved = termios()
        tcgetattr(0, &saved)
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSANOW, &quiet)
        defer {
            tcsetattr(0, TCSANOW, &saved)
            writeFully(2, Array("\n".utf8))
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(0, &byte, 1) == 1 && byte != UInt8(ascii: "\n") { line.append(byte) }
        return line
    }
}
