import NIOCore
public import UsherCore
public import UsherTLS

/// A source of trusted proxy ranges (`http.ip_sources.*`, inline key `source`).
public protocol IPRangeSource: Module {
    func ranges(for request: Request) -> [IPPrefix]
}

public enum IPSources: ModuleNamespace {
    public static let prefix = "http.ip_sources"
    public static let inlineKey: String? = "source"
    public typealias Instance = any IPRangeSource
}

/// `http.ip_sources.static`: a fixed list of CIDR ranges or addresses.
public struct StaticIPRanges: IPRangeSource {
    public static let moduleID: ModuleID = "http.ip_sources.static"
    /// `ranges`: CIDR ranges or single addresses (`private_ranges` is expanded by the Caddyfile adapter).
    public var ranges: [IPPrefix]

    enum CodingKeys: String, CodingKey { case ranges }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let texts = try c.decodeIfPresent([String].self, forKey: .ranges) ?? []
        ranges = try texts.enumerated().map { i, t in
            guard let p = IPPrefix(t) else {
                throw ConfigError(path: c.error(.ranges, "").path + "[\(i)]", "invalid IP address or CIDR range '\(t)'")
            }
            return p
        }
    }

    public func ranges(for request: Request) -> [IPPrefix] { ranges }
}

/// `logs` of a server: which requests get access log entries, and under which logger names.
public struct ServerLogConfig: Decodable, Sendable {
    /// `default_logger_name`: the logger (`http.log.access.<name>`) for hosts not in `logger_names`.
    public var defaultLoggerName: String
    /// `logger_names`: per host (wildcards allowed), the logger names to use.
    public var loggerNames: [String: [String]]
    /// `skip_hosts`: hosts whose requests are not logged.
    public var skipHosts: [String]
    /// `skip_unmapped_hosts`: log only hosts in `logger_names`. Default: false.
    public var skipUnmappedHosts: Bool
    /// `should_log_credentials`: log `Cookie`, `Authorization` and similar headers unredacted. Default: false.
    public var shouldLogCredentials: Bool
    /// `trace`: log each handler as it runs, at debug level. Default: false.
    public var trace: Bool

    package enum CodingKeys: String, CodingKey {
        case defaultLoggerName = "default_logger_name", loggerNames = "logger_names", skipHosts = "skip_hosts"
        case skipUnmappedHosts = "skip_unmapped_hosts", shouldLogCredentials = "should_log_credentials", trace
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        defaultLoggerName = try c.decodeIfPresent(String.self, forKey: .defaultLoggerName) ?? ""
        // Caddy accepts a string or a list of strings per host.
        var names: [String: [String]] = [:]
        if c.contains(.loggerNames) {
            let raw = try c.decode([String: JSONValue].self, forKey: .loggerNames)
            for (host, v) in raw {
                switch v {
                case .string(let s): names[host] = [s]
                case .array(let a): names[host] = a.compactMap(\.stringValue)
                default: throw c.error(.loggerNames, "logger names for \(host) must be a string or a list of strings")
                }
            }
        }
        loggerNames = names
        skipHosts = try c.decodeIfPresent([String].self, forKey: .skipHosts) ?? []
        skipUnmappedHosts = try c.decodeIfPresent(Bool.self, forKey: .skipUnmappedHosts) ?? false
        shouldLogCredentials = try c.decodeIfPresent(Bool.self, forKey: .shouldLogCredentials) ?? false
        trace = try c.decodeIfPresent(Bool.self, forKey: .trace) ?? false
    }

    /// The access logger names for a host (Caddy's `getLoggerHosts`).
    func loggerNames(forHost host: String) -> [String] {
        if let n = loggerNames[host] { return n }
        var labels = host.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        for i in labels.indices where !labels[i].isEmpty {
            labels[i] = "*"
            if let n = loggerNames[labels.joined(separator: ".")] { return n }
        }
        return [defaultLoggerName]
    }

    /// Caddy's `shouldLogRequest`: hosts match names and skipped hosts as certmagic's `MatchWildcard` matches.
    func shouldLog(host: String) -> Bool {
        for name in loggerNames.keys where matchWildcard(host, name) { return true }
        for h in skipHosts where matchWildcard(host, h) { return false }
        return !skipUnmappedHosts
    }
}

