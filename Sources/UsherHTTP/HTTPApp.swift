import Logging
import NIOCore
import Synchronization
public import UsherCore
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// The `http` app: HTTP servers, each with listeners and routes.
///
/// A reload keeps listeners whose address stays in the config: their connections stay open and new requests on
/// them see the new routes. Listeners the new config drops stop accepting; their connections close once their
/// current response is out.
public struct HTTPApp: App, Provisioner, Validator {
    public static let moduleID: ModuleID = "http"

    /// `http_port`: the port for HTTP (used by automatic HTTPS and the Caddyfile). Default: 80.
    public var httpPort: Int
    /// `https_port`: the port for HTTPS. Default: 443.
    public var httpsPort: Int
    /// `grace_period`: how long stopping waits for in-flight requests before closing connections. Default: none
    /// (waits until they finish).
    public var gracePeriod: ConfigDuration?
    /// `shutdown_delay`: how long to keep serving after a stop is requested, before the grace period. Default: 0.
    public var shutdownDelay: ConfigDuration?
    /// `servers`: the servers, by name.
    public var servers: [String: ServerConfig]
    /// `metrics`: instrument every route with Caddy's `caddy_http_*` series. Default: off (no cost at all).
    public var metrics: HTTPMetricsConfig?

    private var runtime: HTTPAppRuntime?

    package enum CodingKeys: String, CodingKey {
        case httpPort = "http_port", httpsPort = "https_port", gracePeriod = "grace_period"
        case shutdownDelay = "shutdown_delay", servers, metrics
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        httpPort = try c.decodeIfPresent(Int.self, forKey: .httpPort) ?? 80
        httpsPort = try c.decodeIfPresent(Int.self, forKey: .httpsPort) ?? 443
        gracePeriod = try c.decodeIfPresent(ConfigDuration.self, forKey: .gracePeriod)
        shutdownDelay = try c.decodeIfPresent(ConfigDuration.self, forKey: .shutdownDelay)
        servers = try c.decodeIfPresent([String: ServerConfig].self, forKey: .servers) ?? [:]
        metrics = try c.decodeIfPresent(HTTPMetricsConfig.self, forKey: .metrics)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        let auto = AutomaticHTTPS(httpPort: httpPort, httpsPort: httpsPort)
        var tlsApp: TLSApp?
        if auto.needsTLS(servers) {
            guard let app = try await context.app("tls") as? TLSApp else {
                throw ConfigError(path: "apps.http", "HTTPS needs the tls app, which this build does not have")
            }
            tlsApp = app
        }
        // Caddy learns the hosts `per_host` may name only for the app's own `metrics`: turned on by servers alone,
        // every host counts as `_other`.
        let hostsKnown = metrics != nil
        for name in servers.keys.sorted() {
            guard let own = servers[name]!.metrics else { continue }
            // As Caddy 2.11: a server's own `metrics` still works, through the app's.
            context.logger("http.log").warning(
                "per-server 'metrics' is deprecated; use 'metrics' in the root 'http' app instead")
            var merged = metrics ?? HTTPMetricsConfig()
            merged.perHost = merged.perHost || own.perHost
            metrics = merged
        }
        if let metrics {
            context.setLoadValue(
                HTTPMetrics(config: metrics, allowedHosts: hostsKnown ? HTTPMetrics.configuredHosts(servers) : []))
        }
        defer { context.setLoadValue(nil, as: HTTPMetrics.self) }
        // Servers are provisioned before automatic HTTPS changes them, so their own errors come first.
        for name in servers.keys.sorted() {
            var server = servers[name]!
            try await server.provision(context)
            servers[name] = server
        }
        let plan = auto.apply(to: &servers, store: tlsApp?.store)
        tlsApp?.manage(plan.managedNames)
        if !plan.redirectRoutes.isEmpty {
            try await addRedirects(plan.redirectRoutes, context)
        }
        var instances: [HTTPServerInstance] = []
        let board = context.services.service(ACMEChallengeBoard.self) { ACMEChallengeBoard() }
        if context.mode == .run {
            board.httpPort = httpPort
            // The ports this config's servers hold, so that HTTP-01 never opens a listener of its own there (it
            // could win the race against the server's own bind).
            board.servedPorts = Set(
                servers.values.flatMap(\.listen).filter { !$0.isUnixNetwork && $0.portRangeSize <= 1024 }
                    .flatMap { $0.startPort...$0.endPort })
        }
        for name in servers.keys.sorted() {
            let server = servers[name]!
            var serverTLS: ServerTLS?
            if let policies = server.tlsConnectionPolicies, let tlsApp {
                let alpn = server.protocols.contains("h2") ? ["h2", "http/1.1"] : ["http/1.1"]
                serverTLS = try ServerTLS(
                    policies: policies.isEmpty ? [ConnectionPolicy()] : policies, store: tlsApp.store,
                    defaultALPN: alpn, path: "apps.http.servers.\(name).tls_connection_policies", challenges: board,
                    onDemand: tlsApp.onDemand
                )
            }
            instances.append(
                HTTPServerInstance(
                    name: name, config: server, router: context.environment.logRouter, tls: serverTLS,
                    challenges: board))
        }
        let pool = context.services.service(ListenerPool.self) { ListenerPool() }
        runtime = HTTPAppRuntime(
            instances: instances, pool: pool, group: context.eventLoopGroup,
            gracePeriod: gracePeriod, shutdownDelay: shutdownDelay,
            logger: context.logger("http")
        )
    }

