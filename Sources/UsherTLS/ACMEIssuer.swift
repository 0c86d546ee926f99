import Crypto
public import Foundation
import Logging
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import UsherACME
public import UsherCore
public import X509

/// `tls.issuance.acme`: certificates from an ACME CA (Let's Encrypt by default), with the account kept in storage
/// as certmagic keeps it (`acme/<issuer key>/users/<email>/…`) and challenges answered by this process.
public struct ACMEIssuer: AutomationIssuer, RenewalWindowProvider, Provisioner {
    public static let moduleID: ModuleID = "tls.issuance.acme"
    /// Let's Encrypt's production directory, Caddy's default `ca`.
    public static let letsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

    /// `ca`: the directory URL. Default: Let's Encrypt (or the global `acme_ca`).
    public var ca: String
    /// `test_ca`: a directory for retries after a failure, to spare the production CA's rate limits. Default: none.
    public var testCA: String?
    /// `email`: the account's contact. Default: none.
    public var email: String
    /// `profile`: the certificate profile to ask for (the CA's `meta.profiles`). Default: the CA's default.
    public var profile: String?
    /// `account_key`: a PEM private key of an existing account to use instead of making one.
    public var accountKey: String?
    /// `external_account`: `key_id` and `mac_key` (base64url) for External Account Binding.
    public var externalAccount: (keyID: String, macKey: [UInt8])?
    /// `acme_timeout`: how long one ACME request may take. Default: 30s.
    public var acmeTimeout: ConfigDuration?
    /// `challenges.http.disabled`.
    public var httpChallengeDisabled: Bool
    /// `challenges.http.alternate_port`: the port the HTTP-01 answer is served on (the CA still asks port 80).
    public var httpAlternatePort: Int
    /// `challenges.tls-alpn.disabled`.
    public var tlsALPNChallengeDisabled: Bool
    /// `challenges.tls-alpn.alternate_port`.
    public var tlsALPNAlternatePort: Int
    /// `challenges.distributed`: store each HTTP-01 challenge in storage so any instance sharing it can answer the
    /// CA. Default: true.
    public var distributed: Bool
    /// `challenges.dns`: DNS-01 through a DNS provider; when set, the only challenge used.
    public var dnsChallenge: DNSChallengeConfig?
    /// `trusted_roots_pem_files`: roots the CA's own certificate must chain to. Default: the system's.
    public var trustedRootsPEMFiles: [String]
    /// `preferred_chains`: which of the CA's chains to keep.
    public var preferredChains: ChainPreferences?

    private let runtime = SharedState<Runtime?>(nil)

    package enum CodingKeys: String, CodingKey {
        case ca, testCA = "test_ca", email, profile, accountKey = "account_key"
        case externalAccount = "external_account", acmeTimeout = "acme_timeout", challenges
        case trustedRootsPEMFiles = "trusted_roots_pem_files", preferredChains = "preferred_chains"
        case certificateLifetime = "certificate_lifetime", networkProxy = "network_proxy"
    }

