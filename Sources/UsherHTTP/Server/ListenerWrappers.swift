import NIOCore
public import UsherCore

/// A module in `caddy.listeners` (inline key `wrapper`): something a server does with each accepted connection
/// before HTTP reads it, in the order `listener_wrappers` lists them.
public protocol ListenerWrapperModule: Module {
    /// What the wrapper does to a connection's first bytes; `nil` for the `tls` placeholder.
    var prelude: PreludeStep? { get }
}

public enum ListenerWrappers: ModuleNamespace {
    public static let prefix = "caddy.listeners"
    public static let inlineKey: String? = "wrapper"
    public typealias Instance = any ListenerWrapperModule
}

/// One step of a connection's prelude: read a PROXY protocol header, or answer plain HTTP on a TLS port.
public enum PreludeStep: Sendable {
    case proxyProtocol(ProxyProtocolListenerWrapper)
    case httpRedirect(maxHeaderBytes: Int)
}

/// `caddy.listeners.tls`: marks where in `listener_wrappers` TLS is terminated; wrappers before it see the raw
/// connection. Without it every wrapper comes after TLS, as in Caddy.
public struct TLSListenerWrapper: ListenerWrapperModule {
    public static let moduleID: ModuleID = "caddy.listeners.tls"
    public init(from decoder: any Decoder) throws {}
    public var prelude: PreludeStep? { nil }
}

/// `caddy.listeners.http_redirect`: on a TLS port, a connection that starts with a plain HTTP request gets a
/// `308` to the same URL with `https://`, and is closed.
public struct HTTPRedirectListenerWrapper: ListenerWrapperModule {
    public static let moduleID: ModuleID = "caddy.listeners.http_redirect"
    /// `max_header_bytes`: the most bytes read of the plain request. Default: 1 MiB.
    public var maxHeaderBytes: Int

    enum CodingKeys: String, CodingKey { case maxHeaderBytes = "max_header_bytes" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxHeaderBytes = try c.decodeIfPresent(Int.self, forKey: .maxHeaderBytes) ?? 0
        if maxHeaderBytes <= 0 { maxHeaderBytes = 1 << 20 }
    }

    public var prelude: PreludeStep? { .httpRedirect(maxHeaderBytes: maxHeaderBytes) }
}

/// `caddy.listeners.proxy_protocol`: reads the PROXY protocol header (v1 or v2) a load balancer puts before the
/// connection's bytes, and takes the client's address from it, for the peers it trusts.
public struct ProxyProtocolListenerWrapper: ListenerWrapperModule {
    public static let moduleID: ModuleID = "caddy.listeners.proxy_protocol"

    /// What to do with a connection's header (go-proxyproto's policies).
    public enum Policy: String, Sendable {
        /// Take the address from the header when there is one.
        case use = "USE"
        /// Read and drop a header; keep the connection's own address.
        case ignore = "IGNORE"
        /// Close connections that send a header.
        case reject = "REJECT"
        /// Close connections that send none.
        case require = "REQUIRE"
        /// Do not look for a header.
        case skip = "SKIP"
    }

    /// `timeout`: how long to wait for the header; after it the connection goes on without one (or, under
    /// `REQUIRE`, is closed). Default: 10s.
    public var timeout: ConfigDuration
    /// `allow`: peers (CIDR ranges) whose headers are used.
    public var allow: [IPPrefix]
    /// `deny`: peers whose connections are refused.
    public var deny: [IPPrefix]
    /// `fallback_policy`: the policy for peers in neither list: `IGNORE` (the default), `USE`, `REJECT`,
    /// `REQUIRE` or `SKIP`.
    public var fallbackPolicy: Policy

    enum CodingKeys: String, CodingKey { case timeout, allow, deny, fallbackPolicy = "fallback_policy" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        timeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .timeout) ?? .zero
        func prefixes(_ key: CodingKeys) throws -> [IPPrefix] {
            try (c.decodeIfPresent([String].self, forKey: key) ?? []).enumerated().map { i, text in
                guard let p = IPPrefix(text), text.contains("/") else {
                    throw ConfigError(
                        path: c.error(key, "").path + "[\(i)]", "netip.ParsePrefix(\(Go.quote(text))): invalid prefix")
                }
                return p
            }
        }
        allow = try prefixes(.allow)
        deny = try prefixes(.deny)
        let name = try c.decodeIfPresent(String.self, forKey: .fallbackPolicy) ?? "IGNORE"
        guard let p = Policy(rawValue: name.uppercased()) else {
            throw c.error(.fallbackPolicy, "\(name) is invalid policy")
        }
        fallbackPolicy = p
    }

    public var prelude: PreludeStep? { .proxyProtocol(self) }

    /// The policy for a connection from `peer` (Caddy's: deny wins, then allow, then the fallback; Unix sockets
    /// always use the header).
    func policy(for peer: SocketAddress?) -> Policy {
        guard let peer else { return .use }
        if case .unixDomainSocket = peer { return .use }
        guard let ip = peer.ip else { return .reject }
        if deny.contains(where: { $0.contains(ip) }) { return .reject }
        if allow.contains(where: { $0.contains(ip) }) { return .use }
        return fallbackPolicy
    }

    var headerTimeout: TimeAmount? {
        timeout.nanoseconds > 0 ? .nanoseconds(timeout.nanoseconds) : (timeout.nanoseconds < 0 ? nil : .seconds(10))
    }
}

/// The steps a server's connections go through before TLS and after it, from `listener_wrappers`.
struct ListenerPlan: Sendable {
    var beforeTLS: [PreludeStep] = []
    var afterTLS: [PreludeStep] = []

    init() {}

    /// Caddy's rules: `tls` may appear once and not first (first is the default); without it, every wrapper
    /// comes after TLS.
    init(_ wrappers: [Loaded<ListenerWrappers>], path: String) throws {
        var sawTLS = false
        for (i, w) in wrappers.enumerated() {
            guard let step = w.module.prelude else {
                if i == 0 {
                    throw ConfigError(
                        path: path + "[0]",
                        "it is unnecessary to specify the TLS listener wrapper in the first position because that is the default"
                    )
                }
                if sawTLS {
                    throw ConfigError(path: path + "[\(i)]", "TLS listener wrapper can only be specified once")
                }
                sawTLS = true
                continue
            }
            if sawTLS { afterTLS.append(step) } else { beforeTLS.append(step) }
        }
        if !sawTLS {
            afterTLS = beforeTLS
            beforeTLS = []
        }
    }

    var isEmpty: Bool { beforeTLS.isEmpty && afterTLS.isEmpty }

    /// The steps for a connection, raw: on a server without TLS every wrapper sees the plain bytes.
    func raw(tls: Bool) -> [PreludeStep] { tls ? beforeTLS : beforeTLS + afterTLS }
}