    /// Serves HTTP→HTTPS redirects on the HTTP port: appended to a server already listening there, else on a
    /// server of their own (Caddy names it `remaining_auto_https_redirects`).
    private mutating func addRedirects(_ routes: [JSONValue], _ context: ProvisionContext) async throws {
        let decoder = ConfigDecoder(registry: context.registry)
        if let name = servers.keys.sorted().first(where: { n in
            servers[n]!.listen.contains { !$0.isUnixNetwork && $0.startPort <= httpPort && httpPort <= $0.endPort }
        }) {
            var extra = try decoder.decode(
                RouteList.self, from: .array(routes), path: [AnyCodingKey("apps"), AnyCodingKey("http")])
            try await extra.provision(context)
            servers[name]!.routes.routes += extra.routes
            return
        }
        let json: JSONValue = .object(["listen": .array([.string(":\(httpPort)")]), "routes": .array(routes)])
        var server = try decoder.decode(
            ServerConfig.self, from: json, path: [AnyCodingKey("apps"), AnyCodingKey("http")])
        try await server.provision(context)
        servers["remaining_auto_https_redirects"] = server
    }

    public func validate() throws {
        var seen: [String: String] = [:]
        for name in servers.keys.sorted() {
            for (i, address) in servers[name]!.listen.enumerated() {
                for a in address.expanded() {
                    let key = a.description
                    if let other = seen[key] {
                        throw ConfigError(
                            path: "apps.http.servers.\(name).listen[\(i)]",
                            "server \(name): listener address repeated: \(key) (already claimed by server '\(other)')"
                        )
                    }
                    seen[key] = name
                }
            }
        }
    }

    public func start() async throws { try await runtime?.start() }
    public func stop() async { await runtime?.stop() }

    /// The provisioned server named `name`, for tests and admin endpoints.
    public func server(named name: String) -> HTTPServerInstance? {
        runtime?.instances.first { $0.name == name }
    }
}

/// The running side of an `http` app config: which listener slots it holds.
final class HTTPAppRuntime: Sendable {
    let instances: [HTTPServerInstance]
    let pool: ListenerPool
    let group: any EventLoopGroup
    let gracePeriod: ConfigDuration?
    let shutdownDelay: ConfigDuration?
    let logger: Logger
    private let held = Mutex<[(ListenerSlot, HTTPServerInstance)]>([])

    init(
        instances: [HTTPServerInstance], pool: ListenerPool, group: any EventLoopGroup,
        gracePeriod: ConfigDuration?, shutdownDelay: ConfigDuration?, logger: Logger
    ) {
        self.instances = instances
        self.pool = pool
        self.group = group
        self.gracePeriod = gracePeriod
        self.shutdownDelay = shutdownDelay
        self.logger = logger
    }

