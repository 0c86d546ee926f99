import Synchronization
import UsherACME
public import UsherCore

/// The ACME challenges this process is presenting right now, for the servers that answer them: HTTP-01 key
/// authorizations by token (served by the `http` app ahead of routes) and TLS-ALPN-01 certificates by name (served
/// in handshakes offering `acme-tls/1`). Process-wide (a shared service), so a challenge started under one config
/// is still answered while a reload swaps servers.
public final class ACMEChallengeBoard: Sendable {
    private struct HTTPChallenge {
        var host: String
        var keyAuthorization: String
    }
    private let http01 = Mutex<[String: HTTPChallenge]>([:])
    private let httpCount = Atomic<Int>(0)
    private let tlsALPN = Mutex<[String: TLSCertificate]>([:])
    private let tlsALPNCount = Atomic<Int>(0)
    private let httpPortValue = Atomic<Int>(80)
    private let served = Mutex<Set<Int>>([])
    private let lookup = Mutex<DistributedLookup?>(nil)
    private let hasLookup = Atomic<Bool>(false)

    /// Loads the challenge another instance sharing this storage stored for an identifier (certmagic's
    /// `challenge_tokens/<name>.json`), or nil.
    public typealias DistributedLookup = @Sendable (_ identifier: String) async -> [UInt8]?

    static let httpPrefix = "/.well-known/acme-challenge/"

    public init() {}

    /// The `http` app's `http_port`: where HTTP-01 is answered unless an issuer names an `alternate_port`.
    public var httpPort: Int {
        get { httpPortValue.load(ordering: .relaxed) }
        set { httpPortValue.store(newValue, ordering: .relaxed) }
    }

    /// Whether any HTTP-01 challenge is being presented: one atomic load, so servers pay nothing otherwise.
    public var hasHTTPChallenges: Bool { httpCount.load(ordering: .relaxed) > 0 }

    /// The TCP ports the `http` app's servers listen on (set when a config is loaded): HTTP-01 opens no listener of
    /// its own on them.
    public var servedPorts: Set<Int> {
        get { served.withLock { $0 } }
        set { served.withLock { $0 = newValue } }
    }

    /// Where challenges other instances started are looked up (set by the `tls` app for its storage and issuers).
    public func setDistributedLookup(_ f: DistributedLookup?) {
        lookup.withLock { $0 = f }
        hasLookup.store(f != nil, ordering: .relaxed)
    }

    /// Whether a request for `path` may be an HTTP-01 check this process can answer: one or two atomic loads and a
    /// prefix check, so every request can ask.
    public func mayAnswerHTTP(path: String) -> Bool {
        (hasHTTPChallenges || hasLookup.load(ordering: .relaxed)) && path.hasPrefix(Self.httpPrefix)
    }

    /// The key authorization for a GET of `path` on `host`: from this process's own challenges, else (distributed
    /// solving) from a challenge another instance sharing the storage started. `distributed` says which.
    public func httpAnswer(host: String, path: String) async -> (keyAuthorization: String, distributed: Bool)? {
        if let local = localHTTPAnswer(host: host, path: path) { return (local, false) }
        guard path.hasPrefix(Self.httpPrefix), let lookup = lookup.withLock({ $0 }),
            let bytes = await lookup(host.lowercased()), let info = try? JSONValue.parse(bytes).objectValue,
            info["type"]?.stringValue == "http-01",
            info["token"]?.stringValue == String(path.dropFirst(Self.httpPrefix.count)),
            info["identifier"]?.objectValue?["value"]?.stringValue?.lowercased() == host.lowercased(),
            let keyAuthorization = info["keyAuthorization"]?.stringValue
        else { return nil }
        return (keyAuthorization, true)
    }

    /// Presents `keyAuthorization` at `/.well-known/acme-challenge/<token>` for requests to `host`.
    public func presentHTTP(token: String, host: String, keyAuthorization: String) {
        http01.withLock {
            $0[token] = HTTPChallenge(host: host.lowercased(), keyAuthorization: keyAuthorization)
            httpCount.store($0.count, ordering: .relaxed)
        }
    }

    /// Stops presenting the HTTP-01 challenge with `token`.
    public func withdrawHTTP(token: String) {
        http01.withLock {
            $0[token] = nil
            httpCount.store($0.count, ordering: .relaxed)
        }
    }

    /// The key authorization to serve for a GET of `path` on `host`, if a challenge is presented there. The host
    /// must be the identifier being validated (certmagic's check against DNS rebinding).
    public func localHTTPAnswer(host: String, path: String) -> String? {
        guard path.hasPrefix(Self.httpPrefix) else { return nil }
        let token = String(path.dropFirst(Self.httpPrefix.count))
        return http01.withLock { board in
            guard let c = board[token], c.host == host.lowercased() else { return nil }
            return c.keyAuthorization
        }
    }

    /// Presents `certificate` to handshakes for `name` that offer only `acme-tls/1`.
    public func presentTLSALPN(name: String, certificate: TLSCertificate) {
        tlsALPN.withLock {
            $0[name.lowercased()] = certificate
            tlsALPNCount.store($0.count, ordering: .relaxed)
        }
    }

    /// Stops presenting the TLS-ALPN-01 certificate for `name`.
    public func withdrawTLSALPN(name: String) {
        tlsALPN.withLock {
            $0[name.lowercased()] = nil
            tlsALPNCount.store($0.count, ordering: .relaxed)
        }
    }

    /// The challenge certificate for a handshake naming `serverName` and offering `alpn`, if one is presented.
    public func tlsALPNCertificate(serverName: String?, alpn: [String]) -> TLSCertificate? {
        guard tlsALPNCount.load(ordering: .relaxed) > 0, alpn.contains(Self.acmeTLS1), let serverName else {
            return nil
        }
        return tlsALPN.withLock { $0[serverName.lowercased()] }
    }

    /// Whether a handshake for `serverName` offering `alpn` may be a TLS-ALPN-01 validation of a challenge another
    /// instance sharing the storage started: `acme-tls/1` offered, no local certificate, a lookup set.
    public func mayAnswerTLSALPNFromStorage(serverName: String?, alpn: [String]) -> Bool {
        guard let serverName, alpn.contains(Self.acmeTLS1), hasLookup.load(ordering: .relaxed) else { return false }
        return tlsALPNCertificate(serverName: serverName, alpn: alpn) == nil
    }

    /// The TLS-ALPN-01 certificate for a challenge another instance sharing the storage started for `serverName`
    /// (built from the key authorization it stored), or nil.
    public func distributedTLSALPNCertificate(serverName: String) async -> TLSCertificate? {
        let name = serverName.lowercased()
        guard let lookup = lookup.withLock({ $0 }), let bytes = await lookup(name),
            let info = try? JSONValue.parse(bytes).objectValue, info["type"]?.stringValue == "tls-alpn-01",
            let id = info["identifier"]?.objectValue, id["value"]?.stringValue?.lowercased() == name,
            let keyAuthorization = info["keyAuthorization"]?.stringValue
        else { return nil }
        return try? ACMEIssuer.tlsALPNCertificate(
            ACMEIdentifier(type: id["type"]?.stringValue ?? "dns", value: name), keyAuthorization)
    }

    /// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
    public static let acmeTLS1 = "acme-tls/1"
}
