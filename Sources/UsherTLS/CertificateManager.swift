import Crypto
import Foundation
import Logging
import SwiftASN1
import Synchronization
import UsherACME
import UsherCore
import X509
import _CryptoExtras

/// `key_type` values.
enum KeyType: String {
    case ed25519, p256, p384, rsa2048, rsa4096

    func generate() throws -> Certificate.PrivateKey {
        switch self {
        case .ed25519: return Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        case .p256: return Certificate.PrivateKey(P256.Signing.PrivateKey())
        case .p384: return Certificate.PrivateKey(P384.Signing.PrivateKey())
        case .rsa2048: return Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        case .rsa4096: return Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits4096))
        }
    }

    var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch self {
        case .ed25519: return .ed25519
        case .p256: return .ecdsaWithSHA256
        case .p384: return .ecdsaWithSHA384
        case .rsa2048, .rsa4096: return .sha256WithRSAEncryption
        }
    }
}

/// certmagic's retry intervals after a failed obtain or renewal (1m, 2m, 2m, 5m, 10m … 6h), for up to 30 days.
let retryIntervals: [Double] = [
    60, 120, 120, 300, 600, 600, 600, 1200, 1200, 1200, 1200, 1800, 1800, 1800, 1800, 1800, 1800, 3600, 3600, 3600,
    7200, 7200, 10800, 10800, 21600,
]
let maxRetrySeconds = 30.0 * 86400

/// Keeps managed certificates: loads them from storage at start, obtains what is missing (the internal CA at
/// once, ACME in the background with certmagic's backoff), renews in the background when the renewal window
/// opens, and stores every certificate in certmagic's layout under a lock, so processes sharing storage obtain
/// each certificate once.
final class CertificateManager: Sendable {
    let store: CertificateStore
    let storage: any Storage
    let automation: AutomationConfig?
    let logger: Logger
    /// The issuers for names no policy covers (Caddy's defaults), made by the tls app.
    let defaultIssuers: DefaultIssuers
    private let jobs = Mutex<[String: Task<Void, Never>]>([:])
    /// Per certificate (by ID): the renewal time picked inside the CA's ARI window, and when to ask the CA again.
    private let renewalTimes = Mutex<[String: (renewAt: Date?, askAfter: Date)]>([:])
    private let maintenance = Mutex<Task<Void, Never>?>(nil)
    private let names = Mutex<[String]>([])
    /// Names found due at start (with whether each is a renewal), ordered once every app is serving.
    private let pending = Mutex<[(String, Bool)]>([])
    private let stopped = Atomic<Bool>(false)
    /// The `events` app: `cert_obtaining` (which a handler may abort), `cert_obtained`, `cert_failed` and
    /// `cached_managed_cert`, with certmagic's data.
    let events: (any EventEmitter)?

    init(
        store: CertificateStore, storage: any Storage, automation: AutomationConfig?, logger: Logger,
        defaultIssuers: DefaultIssuers, events: (any EventEmitter)? = nil
    ) {
        self.events = events
        self.store = store
        self.storage = storage
        self.automation = automation
        self.logger = logger
        self.defaultIssuers = defaultIssuers
    }

    struct Plan {
        var issuers: [any AutomationIssuer]
        var keyType: KeyType
        var renewalWindowRatio: Double
        var storage: any Storage
        var reuseKeys = false
        var mustStaple = false
    }

    func plan(for name: String) -> Plan {
        let policy = automation?.policy(for: name)
        var issuers = policy?.issuers.map(\.module) ?? []
        if issuers.isEmpty { issuers = defaultIssuers.issuers(for: name) }
        let ratio = policy?.renewalWindowRatio ?? 0
        return Plan(
            issuers: issuers, keyType: policy?.keyType.flatMap(KeyType.init(rawValue:)) ?? .p256,
            renewalWindowRatio: ratio > 0 ? ratio : 1.0 / 3.0,
            storage: policy?.storageInstance ?? storage, reuseKeys: policy?.reusePrivateKeys ?? false,
            mustStaple: policy?.mustStaple ?? false)
    }

