import Foundation
import NIOHTTP1
import UsherCore

/// An ACME (RFC 8555) client for one CA directory: nonces (with `badNonce` retries), accounts (with External
/// Account Binding), orders, authorizations, challenges, finalization, certificate download with alternate chains,
/// revocation and renewal information (RFC 9773). It knows nothing of storage or solvers; the issuer module
/// composes those.
public actor ACMEClient {
    public let directoryURL: String
    let http: ACMEHTTPClient
    private var cachedDirectory: ACMEDirectory?
    private var nonces: [String] = []
    /// How often a request is resent after the CA rejects its nonce.
    static let badNonceRetries = 5

    public init(directoryURL: String, http: ACMEHTTPClient) {
        self.directoryURL = directoryURL
        self.http = http
    }

    /// The CA's directory, fetched once.
    public func directory() async throws -> ACMEDirectory {
        if let d = cachedDirectory { return d }
        let r = try await http.request(.GET, directoryURL)
        guard r.status == 200 else { throw Self.problem(r) }
        let d = try ACMEDirectory(json: try Self.json(r))
        cachedDirectory = d
        return d
    }

    private func nonce() async throws -> String {
        if let n = nonces.popLast() { return n }
        let d = try await directory()
        let r = try await http.request(.HEAD, d.newNonce)
        guard let n = r.header("Replay-Nonce"), !n.isEmpty else {
            throw ACMEError.protocolViolation("newNonce gave no Replay-Nonce (HTTP \(r.status))")
        }
        return n
    }

    /// A signed POST (or POST-as-GET when `payload` is `nil`). A `badNonce` rejection is retried with the nonce
    /// that came with it, as RFC 8555 §6.5 asks; any other problem is thrown.
    func post(
        _ url: String, payload: JSONValue?, key: ACMESigningKey, kid: String?, accept: String? = nil
    ) async throws -> ACMEHTTPResponse {
        var attempt = 0
        while true {
            let body = try JWS.sign(payload: payload, url: url, nonce: try await nonce(), key: key, kid: kid)
            let r = try await http.request(.POST, url, body: body, contentType: "application/jose+json")
            if let n = r.header("Replay-Nonce"), !n.isEmpty { nonces.append(n) }
            if r.status < 400 { return r }
            let p = Self.problem(r)
            if case .problem(let problem) = p, problem.shortType == "badNonce", attempt < Self.badNonceRetries {
                attempt += 1
                continue
            }
            throw p
        }
    }

    // MARK: - Accounts

    /// Registers `account` (agreeing to the terms), or finds it when its key is already registered; returns it
    /// with its URL and status.
    public func register(_ account: ACMEAccount, eab: (keyID: String, macKey: [UInt8])?) async throws -> ACMEAccount {
        let d = try await directory()
        var payload: JSONObject = ["termsOfServiceAgreed": true]
        if !account.contact.isEmpty { payload["contact"] = .array(account.contact.map { .string($0) }) }
        if let eab {
            payload["externalAccountBinding"] = JWS.externalAccountBinding(
                keyID: eab.keyID, macKey: eab.macKey, accountKey: account.key, url: d.newAccount)
        } else if d.externalAccountRequired {
            throw ACMEError.protocolViolation("the CA requires External Account Binding (external_account)")
        }
        let r = try await post(d.newAccount, payload: .object(payload), key: account.key, kid: nil)
        return try Self.account(from: r, key: account.key)
    }

    /// The account registered with `key`, without creating one.
    public func lookUpAccount(key: ACMESigningKey) async throws -> ACMEAccount {
        let d = try await directory()
        let r = try await post(d.newAccount, payload: ["onlyReturnExisting": true], key: key, kid: nil)
        return try Self.account(from: r, key: key)
    }

    private static func account(from r: ACMEHTTPResponse, key: ACMESigningKey) throws -> ACMEAccount {
        guard let location = r.header("Location"), !location.isEmpty else {
            throw ACMEError.protocolViolation("newAccount gave no Location")
        }
        var a = ACMEAccount(registration: (try? json(r)) ?? .object([:]), key: key)
        a.location = location
        return a
    }

    // MARK: - Orders

    /// Opens an order for `identifiers`; `replaces` is the ARI identifier of the certificate it renews.
    public func newOrder(
        account: ACMEAccount, identifiers: [ACMEIdentifier], replaces: String? = nil, profile: String? = nil
    ) async throws -> ACMEOrder {
        let d = try await directory()
        var payload: JSONObject = ["identifiers": .array(identifiers.map(\.json))]
        if let replaces, d.renewalInfo != nil { payload["replaces"] = .string(replaces) }
        if let profile, !profile.isEmpty { payload["profile"] = .string(profile) }
        let r = try await post(d.newOrder, payload: .object(payload), key: account.key, kid: account.location)
        guard let location = r.header("Location") else {
            throw ACMEError.protocolViolation("newOrder gave no Location")
        }
        return try ACMEOrder(url: location, json: try Self.json(r))
    }

    /// The order at `url`, as it is now.
    public func order(account: ACMEAccount, url: String) async throws -> ACMEOrder {
        let r = try await post(url, payload: nil, key: account.key, kid: account.location)
        return try ACMEOrder(url: url, json: try Self.json(r))
    }

    /// The authorization at `url`, as it is now.
    public func authorization(account: ACMEAccount, url: String) async throws -> ACMEAuthorization {
        let r = try await post(url, payload: nil, key: account.key, kid: account.location)
        return try ACMEAuthorization(url: url, json: try Self.json(r), thumbprint: account.key.thumbprint)
    }

    /// Tells the CA the challenge is ready to be validated.
    public func respond(account: ACMEAccount, challenge: ACMEChallenge) async throws {
        _ = try await post(challenge.url, payload: .object([:]), key: account.key, kid: account.location)
    }

    /// Polls the authorization until it is `valid` (returned) or `invalid` (thrown with the CA's reason), within
    /// `timeout` seconds.
    public func waitForAuthorization(account: ACMEAccount, url: String, timeout: Double) async throws
        -> ACMEAuthorization
    {
        let end = Date().addingTimeInterval(timeout)
        while true {
            let r = try await post(url, payload: nil, key: account.key, kid: account.location)
            let authz = try ACMEAuthorization(url: url, json: try Self.json(r), thumbprint: account.key.thumbprint)
            switch authz.status {
            case "valid": return authz
            case "pending", "processing": break
            default:
                throw ACMEError.failed(
                    "authorization for \(authz.identifier.value) is \(authz.status)", authz.problem)
            }
            guard Date() < end else {
                throw ACMEError.failed(
                    "authorization for \(authz.identifier.value) still pending after \(timeout)s", nil)
            }
            try await Task.sleep(nanoseconds: Self.pollDelay(r))
        }
    }

    /// Sends the CSR (DER) to the order's finalize URL and polls until the order is `valid`.
    public func finalize(account: ACMEAccount, order: ACMEOrder, csr: [UInt8], timeout: Double) async throws
        -> ACMEOrder
    {
        let r = try await post(
            order.finalize, payload: ["csr": .string(Base64URL.encode(csr))], key: account.key,
            kid: account.location)
        var current = try ACMEOrder(url: order.url, json: try Self.json(r))
        var delay = Self.pollDelay(r)
        let end = Date().addingTimeInterval(timeout)
        while true {
            switch current.status {
            case "valid": return current
            case "pending", "processing", "ready": break
            default: throw ACMEError.failed("order is \(current.status)", current.error)
            }
            guard Date() < end else { throw ACMEError.failed("order still \(current.status) after \(timeout)s", nil) }
            try await Task.sleep(nanoseconds: delay)
            let pr = try await post(order.url, payload: nil, key: account.key, kid: account.location)
            current = try ACMEOrder(url: order.url, json: try Self.json(pr))
            delay = Self.pollDelay(pr)
        }
    }

    /// The certificate chain at `url` (PEM, leaf first), then the alternate chains the CA links to.
    public func certificateChains(account: ACMEAccount, url: String) async throws -> [String] {
        let r = try await post(url, payload: nil, key: account.key, kid: account.location)
        var chains = [String(decoding: r.body, as: UTF8.self)]
        for link in r.headers("Link") {
            for alternate in Self.links(link, rel: "alternate") {
                let ar = try await post(alternate, payload: nil, key: account.key, kid: account.location)
                chains.append(String(decoding: ar.body, as: UTF8.self))
            }
        }
        return chains
    }

    /// Revokes a certificate (DER) with an RFC 5280 reason code, signed by the account that ordered it.
    public func revoke(account: ACMEAccount, certificate: [UInt8], reason: Int) async throws {
        let d = try await directory()
        _ = try await post(
            d.revokeCert,
            payload: ["certificate": .string(Base64URL.encode(certificate)), "reason": .number(.init(reason))],
            key: account.key, kid: account.location)
    }

    /// The CA's suggested renewal window for the certificate with ARI identifier `certID`; `nil` when the CA
    /// offers no renewal information.
    public func renewalInfo(certID: String) async throws -> ACMERenewalInfo? {
        guard let base = try await directory().renewalInfo else { return nil }
        let r = try await http.request(.GET, base.hasSuffix("/") ? base + certID : base + "/" + certID)
        guard r.status == 200 else { throw Self.problem(r) }
        guard let o = try Self.json(r).objectValue, let w = o["suggestedWindow"]?.objectValue,
            let start = w["start"]?.stringValue.flatMap(WallTime.parseRFC3339),
            let end = w["end"]?.stringValue.flatMap(WallTime.parseRFC3339)
        else { throw ACMEError.protocolViolation("renewal information without a suggested window") }
        var retry: WallTime?
        if let ra = r.header("Retry-After"), let secs = Int(ra) {
            retry = WallTime(seconds: WallTime.now().seconds + secs, nanoseconds: 0)
        }
        return ACMERenewalInfo(
            windowStart: start, windowEnd: end, explanationURL: o["explanationURL"]?.stringValue, retryAfter: retry)
    }

    // MARK: - Helpers

    static func json(_ r: ACMEHTTPResponse) throws -> JSONValue {
        do {
            return try JSONValue.parse(r.body)
        } catch {
            throw ACMEError.protocolViolation("HTTP \(r.status) body is not JSON: \(error)")
        }
    }

    static func problem(_ r: ACMEHTTPResponse) -> ACMEError {
        if let j = try? JSONValue.parse(r.body), j.objectValue?["type"] != nil {
            return .problem(ACMEProblem(json: j, status: r.status))
        }
        return .protocolViolation("HTTP \(r.status): \(String(decoding: r.body.prefix(200), as: UTF8.self))")
    }

    /// `Retry-After` in seconds, between 1 and 30 (a CA asking for longer is polled again after 30 s).
    static func pollDelay(_ r: ACMEHTTPResponse) -> UInt64 {
        let seconds = r.header("Retry-After").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 1
        return UInt64(min(max(seconds, 1), 30)) * 1_000_000_000
    }

    /// The targets of `Link: <url>;rel="…"` entries with relation `rel`.
    static func links(_ header: String, rel: String) -> [String] {
        var out: [String] = []
        for part in header.split(separator: ",") {
            let p = part.trimmingCharacters(in: .whitespaces)
            guard p.hasPrefix("<"), let close = p.firstIndex(of: ">") else { continue }
            let target = String(p[p.index(after: p.startIndex)..<close])
            let params = p[p.index(after: close)...].split(separator: ";").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            if params.contains(where: { $0 == "rel=\"\(rel)\"" || $0 == "rel=\(rel)" }) { out.append(target) }
        }
        return out
    }
}