    /// Acquires every listener first (binding new ones), and only then points them all at the new servers, so
    /// a bind failure leaves the running config untouched.
    func start() async throws {
        var acquired: [(ListenerSlot, HTTPServerInstance)] = []
        do {
            for instance in instances {
                for (i, address) in instance.listen.enumerated() {
                    for a in address.expanded() {
                        if a.isFDNetwork && a.isUDP {
                            // `fdgram/N`: an inherited UDP socket, which can only carry HTTP/3.
                            guard instance.servesHTTP3 else {
                                throw ConfigError(
                                    path: "apps.http.servers.\(instance.name).listen[\(i)]",
                                    "\(a) is a datagram socket: it serves HTTP/3 only, which needs TLS and h3 in protocols"
                                )
                            }
                            do {
                                acquired.append(
                                    (try await pool.acquireHTTP3(a, server: instance, group: group), instance))
                            } catch {
                                throw ConfigError(
                                    path: "apps.http.servers.\(instance.name).listen[\(i)]",
                                    "listening for HTTP/3 on \(a): \(describeSocketError(error))")
                            }
                            continue
                        }
                        do {
                            let slot = try await pool.acquire(a, server: instance, group: group)
                            acquired.append((slot, instance))
                        } catch {
                            throw ConfigError(
                                path: "apps.http.servers.\(instance.name).listen[\(i)]",
                                "listening on \(a): \(describeSocketError(error))")
                        }
                        // HTTP/3 beside TCP listeners on ports; an inherited TCP socket (`fd/N`) gets none (its UDP twin
                        // comes as `fdgram/N`).
                        guard instance.servesHTTP3, !a.isUnixNetwork, !a.isFDNetwork else { continue }
                        do {
                            let slot = try await pool.acquireHTTP3(a, server: instance, group: group)
                            acquired.append((slot, instance))
                        } catch {
                            throw ConfigError(
                                path: "apps.http.servers.\(instance.name).listen[\(i)]",
                                "listening for HTTP/3 on udp \(a): \(describeSocketError(error))")
                        }
                    }
                }
            }
        } catch {
            for (slot, _) in acquired { await pool.release(slot) }
            throw error
        }
        for (slot, instance) in acquired { slot.setServer(instance) }
        held.withLock { $0 = acquired }
        for instance in instances {
            logger.info(
                "server running",
                metadata: [
                    "name": "\(instance.name)",
                    "listen": "\(instance.listen.map(\.description).joined(separator: ", "))",
                ])
        }
    }

    func stop() async {
        let slots = held.withLock { h -> [(ListenerSlot, HTTPServerInstance)] in
            let s = h
            h = []
            return s
        }
        guard !slots.isEmpty else { return }
        if let d = shutdownDelay, d.nanoseconds > 0 {
            try? await Task.sleep(for: d.duration)
        }
        var closing: [ListenerSlot] = []
        for (slot, _) in slots {
            await pool.release(slot)
            if slot.isClosing { closing.append(slot) }
        }
        guard !closing.isEmpty else { return }
        let closingSlots = closing
        // Wait for in-flight requests on listeners that went away, up to the grace period.
        await withTaskGroup(of: Void.self) { group in
            for slot in closingSlots {
                group.addTask { await slot.waitForDrain() }
            }
            if let g = gracePeriod, g.nanoseconds > 0 {
                group.addTask {
                    do {
                        try await Task.sleep(for: g.duration)
                    } catch {
                        return
                    }
                    for slot in closingSlots { slot.forceClose() }
                }
                await group.next()
                for slot in closingSlots { await slot.waitForDrain() }
                group.cancelAll()
            }
        }
    }
}

/// A socket error in plain words ("address already in use"), without NIO's call-site detail.
func describeSocketError(_ error: any Error) -> String {
    if let io = error as? IOError {
        return String(cString: strerror(io.errnoCode)).lowercased()
    }
    return "\(error)"
}

/// Whether a host name could get a certificate (certmagic's `SubjectQualifiesForCert`): not empty, no leading or
/// trailing dot, wildcards only as a whole left-most label, no characters that cannot appear in a name.
func qualifiesForCertificate(_ subject: String) -> Bool {
    guard !subject.isEmpty, !subject.hasPrefix("."), !subject.hasSuffix(".") else { return false }
    if subject.contains("*") && !(subject.hasPrefix("*.") || subject == "*") { return false }
    return !subject.contains { "()[]{}<> \t\n\"\\!@#$%^&|;'+=".contains($0) }
}