/// `automatic_https` of a server.
public struct AutoHTTPSConfig: Decodable, Sendable {
    /// `disable`: no automatic HTTPS at all for this server.
    public var disable: Bool
    /// `disable_redirects`: no HTTP→HTTPS redirects.
    public var disableRedirects: Bool
    /// `disable_certificates`: turn on TLS but obtain no certificates.
    public var disableCertificates: Bool
    /// `skip`: hosts left out of automatic HTTPS entirely.
    public var skip: [String]
    /// `skip_certificates`: hosts that get redirects but no certificate.
    public var skipCertificates: [String]
    /// `ignore_loaded_certificates`: obtain certificates even for names a loaded certificate covers.
    public var ignoreLoadedCertificates: Bool

    package enum CodingKeys: String, CodingKey {
        case disable, skip
        case disableRedirects = "disable_redirects", disableCertificates = "disable_certificates"
        case skipCertificates = "skip_certificates", ignoreLoadedCertificates = "ignore_loaded_certificates"
        case preferWildcard = "prefer_wildcard"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.preferWildcard])
        disable = try c.decodeIfPresent(Bool.self, forKey: .disable) ?? false
        disableRedirects = try c.decodeIfPresent(Bool.self, forKey: .disableRedirects) ?? false
        disableCertificates = try c.decodeIfPresent(Bool.self, forKey: .disableCertificates) ?? false
        skip = try c.decodeIfPresent([String].self, forKey: .skip) ?? []
        skipCertificates = try c.decodeIfPresent([String].self, forKey: .skipCertificates) ?? []
        ignoreLoadedCertificates = try c.decodeIfPresent(Bool.self, forKey: .ignoreLoadedCertificates) ?? false
    }
}

/// One HTTP server of the `http` app: where it listens and how it answers.
public struct ServerConfig: Decodable, Sendable {
    /// `listen`: network addresses (`:8080`, `127.0.0.1:8080`, `[::1]:8080`, `:8000-8003`, `unix//path`).
    public var listen: [NetworkAddress]
    /// `routes`: the handler chain.
    public var routes: RouteList
    /// `errors`: routes that handle errors from `routes`.
    public var errors: HTTPErrorConfig?
    /// `named_routes`: routes invoked by name (`http.handlers.invoke`).
    public var namedRoutes: [String: Route]
    /// `read_timeout`: longest time to read a request, body included. Default: none.
    public var readTimeout: ConfigDuration?
    /// `read_header_timeout`: longest time to read a request's head. Default: `1m`.
    public var readHeaderTimeout: ConfigDuration?
    /// `read_idle_timeout`: longest stall while reading a body. Default: `1m`.
    public var readIdleTimeout: ConfigDuration?
    /// `write_timeout`: longest time from the request head to the end of the response. Default: none.
    public var writeTimeout: ConfigDuration?
    /// `write_idle_timeout`: longest stall while writing a response. Default: `1m`.
    public var writeIdleTimeout: ConfigDuration?
    /// `idle_timeout`: how long a keep-alive connection may wait for its next request. Default: `5m`.
    public var idleTimeout: ConfigDuration?
    /// `keepalive_interval`, `keepalive_idle`, `keepalive_count`: TCP keep-alive probes. Default: off.
    public var keepAliveInterval: ConfigDuration?
    public var keepAliveIdle: ConfigDuration?
    public var keepAliveCount: Int?
    /// `max_header_bytes`: largest request head accepted; larger ones get 431. Default: 16384.
    public var maxHeaderBytes: Int
    /// `trusted_proxies`: ranges whose client-IP headers are believed.
    public var trustedProxies: Loaded<IPSources>?
    /// `client_ip_headers`: headers naming the client's IP. Default: `X-Forwarded-For`.
    public var clientIPHeaders: [String]
    /// `trusted_proxies_strict`: read client-IP headers right to left, skipping trusted proxies. Default: 0 (off).
    public var trustedProxiesStrict: Int
    /// `trusted_proxies_unix`: trust requests over unix sockets. Default: false.
    public var trustedProxiesUnix: Bool
    /// `logs`: access logging; absent means no access logs.
    public var logs: ServerLogConfig?
    /// `protocols`: `h1`, `h2`, `h2c`, `h3`. Default: `h1 h2 h3` (on cleartext listeners only `h1` applies).
    public var protocols: [String]
    /// `automatic_https`.
    public var automaticHTTPS: AutoHTTPSConfig?
    /// `enable_full_duplex`: read the request body while writing the response (always the case here).
    public var enableFullDuplex: Bool
    /// `tls_connection_policies`: how TLS handshakes go; present (even empty) means the server speaks TLS.
    public var tlsConnectionPolicies: [ConnectionPolicy]?
    /// `enable_webtransport`: HTTP/3 connections offer WebTransport (Extended CONNECT, HTTP/3 datagrams and the
    /// WebTransport SETTINGS of drafts 02 to 15), for handlers that accept sessions such as `reverse_proxy`.
    /// Default: false (the HTTP/3 wire stays plain, and WebTransport CONNECTs are refused with 501).
    public var enableWebTransport: Bool
    /// `listener_wrappers`: `proxy_protocol`, `http_redirect` and the `tls` placeholder, in order.
    var listenerPlan = ListenerPlan()
    /// `metrics` (deprecated in Caddy): turns on the `http` app's `metrics`, `per_host` if any server asks for it,
    /// with Caddy's deprecation warning.
    public var metrics: HTTPMetricsConfig?
    /// `strict_sni_host`: refuse (421) requests whose Host differs from the TLS server name. Default: on when a
    /// policy authenticates clients, as in Caddy (a client certificate checked for one name must not reach another).
    public var strictSNIHost: Bool?