    /// Loads what storage holds and obtains from the internal CA (a failure there refuses the config); names that
    /// need an ACME order or a renewal are only noted here, and ordered by `beginBackgroundWork`, once every app
    /// is serving: an HTTP-01 challenge needs the `http` app's listener up before the CA calls back.
    func start(names managed: [String]) async throws {
        names.withLock { $0 = managed }
        var due: [(String, Bool)] = []
        for name in managed {
            // Names with get_certificate managers wait for a handshake, which asks the managers first.
            if automation?.policy(for: name)?.getCertificate.isEmpty == false { continue }
            let plan = plan(for: name)
            if let cert = await loadStored(name, plan) {
                logger.debug(
                    "loaded managed certificate from storage",
                    metadata: ["identifier": "\(name)", "serial": "\(cert.serialNumber)"])
                await cache(cert)
                if needsRenewal(cert, plan) { due.append((name, true)) }
                continue
            }
            if plan.issuers.allSatisfy({ $0 is InternalIssuer }) {
                // The internal CA answers at once; a failure is a config error, as before ACME existed.
                do {
                    try await obtain(name, plan, renewing: false)
                } catch let e as ConfigError {
                    throw ConfigError(path: "apps.tls.automation", e.message)
                } catch {
                    throw ConfigError(path: "apps.tls.automation", "obtaining certificate for \(name): \(error)")
                }
            } else {
                due.append((name, false))
            }
        }
        pending.withLock { $0 = due }
    }

    /// Orders what `start` found due, then keeps checking for renewals.
    func beginBackgroundWork() {
        for (name, renewing) in pending.withLock({ p in
            defer { p = [] }; return p
        }) {
            schedule(name, renewing: renewing)
        }
        guard !names.withLock({ $0.isEmpty }), !stopped.load(ordering: .relaxed) else { return }
        let interval =
            automation?.renewInterval.flatMap { $0.nanoseconds > 0 ? Double($0.nanoseconds) / 1e9 : nil } ?? 600
        let task = Task { [self] in
            var lastCheck = Date()
            while !Task.isCancelled {
                // Check at least six times per lifetime of the shortest-lived certificate, so renewal is never late;
                // recomputed every second, so a short-lived certificate obtained later shortens the wait at once.
                try? await Task.sleep(nanoseconds: 1_000_000_000)
                if Task.isCancelled { return }
                let shortest =
                    store.all.filter(\.managed).map { $0.notAfter.timeIntervalSince($0.notBefore) }.min() ?? interval
                guard Date().timeIntervalSince(lastCheck) >= max(1, min(interval, shortest / 6)) else { continue }
                lastCheck = Date()
                for name in self.names.withLock({ $0 }) {
                    let plan = plan(for: name)
                    let current = store.managedCertificate(for: name)
                    if let current { await refreshRenewalInfo(current, plan) }
                    if current == nil || needsRenewal(current!, plan) {
                        schedule(name, renewing: current != nil)
                    }
                }
            }
        }
        maintenance.withLock { $0 = task }
    }

    func stop() async {
        stopped.store(true, ordering: .relaxed)
        maintenance.withLock { t in
            t?.cancel()
            t = nil
        }
        let running = jobs.withLock { j in
            let all = Array(j.values)
            j.removeAll()
            return all
        }
        for t in running { t.cancel() }
    }

    /// Obtains `name` during a handshake (on-demand TLS): from storage if there, else from the issuers; the name is
    /// then maintained like the others.
    func obtainOnDemand(_ name: String) async throws {
        let plan = plan(for: name)
        if let stored = await loadStored(name, plan), !needsRenewal(stored, plan) {
            await cache(stored)
        } else {
            try await obtain(name, plan, renewing: false)
        }
        names.withLock { if !$0.contains(name) { $0.append(name) } }
    }

