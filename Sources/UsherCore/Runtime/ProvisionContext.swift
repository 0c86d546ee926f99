public import Logging
public import NIOCore
import Synchronization

/// An app: a top-level module under `apps` (`http`, `tls`, ...) that runs until its config is replaced.
public protocol App: Module {
    /// Starts serving. Must either fully start or leave nothing running and throw.
    func start() async throws
    /// Stops serving; in-flight work finishes within the app's grace period.
    func stop() async
    /// Called once every app of the config has started and the config is committed: work that needs the other
    /// apps serving (the `tls` app's ACME orders need the `http` app's listeners for HTTP-01). Default: nothing.
    func allAppsStarted() async
}

extension App {
    public func allAppsStarted() async {}
}

public enum Apps: ModuleNamespace {
    public static let prefix = ""
    public static let inlineKey: String? = nil
    public typealias Instance = any App
}

/// Whether a config is being loaded to run, or only checked (`usher validate`: nothing binds or opens sockets).
public enum ProvisionMode: Sendable {
    case run
    case validate
}

/// Objects that outlive one config: listener pools, connection registries. Looked up by type.
public final class SharedServices: Sendable {
    private let services = Mutex<[ObjectIdentifier: any Sendable]>([:])

    public init() {}

    /// The service of type `T`, made by `make` the first time it is asked for.
    public func service<T: AnyObject & Sendable>(_ type: T.Type, make: () -> T) -> T {
        services.withLock { s in
            if let existing = s[ObjectIdentifier(type)] as? T { return existing }
            let new = make()
            s[ObjectIdentifier(type)] = new
            return new
        }
    }
}

/// What the process runs with, across config loads.
public struct RuntimeEnvironment: Sendable {
    public let registry: ModuleRegistry
    public let eventLoopGroup: any EventLoopGroup
    public let services: SharedServices
    public let logRouter: LogRouter
    public let paths: StoragePaths

    public init(
        registry: ModuleRegistry,
        eventLoopGroup: any EventLoopGroup,
        services: SharedServices = SharedServices(),
        logRouter: LogRouter = .shared,
        paths: StoragePaths = .fromEnvironment()
    ) {
        self.registry = registry
        self.eventLoopGroup = eventLoopGroup
        self.services = services
        self.logRouter = logRouter
        self.paths = paths
    }
}

/// Handed to every module's ``Provisioner/provision(_:)``: the registry, loggers, event loops, other apps, and a
/// clean-up list that runs if loading fails or when the config is unloaded.
///
/// `@unchecked Sendable`: a context belongs to one config load, which provisions modules one after another from a
/// single task (``ServerRuntime/load(_:force:)``); it is never used by two tasks at once.
public final class ProvisionContext: @unchecked Sendable {
    public let environment: RuntimeEnvironment
    public let mode: ProvisionMode
    /// Distinguishes config generations (1, 2, ...); a reload increments it.
    public let generation: Int
    /// The config's storage (its top-level `storage`, else `file_system` in the data directory): where apps keep
    /// certificates, keys and locks unless a module names storage of its own.
    public let storage: any Storage

    var cleanups: [any CleanerUpper] = []
    private(set) var apps: [String: any App] = [:]
    private(set) var appOrder: [String] = []
    private var pendingApps: [String: Loaded<Apps>] = [:]
    private var provisioning: Set<String> = []
    private var loadValues: [ObjectIdentifier: any Sendable] = [:]

    public var registry: ModuleRegistry { environment.registry }
    public var eventLoopGroup: any EventLoopGroup { environment.eventLoopGroup }
    public var services: SharedServices { environment.services }

    init(
        environment: RuntimeEnvironment, mode: ProvisionMode, generation: Int, apps: [Loaded<Apps>],
        storage: (any Storage)? = nil
    ) {
        self.environment = environment
        self.mode = mode
        self.generation = generation
        self.storage = storage ?? FileStorage(root: environment.paths.dataDirectory)
        for app in apps { pendingApps[app.moduleID.rawValue] = app }
    }

    /// A logger named after a module or subsystem (`http.handlers.reverse_proxy`, `http.log.access`).
    public func logger(_ name: String) -> Logger { environment.logRouter.logger(name) }

    /// A logger for a module.
    public func logger(for id: ModuleID) -> Logger { logger(id.rawValue) }

    /// Shares `value` with the modules provisioned after this call in this config load, by its type (an app's
    /// settings its nested modules follow, such as the `http` app's metrics). `nil` removes it.
    public func setLoadValue<T: AnyObject & Sendable>(_ value: T?, as type: T.Type = T.self) {
        loadValues[ObjectIdentifier(type)] = value
    }

    /// The value of type `T` shared with ``setLoadValue(_:as:)`` in this config load, if any.
    public func loadValue<T: AnyObject & Sendable>(_ type: T.Type) -> T? {
        loadValues[ObjectIdentifier(type)] as? T
    }

    /// Registers something to clean up when the config is unloaded or fails to load (last registered runs first).
    public func registerCleanup(_ item: any CleanerUpper) { cleanups.append(item) }

    /// The app named `name`, provisioned on first use (an app absent from the config is created empty, as Caddy
    /// does). `nil` when the binary has no such app.
    public func app(_ name: String) async throws -> (any App)? {
        if let a = apps[name] { return a }
        guard !provisioning.contains(name) else {
            throw ConfigError(path: "apps.\(name)", "app \(name) depends on itself while provisioning")
        }
        var loaded: Loaded<Apps>
        if let pending = pendingApps.removeValue(forKey: name) {
            loaded = pending
        } else {
            guard registry.module(ModuleID(name)) != nil else { return nil }
            let decoder = StrictJSONDecoder(
                value: .object([:]), codingPath: [AnyCodingKey("apps"), AnyCodingKey(name)],
                registry: registry, ignoredKey: nil)
            loaded = try Loaded<Apps>(id: ModuleID(name), decoder: decoder)
        }
        provisioning.insert(name)
        defer { provisioning.remove(name) }
        try await loaded.provision(self)
        apps[name] = loaded.module
        appOrder.append(name)
        return loaded.module
    }

    /// Provisions every app of the config, in key order.
    func provisionAllApps() async throws {
        for name in pendingApps.keys.sorted() where apps[name] == nil {
            _ = try await app(name)
        }
    }

    /// Runs the clean-up list, newest first.
    func runCleanups() async {
        for item in cleanups.reversed() { await item.cleanup() }
        cleanups.removeAll()
    }
}

/// Directories for persistent state, following Caddy's layout under the XDG base directories.
public struct StoragePaths: Sendable {
    /// Config directory (`$XDG_CONFIG_HOME/usher`), where `autosave.json` lives.
    public var configDirectory: String
    /// Data directory (`$XDG_DATA_HOME/usher`, or `USHER_DATA`), for certificates and keys.
    public var dataDirectory: String

    public init(configDirectory: String, dataDirectory: String) {
        self.configDirectory = configDirectory
        self.dataDirectory = dataDirectory
    }

    public static func fromEnvironment() -> StoragePaths {
        let env = ProcessEnvironment.current
        let home = env["HOME"] ?? "/"
        let config = env["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.config"
        let data =
            env["USHER_DATA"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.local/share") + "/usher"
        return StoragePaths(configDirectory: config + "/usher", dataDirectory: data)
    }

    public var autosavePath: String { configDirectory + "/autosave.json" }
}