    package enum CodingKeys: String, CodingKey {
        case listen, routes, errors
        case namedRoutes = "named_routes"
        case readTimeout = "read_timeout", readHeaderTimeout = "read_header_timeout"
        case readIdleTimeout = "read_idle_timeout", writeTimeout = "write_timeout"
        case writeIdleTimeout = "write_idle_timeout", idleTimeout = "idle_timeout"
        case keepAliveInterval = "keepalive_interval", keepAliveIdle = "keepalive_idle", keepAliveCount =
            "keepalive_count"
        case maxHeaderBytes = "max_header_bytes"
        case trustedProxies = "trusted_proxies", clientIPHeaders = "client_ip_headers"
        case trustedProxiesStrict = "trusted_proxies_strict", trustedProxiesUnix = "trusted_proxies_unix"
        case logs, protocols
        case automaticHTTPS = "automatic_https"
        case enableFullDuplex = "enable_full_duplex"
        // Refused until implemented.
        case listenerWrappers = "listener_wrappers", packetConnWrappers = "packet_conn_wrappers"
        case readMinRate = "read_min_rate", writeMinRate = "write_min_rate", maxWriteChunk = "max_write_chunk"
        case expectedUnderscoreHeaders = "expected_underscore_headers", expectedDotHeaders = "expected_dot_headers"
        case tlsConnectionPolicies = "tls_connection_policies", strictSNIHost = "strict_sni_host"
        case listenProtocols = "listen_protocols", allow0RTT = "allow_0rtt", metrics
        case enableWebTransport = "enable_webtransport"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([
            .packetConnWrappers, .readMinRate, .writeMinRate, .maxWriteChunk,
            .expectedUnderscoreHeaders, .expectedDotHeaders,
            .listenProtocols, .allow0RTT,
        ])
        let listenTexts = try c.decodeIfPresent([String].self, forKey: .listen) ?? []
        listen = try listenTexts.enumerated().map { i, text in
            do {
                let a = try NetworkAddress(parsing: text, defaultPort: 0)
                // `fdgram/N` (an inherited UDP socket, for HTTP/3) is the one datagram listener a server takes.
                if a.isUDP && !a.isFDNetwork {
                    throw AddressError(
                        "HTTP servers listen on stream sockets, not \(a.network) (HTTP/3 takes the TCP port's UDP twin, or fdgram/N)"
                    )
                }
                if !a.isUnixNetwork && !a.isFDNetwork && a.startPort == 0 && !text.hasSuffix(":0") {
                    throw AddressError("missing port in address \"\(text)\"")
                }
                return a
            } catch {
                throw ConfigError(path: c.error(.listen, "").path + "[\(i)]", "\(error)")
            }
        }
        routes = try c.decodeIfPresent(RouteList.self, forKey: .routes) ?? RouteList()
        errors = try c.decodeIfPresent(HTTPErrorConfig.self, forKey: .errors)
        namedRoutes = try c.decodeIfPresent([String: Route].self, forKey: .namedRoutes) ?? [:]
        readTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readTimeout)
        readHeaderTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readHeaderTimeout)
        readIdleTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readIdleTimeout)
        writeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeTimeout)
        writeIdleTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeIdleTimeout)
        idleTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout)
        keepAliveInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .keepAliveInterval)
        keepAliveIdle = try c.decodeIfPresent(ConfigDuration.self, forKey: .keepAliveIdle)
        keepAliveCount = try c.decodeIfPresent(Int.self, forKey: .keepAliveCount)
        maxHeaderBytes = try c.decodeIfPresent(Int.self, forKey: .maxHeaderBytes) ?? 0
        if maxHeaderBytes <= 0 { maxHeaderBytes = 16 * 1024 }
        trustedProxies = try c.decodeIfPresent(Loaded<IPSources>.self, forKey: .trustedProxies)
        clientIPHeaders = try c.decodeIfPresent([String].self, forKey: .clientIPHeaders) ?? ["X-Forwarded-For"]
        trustedProxiesStrict = try c.decodeIfPresent(Int.self, forKey: .trustedProxiesStrict) ?? 0
        trustedProxiesUnix = try c.decodeIfPresent(Bool.self, forKey: .trustedProxiesUnix) ?? false
        logs = try c.decodeIfPresent(ServerLogConfig.self, forKey: .logs)
        protocols = try c.decodeIfPresent([String].self, forKey: .protocols) ?? ["h1", "h2", "h3"]
        for (i, p) in protocols.enumerated() {
            switch p {
            case "h1", "h2", "h2c", "h3": break
            default:
                throw ConfigError(
                    path: c.error(.protocols, "").path + "[\(i)]", "unknown protocol \"\(p)\": use h1, h2, h2c or h3")
            }
        }
        tlsConnectionPolicies = try c.decodeIfPresent([ConnectionPolicy].self, forKey: .tlsConnectionPolicies)
        strictSNIHost = try c.decodeIfPresent(Bool.self, forKey: .strictSNIHost)
        automaticHTTPS = try c.decodeIfPresent(AutoHTTPSConfig.self, forKey: .automaticHTTPS)
        if tlsConnectionPolicies == nil && !protocols.contains("h1") && !protocols.contains("h2c") {
            throw c.error(.protocols, "a server without TLS must speak h1 or h2c")
        }
        enableFullDuplex = try c.decodeIfPresent(Bool.self, forKey: .enableFullDuplex) ?? false
        enableWebTransport = try c.decodeIfPresent(Bool.self, forKey: .enableWebTransport) ?? false
        metrics = try c.decodeIfPresent(HTTPMetricsConfig.self, forKey: .metrics)
        let wrappers = try c.decodeIfPresent([Loaded<ListenerWrappers>].self, forKey: .listenerWrappers) ?? []
        listenerPlan = try ListenerPlan(wrappers, path: c.error(.listenerWrappers, "").path)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await routes.provision(context)
        try await errors?.routes.provision(context)
        for name in namedRoutes.keys.sorted() {
            var r = namedRoutes[name]!
            try await r.provision(context)
            namedRoutes[name] = r
        }
        try await trustedProxies?.provision(context)
        if var policies = tlsConnectionPolicies {
            for i in policies.indices { try await policies[i].provision(context) }
            tlsConnectionPolicies = policies
        }
    }

    /// Whether connections to this server speak TLS.
    public var usesTLS: Bool { tlsConnectionPolicies != nil }

    var connectionSettings: ConnectionSettings {
        var s = ConnectionSettings()
        s.maxHeaderBytes = maxHeaderBytes
        s.webTransport = enableWebTransport
        s.listenerPlan = listenerPlan
        s.readTimeout = Self.timeout(readTimeout, default: nil)
        s.readHeaderTimeout = Self.timeout(readHeaderTimeout, default: .minutes(1))
        s.readIdleTimeout = Self.timeout(readIdleTimeout, default: .minutes(1))
        s.writeTimeout = Self.timeout(writeTimeout, default: nil)
        s.writeIdleTimeout = Self.timeout(writeIdleTimeout, default: .minutes(1))
        s.idleTimeout = Self.timeout(idleTimeout, default: .minutes(5))
        if let interval = keepAliveInterval, interval.nanoseconds > 0 {
            let idle = keepAliveIdle ?? interval
            s.tcpKeepAlive = (Int(max(1, interval.seconds)), Int(max(1, idle.seconds)), keepAliveCount ?? 9)
        }
        return s
    }
}

extension ServerConfig {
    /// Unset or zero means the default, as in Caddy; a negative duration means no limit.
    static func timeout(_ d: ConfigDuration?, default def: TimeAmount?) -> TimeAmount? {
        guard let d, d.nanoseconds != 0 else { return def }
        return d.nanoseconds > 0 ? .nanoseconds(d.nanoseconds) : nil
    }
}