    enum EABKeys: String, CodingKey { case keyID = "key_id", macKey = "mac_key" }
    enum ChallengeKeys: String, CodingKey {
        case http, tlsALPN = "tls-alpn", dns, bindHost = "bind_host", distributed
    }
    enum PortChallengeKeys: String, CodingKey { case disabled, alternatePort = "alternate_port" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.certificateLifetime, .networkProxy])
        ca = try c.decodeIfPresent(String.self, forKey: .ca) ?? ""
        if ca.isEmpty { ca = Self.letsEncrypt }
        try Self.checkURL(ca, c, .ca)
        testCA = try c.decodeIfPresent(String.self, forKey: .testCA).flatMap { $0.isEmpty ? nil : $0 }
        if let testCA { try Self.checkURL(testCA, c, .testCA) }
        email = try c.decodeIfPresent(String.self, forKey: .email) ?? ""
        if !email.isEmpty && !Self.plausibleEmail(email) {
            throw c.error(.email, "invalid email address \(email)")
        }
        profile = try c.decodeIfPresent(String.self, forKey: .profile)
        accountKey = try c.decodeIfPresent(String.self, forKey: .accountKey).flatMap { $0.isEmpty ? nil : $0 }
        if let accountKey, (try? ACMESigningKey(pem: accountKey)) == nil {
            throw c.error(.accountKey, "not a PEM P-256, P-384 or RSA private key")
        }
        if c.contains(.externalAccount) {
            let e = try c.nestedContainer(keyedBy: EABKeys.self, forKey: .externalAccount)
            let keyID = try e.decodeIfPresent(String.self, forKey: .keyID) ?? ""
            let mac = try e.decodeIfPresent(String.self, forKey: .macKey) ?? ""
            guard !keyID.isEmpty else { throw e.error(.keyID, "key_id is required for external account binding") }
            guard let macBytes = Base64URL.decode(mac), !macBytes.isEmpty else {
                throw e.error(.macKey, "mac_key must be base64url")
            }
            externalAccount = (keyID, macBytes)
        }
        acmeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .acmeTimeout)
        httpChallengeDisabled = false
        httpAlternatePort = 0
        tlsALPNChallengeDisabled = false
        tlsALPNAlternatePort = 0
        distributed = true
        if c.contains(.challenges) {
            let ch = try c.nestedContainer(keyedBy: ChallengeKeys.self, forKey: .challenges)
            distributed = try ch.decodeIfPresent(Bool.self, forKey: .distributed) ?? true
            dnsChallenge = try ch.decodeIfPresent(DNSChallengeConfig.self, forKey: .dns)
            if ch.contains(.http) {
                let h = try ch.nestedContainer(keyedBy: PortChallengeKeys.self, forKey: .http)
                httpChallengeDisabled = try h.decodeIfPresent(Bool.self, forKey: .disabled) ?? false
                httpAlternatePort = try h.decodeIfPresent(Int.self, forKey: .alternatePort) ?? 0
            }
            if ch.contains(.tlsALPN) {
                let t = try ch.nestedContainer(keyedBy: PortChallengeKeys.self, forKey: .tlsALPN)
                tlsALPNChallengeDisabled = try t.decodeIfPresent(Bool.self, forKey: .disabled) ?? false
                tlsALPNAlternatePort = try t.decodeIfPresent(Int.self, forKey: .alternatePort) ?? 0
            }
            _ = try ch.decodeIfPresent(String.self, forKey: .bindHost)
        }
        trustedRootsPEMFiles = try c.decodeIfPresent([String].self, forKey: .trustedRootsPEMFiles) ?? []
        preferredChains = try c.decodeIfPresent(ChainPreferences.self, forKey: .preferredChains)
    }

    static func checkURL(_ s: String, _ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws {
        guard let u = URLComponents(string: s), let scheme = u.scheme?.lowercased(),
            scheme == "https" || scheme == "http", u.host?.isEmpty == false
        else { throw c.error(key, "\(s) is not an http(s) URL of an ACME directory") }
    }

    static func plausibleEmail(_ e: String) -> Bool {
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty
            && !e.contains(where: { $0 == " " || $0 == "<" || $0 == ">" || $0 == "," })
    }

    /// The folder under `certificates/` and `acme/`: the CA URL's host and path (certmagic's issuer key).
    public var issuerKey: String { Self.issuerKey(ca) }

    static func issuerKey(_ ca: String) -> String {
        guard let u = URLComponents(string: ca), let host = u.host else { return ca }
        var key = host + (u.port.map { ":\($0)" } ?? "")
        let path = u.path.replacingOccurrences(of: "/", with: "-").replacingOccurrences(of: "\\", with: "-")
        let trimmed = path.trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        if !trimmed.isEmpty { key += "-" + trimmed }
        return key
    }

    /// What a provisioned issuer holds. The HTTP client (and its TLS context, which loads the system's roots) is
    /// made on first use, so a config whose names never reach ACME pays nothing for it.
    final class Runtime: Sendable {
        let storage: any Storage
        let board: ACMEChallengeBoard
        let logger: Logger
        let dns: DNS01Solver?
        let group: any EventLoopGroup
        private let makeClient: @Sendable () throws -> ACMEClient
        private let made = Mutex<ACMEClient?>(nil)
        /// Challenge types that failed per identifier, tried last next time (certmagic does the same).
        let failedChallenges = Mutex<[String: Set<String>]>([:])

        init(
            storage: any Storage, board: ACMEChallengeBoard, logger: Logger, dns: DNS01Solver?,
            group: any EventLoopGroup, makeClient: @escaping @Sendable () throws -> ACMEClient
        ) {
            self.group = group
            self.storage = storage
            self.board = board
            self.logger = logger
            self.dns = dns
            self.makeClient = makeClient
        }

        var client: ACMEClient {
            get throws {
                try made.withLock { c in
                    if let c { return c }
                    let new = try makeClient()
                    c = new
                    return new
                }
            }
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        var roots: [NIOSSLCertificate]?
        if !trustedRootsPEMFiles.isEmpty {
            roots = []
            for (i, file) in trustedRootsPEMFiles.enumerated() {
                do {
                    roots! += try NIOSSLCertificate.fromPEMFile(file)
                } catch {
                    throw ConfigError("trusted_roots_pem_files[\(i)]: reading \(file): \(error)")
                }
            }
        }
        let timeout = acmeTimeout.flatMap { $0.nanoseconds > 0 ? TimeAmount.nanoseconds($0.nanoseconds) : nil }
        let group = context.eventLoopGroup
        let ca = self.ca
        let trusted = roots
        let board = context.services.service(ACMEChallengeBoard.self) { ACMEChallengeBoard() }
        let logger = context.logger("tls.issuance.acme")
        var dns: DNS01Solver?
        if let dnsChallenge {
            dns = try await dnsChallenge.solver(context, logger: logger)
        }
        let made = Runtime(storage: context.storage, board: board, logger: logger, dns: dns, group: group) {
            let http = try ACMEHTTPClient(group: group, trustedRoots: trusted, timeout: timeout ?? .seconds(30))
            return ACMEClient(directoryURL: ca, http: http)
        }
        runtime.withLock { $0 = made }
    }

    // MARK: - Accounts

    private var users: String { "acme/" + StorageKeys.safe(issuerKey) + "/users/" }

    private func userPrefix(_ email: String) -> String {
        users + StorageKeys.safe(email.isEmpty ? "default" : email.lowercased())
    }

    /// certmagic's file names: the email's user part (or `registration`/`private`), then `.json`/`.key`.
    private func userFile(_ email: String, _ fallback: String, _ ext: String) -> String {
        let e = email.lowercased()
        var name = e.isEmpty ? "default" : e
        if let at = name.firstIndex(of: "@") {
            name = at == name.startIndex ? String(name.dropFirst()) : String(name[..<at])
        }
        if name.isEmpty { name = fallback }
        return userPrefix(email) + "/" + StorageKeys.safe(name) + ext
    }

    /// The account to order with: the configured key's, else the one stored for `email`, else a new one,
    /// registered (with External Account Binding when configured) and stored.
    func account(_ rt: Runtime) async throws -> ACMEAccount {
        if let accountKey {
            let key = try ACMESigningKey(pem: accountKey)
            if let stored = try? await loadAccount(rt, email), stored.key.pem == key.pem { return stored }
            let found = try await rt.client.lookUpAccount(key: key)
            try await saveAccount(rt, found)
            return found
        }
        if let stored = try? await loadAccount(rt, email), !stored.location.isEmpty { return stored }
        return try await rt.storage.withLock("register_acme_account" + (email.isEmpty ? "" : "_" + email)) {
            if let stored = try? await loadAccount(rt, email), !stored.location.isEmpty { return stored }
            let fresh = ACMEAccount(contact: email.isEmpty ? [] : ["mailto:" + email], key: .generate())
            let registered = try await rt.client.register(fresh, eab: externalAccount)
            try await saveAccount(rt, registered)
            rt.logger.info(
                "registered ACME account",
                metadata: ["ca": "\(ca)", "email": "\(email)", "account": "\(registered.location)"])
            return registered
        }
    }

    private func loadAccount(_ rt: Runtime, _ email: String) async throws -> ACMEAccount {
        let reg = try await rt.storage.load(userFile(email, "registration", ".json"))
        let keyPEM = try await rt.storage.loadText(userFile(email, "private", ".key"))
        return ACMEAccount(registration: try JSONValue.parse(reg), key: try ACMESigningKey(pem: keyPEM))
    }

    private func saveAccount(_ rt: Runtime, _ account: ACMEAccount) async throws {
        let email = account.primaryContact
        try await rt.storage.store(
            userFile(email, "registration", ".json"), account.registration.serializedBytes(.pretty))
        try await rt.storage.store(userFile(email, "private", ".key"), text: account.key.pem)
    }

    // MARK: - Issuing

    /// Takes a slot of this issuer's order rate limit ahead of the issuing lock (see
    /// ``CertificateRequest/orderSlotReservedBy``).
    func reserveOrderSlot(names: [String]) async -> ContinuousClock.Instant {
        let logger = runtime.withLock { $0?.logger } ?? Logger(label: "tls.issuance.acme")
        return await OrderRateLimiter.shared(ca: ca, email: email, logger: logger, names: names)
    }

    /// Returns a slot ``reserveOrderSlot(names:)`` took when no order followed.
    func returnOrderSlot(_ slot: ContinuousClock.Instant) async {
        await OrderRateLimiter.of(ca: ca, email: email).giveBack(slot)
    }

    #if DEBUG
    /// Debug builds only, for the fleet tests: `USHER_DEBUG_PAUSE_AFTER_ORDER=S` waits S seconds after each new
    /// order, so a test can stop or kill the instance while it holds the order's lock.
    private static let pauseAfterOrder = getenv("USHER_DEBUG_PAUSE_AFTER_ORDER").flatMap {
        Double(String(cString: $0))
    }

    private static func pauseIfAsked(_ order: ACMEOrder, _ rt: Runtime) async {
        guard let pauseAfterOrder else { return }
        rt.logger.warning("debug: pausing after new order", metadata: ["seconds": "\(pauseAfterOrder)"])
        try? await Task.sleep(nanoseconds: UInt64(pauseAfterOrder * 1e9))
    }
    #endif

    public func issue(_ request: CertificateRequest) async throws -> IssuedCertificate {
        guard let rt = runtime.withLock({ $0 }) else { throw ConfigError("the ACME issuer was not provisioned") }
        let account = try await account(rt)
        let identifiers = request.names.map { ACMEIdentifier($0) }
        let timeout = 90.0
        // An invalid authorization kills its order; as acmez does, a new order then tries the challenge types
        // that have not failed, once each.
        var attempt = 0
        var order: ACMEOrder
        while true {
            if attempt > 0 || request.orderSlotReservedBy != issuerKey {
                await OrderRateLimiter.shared(ca: ca, email: email, logger: rt.logger, names: request.names)
            }
            order = try await rt.client.newOrder(
                account: account, identifiers: identifiers, replaces: attempt == 0 ? request.replaces : nil,
                profile: profile)
            #if DEBUG
            await Self.pauseIfAsked(order, rt)
            #endif
            do {
                for url in order.authorizations {
                    let authz = try await rt.client.authorization(account: account, url: url)
                    if authz.status == "valid" { continue }
                    try await solve(authz, account, rt, timeout: timeout)
                }
                break
            } catch ACMEError.failed(let why, let problem) {
                attempt += 1
                guard attempt < enabledChallenges.count else { throw ACMEError.failed(why, problem) }
                rt.logger.error(
                    "challenge failed; trying another type with a new order",
                    metadata: ["names": "\(request.names)", "error": "\(problem.map { "\($0)" } ?? why)"])
            }
        }
        let done = try await rt.client.finalize(account: account, order: order, csr: request.csrDER, timeout: timeout)
        guard let certURL = done.certificate else {
            throw ACMEError.protocolViolation("valid order without a certificate URL")
        }
        let chains = try await rt.client.certificateChains(account: account, url: certURL)
        let chain = preferredChains?.choose(chains) ?? chains[0]
        let metadata: JSONValue = [
            "url": .string(certURL), "ca": .string(ca), "account": .string(account.location),
        ]
        return IssuedCertificate(chainPEM: chain, metadata: metadata)
    }

    /// Revokes the leaf of `chainPEM` with this issuer's account (RFC 8555 §7.6).
    func revoke(chainPEM: String, reason: Int) async throws {
        guard let rt = runtime.withLock({ $0 }) else { throw ConfigError("the ACME issuer was not provisioned") }
        guard let leaf = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8)).first else {
            throw ConfigError("no certificate in the stored chain")
        }
        let account = try await account(rt)
        try await rt.client.revoke(account: account, certificate: try leaf.toDERBytes(), reason: reason)
        rt.logger.info("certificate revoked", metadata: ["ca": "\(ca)", "reason": "\(reason)"])
    }

    // MARK: - Renewal information (RFC 9773)

    /// `base64url(authority key identifier) "." base64url(serial number)`, the serial as its DER integer content.
    public func renewalIdentifier(for leaf: Certificate) -> String? {
        guard let aki = try? leaf.extensions.authorityKeyIdentifier?.keyIdentifier else { return nil }
        var serial = Array(leaf.serialNumber.bytes)
        while serial.count > 1 && serial[0] == 0 && serial[1] < 0x80 { serial.removeFirst() }
        if let first = serial.first, first >= 0x80 { serial.insert(0, at: 0) }
        return Base64URL.encode(Array(aki)) + "." + Base64URL.encode(serial)
    }

    public func renewalWindow(for leaf: Certificate) async throws -> (start: Date, end: Date, retryAfter: Date?)? {
        guard let rt = runtime.withLock({ $0 }), let id = renewalIdentifier(for: leaf) else { return nil }
        guard let info = try await rt.client.renewalInfo(certID: id) else { return nil }
        func date(_ t: WallTime) -> Date { Date(timeIntervalSince1970: t.secondsSinceEpoch) }
        return (date(info.windowStart), date(info.windowEnd), info.retryAfter.map(date))
    }

    /// The challenge types this issuer may use, in preference order.
    var enabledChallenges: [String] {
        if dnsChallenge != nil { return ["dns-01"] }
        var out: [String] = []
        if !httpChallengeDisabled { out.append("http-01") }
        if !tlsALPNChallengeDisabled { out.append("tls-alpn-01") }
        return out
    }

    private func solve(_ authz: ACMEAuthorization, _ account: ACMEAccount, _ rt: Runtime, timeout: Double)
        async throws
    {
        let id = authz.identifier.value
        let failed = rt.failedChallenges.withLock { $0[id] ?? [] }
        // In this issuer's order of preference, whatever order the CA lists them in.
        let offered = enabledChallenges.compactMap { type in authz.challenges.first { $0.type == type } }
        // Types that failed for this identifier go last, so a retry tries something else first.
        let ordered =
            offered.filter { !failed.contains($0.type) }
            + offered.filter { failed.contains($0.type) }
        guard let challenge = ordered.first else {
            let types = authz.challenges.map(\.type).joined(separator: ", ")
            throw ACMEError.failed(
                "no enabled challenge type for \(id) (the CA offers \(types); enabled: \(enabledChallenges))", nil)
        }
        var presentedDNS: DNS01Solver.Presented?
        var listener: (any Channel)?
        switch challenge.type {
        case "http-01":
            rt.board.presentHTTP(token: challenge.token, host: id, keyAuthorization: challenge.keyAuthorization)
            if distributed {
                do {
                    try await storeDistributed(challenge, rt)
                } catch {
                    rt.board.withdrawHTTP(token: challenge.token)
                    throw error
                }
            }
            let port = httpAlternatePort > 0 ? httpAlternatePort : rt.board.httpPort
            if !rt.board.servedPorts.contains(port) {
                listener = await HTTPChallengeListener.open(
                    port: port, board: rt.board, group: rt.group, logger: rt.logger)
            }
        case "dns-01":
            guard let dns = rt.dns else { throw ACMEError.failed("no DNS provider for the dns-01 challenge", nil) }
            let presented = try await dns.present(identifier: id, keyAuthorization: challenge.keyAuthorization)
            presentedDNS = presented
            do {
                try await dns.wait(presented)
            } catch {
                await dns.cleanUp(presented)
                rt.failedChallenges.withLock { _ = $0[id, default: []].insert(challenge.type) }
                throw error
            }
        default:
            rt.board.presentTLSALPN(
                name: id, certificate: try Self.tlsALPNCertificate(authz.identifier, challenge.keyAuthorization))
            if distributed {
                do {
                    try await storeDistributed(challenge, rt)
                } catch {
                    rt.board.withdrawTLSALPN(name: id)
                    throw error
                }
            }
        }
        let stored = distributed && challenge.type != "dns-01"
        defer {
            if stored {
                let key = Self.challengeTokenKey(issuerKey, id)
                Task { try? await rt.storage.delete(key) }
            }
            listener?.close(promise: nil)
            rt.board.withdrawHTTP(token: challenge.token)
            rt.board.withdrawTLSALPN(name: id)
        }
        rt.logger.info(
            "trying to solve challenge",
            metadata: ["identifier": "\(id)", "challenge_type": "\(challenge.type)", "ca": "\(ca)"])
        do {
            try await rt.client.respond(account: account, challenge: challenge)
            _ = try await rt.client.waitForAuthorization(account: account, url: authz.url, timeout: timeout)
        } catch {
            if let presentedDNS, let dns = rt.dns { await dns.cleanUp(presentedDNS) }
            rt.failedChallenges.withLock { _ = $0[id, default: []].insert(challenge.type) }
            throw error
        }
        if let presentedDNS, let dns = rt.dns { await dns.cleanUp(presentedDNS) }
        rt.failedChallenges.withLock { $0[id] = nil }
        rt.logger.info("authorization finalized", metadata: ["identifier": "\(id)", "authz_status": "valid"])
    }

    /// certmagic's place for a challenge other instances may answer: `acme/<issuer>/challenge_tokens/<name>.json`.
    static func challengeTokenKey(_ issuerKey: String, _ identifier: String) -> String {
        "acme/" + StorageKeys.safe(issuerKey) + "/challenge_tokens/" + StorageKeys.safe(identifier) + ".json"
    }

    /// Stores the challenge as acmez marshals it, so Caddy instances sharing the storage can answer it too.
    /// A lapsed lock (fencing) ends the order: another instance holds the name now.
    private func storeDistributed(_ c: ACMEChallenge, _ rt: Runtime) async throws {
        let info: JSONValue = [
            "type": .string(c.type), "url": .string(c.url), "status": .string(c.status), "token": .string(c.token),
            "keyAuthorization": .string(c.keyAuthorization),
            "identifier": ["type": .string(c.identifier.type), "value": .string(c.identifier.value)],
        ]
        do {
            try await rt.storage.store(
                Self.challengeTokenKey(issuerKey, c.identifier.value), info.serializedBytes(.compact))
        } catch StorageError.lockLost(let why) {
            throw StorageError.lockLost(why)
        } catch {
            rt.logger.warning(
                "storing challenge for distributed solving",
                metadata: [
                    "identifier": "\(c.identifier.value)",
                    "error": "\(error)",
                ])
        }
    }

    /// Looks up a challenge another instance stored for `identifier` under any of `issuers`.
    static func distributedChallenge(_ identifier: String, issuers: [any AutomationIssuer], storage: any Storage)
        async -> [UInt8]?
    {
        for issuer in issuers where issuer is ACMEIssuer {
            if let bytes = try? await storage.load(challengeTokenKey(issuer.issuerKey, identifier)) { return bytes }
        }
        return nil
    }

    /// The self-signed certificate TLS-ALPN-01 validates (RFC 8737 §3): the identifier as its only name and the
    /// critical acmeIdentifier extension holding the SHA-256 of the key authorization.
    static func tlsALPNCertificate(_ identifier: ACMEIdentifier, _ keyAuthorization: String) throws -> TLSCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let digest = Array(SHA256.hash(data: Array(keyAuthorization.utf8)))
        let acmeIdentifier = Certificate.Extension(
            oid: [1, 3, 6, 1, 5, 5, 7, 1, 31], critical: true, value: ArraySlice([0x04, 0x20] + digest))
        let name = subjectAltName(identifier.value)
        let extensions = try Certificate.Extensions {
            SubjectAlternativeNames([name])
            acmeIdentifier
        }
        let subject = try DistinguishedName { CommonName("ACME challenge") }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(7 * 86400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: key)
        return try TLSCertificate(
            chainPEM: try cert.serializeAsPEM().pemString + "\n", keyPEM: try key.serializeAsPEM().pemString + "\n",
            origin: "tls-alpn-01 challenge for \(identifier.value)")
    }
}