    /// Whether `cert` is due: inside the window its CA suggested (ARI, at the time picked in it), or else in the
    /// last `renewal_window_ratio` of its life.
    func needsRenewal(_ cert: TLSCertificate, _ plan: Plan) -> Bool {
        if let at = renewalTimes.withLock({ $0[cert.id]?.renewAt }), at <= Date() { return true }
        let lifetime = cert.notAfter.timeIntervalSince(cert.notBefore)
        return cert.notAfter.timeIntervalSinceNow < lifetime * plan.renewalWindowRatio
    }

    /// Asks the issuer for `cert`'s renewal window (ACME Renewal Information) when it offers one and it is time
    /// to ask, and picks a random moment inside it, as certmagic does.
    func refreshRenewalInfo(_ cert: TLSCertificate, _ plan: Plan) async {
        let known = renewalTimes.withLock { $0[cert.id] }
        if let known, known.askAfter > Date() { return }
        guard let provider = plan.issuers.compactMap({ $0 as? any RenewalWindowProvider }).first,
            let leaf = cert.leafCertificate
        else {
            renewalTimes.withLock { $0[cert.id] = (nil, .distantFuture) }
            return
        }
        do {
            guard let window = try await provider.renewalWindow(for: leaf) else {
                renewalTimes.withLock { $0[cert.id] = (nil, .distantFuture) }
                return
            }
            let span = max(0, window.end.timeIntervalSince(window.start))
            let at = window.start.addingTimeInterval(Double.random(in: 0...1) * span)
            let askAfter = window.retryAfter ?? Date().addingTimeInterval(6 * 3600)
            renewalTimes.withLock { $0[cert.id] = (known?.renewAt ?? at, askAfter) }
            logger.info(
                "updated ACME renewal information",
                metadata: [
                    "identifier": "\(cert.names.first ?? "")", "window_start": "\(window.start)",
                    "window_end": "\(window.end)", "selected_time": "\(known?.renewAt ?? at)",
                ])
        } catch {
            renewalTimes.withLock { $0[cert.id] = (known?.renewAt, Date().addingTimeInterval(3600)) }
            logger.warning(
                "getting ACME renewal information",
                metadata: ["identifier": "\(cert.names.first ?? "")", "error": "\(error)"])
        }
    }

    /// Runs obtain (or renew) for `name` in the background, once at a time per name, retrying with certmagic's
    /// backoff and logging each failure with the CA's problem.
    func schedule(_ name: String, renewing: Bool) {
        if stopped.load(ordering: .relaxed) { return }
        jobs.withLock { running in
            guard running[name] == nil else { return }
            running[name] = Task { [self] in
                defer { _ = jobs.withLock { $0.removeValue(forKey: name) } }
                let start = Date()
                var attempt = 0
                while !Task.isCancelled {
                    do {
                        try await obtain(name, plan(for: name), renewing: renewing)
                        return
                    } catch is CancellationError {
                        return
                    } catch StorageError.lockLost(let why) {
                        // Another instance took the lapsed lock and stored its result: take the lock again at
                        // once, and the re-check under it loads that result.
                        logger.warning(
                            "lock lost while obtaining; re-checking storage",
                            metadata: ["identifier": "\(name)", "error": "\(why)"])
                        try? await Task.sleep(nanoseconds: 500_000_000)
                        continue
                    } catch {
                        if Task.isCancelled { return }
                        let wait = retryIntervals[min(attempt, retryIntervals.count - 1)]
                        guard Date().timeIntervalSince(start) + wait < maxRetrySeconds else {
                            logger.error(
                                "final attempt; giving up",
                                metadata: ["identifier": "\(name)", "error": "\(error)"])
                            return
                        }
                        logger.error(
                            "will retry",
                            metadata: [
                                "identifier": "\(name)", "error": "\(error)", "attempt": "\(attempt + 1)",
                                "retrying_in": "\(Int(wait))s", "renewal": "\(renewing)",
                            ])
                        attempt += 1
                        try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
                    }
                }
            }
        }
    }

