import ArgumentParser
import NIOCore
import NIOPosix
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Starts the server in the background and returns once its config has loaded."
    )

    @OptionGroup var configOptions: ConfigOptions
    @Option(help: "Environment file(s) to load.") var envfile: [String] = []
    @Flag(help: "Reload the config file when it changes.") var watch = false
    @Option(help: "Write the process ID to this file.") var pidfile: String?

    func run() async throws {
        // Listen for the child's confirmation on a loopback port.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { fail(CLIError("socket: \(String(cString: strerror(errno)))")) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) }
        }
        listen(listener, 1)
        _ = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) }
        }
        let port = Int(UInt16(bigEndian: sin.sin_port))

        var args = ["run", "--pingback", "127.0.0.1:\(port)"]
        if let c = configOptions.config { args += ["--config", c] }
        if let a = configOptions.adapter { args += ["--adapter", a] }
        for e in envfile { args += ["--envfile", e] }
        if watch { args.append("--watch") }
        if let pidfile { args += ["--pidfile", pidfile] }
        let pid = try spawnSelf(args)

        // Wait for the pingback, or for the child to exit with an error.
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
        while true {
            let rc = poll(&fds, 1, 200)
            if rc > 0 {
                let conn = accept(listener, nil, nil)
                var buf = [UInt8](repeating: 0, count: 64)
                let n = conn >= 0 ? read(conn, &buf, buf.count) : 0
                if conn >= 0 { close(conn) }
                if n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("usher-started") {
                    printErr("Successfully started Usher (pid=\(pid)) - Usher is running in the background")
                    close(listener)
                    Glibc.exit(0)
                }
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                fail(CLIError("usher process exited with error: exit status \((status >> 8) & 0xFF)"))
            }
        }
    }

    private func spawnSelf(_ args: [String]) throws -> pid_t {
        var exe = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &exe, exe.count - 1)
        guard n > 0 else { throw CLIError("locating own executable") }
        let path = String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The background server must not hold on to descriptors this process inherited (a caller's pipes, say).
        if let dir = opendir("/proc/self/fd") {
            var fds: [Int32] = []
            while let ent = readdir(dir) {
                let name = withUnsafeBytes(of: ent.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if let fd = Int32(name), fd > 2 { fds.append(fd) }
            }
            closedir(dir)
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        // 0x80 is POSIX_SPAWN_SETSID, which Glibc does not export to Swift: the server gets its own session.
        posix_spawnattr_setflags(&attr, Int16(0x80))
        defer { posix_spawnattr_destroy(&attr) }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, nil, &attr, argv, environ)
        guard rc == 0 else { throw CLIError("starting usher process: \(String(cString: strerror(rc)))") }
        return pid
    }
}

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Gracefully stops a running server via its admin API.")

    @OptionGroup var configOptions: ConfigOptions
    @Option(help: "The address of the admin API.") var address: String?

    func run() async throws {
        do {
            let registry = try CLIState.registry()
            let config =
                configOptions.config != nil
                ? try ConfigFiles.load(path: configOptions.config, adapter: configOptions.adapter, registry: registry)?
                    .config : nil
            let addr = AdminClient.address(flag: address, config: config)
            let r = try AdminClient.request(address: addr, method: "POST", path: "/stop")
            guard r.status == 200 else { throw CLIError("stopping: \(AdminClient.errorMessage(r))") }
        } catch {
            fail(error)
        }
    }
}

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Gives a running server a new config via its admin API (POST /load)."
    )

    @OptionGroup var configOptions: ConfigOptions
    @Option(help: "The address of the admin API.") var address: String?
    @Flag(help: "Reload even if the config is unchanged.") var force = false

    func run() async throws {
        do {
            let registry = try CLIState.registry()
            guard
                let loaded = try ConfigFiles.load(
                    path: configOptions.config, adapter: configOptions.adapter, registry: registry)
            else {
                throw CLIError("no config file to load (use --config)")
            }
            let addr = AdminClient.address(flag: address, config: loaded.config)
            var headers = [("Content-Type", "application/json")]
            if force { headers.append(("Cache-Control", "must-revalidate")) }
            let r = try AdminClient.request(
                address: addr, method: "POST", path: "/load", headers: headers, body: loaded.config.serializedBytes())
            guard r.status == 200 else {
                throw CLIError("sending configuration to instance: \(AdminClient.errorMessage(r))")
            }
        } catch {
            fail(error)
        }
    }
}

