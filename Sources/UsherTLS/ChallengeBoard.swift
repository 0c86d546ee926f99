import Synchronization

/// The ACME challenges this process is presenting right now, for the servers that answer them: HTTP-01 key
/// authorizations by token (served by the `http` app ahead of routes). Process-wide (a shared service), so a
/// challenge started under one config is still answered while a reload swaps servers.
public final class ACMEChallengeBoard: Sendable {
    private struct HTTPChallenge {
        var host: String
        var keyAuthorization: String
    }
    private let http01 = Mutex<[String: HTTPChallenge]>([:])
    private let httpCount = Atomic<Int>(0)

    public init() {}

    /// Whether any HTTP-01 challenge is being presented: one atomic load, so servers pay nothing otherwise.
    public var hasHTTPChallenges: Bool { httpCount.load(ordering: .relaxed) > 0 }

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
    public func httpAnswer(host: String, path: String) -> String? {
        let prefix = "/.well-known/acme-challenge/"
        guard path.hasPrefix(prefix) else { return nil }
        let token = String(path.dropFirst(prefix.count))
        return http01.withLock { board in
            guard let c = board[token], c.host == host.lowercased() else { return nil }
            return c.keyAuthorization
        }
    }
}