    /// Obtains (or renews) the certificate for `name` under the storage lock certmagic uses, unless another
    /// process sharing the storage did it meanwhile; tries the issuers in order.
    func obtain(_ name: String, _ plan: Plan, renewing: Bool) async throws {
        let lockName = StorageKeys.issueLock(name)
        // In a fleet (storage that can try a lock), a slot of the order rate limit is taken before the lock, and
        // the lock only if no other instance holds it: a throttled instance then does not sit on names the others
        // could be ordering, and a fleet of N orders up to N times as fast. The slot goes back when the name is
        // busy; this task then waits for the holder's result as usual.
        if let storage = plan.storage as? any TryLockingStorage, let acme = plan.issuers.first as? ACMEIssuer {
            let slot = await acme.reserveOrderSlot(names: [name])
            let taken: Bool
            do {
                taken = try await storage.tryLock(lockName)
            } catch {
                await acme.returnOrderSlot(slot)
                throw error
            }
            if taken {
                try await storage.withHeldLock(lockName) {
                    try await obtainLocked(name, plan, renewing: renewing, reserved: (acme, slot))
                }
                return
            }
            await acme.returnOrderSlot(slot)
        }
        try await plan.storage.withLock(lockName) {
            try await obtainLocked(name, plan, renewing: renewing, reserved: nil)
        }
    }

    /// The part of ``obtain(_:_:renewing:)`` done holding the issuing lock. `reserved`: the issuer whose order
    /// slot the caller took, and the slot.
    private func obtainLocked(
        _ name: String, _ plan: Plan, renewing: Bool, reserved: (issuer: ACMEIssuer, slot: ContinuousClock.Instant)?
    ) async throws {
        if let stored = await loadStored(name, plan), !needsRenewal(stored, plan) {
            await cache(stored)
            if let reserved { await reserved.issuer.returnOrderSlot(reserved.slot) }
            return
        }
        // reuse_private_keys: the stored key signs the new CSR too (certmagic's reusePrivateKey).
        var key = try plan.keyType.generate()
        var algorithm = plan.keyType.signatureAlgorithm
        if plan.reuseKeys, let old = await storedKey(name, plan) {
            key = old.key
            algorithm = old.algorithm
        }
        var starting: JSONObject = ["identifier": .string(name)]
        let old = renewing ? store.managedCertificate(for: name) : nil
        if renewing {
            starting["renewal"] = true
            starting["forced"] = false
            starting["remaining"] = .number(JSONNumber(Int((old?.notAfter.timeIntervalSinceNow ?? 0) * 1e9)))
            if let issuer = plan.issuers.first { starting["issuer"] = .string(issuer.issuerKey) }
        }
        if let events, let aborted = await events.emit("cert_obtaining", origin: "tls", data: starting).aborted {
            throw ConfigError(
                "\(renewing ? "renewing" : "obtaining") certificate aborted by event handler: \(aborted)")
        }
        let csr = try makeCSR(names: [name], key: key, algorithm: algorithm, mustStaple: plan.mustStaple)
        var request = CertificateRequest(names: [name], csrDER: csr, publicKey: key.publicKey)
        request.orderSlotReservedBy = reserved?.issuer.issuerKey
        if renewing, let old = store.managedCertificate(for: name)?.leafCertificate {
            request.replaces =
                plan.issuers.compactMap { ($0 as? any RenewalWindowProvider)?.renewalIdentifier(for: old) }.first
        }
        var lastError: (any Error)?
        for issuer in plan.issuers {
            do {
                let issued = try await issuer.issue(request)
                let keyPEM = try key.serializeAsPEM().pemString + "\n"
                let cert = try TLSCertificate(
                    chainPEM: issued.chainPEM, keyPEM: keyPEM, managed: true,
                    origin: StorageKeys.siteCertificate(issuerKey: issuer.issuerKey, name: name))
                try await save(name, issuer.issuerKey, chainPEM: issued.chainPEM, keyPEM: keyPEM, issued, plan)
                if let events {
                    let crt = StorageKeys.siteCertificate(issuerKey: issuer.issuerKey, name: name)
                    var data: JSONObject = [
                        "renewal": .bool(renewing), "identifier": .string(name), "issuer": .string(issuer.issuerKey),
                        "storage_path": .string(StorageKeys.sitePrefix(issuerKey: issuer.issuerKey, name: name)),
                        "private_key_path": .string(
                            StorageKeys.sitePrivateKey(issuerKey: issuer.issuerKey, name: name)),
                        "certificate_path": .string(crt),
                        "metadata_path": .string(StorageKeys.siteMetadata(issuerKey: issuer.issuerKey, name: name)),
                        // Go's JSON gives []byte as base64, so this is the PEM text in base64, as Caddy logs it.
                        "csr_pem": .string(
                            Data((PEMDocument(type: "CERTIFICATE REQUEST", derBytes: csr).pemString + "\n").utf8)
                                .base64EncodedString()),
                    ]
                    if renewing { data["remaining"] = starting["remaining"] }
                    await events.emit("cert_obtained", origin: "tls", data: data)
                }
                await cache(cert)
                logger.info(
                    renewing ? "certificate renewed successfully" : "certificate obtained successfully",
                    metadata: ["identifier": "\(name)", "issuer": "\(issuer.issuerKey)"])
                return
            } catch StorageError.lockLost(let why) {
                throw StorageError.lockLost(why)
            } catch {
                lastError = error
                let problem = (error as? ACMEError)?.problem.map { "\($0)" } ?? "\(error)"
                logger.error(
                    "could not get certificate from issuer",
                    metadata: ["identifier": "\(name)", "issuer": "\(issuer.issuerKey)", "error": "\(problem)"])
            }
        }
        if let events {
            var data: JSONObject = [
                "renewal": .bool(renewing), "identifier": .string(name),
                "issuers": .array(plan.issuers.map { .string($0.issuerKey) }),
                "error": .string(lastError.map { "\($0)" } ?? "no issuer"),
            ]
            if renewing { data["remaining"] = starting["remaining"] }
            await events.emit("cert_failed", origin: "tls", data: data)
        }
        throw lastError ?? ConfigError("no issuer for \(name)")
    }