struct AdaptCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapt", abstract: "Adapts a config file to JSON and prints it.")

    @OptionGroup var configOptions: ConfigOptions
    @Flag(help: "Format the output for humans.") var pretty = false
    @Flag(help: "Also check the resulting config.") var validate = false

    func run() async throws {
        do {
            let registry = try CLIState.registry()
            guard let file = configOptions.config ?? (access("Caddyfile", R_OK) == 0 ? "Caddyfile" : nil) else {
                throw CLIError(
                    "input file required when there is no Caddyfile in current directory (use --config flag)")
            }
            let adapterName = configOptions.adapter ?? "caddyfile"
            guard let adapter = registry.adapter(named: adapterName) else {
                if adapterName == "json" {
                    let json = try JSONValue.parse(ConfigFiles.readFile(file))
                    printOut(json.serialized(pretty ? .pretty : .compact))
                    return
                }
                throw CLIError("unrecognized config adapter: \(adapterName)")
            }
            let result: ConfigAdaptation
            do {
                result = try adapter.adapt(try ConfigFiles.readFile(file), filename: file, registry: registry)
            } catch {
                throw CLIError(error.usherDescription)
            }
            for w in result.warnings { printErr("WARN\t\(w)") }
            if validate {
                let group = makeEventLoopGroup()
                let runtime = ServerRuntime(environment: RuntimeEnvironment(registry: registry, eventLoopGroup: group))
                do {
                    try await runtime.validate(result.config)
                } catch {
                    throw CLIError("validation: \(error.usherDescription)")
                }
            }
            printOut(result.config.serialized(pretty ? .pretty : .compact))
        } catch {
            fail(error)
        }
    }
}

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Loads and provisions a config without running it, reporting any error."
    )

    @OptionGroup var configOptions: ConfigOptions
    @Option(help: "Environment file(s) to load.") var envfile: [String] = []

    func run() async throws {
        do {
            for f in envfile { try ConfigFiles.loadEnvFile(f) }
            let registry = try CLIState.registry()
            guard
                let loaded = try ConfigFiles.load(
                    path: configOptions.config, adapter: configOptions.adapter, registry: registry)
            else {
                throw CLIError("no config file to validate (use --config)")
            }
            let group = makeEventLoopGroup()
            let runtime = ServerRuntime(environment: RuntimeEnvironment(registry: registry, eventLoopGroup: group))
            try await runtime.validate(loaded.config)
            printErr("Valid configuration")
        } catch {
            fail(error)
        }
    }
}

struct ListModulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-modules", abstract: "Lists the modules in this binary.")

    @Flag(help: "Print the bundle (package) of each module.") var packages = false
    @Flag(help: "Print the version of each module's bundle.") var versions = false
    @Flag(help: "Leave out the standard modules.") var skipStandard = false
    @Flag(help: "Print JSON.") var json = false

    static let standardBundles: Set<String> = ["usher/core", "usher/standard"]

    func run() async throws {
        let registry: ModuleRegistry
        do { registry = try CLIState.registry() } catch { fail(error) }
        let all = registry.all
        let standard = all.filter { Self.standardBundles.contains($0.bundleName) }
        let nonstandard = all.filter { !Self.standardBundles.contains($0.bundleName) }
        if json {
            var out: [JSONValue] = []
            func add(_ list: [RegisteredModule], _ type: String) {
                for m in list {
                    out.append([
                        "module_name": .string(m.id.rawValue), "module_type": .string(type),
                        "version": .string(m.bundleVersion), "package_url": .string(m.bundleName),
                    ])
                }
            }
            if !skipStandard { add(standard, "standard") }
            add(nonstandard, "non-standard")
            printOut(JSONValue.array(out).serialized(.init(indent: "  ")))
            return
        }
        func line(_ m: RegisteredModule) -> String {
            var s = m.id.rawValue
            if versions { s += " " + m.bundleVersion }
            if packages { s += " " + m.bundleName }
            return s
        }
        if !skipStandard {
            for m in standard { printOut(line(m)) }
            printOut("\n  Standard modules: \(standard.count)")
        }
        if !nonstandard.isEmpty {
            if !standard.isEmpty && !skipStandard { printOut("") }
            for m in nonstandard { printOut(line(m)) }
            printOut("\n  Non-standard modules: \(nonstandard.count)")
        }
    }
}

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Prints the version.")
    func run() async throws { printOut("v\(UsherVersion.current)") }
}