/// certmagic's internal rate limit on new orders: at most 10 in any 10 seconds per CA and account email, across
/// the process, so that a burst of names (on-demand TLS, a large config) does not hammer the CA.
actor OrderRateLimiter {
    let limit: Int
    let window: Duration
    private var recent: [ContinuousClock.Instant] = []
    private var waiters: [CheckedContinuation<ContinuousClock.Instant, Never>] = []
    private var timerArmed = false

    init(limit: Int = 10, window: Duration = .seconds(10)) {
        self.limit = limit
        self.window = window
    }

    /// Returns once an order may be placed (at most `limit` within any `window`), first come first served, with
    /// the slot taken (for ``giveBack(_:)``).
    @discardableResult
    func wait() async -> ContinuousClock.Instant {
        prune()
        if waiters.isEmpty && recent.count < limit {
            let slot = ContinuousClock.now
            recent.append(slot)
            return slot
        }
        return await withCheckedContinuation {
            waiters.append($0)
            armTimer()
        }
    }

    /// Returns `slot` (from ``wait()``) when no order was placed with it after all (another instance was already
    /// ordering the name); the next waiter gets it at once.
    func giveBack(_ slot: ContinuousClock.Instant) {
        if let i = recent.firstIndex(of: slot) { recent.remove(at: i) }
        grant()
    }

    private func prune() {
        let now = ContinuousClock.now
        recent.removeAll { now - $0 >= window }
    }

    private func grant() {
        prune()
        while recent.count < limit, !waiters.isEmpty {
            let slot = ContinuousClock.now
            recent.append(slot)
            waiters.removeFirst().resume(returning: slot)
        }
        if !waiters.isEmpty { armTimer() }
    }

    private func armTimer() {
        guard !timerArmed, let first = recent.first else { return }
        timerArmed = true
        Task {
            try? await Task.sleep(until: first + window, clock: .continuous)
            await self.fire()
        }
    }

    private func fire() {
        timerArmed = false
        grant()
    }

    private static let limiters = Mutex<[String: OrderRateLimiter]>([:])

    /// The process's limiter for a CA and account.
    static func of(ca: String, email: String) -> OrderRateLimiter {
        limiters.withLock { all in
            if let existing = all[ca + "," + email] { return existing }
            let made = OrderRateLimiter()
            all[ca + "," + email] = made
            return made
        }
    }

    @discardableResult
    static func shared(ca: String, email: String, logger: Logger, names: [String]) async -> ContinuousClock.Instant {
        let limiter = of(ca: ca, email: email)
        let start = ContinuousClock.now
        let slot = await limiter.wait()
        if ContinuousClock.now - start > .milliseconds(100) {
            logger.info(
                "waited on internal rate limiter",
                metadata: ["identifiers": "\(names)", "ca": "\(ca)", "account": "\(email)"])
        }
        return slot
    }
}

