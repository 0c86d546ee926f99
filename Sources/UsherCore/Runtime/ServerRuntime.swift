import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The running server: the current config, its apps, and the admin endpoint. Every config change goes through
/// here and is atomic: the new config is decoded, provisioned, validated and started before the old one stops;
/// if any step fails, the new config is cleaned up and the old one keeps serving.
public actor ServerRuntime {
    public nonisolated let environment: RuntimeEnvironment
    private let logger: Logger

    /// The config document as loaded (`null` before the first load).
    public private(set) var currentConfig: JSONValue = .null
    private var running: RunningConfig?
    private var admin: AdminServer?
    private var generation = 0
    private var stopRequested = false
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    /// Admin endpoints contributed by bundles, keyed by path prefix.
    private let adminEndpoints: [any AdminEndpoint]
    /// Loads and stops run one at a time: the actor is reentrant, and a stop arriving while a load awaits would
    /// otherwise find nothing to stop, after which the load would start a config nobody stops.
    private var exclusiveBusy = false
    private var exclusiveWaiters: [CheckedContinuation<Void, Never>] = []

    private func acquireExclusive() async {
        if !exclusiveBusy {
            exclusiveBusy = true
            return
        }
        // Ownership passes straight to the waiter on release.
        await withCheckedContinuation { exclusiveWaiters.append($0) }
    }

    private func releaseExclusive() {
        if exclusiveWaiters.isEmpty {
            exclusiveBusy = false
        } else {
            exclusiveWaiters.removeFirst().resume()
        }
    }

    struct RunningConfig {
        let config: UsherConfig
        let context: ProvisionContext
        let appOrder: [String]
        let apps: [String: any App]
    }

    public init(environment: RuntimeEnvironment) {
        self.environment = environment
        self.logger = environment.logRouter.logger("")
        self.adminEndpoints = environment.registry.extensions(of: (any AdminEndpoint).self)
    }

    /// The provisioned app named `name` in the running config.
    public func app(_ name: String) -> (any App)? { running?.apps[name] }

    /// What the runtime is doing, for a service manager (systemd's notify protocol).
    public enum LifecycleEvent: Sendable {
        /// A config is being loaded; `initial` for the first one.
        case loading(initial: Bool)
        /// A config is serving (generation number).
        case loaded(generation: Int)
        /// A load failed; the previous config (if any) keeps serving.
        case loadFailed(String)
        /// Stopping.
        case stopping
    }

    private var lifecycleObservers: [@Sendable (LifecycleEvent) -> Void] = []

    /// Registers a closure called, in order, as configs load (`.loaded` after each successful one) and the runtime
    /// stops.
    public func onLifecycle(_ observer: @escaping @Sendable (LifecycleEvent) -> Void) {
        lifecycleObservers.append(observer)
    }

    private func announce(_ event: LifecycleEvent) {
        for o in lifecycleObservers { o(event) }
    }

    // MARK: - Loading

    /// Replaces the running config with `json`. Unchanged config is a no-op unless `force` is set.
    public func load(_ json: JSONValue, force: Bool = false) async throws {
        _ = try await load(json, force: force, pulled: false)
    }

    /// `pulled`: `json` came from a config loader; it is not persisted, and it may name a loader only with a
    /// positive `load_delay` (as Caddy requires). Returns false when the config was unchanged.
    private func load(_ json: JSONValue, force: Bool, pulled: Bool) async throws -> Bool {
        await acquireExclusive()
        defer { releaseExclusive() }
        if stopRequested { throw ConfigError("the server is stopping") }
        // A loader whose config was replaced while it waited must not undo that replacement.
        if pulled && Task.isCancelled { return false }
        if !force && running != nil && json == currentConfig {
            logger.info("config is unchanged")
            return false
        }
        announce(.loading(initial: running == nil && generation == 0))
        do {
            try await loadUnchecked(json, pulled: pulled)
            UsherMetrics.recordConfigLoad(succeeded: true, at: WallTime.now().secondsSinceEpoch)
            announce(.loaded(generation: generation))
            return true
        } catch {
            UsherMetrics.recordConfigLoad(succeeded: false, at: WallTime.now().secondsSinceEpoch)
            announce(.loadFailed(error.usherDescription))
            throw error
        }
    }

    private func loadUnchecked(_ json: JSONValue, pulled: Bool) async throws {
        let decoded: UsherConfig
        if json.isNull {
            decoded = try ConfigDecoder(registry: environment.registry).decode(UsherConfig.self, from: .object([:]))
        } else {
            decoded = try ConfigDecoder(registry: environment.registry).decode(UsherConfig.self, from: json)
        }
        // IDs must be unique before anything is started.
        do {
            _ = try ConfigTraversal.indexIDs(json)
        } catch {
            throw ConfigError(error.message)
        }
        let sinks = try (decoded.logging ?? LoggingConfig()).makeSinks(router: environment.logRouter)

        if pulled, decoded.admin.load != nil, decoded.admin.loadDelay.nanoseconds <= 0 {
            throw ConfigError(
                path: "admin.config.load",
                "recursive config loading detected: pulled configs cannot pull other configs without positive load_delay"
            )
        }
        generation += 1
        let storage = try await Self.makeStorage(decoded, environment: environment, mode: .run)
        let context = ProvisionContext(
            environment: environment, mode: .run, generation: generation, apps: decoded.apps, storage: storage)
        var loader = decoded.admin.load
        do {
            try await loader?.provision(context)
            try await context.provisionAllApps()
        } catch {
            await context.runCleanups()
            throw error
        }

        // The admin endpoint comes up (or moves) before apps start, so a bad admin address refuses the config.
        let keepAdmin = admin != nil && admin?.config.listen == decoded.admin.listen && !decoded.admin.disabled
        var newAdmin: AdminServer?
        if !decoded.admin.disabled && !keepAdmin {
            do {
                newAdmin = try await AdminServer.start(
                    config: decoded.admin, runtime: self, environment: environment,
                    endpoints: adminEndpoints)
            } catch {
                await context.runCleanups()
                throw ConfigError(path: "admin.listen", "starting admin endpoint: \(error.usherDescription)")
            }
        }

        // The first config logs as it says from its start on (its certificates' events, say); a reload keeps
        // the running config's logs until the new one serves.
        if running == nil { environment.logRouter.replaceSinks(sinks) }
        var started: [String] = []
        do {
            for name in context.appOrder {
                try await context.apps[name]!.start()
                started.append(name)
            }
        } catch {
            for name in started.reversed() { await context.apps[name]!.stop() }
            await context.runCleanups()
            if let newAdmin { await newAdmin.stop() }
            if let e = error as? ConfigError, !e.path.isEmpty { throw e }
            throw ConfigError(
                path: "apps.\(context.appOrder[started.count])", "starting app: \(error.usherDescription)")
        }

        // Committed: the new config serves. Stop and clean up the old one.
        let old = running
        running = RunningConfig(config: decoded, context: context, appOrder: context.appOrder, apps: context.apps)
        currentConfig = json
        environment.logRouter.replaceSinks(sinks)
        for name in context.appOrder { await context.apps[name]!.allAppsStarted() }
        await (context.apps["events"] as? EventsApp)?.emit("started", origin: nil)
        if let old {
            await (old.apps["events"] as? EventsApp)?.emit("stopping", origin: nil)
            for name in old.appOrder.reversed() { await old.apps[name]!.stop() }
            await old.context.runCleanups()
        }
        if keepAdmin {
            admin?.update(decoded.admin)
        } else {
            let previous = admin
            admin = newAdmin
            if let previous { await previous.stop() }
        }
        logger.info("serving initial configuration", metadata: ["generation": "\(generation)"])
        if decoded.admin.persist && !json.isNull && !pulled { persist(json) }
        // A pulled config is loaded by the old loader's own task, which ends by itself once this returns.
        if !pulled { loaderTask?.cancel() }
        loaderTask = nil
        if let loader {
            try await startLoader(loader.module, delay: decoded.admin.loadDelay, context: context)
        }
    }

    /// The running config's `admin.config.load` poller, cancelled when another config replaces it.
    private var loaderTask: Task<Void, Never>?

    /// Fetches the config `loader` names and loads it: once now (a failed fetch fails this load, as in Caddy) when
    /// `delay` is zero, else after `delay` and again every `delay` while the fetch fails, the fetched config is
    /// unchanged, or it fails to load (the running config stays). A loaded config starts its own loader.
    private func startLoader(_ loader: any ConfigLoader, delay: ConfigDuration, context: ProvisionContext) async throws
    {
        let log = environment.logRouter.logger("config_loader")
        let id = type(of: loader).moduleID.name
        if delay.nanoseconds <= 0 {
            let fetched: JSONValue?
            do {
                fetched = try await loader.loadConfig(context)
            } catch {
                throw ConfigError(
                    path: "admin.config.load", "loading dynamic config from \(id): \(error.usherDescription)")
            }
            guard let fetched else { return }
            loaderTask = Task { [weak self] in
                guard let self else { return }
                _ = try? await self.applyLoaded(fetched, log: log, module: id)
            }
            return
        }
        loaderTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: delay.duration)
                guard !Task.isCancelled, let self else { return }
                let fetched: JSONValue?
                do {
                    fetched = try await loader.loadConfig(context)
                } catch {
                    log.error(
                        "failed loading dynamic config; will retry",
                        metadata: ["module": "\(id)", "load_delay": "\(delay)", "error": "\(error.usherDescription)"])
                    continue
                }
                guard let fetched else {
                    log.info("dynamically-loaded config was nil; will retry", metadata: ["module": "\(id)"])
                    continue
                }
                if Task.isCancelled { return }
                do {
                    if try await self.applyLoaded(fetched, log: log, module: id) { return }
                    log.info("dynamically-loaded config was unchanged; will retry", metadata: ["module": "\(id)"])
                } catch {
                    // Caddy stops polling here; a fleet is better served by trying again, and the good config
                    // keeps running meanwhile.
                    continue
                }
            }
        }
    }

    /// Loads a fetched config; true when it replaced the running one.
    private func applyLoaded(_ json: JSONValue, log: Logger, module: String) async throws -> Bool {
        log.info("applying dynamically-loaded config", metadata: ["module": "\(module)"])
        do {
            let changed = try await load(json, force: false, pulled: true)
            if changed {
                log.info("successfully applied dynamically-loaded config", metadata: ["module": "\(module)"])
            }
            return changed
        } catch {
            log.error(
                "failed to run dynamically-loaded config",
                metadata: ["module": "\(module)", "error": "\(error.usherDescription)"])
            throw error
        }
    }

    /// Decodes and provisions `json` without starting anything, then cleans up: the `usher validate` check.
    public func validate(_ json: JSONValue) async throws {
        let decoded = try ConfigDecoder(registry: environment.registry).decode(UsherConfig.self, from: json)
        _ = try (decoded.logging ?? LoggingConfig()).makeSinks(router: LogRouter())
        try await provisionForCommand(decoded) { _ in }
    }

    /// Decodes and provisions `json` without starting anything, hands the provisioned context to `body` (which
    /// reaches the apps through ``ProvisionContext/app(_:)``), then cleans up: for commands that act on what a
    /// config manages without serving it (`usher revoke`).
    public func withProvisionedApps<T: Sendable>(
        _ json: JSONValue, _ body: (ProvisionContext) async throws -> T
    ) async throws -> T {
        try await provisionForCommand(
            ConfigDecoder(registry: environment.registry).decode(UsherConfig.self, from: json), body)
    }

    /// Provisions `decoded` in validate mode, runs `body`, then cleans up.
    private func provisionForCommand<T: Sendable>(
        _ decoded: UsherConfig, _ body: (ProvisionContext) async throws -> T
    ) async throws -> T {
        let storage = try await Self.makeStorage(decoded, environment: environment, mode: .validate)
        let context = ProvisionContext(
            environment: environment, mode: .validate, generation: 0, apps: decoded.apps, storage: storage)
        defer { Task { await context.runCleanups() } }
        try await context.provisionAllApps()
        return try await body(context)
    }

    /// The storage a config document names (its top-level `storage`, else `file_system` in the data directory),
    /// for commands that work on storage without running the config (`usher storage export|import`).
    public static func storage(for json: JSONValue, environment: RuntimeEnvironment) async throws -> any Storage {
        let decoded = try ConfigDecoder(registry: environment.registry).decode(UsherConfig.self, from: json)
        return try await makeStorage(decoded, environment: environment, mode: .validate)
            ?? FileStorage(root: environment.paths.dataDirectory)
    }

    /// The config's top-level `storage`, provisioned with a context of its own (it is needed before the apps').
    private static func makeStorage(
        _ config: UsherConfig, environment: RuntimeEnvironment, mode: ProvisionMode
    ) async throws -> (any Storage)? {
        guard var loaded = config.storage else { return nil }
        let context = ProvisionContext(environment: environment, mode: mode, generation: 0, apps: [])
        try await loaded.provision(context)
        do {
            return try loaded.module.makeStorage(context)
        } catch var e as ConfigError {
            if e.path.isEmpty { e.path = loaded.configPath }
            throw e
        }
    }

    private func persist(_ json: JSONValue) {
        let dir = environment.paths.configDirectory
        makeDirectories(dir)
        let path = environment.paths.autosavePath
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            logger.error("unable to autosave config", metadata: ["file": "\(path)", "error": "\(SystemError("open"))"])
            return
        }
        writeFully(fd, json.serializedBytes(.init(indent: nil, escapeHTML: true, trailingNewline: true)))
        close(fd)
        rename(tmp, path)
        logger.debug("autosaved config", metadata: ["file": "\(path)"])
    }

    // MARK: - Config API

    /// Applies an admin API change at `path` (`/config/...`) and loads the result; GET returns the value found.
    public func configAccess(
        method: ConfigTraversal.Method,
        path: String,
        body: JSONValue?,
        ifMatch: String? = nil,
        force: Bool = false
    ) async throws -> JSONValue? {
        var root: JSONValue = .object(["config": currentConfig])
        if method == .get {
            return try ConfigTraversal.access(&root, method: .get, path: path, body: nil)
        }
        if let ifMatch {
            let parts =
                ifMatch.count >= 2 && ifMatch.hasPrefix("\"") && ifMatch.hasSuffix("\"")
                ? ifMatch.dropFirst().dropLast().split(separator: " ") : []
            guard parts.count == 2 else {
                throw AdminError(400, "malformed If-Match header; expect format \"<path> <hash>\"")
            }
            var copy = root
            let current = try ConfigTraversal.access(&copy, method: .get, path: String(parts[0]), body: nil) ?? .null
            guard ConfigTraversal.hash(current) == parts[1] else {
                throw AdminError(412, "If-Match header did not match current config hash")
            }
        }
        _ = try ConfigTraversal.access(&root, method: method, path: path, body: body)
        try await load(root["config"] ?? .null, force: force)
        return nil
    }

    /// Resolves `/id/<id>/rest` to a `/config/...` path.
    public func pathForID(_ idPath: String) throws -> String {
        let trimmed = idPath.drop { $0 == "/" }
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let id = parts.first, !id.isEmpty else { throw AdminError(400, "missing ID in path") }
        let index = try ConfigTraversal.indexIDs(currentConfig)
        guard let base = index[String(id)] else { throw AdminError(404, "unknown object ID '\(id)'") }
        return parts.count > 1 ? base + "/" + parts[1] : base
    }

    // MARK: - Stopping

    /// Stops every app and the admin endpoint; ``waitForStop()`` returns afterwards.
    public func stop() async {
        await acquireExclusive()
        defer { releaseExclusive() }
        if !stopRequested { announce(.stopping) }
        loaderTask?.cancel()
        loaderTask = nil
        if let running {
            await (running.apps["events"] as? EventsApp)?.emit("stopping", origin: nil)
            for name in running.appOrder.reversed() { await running.apps[name]!.stop() }
            await running.context.runCleanups()
        }
        running = nil
        if let admin { await admin.stop() }
        admin = nil
        stopRequested = true
        for w in stopWaiters { w.resume() }
        stopWaiters.removeAll()
    }

    /// Returns once ``stop()`` has completed.
    public func waitForStop() async {
        if stopRequested { return }
        await withCheckedContinuation { stopWaiters.append($0) }
    }

    /// The address the admin endpoint listens on, if it runs.
    public func adminAddress() -> String? { admin?.boundAddress }
}

func makeDirectories(_ path: String) {
    var current = ""
    for part in path.split(separator: "/") {
        current += "/" + part
        mkdir(current, 0o700)
    }
}
