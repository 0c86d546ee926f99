import ArgumentParser
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// `usher storage export|import`: Caddy's commands for moving storage contents (certificates, keys, accounts) as
/// a tar archive, e.g. from one storage module to another:
/// `usher storage export -c old.json -o - | usher storage import -c new.json -i -`.
struct StorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage", abstract: "Exports and imports the configured storage's contents as a tarball.",
        subcommands: [StorageExportCommand.self, StorageImportCommand.self, StorageBenchCommand.self])
}

/// Opens the storage that `--config` names (its top-level `storage`, else the data directory).
private func configuredStorage(_ path: String) async throws -> any Storage {
    let registry = try CLIState.registry()
    guard let loaded = try ConfigFiles.load(path: path, adapter: nil, registry: registry) else {
        throw CLIError("--config is required")
    }
    let env = RuntimeEnvironment(registry: registry, eventLoopGroup: makeEventLoopGroup())
    return try await ServerRuntime.storage(for: loaded.config, environment: env)
}

struct StorageExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Writes every key of the configured storage into a tarball.")

    @Option(name: [.short, .long], help: "Configuration file naming the storage (required).") var config: String
    @Option(name: [.short, .long], help: "Output path; - for stdout (required).") var output: String

    func run() async throws {
        do {
            let storage = try await configuredStorage(config)
            var entries: [StorageTar.Entry] = []
            // An unreachable backend fails the export: an empty archive would look like an empty storage.
            var keys: [String] = []
            do {
                keys = try await storage.list("", recursive: true)
            } catch StorageError.notFound {}
            for key in keys {
                // Locks belong to running processes, not to what is exported.
                if key == "locks" || key.hasPrefix("locks/") { continue }
                let info: StorageKeyInfo
                let value: [UInt8]
                do {
                    info = try await storage.stat(key)
                    guard info.isTerminal else { continue }
                    value = try await storage.load(key)
                } catch StorageError.notFound {
                    continue  // removed since it was listed
                }
                entries.append(StorageTar.Entry(key: key, value: value, modified: info.modified))
            }
            let tar = StorageTar.write(entries)
            if output == "-" {
                writeFully(1, tar)
            } else {
                try FileStorage.writeAtomically(output, tar, mode: 0o600)
            }
        } catch {
            fail(error)
        }
    }
}

struct StorageImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Stores every file of a tarball into the configured storage.")

    @Option(name: [.short, .long], help: "Configuration file naming the storage (required).") var config: String
    @Option(name: [.short, .long], help: "Tarball to read; - for stdin (required).") var input: String

    func run() async throws {
        do {
            let storage = try await configuredStorage(config)
            let bytes: [UInt8]
            if input == "-" {
                bytes = try readWholeFile("/dev/stdin", fd: 0)
            } else {
                do {
                    bytes = try readWholeFile(input)
                } catch {
                    throw CLIError("opening input file: \(error)")
                }
            }
            let entries: [StorageTar.Entry]
            do {
                entries = try StorageTar.read(bytes)
            } catch {
                throw CLIError("reading archive: \(error)")
            }
            for e in entries {
                guard !e.key.split(separator: "/").contains(".."), !e.key.hasPrefix("/") else {
                    throw CLIError("reading archive: key \(e.key) leaves the storage")
                }
                try await storage.store(e.key, e.value)
            }
            print("Successfully imported storage")
        } catch {
            fail(error)
        }
    }
}

/// `usher storage bench`: operations per second on the configured storage, so operators can size a shared
/// database (several of these at once model a fleet). Keys live under `bench/<run>/` and are removed after.
struct StorageBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measures load, store or lock/unlock operations per second on the configured storage.")

    @Option(name: [.short, .long], help: "Configuration file naming the storage (required).") var config: String
    @Option(help: "load, store or lock.") var op: String = "load"
    @Option(help: "Concurrent workers.") var concurrency: Int = 8
    @Option(help: "Seconds to run.") var seconds: Double = 5
    @Option(help: "Bytes per value (certificate chains are ~3000).") var size: Int = 3000
    @Option(help: "Distinct keys (or lock names) the workers share.") var keys: Int = 100

    func run() async throws {
        do {
            guard ["load", "store", "lock"].contains(op) else { throw CLIError("--op must be load, store or lock") }
            guard concurrency >= 1, seconds > 0, keys >= 1, size >= 0 else { throw CLIError("bad option value") }
            let storage = try await configuredStorage(config)
            let run = "bench/\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let value = [UInt8](repeating: 0x61, count: size)
            if op == "load" {
                for k in 0..<keys { try await storage.store("\(run)/k\(k)", value) }
            }
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            let op = self.op
            let keys = self.keys
            let counts = try await withThrowingTaskGroup(of: (Int, [Double]).self) { group in
                for w in 0..<concurrency {
                    group.addTask {
                        var n = 0
                        var latencies: [Double] = []
                        var k = w
                        while ContinuousClock.now < deadline {
                            let key = "\(run)/k\(k % keys)"
                            let start = ContinuousClock.now
                            switch op {
                            case "load": _ = try await storage.load(key)
                            case "store": try await storage.store(key, value)
                            default:
                                try await storage.lock("\(run)-l\(k % keys)")
                                try await storage.unlock("\(run)-l\(k % keys)")
                            }
                            let d = ContinuousClock.now - start
                            latencies.append(
                                Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
                            n += 1
                            k += concurrency
                        }
                        return (n, latencies)
                    }
                }
                var total = 0
                var all: [Double] = []
                for try await (n, l) in group {
                    total += n
                    all += l
                }
                return (total, all.sorted())
            }
            try? await storage.delete(run)
            let (total, latencies) = counts
            func pct(_ p: Double) -> String {
                guard !latencies.isEmpty else { return "-" }
                let i = min(latencies.count - 1, Int(Double(latencies.count) * p))
                return "\((latencies[i] * 100).rounded() / 100)"
            }
            print(
                "{\"op\": \"\(op)\", \"storage\": \"\(storage)\", \"concurrency\": \(concurrency), \"seconds\": \(seconds), "
                    + "\"operations\": \(total), \"per_second\": \((Double(total) / seconds * 10).rounded() / 10), "
                    + "\"p50_ms\": \(pct(0.5)), \"p99_ms\": \(pct(0.99))}")
        } catch {
            fail(error)
        }
    }
}
