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
        subcommands: [StorageExportCommand.self, StorageImportCommand.self])
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
            let keys = (try? await storage.list("", recursive: true)) ?? []
            for key in keys {
                // Locks belong to running processes, not to what is exported.
                if key == "locks" || key.hasPrefix("locks/") { continue }
                guard let info = try? await storage.stat(key), info.isTerminal else { continue }
                guard let value = try? await storage.load(key) else { continue }
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
