import ArgumentParser
import CUsherSystem
import Dispatch
import Logging
import NIOCore
import NIOPosix
import Synchronization
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Starts the server and blocks indefinitely.",
        discussion: """
            Loads the config file given (or ./Caddyfile if present; with neither, runs with only the admin
            endpoint), then serves until stopped by a signal or the admin API's /stop.
            """
    )

    @OptionGroup var configOptions: ConfigOptions

    @Option(help: "Environment file(s) to load (KEY=VALUE lines).")
    var envfile: [String] = []

    @Flag(help: "Print the environment before starting.")
    var environ = false

    @Flag(help: "Use the last config saved by the admin API (autosave.json), if any.")
    var resume = false

    @Flag(help: "Reload the config file when it changes.")
    var watch = false

    @Option(help: "Write the process ID to this file.")
    var pidfile: String?

    @Option(help: "Where certificates and keys are kept (overrides USHER_DATA and XDG_DATA_HOME).")
    var dataDir: String?

    @Option(
        help: ArgumentHelp("Address to confirm a successful start to (used by `usher start`).", visibility: .hidden))
    var pingback: String?

    func run() async throws {
        if let dataDir { ProcessEnvironment.set("USHER_DATA", dataDir) }
        do {
            for f in envfile { try ConfigFiles.loadEnvFile(f) }
        } catch {
            fail(error)
        }
        if environ {
            for line in ProcessEnvironment.lines { printOut(line) }
        }
        let registry: ModuleRegistry
        do { registry = try CLIState.registry() } catch { fail(error) }
        let group = makeEventLoopGroup()
        let environment = RuntimeEnvironment(registry: registry, eventLoopGroup: group)
        let logger = environment.logRouter.logger("")
        let runtime = ServerRuntime(environment: environment)

        var config: JSONValue = .null
        var configPath: String?
        var resumed = false
        if resume, let saved = try? ConfigFiles.readFile(environment.paths.autosavePath),
            let json = try? JSONValue.parse(saved)
        {
            config = json
            resumed = true
            logger.info(
                "resuming from last configuration", metadata: ["autosave_file": "\(environment.paths.autosavePath)"])
        }
        if !resumed {
            do {
                if let loaded = try ConfigFiles.load(
                    path: configOptions.config, adapter: configOptions.adapter, registry: registry, logger: logger)
                {
                    config = loaded.config
                    configPath = loaded.path
                    logger.info("using config from file", metadata: ["file": "\(loaded.path)"])
                } else {
                    logger.info("no config file given; serving only the admin endpoint")
                }
            } catch {
                fail(error)
            }
        }
        // Signals are handled before anything listens, so a stop that arrives during start-up is not lost.
        let signals = SignalHandling(
            runtime: runtime, logger: logger, configPath: configPath, adapter: configOptions.adapter, registry: registry
        )
        signals.install()
        await SystemdNotifier.install(on: runtime, loop: group.next())
        do {
            try await runtime.load(config, force: true)
        } catch {
            fail(CLIError("loading initial config: \(error.usherDescription)"))
        }
        if let pidfile {
            let text = "\(getpid())\n"
            let fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 {
                writeFully(fd, Array(text.utf8))
                close(fd)
            }
        }
        if let pingback { confirmStart(pingback) }
        logger.info("serving", metadata: ["pid": "\(getpid())"])

        if watch, let configPath {
            Task {
                await watchConfig(
                    path: configPath, adapter: configOptions.adapter, registry: registry, runtime: runtime,
                    logger: logger)
            }
        }
        await runtime.waitForStop()
        if let pidfile { unlink(pidfile) }
        try? await group.shutdownGracefully()
        logger.info("shutdown complete", metadata: ["exit_code": "0"])
        Glibc.exit(0)
    }

    /// Tells `usher start` (the parent) that the config loaded.
    private func confirmStart(_ address: String) {
        guard let a = try? NetworkAddress(parsing: address) else { return }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = in_port_t(UInt16(a.startPort).bigEndian)
        inet_pton(AF_INET, a.host.isEmpty ? "127.0.0.1" : a.host, &sin.sin_addr)
        let ok = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if ok == 0 { writeFully(fd, Array("usher-started\n".utf8)) }
    }
}

/// Polls the config file once a second and reloads it when it changes, as `caddy run --watch` does.
func watchConfig(path: String, adapter: String?, registry: ModuleRegistry, runtime: ServerRuntime, logger: Logger) async
{
    var last = ConfigFiles.modificationTime(path)
    while true {
        try? await Task.sleep(for: .seconds(1))
        let now = ConfigFiles.modificationTime(path)
        guard now != last, now != nil else { continue }
        last = now
        logger.info("config file changed; reloading", metadata: ["file": "\(path)"])
        do {
            guard let loaded = try ConfigFiles.load(path: path, adapter: adapter, registry: registry, logger: logger)
            else { continue }
            try await runtime.load(loaded.config)
        } catch {
            logger.error("reloading config file", metadata: ["error": "\(error.usherDescription)"])
        }
    }
}

/// SIGINT/SIGTERM/SIGQUIT stop gracefully (a second one exits at once); SIGUSR1 reloads the config file.
///
/// `@unchecked Sendable`: `source` is written once, by `install()`, before any signal is read; it is only kept so
/// the read source stays alive.
final class SignalHandling: @unchecked Sendable {
    let runtime: ServerRuntime
    let logger: Logger
    let configPath: String?
    let adapter: String?
    let registry: ModuleRegistry
    private var source: (any DispatchSourceRead)?
    private let stopping = Mutex(false)

    init(runtime: ServerRuntime, logger: Logger, configPath: String?, adapter: String?, registry: ModuleRegistry) {
        self.runtime = runtime
        self.logger = logger
        self.configPath = configPath
        self.adapter = adapter
        self.registry = registry
    }

    func install() {
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        // A self-pipe rather than dispatch signal sources: those need the signal blocked in every thread, and
        // event-loop threads that exist already would otherwise swallow a SIGTERM sent just after start-up.
        let handled = [SIGINT, SIGTERM, SIGQUIT, SIGUSR1]
        let fd = handled.withUnsafeBufferPointer { c_usher_signal_pipe($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else {
            logger.error("cannot install signal handlers", metadata: ["error": "\(String(cString: strerror(errno)))"])
            return
        }
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: .global())
        source.setEventHandler { [self] in
            var buf = [UInt8](repeating: 0, count: 64)
            while true {
                let n = read(fd, &buf, buf.count)
                guard n > 0 else { break }
                for b in buf[0..<n] {
                    let sig = Int32(b)
                    if sig == SIGUSR1 { self.reloadFromFile() } else { self.stop(sig) }
                }
            }
        }
        source.resume()
        self.source = source
    }

    private func stop(_ sig: Int32) {
        let already = stopping.withLock { s -> Bool in
            defer { s = true }
            return s
        }
        if already {
            logger.warning("force quit", metadata: ["signal": "\(sig)"])
            Glibc.exit(1)
        }
        logger.info("shutting down", metadata: ["signal": "\(sig)"])
        Task { await runtime.stop() }
    }

    private func reloadFromFile() {
        guard let configPath else {
            logger.error("cannot reload: not started with a config file")
            return
        }
        Task {
            do {
                guard
                    let loaded = try ConfigFiles.load(
                        path: configPath, adapter: adapter, registry: registry, logger: logger)
                else { return }
                try await runtime.load(loaded.config)
            } catch {
                logger.error("reloading config after SIGUSR1", metadata: ["error": "\(error.usherDescription)"])
            }
        }
    }
}