    /// Puts a managed certificate in the cache, telling the `events` app (`cached_managed_cert`).
    func cache(_ cert: TLSCertificate) async {
        store.add(cert)
        await events?.emit("cached_managed_cert", origin: "tls", data: ["sans": .array(cert.names.map { .string($0) })])
    }

    /// Stores the key, chain and metadata. The pair is first written beside the live files as `.pending`, so a
    /// crash between the key and the chain (which would leave a mismatched pair) is repaired on the next load.
    private func save(
        _ name: String, _ issuerKey: String, chainPEM: String, keyPEM: String, _ issued: IssuedCertificate,
        _ plan: Plan
    ) async throws {
        let crt = StorageKeys.siteCertificate(issuerKey: issuerKey, name: name)
        let key = StorageKeys.sitePrivateKey(issuerKey: issuerKey, name: name)
        let meta = StorageKeys.siteMetadata(issuerKey: issuerKey, name: name)
        var metadata: JSONObject = ["sans": [.string(name)]]
        if let m = issued.metadata { metadata["issuer_data"] = m }
        try await plan.storage.store(crt + ".pending", text: chainPEM)
        try await plan.storage.store(key + ".pending", text: keyPEM)
        try await plan.storage.store(key, text: keyPEM)
        try await plan.storage.store(crt, text: chainPEM)
        try await plan.storage.store(meta, JSONValue.object(metadata).serializedBytes(.pretty))
        try? await plan.storage.delete(crt + ".pending")
        try? await plan.storage.delete(key + ".pending")
    }

