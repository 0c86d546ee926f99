public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
public import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// Transports to upstreams (`http.reverse_proxy.transport.*`, inline key `protocol`).
public protocol ProxyTransport: Module {}

public enum ProxyTransports: ModuleNamespace {
    public static let prefix = "http.reverse_proxy.transport"
    public static let inlineKey: String? = "protocol"
    public typealias Instance = any ProxyTransport
}

/// `http.reverse_proxy.transport.http`: HTTP/1.1 to upstreams, in cleartext or TLS, with pooled keep-alive
/// connections.
public struct HTTPTransport: ProxyTransport, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.transport.http"
    /// `dial_timeout`: longest wait for a connection. Default: 3s.
    public var dialTimeout: ConfigDuration?
    /// `response_header_timeout`: longest wait for the response head after the request is sent. Default: none.
    public var responseHeaderTimeout: ConfigDuration?
    /// `keepalive.enabled`: reuse connections. Default: true.
    public var keepAlive: Bool
    /// `keepalive.max_idle_conns_per_host`: idle connections kept per upstream (and event loop). Default: 32.
    public var maxIdlePerHost: Int
    /// `keepalive.idle_timeout`: how long an idle connection is kept. Default: 2m.
    public var idleTimeout: ConfigDuration?
    /// `tls`: speak TLS to upstreams.
    public var tls: UpstreamTLS?
    /// `resolver`: nameservers for upstream host names (else the system resolver).
    public var resolver: UpstreamResolver?
    /// `read_timeout`: longest wait for the next bytes from an upstream (head or body). Default: none.
    public var readTimeout: ConfigDuration?
    /// `write_timeout`: longest wait for an upstream to take more of the request. Default: none.
    public var writeTimeout: ConfigDuration?
    /// `max_conns_per_host`: most HTTP/1.1 connections open to one upstream (dialling, busy or idle); requests
    /// beyond wait for one to close. Default: 0 (no limit).
    public var maxConnsPerHost = 0
    /// `proxy_protocol`: `v1` or `v2` to send a PROXY header naming the client first. Connections are then pooled
    /// per client connection, as in Caddy.
    public var proxyProtocol: String?
    /// `local_address`: the IP address connections to upstreams come from.
    public var localAddress: SocketAddress?
    /// `versions`: HTTP versions to speak: `1.1`, `2` (over TLS, by ALPN), `h2c` (HTTP/2 in cleartext, prior
    /// knowledge). Default: `["1.1", "2"]` (so cleartext upstreams get HTTP/1.1).
    public var versions: [String] = ["1.1", "2"]
    /// Set when these are the pool settings of the `fastcgi` transport: connections then speak FastCGI.
    var fastCGI: FastCGITransport?
    /// Built from `tls` when provisioned: ALPN by `versions`, and one offering only HTTP/1.1 for upgrades.
    var tlsContext: NIOSSLContext?
    var tlsContextHTTP1: NIOSSLContext?

    enum CodingKeys: String, CodingKey {
        case dialTimeout = "dial_timeout", responseHeaderTimeout = "response_header_timeout", keepalive = "keep_alive",
            versions
        case readBuffer = "read_buffer_size", writeBuffer = "write_buffer_size", maxResponseHeaderSize =
            "max_response_header_size"
        case tls, compression, proxyProtocol = "proxy_protocol", localAddress = "local_address", resolver
        case maxConnsPerHost = "max_conns_per_host", expectContinueTimeout = "expect_continue_timeout"
        case dialFallbackDelay = "dial_fallback_delay", forwardProxyURL = "forward_proxy_url", networkProxy =
            "network_proxy"
        case readTimeout = "read_timeout", writeTimeout = "write_timeout"
    }

    enum KeepAliveKeys: String, CodingKey {
        case enabled, probeInterval = "probe_interval", maxIdleConns = "max_idle_conns"
        case maxIdleConnsPerHost = "max_idle_conns_per_host", idleTimeout = "idle_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.forwardProxyURL, .networkProxy])
        resolver = try c.decodeIfPresent(UpstreamResolver.self, forKey: .resolver)
        readTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readTimeout)
        writeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeTimeout)
        dialTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout)
        tls = try c.decodeIfPresent(UpstreamTLS.self, forKey: .tls)
        maxConnsPerHost = try c.decodeIfPresent(Int.self, forKey: .maxConnsPerHost) ?? 0
        proxyProtocol = try c.decodeIfPresent(String.self, forKey: .proxyProtocol)
        if proxyProtocol == "" { proxyProtocol = nil }
        if let v = proxyProtocol, v != "v1" && v != "v2" {
            throw c.error(.proxyProtocol, "proxy_protocol must be v1 or v2, not \(v)")
        }
        if let local = try c.decodeIfPresent(String.self, forKey: .localAddress), !local.isEmpty {
            guard let a = try? SocketAddress(ipAddress: local, port: 0) else {
                throw c.error(.localAddress, "not an IP address: \(local)")
            }
            localAddress = a
        }
        responseHeaderTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .responseHeaderTimeout)
        versions = try c.decodeIfPresent([String].self, forKey: .versions) ?? ["1.1", "2"]
        for v in versions where !["1.1", "2", "h2c", "3"].contains(v) {
            throw c.error(.versions, "unsupported HTTP version \(v) (1.1, 2, h2c and 3 are)")
        }
        if versions.isEmpty { throw c.error(.versions, "no HTTP versions listed") }
        // As in Caddy: HTTP/3 to an upstream is all or nothing, and needs TLS.
        if versions.contains("3") && versions.count > 1 {
            throw c.error(.versions, "if HTTP/3 is enabled to the upstream, no other HTTP versions are supported")
        }
        // Buffer sizes and the other tuning knobs of Go's transport have no equivalent to set here.
        _ = try c.decodeIfPresent(Int.self, forKey: .readBuffer)
        _ = try c.decodeIfPresent(Int.self, forKey: .writeBuffer)
        _ = try c.decodeIfPresent(Int.self, forKey: .maxResponseHeaderSize)
        _ = try c.decodeIfPresent(Bool.self, forKey: .compression)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .expectContinueTimeout)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialFallbackDelay)
        keepAlive = true
        maxIdlePerHost = 32
        if c.contains(.keepalive) {
            let k = try c.nestedContainer(keyedBy: KeepAliveKeys.self, forKey: .keepalive)
            keepAlive = try k.decodeIfPresent(Bool.self, forKey: .enabled) ?? true
            _ = try k.decodeIfPresent(ConfigDuration.self, forKey: .probeInterval)
            _ = try k.decodeIfPresent(Int.self, forKey: .maxIdleConns)
            maxIdlePerHost = try k.decodeIfPresent(Int.self, forKey: .maxIdleConnsPerHost) ?? 32
            idleTimeout = try k.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout)
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        if versions == ["3"] && tls == nil {
            throw ConfigError("versions [\"3\"] needs tls: HTTP/3 runs over QUIC, which is always encrypted")
        }
        try await tls?.provision(context)
        var alpn: [String] = []
        if versions.contains("2") { alpn.append("h2") }
        if versions.contains("1.1") { alpn.append("http/1.1") }
        tlsContext = try tls?.makeContext(alpn: alpn)
        tlsContextHTTP1 = try tls?.makeContext(alpn: ["http/1.1"])
    }

    /// Whether a connection to `port` speaks TLS (`tls` set and the port not in `except_ports`).
    func usesTLS(port: Int) -> Bool {
        guard let tls, tlsContext != nil else { return false }
        return !tls.exceptPorts.contains(String(port))
    }

    /// Gives a new connection (or HTTP/2 stream) the transport's read and write timeouts.
    func applyTimeouts(_ c: UpstreamConnection) {
        c.readTimeout = readTimeout.flatMap { $0.nanoseconds > 0 ? .nanoseconds($0.nanoseconds) : nil }
        c.writeTimeout = writeTimeout.flatMap { $0.nanoseconds > 0 ? .nanoseconds($0.nanoseconds) : nil }
    }

    /// Whether HTTP/2 is offered: by ALPN over TLS (`2` listed), or with prior knowledge in cleartext (`h2c`).
    func offersHTTP2(toTLS tls: Bool) -> Bool {
        tls ? versions.contains("2") : versions.contains("h2c")
    }

    /// The defaults, for a handler without `transport`.
    init() {
        keepAlive = true
        maxIdlePerHost = 32
    }
}

/// Why an upstream exchange failed, and whether another upstream may be tried.
struct UpstreamError: Error, CustomStringConvertible {
    let description: String
    /// Nothing was sent that the upstream could have acted on (a dial failure), so trying another is safe.
    let retryable: Bool
    /// The failure was a timeout (the client gets 504 rather than 502).
    var timedOut = false
}
