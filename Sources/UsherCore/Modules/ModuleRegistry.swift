/// One registered module: its type and the bundle that registered it.
public struct RegisteredModule: Sendable {
    public let id: ModuleID
    public let type: any Module.Type
    public let bundleName: String
    public let bundleVersion: String
}

/// An error in the set of bundles a binary was built with.
public struct ModuleRegistryError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// Every module a binary knows, keyed by ID. Built once at start-up from the binary's bundles and passed down
/// (in ``ProvisionContext`` and the config decoder); never a global.
public final class ModuleRegistry: Sendable {
    private let byID: [ModuleID: RegisteredModule]
    /// Bundle extensions in registration order.
    public let extensions: [any BundleExtension]
    /// The bundles, in the order given.
    public let bundles: [(name: String, version: String)]

    /// IDs no module may take.
    public static let reservedIDs: Set<ModuleID> = ["caddy", "admin", "usher"]

    /// Registers every module of `bundles`; refuses a malformed, reserved or duplicate ID, naming both registrants.
    public init(bundles: [any ModuleBundle.Type]) throws {
        var byID: [ModuleID: RegisteredModule] = [:]
        var extensions: [any BundleExtension] = []
        for bundle in bundles {
            for type in bundle.modules {
                let id = type.moduleID
                guard id.isWellFormed else {
                    throw ModuleRegistryError(
                        description: "module ID \"\(id)\" of \(type) in bundle \(bundle.name) is malformed: "
                            + "use dotted lowercase snake_case labels"
                    )
                }
                guard !Self.reservedIDs.contains(id) else {
                    throw ModuleRegistryError(
                        description: "module ID \(id) of \(type) in bundle \(bundle.name) is reserved")
                }
                if let existing = byID[id] {
                    throw ModuleRegistryError(
                        description: "module \(id) is registered twice: by \(existing.type) in bundle "
                            + "\(existing.bundleName) and by \(type) in bundle \(bundle.name)"
                    )
                }
                byID[id] = RegisteredModule(id: id, type: type, bundleName: bundle.name, bundleVersion: bundle.version)
            }
            extensions.append(contentsOf: bundle.extensions)
        }
        self.byID = byID
        self.extensions = extensions
        self.bundles = bundles.map { (name: $0.name, version: $0.version) }
    }

    public func module(_ id: ModuleID) -> RegisteredModule? { byID[id] }

    /// Every registered module, sorted by ID.
    public var all: [RegisteredModule] { byID.values.sorted { $0.id < $1.id } }

    /// The modules directly in `namespace` (not in nested namespaces), sorted by ID.
    public func modules(in namespace: String) -> [RegisteredModule] {
        all.filter { $0.id.namespace == namespace }
    }

    /// The extensions of one kind, in registration order.
    public func extensions<E>(of type: E.Type) -> [E] {
        extensions.compactMap { $0 as? E }
    }

    /// The error for an ID that is not registered: Caddy modules this build lacks are named as such.
    public func unavailableError(_ id: ModuleID, path: String) -> ConfigError {
        var error: ConfigError
        if KnownCaddyModules.ids.contains(id.rawValue) {
            error = ConfigError(path: path, "module \(id) is not available in this build")
        } else {
            let siblings = modules(in: id.namespace).map(\.id.name)
            var message = "unknown module \(id)"
            if !siblings.isEmpty {
                message +=
                    " (known in \(id.namespace.isEmpty ? "apps" : id.namespace): \(siblings.joined(separator: ", ")))"
            }
            error = ConfigError(path: path, message)
        }
        error.sealed = true
        return error
    }
}