struct EnvironCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "environ", abstract: "Prints the environment.")
    @Option(help: "Environment file(s) to load first.") var envfile: [String] = []
    func run() async throws {
        do {
            for f in envfile { try ConfigFiles.loadEnvFile(f) }
        } catch {
            fail(error)
        }
        for line in ProcessEnvironment.lines { printOut(line) }
    }
}

struct RespondCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "respond",
        abstract: "Quickly serves a fixed response, for development and testing.",
        discussion: "Body and header values may use placeholders, e.g. {http.request.uri.path}."
    )

    @Option(name: [.short, .long], help: "The status code.") var status = 200
    @Option(name: [.short, .long], help: "A header to set, \"Field: value\" (repeatable).") var header: [String] = []
    @Option(name: [.short, .long], help: "The body (or give it as the argument).") var body: String?
    @Option(name: [.short, .long], help: "The address to listen on.") var listen = "localhost:0"
    @Flag(help: "Log each request.") var accessLog = false
    @Flag(help: "Log at debug level.") var debug = false
    @Argument(help: "The body.") var bodyArgument: String?

    func run() async throws {
        let registry: ModuleRegistry
        do { registry = try CLIState.registry() } catch { fail(error) }
        var listenAddress = listen
        // Port 0 would pick an unknown port; choose a free one so it can be printed.
        if listenAddress.hasSuffix(":0") { listenAddress = String(listenAddress.dropLast(2)) + ":\(freePort())" }
        var headers = JSONObject()
        for h in header {
            guard let colon = h.firstIndex(of: ":") else { fail(CLIError("header '\(h)' must be \"Field: value\"")) }
            let name = String(h[..<colon]).trimmingCharacters()
            let value = String(h[h.index(after: colon)...]).trimmingCharacters()
            var values = headers[name]?.arrayValue ?? []
            values.append(.string(value))
            headers[name] = .array(values)
        }
        var handler: JSONObject = ["handler": "static_response", "status_code": .number(JSONNumber(status))]
        if let b = body ?? bodyArgument { handler["body"] = .string(b) }
        if !headers.isEmpty { handler["headers"] = .object(headers) }
        var server: JSONObject = ["listen": [.string(listenAddress)], "routes": [["handle": [.object(handler)]]]]
        if accessLog { server["logs"] = .object([:]) }
        var config: JSONObject = ["apps": ["http": ["servers": ["static": .object(server)]]]]
        config["admin"] = ["disabled": true]
        if debug { config["logging"] = ["logs": ["default": ["level": "DEBUG"]]] }

        let group = makeEventLoopGroup()
        let runtime = ServerRuntime(environment: RuntimeEnvironment(registry: registry, eventLoopGroup: group))
        do {
            try await runtime.load(.object(config), force: true)
        } catch {
            fail(error)
        }
        printErr("Server address: \(listenAddress)")
        let signals = SignalHandling(
            runtime: runtime, logger: runtime.environment.logRouter.logger(""), configPath: nil, adapter: nil,
            registry: registry)
        signals.install()
        await runtime.waitForStop()
        Glibc.exit(0)
    }

    private func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: sin.sin_port))
    }
}
