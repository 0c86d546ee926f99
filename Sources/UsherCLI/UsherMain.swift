import ArgumentParser
import CUsherSystem
import Dispatch
import Logging
import NIOCore
import NIOPosix
public import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// The `usher` command line. A binary's `main.swift` is one line:
///
/// ```swift
/// await UsherMain.run(bundles: [StandardModules.self, MyModules.self])
/// ```
public enum UsherMain {
    /// Registers `bundles` (plus the core's own modules) and runs the command named on the command line.
    public static func run(bundles: [any ModuleBundle.Type]) async -> Never {
        CLIState.bundles = [CoreModules.self] + bundles
        LoggingSystem.bootstrap { label in UsherLogHandler(label: label, router: .shared) }
        // Modules (ours and third parties') that record through swift-metrics land on /metrics.
        UsherMetrics.bootstrapSwiftMetrics()
        await UsherCommand.main()
        Glibc.exit(0)
    }
}

/// Set once by ``UsherMain/run(bundles:)`` before any command runs, then only read.
enum CLIState {
    nonisolated(unsafe) static var bundles: [any ModuleBundle.Type] = []

    static func registry() throws -> ModuleRegistry {
        do {
            return try ModuleRegistry(bundles: bundles)
        } catch {
            throw CLIError("\(error)")
        }
    }
}

/// A command failure; its message is printed as `Error: ...` and the exit status is 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct UsherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usher",
        abstract: "A modular web server in the Caddy style.",
        version: UsherVersion.current,
        subcommands: [
            RunCommand.self, StartCommand.self, StopCommand.self, ReloadCommand.self, AdaptCommand.self,
            ValidateCommand.self, ListModulesCommand.self, VersionCommand.self, EnvironCommand.self,
            RespondCommand.self, FmtCommand.self, FileServerCommand.self, ReverseProxyCommand.self, TrustCommand.self,
            UntrustCommand.self, StorageCommand.self, RevokeCommand.self, HashPasswordCommand.self,
        ]
    )
}

/// Prints an error the way Caddy does and exits with status 1.
func fail(_ error: any Error) -> Never {
    let text = "Error: \(error.usherDescription)\n"
    writeFully(2, Array(text.utf8))
    Glibc.exit(1)
}

func printOut(_ text: String) {
    writeFully(1, Array((text + "\n").utf8))
}

func printErr(_ text: String) {
    writeFully(2, Array((text + "\n").utf8))
}

func writeFully(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buf in
        var off = 0
        while off < buf.count {
            let n = write(fd, buf.baseAddress! + off, buf.count - off)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return
            }
            off += n
        }
    }
}

// MARK: - Config files

/// Options naming a config file and its adapter, shared by several commands.
struct ConfigOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Configuration file.")
    var config: String?

    @Option(name: [.short, .long], help: "Name of config adapter to apply (caddyfile, json).")
    var adapter: String?
}

enum ConfigFiles {
    /// Reads and adapts a config file: the adapter is the one named, else chosen by file name (`Caddyfile`,
    /// `*.caddyfile`, in any case, use the Caddyfile adapter; anything else is JSON). With no file named, `./Caddyfile` is used
    /// if present; otherwise there is no config (`nil`).
    static func load(
        path: String?,
        adapter: String?,
        registry: ModuleRegistry,
        logger: Logger? = nil
    ) throws -> (config: JSONValue, path: String)? {
        var file = path
        var adapterName = adapter
        if file == nil {
            if access("Caddyfile", R_OK) == 0 {
                file = "Caddyfile"
                if adapterName == nil { adapterName = "caddyfile" }
                logger?.info("using adjacent Caddyfile")
            } else {
                guard adapterName == nil else {
                    throw CLIError("an adapter was given but no config file (use --config)")
                }
                return nil
            }
        }
        guard let file else { return nil }
        let bytes = try readFile(file)
        if adapterName == nil {
            // As Caddy decides: case-insensitively, a name starting with "caddyfile" or ending in ".caddyfile".
            let base = (file.split(separator: "/").last.map(String.init) ?? file).lowercased()
            if !base.hasSuffix(".json") && (base.hasPrefix("caddyfile") || base.hasSuffix(".caddyfile")) {
                adapterName = "caddyfile"
            }
        }
        if let name = adapterName, name != "json" {
            guard let a = registry.adapter(named: name) else {
                throw CLIError("unrecognized config adapter: \(name)")
            }
            let result: ConfigAdaptation
            do {
                result = try a.adapt(bytes, filename: file, registry: registry)
            } catch {
                throw CLIError("adapting config using \(name): \(error.usherDescription)")
            }
            for w in result.warnings {
                logger?.warning(
                    "\(w.message)", metadata: ["adapter": "\(name)", "file": "\(w.file)", "line": "\(w.line)"])
            }
            return (result.config, file)
        }
        do {
            return (try JSONValue.parse(bytes), file)
        } catch {
            throw CLIError("decoding config file \(file): \(error)")
        }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        do { return try readWholeFile(path, fd: path == "-" ? 0 : nil) } catch {
            if error.operation == "open" { throw CLIError("reading config file: open \(path): \(error.reason)") }
            throw CLIError("reading config file \(path): \(error.reason)")
        }
    }

    static func modificationTime(_ path: String) -> Int? {
        // In C: which module Swift credits with `struct stat` shifts with the module's other imports, and member
        // import visibility then refuses its fields.
        let ns = c_usher_mtime_ns(path)
        return ns < 0 ? nil : Int(ns)
    }

    /// Loads `KEY=VALUE` lines into the environment (`--envfile`).
    static func loadEnvFile(_ path: String) throws {
        let text = String(decoding: try readFile(path), as: UTF8.self)
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw.trimmingCharacters()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)) }
            guard let eq = line.firstIndex(of: "=") else {
                throw CLIError("\(path):\(i + 1): can't parse line: missing '='")
            }
            let key = String(line[..<eq]).trimmingCharacters()
            var value = String(line[line.index(after: eq)...]).trimmingCharacters()
            if value.count >= 2, let f = value.first, f == "\"" || f == "'", value.last == f {
                value = String(value.dropFirst().dropLast())
            } else if let hash = value.firstIndex(of: "#"), hash > value.startIndex,
                value[value.index(before: hash)] == " "
            {
                value = String(value[..<hash]).trimmingCharacters()
            }
            guard !key.isEmpty, !key.contains(" ") else { throw CLIError("\(path):\(i + 1): invalid variable name") }
            ProcessEnvironment.set(key, value)
        }
    }
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}

/// The event loops a server runs on: one per CPU this process may use.
func makeEventLoopGroup() -> MultiThreadedEventLoopGroup {
    let override = ProcessEnvironment.get("USHER_EVENT_LOOPS").flatMap(Int.init)
    return MultiThreadedEventLoopGroup(numberOfThreads: max(1, override ?? SystemInfo.usableCPUCount))
}
