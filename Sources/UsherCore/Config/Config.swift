/// The whole config document, in Caddy's schema: `admin`, `logging` and `apps`.
public struct UsherConfig: Decodable, Sendable {
    /// `admin`: the admin endpoint.
    public var admin: AdminConfig
    /// `logging`: where logs go.
    public var logging: LoggingConfig?
    /// `apps`: the apps to run, keyed by module ID (`http`, `tls`, ...).
    public var apps: [Loaded<Apps>]
    /// `storage`: where certificates, keys and locks are kept (a `caddy.storage` module). Default: `file_system`
    /// in the data directory.
    public var storage: Loaded<StorageModules>?

    package enum CodingKeys: String, CodingKey { case admin, logging, apps, storage }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        admin = try c.decodeIfPresent(AdminConfig.self, forKey: .admin) ?? AdminConfig()
        logging = try c.decodeIfPresent(LoggingConfig.self, forKey: .logging)
        apps = try c.decodeIfPresent(LoadedMap<Apps>.self, forKey: .apps)?.entries ?? []
        storage = try c.decodeIfPresent(Loaded<StorageModules>.self, forKey: .storage)
    }
}

/// The `admin` config: where the admin API listens and whom it answers.
public struct AdminConfig: Decodable, Sendable {
    /// `disabled`: turns the admin endpoint off. Default: false.
    public var disabled: Bool
    /// `listen`: the address to listen on. Default: `localhost:2019` (or `USHER_ADMIN`).
    public var listen: String
    /// `enforce_origin`: require an allowed `Origin` on every request. Default: false.
    public var enforceOrigin: Bool
    /// `origins`: hosts (or origins with a scheme) allowed in `Host` and `Origin`. Default: the listen address
    /// (for loopback: `localhost`, `127.0.0.1` and `::1` with its port).
    public var origins: [String]?
    /// `config.persist`: save each loaded config to `autosave.json` for `run --resume`. Default: true.
    public var persist: Bool
    /// `config.load`: a `caddy.config_loaders` module that fetches the config to run (e.g. `http`), so a fleet
    /// takes its config from one place. Default: none.
    public var load: Loaded<ConfigLoaderModules>?
    /// `config.load_delay`: wait this long before fetching, and fetch again this often while the fetched config is
    /// unchanged or cannot be fetched or loaded (polling). Zero fetches once, right after this config is running.
    public var loadDelay: ConfigDuration = .zero

    public static let defaultListen = "localhost:2019"

    package enum CodingKeys: String, CodingKey {
        case disabled, listen, origins, config, identity, remote
        case enforceOrigin = "enforce_origin"
    }

    package enum SettingsKeys: String, CodingKey { case persist, load, loadDelay = "load_delay" }

    public init() {
        disabled = false
        listen = ProcessEnvironment.get("USHER_ADMIN").flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultListen
        enforceOrigin = false
        origins = nil
        persist = true
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.identity, .remote])
        disabled = try c.decodeIfPresent(Bool.self, forKey: .disabled) ?? false
        if let l = try c.decodeIfPresent(String.self, forKey: .listen), !l.isEmpty {
            do {
                _ = try NetworkAddress(parsing: l, defaultPort: 2019)
            } catch {
                throw c.error(.listen, "\(error)")
            }
            listen = l
        }
        enforceOrigin = try c.decodeIfPresent(Bool.self, forKey: .enforceOrigin) ?? false
        origins = try c.decodeIfPresent([String].self, forKey: .origins)
        if c.contains(.config) {
            let s = try c.nestedContainer(keyedBy: SettingsKeys.self, forKey: .config)
            persist = try s.decodeIfPresent(Bool.self, forKey: .persist) ?? true
            load = try s.decodeIfPresent(Loaded<ConfigLoaderModules>.self, forKey: .load)
            loadDelay = try s.decodeIfPresent(ConfigDuration.self, forKey: .loadDelay) ?? .zero
        }
    }

    /// The parsed listen address.
    public var listenAddress: NetworkAddress {
        (try? NetworkAddress(parsing: listen, defaultPort: 2019))
            ?? NetworkAddress(network: "tcp", host: "localhost", startPort: 2019, endPort: 2019)
    }
}

/// A module under `caddy.config_loaders` (`admin.config.load`): it fetches the config document to run.
public protocol ConfigLoader: Module {
    /// The config document, as JSON (adapted if it came in another format). `nil`: nothing to load this time.
    func loadConfig(_ context: ProvisionContext) async throws -> JSONValue?
}

public enum ConfigLoaderModules: ModuleNamespace {
    public static let prefix = "caddy.config_loaders"
    public static let inlineKey: String? = "module"
    public typealias Instance = any ConfigLoader
}