    /// The private key stored for `name` under the first of the plan's issuers that has one, with the signature
    /// algorithm that fits it.
    func storedKey(_ name: String, _ plan: Plan) async -> (
        key: Certificate.PrivateKey, algorithm: Certificate.SignatureAlgorithm
    )? {
        for issuer in plan.issuers {
            guard
                let pem = try? await plan.storage.loadText(
                    StorageKeys.sitePrivateKey(issuerKey: issuer.issuerKey, name: name)),
                let key = try? Certificate.PrivateKey(pemEncoded: pem)
            else { continue }
            let pub = key.publicKey
            let algorithm: Certificate.SignatureAlgorithm
            if P256.Signing.PublicKey(pub) != nil {
                algorithm = .ecdsaWithSHA256
            } else if P384.Signing.PublicKey(pub) != nil {
                algorithm = .ecdsaWithSHA384
            } else if P521.Signing.PublicKey(pub) != nil {
                algorithm = .ecdsaWithSHA512
            } else if Curve25519.Signing.PublicKey(pub) != nil {
                algorithm = .ed25519
            } else {
                algorithm = .sha256WithRSAEncryption
            }
            return (key, algorithm)
        }
        return nil
    }

    /// The stored certificate for `name` from the first of the plan's issuers that has one covering it (a pair
    /// left mismatched by a crash falls back to its `.pending` copy).
    func loadStored(_ name: String, _ plan: Plan) async -> TLSCertificate? {
        for issuer in plan.issuers {
            let crt = StorageKeys.siteCertificate(issuerKey: issuer.issuerKey, name: name)
            let key = StorageKeys.sitePrivateKey(issuerKey: issuer.issuerKey, name: name)
            for suffix in ["", ".pending"] {
                guard let chain = try? await plan.storage.loadText(crt + suffix),
                    let keyPEM = try? await plan.storage.loadText(key + suffix)
                else { continue }
                do {
                    let cert = try TLSCertificate(chainPEM: chain, keyPEM: keyPEM, managed: true, origin: crt + suffix)
                    if cert.covers(name) && cert.notAfter > Date() { return cert }
                } catch {
                    // A damaged or mismatched pair is not served; the next candidate (or a new order) replaces it.
                    logger.warning(
                        "stored certificate is unusable", metadata: ["path": "\(crt + suffix)", "error": "\(error)"])
                }
            }
        }
        return nil
    }
}

/// A PKCS #10 request for `names` (as subject alternative names), DER; with `mustStaple`, the TLS Feature extension
/// asking for status_request (RFC 7633).
func makeCSR(
    names: [String], key: Certificate.PrivateKey, algorithm: Certificate.SignatureAlgorithm, mustStaple: Bool = false
) throws -> [UInt8] {
    let sans = names.map(subjectAltName)
    let extensions = try Certificate.Extensions {
        SubjectAlternativeNames(sans)
        if mustStaple {
            // id-pe-tlsfeature: SEQUENCE { INTEGER 5 (status_request) }
            Certificate.Extension(
                oid: [1, 3, 6, 1, 5, 5, 7, 1, 24], critical: false, value: [0x30, 0x03, 0x02, 0x01, 0x05])
        }
    }
    let attributes = try CertificateSigningRequest.Attributes([.init(ExtensionRequest(extensions: extensions))])
    let csr = try CertificateSigningRequest(
        version: .v1, subject: try DistinguishedName {}, privateKey: key, attributes: attributes,
        signatureAlgorithm: algorithm)
    var serializer = DER.Serializer()
    try serializer.serialize(csr)
    return serializer.serializedBytes
}

/// The issuers for names no automation policy covers: Caddy's defaults, ACME for names that qualify for a public
/// certificate and the internal CA for the rest.
final class DefaultIssuers: Sendable {
    let acme: (any AutomationIssuer)?
    let internalIssuer: any AutomationIssuer

    init(acme: (any AutomationIssuer)?, internalIssuer: any AutomationIssuer) {
        self.acme = acme
        self.internalIssuer = internalIssuer
    }

    func issuers(for name: String) -> [any AutomationIssuer] {
        if let acme, certmagicQualifiesForPublicCert(name) { return [acme] }
        return [internalIssuer]
    }
}