/// `preferred_chains`: which of a CA's alternate chains to serve.
public struct ChainPreferences: Decodable, Sendable {
    /// `smallest`: the chain with the fewest bytes.
    public var smallest: Bool
    /// `root_common_name`: chains whose root (last certificate's issuer) has one of these common names.
    public var rootCommonName: [String]
    /// `any_common_name`: chains with one of these common names anywhere as issuer.
    public var anyCommonName: [String]

    package enum CodingKeys: String, CodingKey {
        case smallest, rootCommonName = "root_common_name", anyCommonName = "any_common_name"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        smallest = try c.decodeIfPresent(Bool.self, forKey: .smallest) ?? false
        rootCommonName = try c.decodeIfPresent([String].self, forKey: .rootCommonName) ?? []
        anyCommonName = try c.decodeIfPresent([String].self, forKey: .anyCommonName) ?? []
    }

    /// The chain to keep, as certmagic picks: smallest if asked, else the first whose root or any issuer has a
    /// listed common name, else the CA's default (the first).
    func choose(_ chains: [String]) -> String? {
        guard !chains.isEmpty else { return nil }
        if smallest { return chains.min { $0.utf8.count < $1.utf8.count } }
        let issuers = chains.map { chain in
            ((try? NIOSSLCertificate.fromPEMBytes(Array(chain.utf8))) ?? []).map { cert in
                (try? Certificate(derEncoded: cert.toDERBytes())).map { commonName($0.issuer) } ?? ""
            }
        }
        for name in rootCommonName {
            if let i = issuers.firstIndex(where: { $0.last == name }) { return chains[i] }
        }
        for name in anyCommonName {
            if let i = issuers.firstIndex(where: { $0.contains(name) }) { return chains[i] }
        }
        return chains[0]
    }
}

/// The first common name in a distinguished name, or `""`.
func commonName(_ dn: DistinguishedName) -> String {
    for rdn in dn {
        for attr in rdn where attr.type == .RDNAttributeType.commonName { return attr.value.description }
    }
    return ""
}