/// Module IDs of Caddy's standard distribution, so that a config using one we lack gets a precise refusal.
enum KnownCaddyModules {
    static let ids: Set<String> = [
        "http", "tls", "pki", "events", "caddy.filesystems",
        "http.handlers.acme_server", "http.handlers.authentication", "http.handlers.copy_response",
        "http.handlers.copy_response_headers", "http.handlers.encode", "http.handlers.error",
        "http.handlers.file_server", "http.handlers.headers", "http.handlers.intercept", "http.handlers.invoke",
        "http.handlers.log_append", "http.handlers.map", "http.handlers.metrics", "http.handlers.push",
        "http.handlers.request_body", "http.handlers.reverse_proxy", "http.handlers.rewrite",
        "http.handlers.static_response", "http.handlers.subroute", "http.handlers.templates",
        "http.handlers.timeouts", "http.handlers.tracing", "http.handlers.vars",
        "http.matchers.client_ip", "http.matchers.expression", "http.matchers.file", "http.matchers.header",
        "http.matchers.header_regexp", "http.matchers.host", "http.matchers.method", "http.matchers.not",
        "http.matchers.path", "http.matchers.path_regexp", "http.matchers.protocol", "http.matchers.query",
        "http.matchers.remote_ip", "http.matchers.tls", "http.matchers.vars", "http.matchers.vars_regexp",
        "http.matchers.url_pattern",
        "http.reverse_proxy.transport.http", "http.reverse_proxy.transport.fastcgi",
        "http.reverse_proxy.selection_policies.random", "http.reverse_proxy.selection_policies.round_robin",
        "http.reverse_proxy.selection_policies.least_conn", "http.reverse_proxy.selection_policies.first",
        "http.reverse_proxy.selection_policies.ip_hash", "http.reverse_proxy.selection_policies.client_ip_hash",
        "http.reverse_proxy.selection_policies.cookie", "http.reverse_proxy.selection_policies.weighted_round_robin",
        "http.reverse_proxy.selection_policies.uri_hash", "http.reverse_proxy.selection_policies.header",
        "http.reverse_proxy.selection_policies.query", "http.reverse_proxy.selection_policies.random_choose",
        "http.reverse_proxy.upstreams.a", "http.reverse_proxy.upstreams.srv", "http.reverse_proxy.upstreams.multi",
        "http.encoders.gzip", "http.encoders.zstd", "http.precompressed.br", "http.precompressed.gzip",
        "http.precompressed.zstd", "http.authentication.providers.http_basic",
        "http.authentication.hashes.bcrypt", "http.authentication.hashes.argon2id", "http.ip_sources.static",
        "tls.certificates.automate", "tls.issuance.acme", "tls.issuance.zerossl", "tls.issuance.internal",
        "tls.permission.http", "tls.certificates.load_files", "tls.certificates.load_folders",
        "tls.certificates.load_pem", "tls.certificates.load_storage", "tls.handshake_match.sni",
        "tls.handshake_match.sni_regexp", "tls.handshake_match.remote_ip", "tls.handshake_match.local_ip",
        "tls.get_certificate.http", "tls.get_certificate.tailscale", "tls.client_auth.verifier.leaf",
        "tls.stek.standard", "tls.stek.distributed", "tls.ech.publishers.dns",
        "tls.ca_pool.source.file", "tls.ca_pool.source.inline", "tls.ca_pool.source.system",
        "tls.ca_pool.source.storage", "tls.ca_pool.source.http", "tls.ca_pool.source.pki_root",
        "tls.ca_pool.source.pki_intermediate", "tls.ca_pool.source.combined",
        "tls.leaf_cert_loader.file", "tls.leaf_cert_loader.folder", "tls.leaf_cert_loader.pem",
        "tls.leaf_cert_loader.storage",
        "caddy.logging.encoders.json", "caddy.logging.encoders.console", "caddy.logging.encoders.filter",
        "caddy.logging.encoders.append", "caddy.logging.encoders.journald",
        "caddy.logging.encoders.filter.delete", "caddy.logging.encoders.filter.ip_mask",
        "caddy.logging.encoders.filter.query", "caddy.logging.encoders.filter.cookie",
        "caddy.logging.encoders.filter.replace", "caddy.logging.encoders.filter.hash",
        "caddy.logging.encoders.filter.regexp", "caddy.logging.encoders.filter.multi_regexp",
        "caddy.logging.encoders.filter.rename", "caddy.logging.encoders.filter.set_cookie",
        "caddy.logging.writers.file", "caddy.logging.writers.stdout", "caddy.logging.writers.stderr",
        "caddy.logging.writers.net", "caddy.logging.writers.discard",
        "caddy.storage.file_system", "caddy.listeners.tls", "caddy.listeners.proxy_protocol",
        "caddy.listeners.http_redirect", "caddy.config_loaders.http", "caddy.network_proxy.none",
        "caddy.network_proxy.url",
    ]
}
