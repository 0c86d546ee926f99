import Foundation
import Logging
import Synchronization
public import UsherCore

/// Issuers under `tls.issuance` (inline key `module`).
public protocol AutomationIssuer: Module {
    /// The folder name under `certificates/` where this issuer's certificates are kept.
    var storageKey: String { get }
}

public enum Issuers: ModuleNamespace {
    public static let prefix = "tls.issuance"
    public static let inlineKey: String? = "module"
    public typealias Instance = any AutomationIssuer
}

/// `tls.issuance.internal`: certificates from a CA of the `pki` app.
public struct InternalIssuer: AutomationIssuer {
    public static let moduleID: ModuleID = "tls.issuance.internal"
    /// `ca`: the CA's ID in the `pki` app. Default: `local`.
    public var ca: String
    /// `lifetime`: validity of issued certificates. Default: 12h.
    public var lifetime: ConfigDuration?
    /// `sign_with_root`: sign with the root instead of the intermediate. Default: false.
    public var signWithRoot: Bool

    package enum CodingKeys: String, CodingKey { case ca, lifetime, signWithRoot = "sign_with_root" }

    public init(ca: String = "local") {
        self.ca = ca
        self.lifetime = nil
        self.signWithRoot = false
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ca = try c.decodeIfPresent(String.self, forKey: .ca) ?? "local"
        if ca.isEmpty { ca = "local" }
        lifetime = try c.decodeIfPresent(ConfigDuration.self, forKey: .lifetime)
        signWithRoot = try c.decodeIfPresent(Bool.self, forKey: .signWithRoot) ?? false
        if signWithRoot { throw c.error(.signWithRoot, "not supported yet") }
    }

    public var storageKey: String { ca }

    var lifetimeSeconds: TimeInterval {
        guard let l = lifetime, l.nanoseconds > 0 else { return 12 * 3600 }
        return Double(l.nanoseconds) / 1e9
    }
}

/// One of `automation.policies`.
public struct AutomationPolicy: Decodable, Sendable {
    /// `subjects`: names this policy applies to (wildcards allowed); empty means every name.
    public var subjects: [String]
    /// `issuers`: tried in order. Default: the internal issuer (no ACME issuer exists in this build).
    public var issuers: [Loaded<Issuers>]

    package enum CodingKeys: String, CodingKey {
        case subjects, issuers, keyType = "key_type", renewalWindowRatio = "renewal_window_ratio"
        case onDemand = "on_demand", getCertificate = "get_certificate", storage, mustStaple = "must_staple"
        case reusePrivateKeys = "reuse_private_keys", disableOCSPStapling = "disable_ocsp_stapling"
        case ocspOverrides = "ocsp_overrides"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.onDemand, .getCertificate, .storage, .mustStaple])
        subjects = try c.decodeIfPresent([String].self, forKey: .subjects) ?? []
        issuers = try c.decodeIfPresent([Loaded<Issuers>].self, forKey: .issuers) ?? []
        if let kt = try c.decodeIfPresent(String.self, forKey: .keyType), !kt.isEmpty, kt != "p256" {
            throw c.error(.keyType, "key type \(kt) is not supported yet (internal certificates use p256)")
        }
        _ = try c.decodeIfPresent(Double.self, forKey: .renewalWindowRatio)
        _ = try c.decodeIfPresent(Bool.self, forKey: .reusePrivateKeys)
        _ = try c.decodeIfPresent(Bool.self, forKey: .disableOCSPStapling)
        _ = try c.decodeIfPresent(JSONValue.self, forKey: .ocspOverrides)
    }

    func matches(_ name: String) -> Bool {
        subjects.isEmpty || subjects.contains { $0.lowercased() == name.lowercased() || wildcardMatch(name, $0) }
    }
}

/// `automation` of the `tls` app.
public struct AutomationConfig: Decodable, Sendable {
    public var policies: [AutomationPolicy]
    /// `renew_interval`: how often managed certificates are checked for renewal. Default: 10m.
    public var renewInterval: ConfigDuration?

    package enum CodingKeys: String, CodingKey {
        case policies, renewInterval = "renew_interval", onDemand = "on_demand", ocspInterval = "ocsp_interval"
        case storageCleanInterval = "storage_clean_interval"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.onDemand])
        policies = try c.decodeIfPresent([AutomationPolicy].self, forKey: .policies) ?? []
        renewInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .renewInterval)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .ocspInterval)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .storageCleanInterval)
    }

    func issuer(for name: String) -> (any AutomationIssuer)? {
        for p in policies where p.matches(name) { return p.issuers.first?.module }
        return nil
    }
}

/// Matches `name` against a pattern with `*` standing for one left-most label.
func wildcardMatch(_ name: String, _ pattern: String) -> Bool {
    let n = name.lowercased().split(separator: ".", omittingEmptySubsequences: false)
    let p = pattern.lowercased().split(separator: ".", omittingEmptySubsequences: false)
    guard n.count == p.count else { return false }
    for (a, b) in zip(n, p) where b != "*" && a != b { return false }
    return true
}

/// Obtains managed certificates at start and renews them when a third of their life is left.
final class TLSAppRuntime: Sendable {
    let store: CertificateStore
    let automation: AutomationConfig?
    let dataDirectory: String
    let logger: Logger
    let pki: PKIApp?
    private let maintenance = Mutex<Task<Void, Never>?>(nil)
    private let names = Mutex<[String]>([])

    init(store: CertificateStore, automation: AutomationConfig?, dataDirectory: String, logger: Logger, pki: PKIApp?) {
        self.store = store
        self.automation = automation
        self.dataDirectory = dataDirectory
        self.logger = logger
        self.pki = pki
    }

    func start(names managed: [String]) async throws {
        names.withLock { $0 = managed }
        for name in managed { try obtain(name, renewing: false) }
        guard !managed.isEmpty else { return }
        let interval =
            automation?.renewInterval.flatMap { $0.nanoseconds > 0 ? Double($0.nanoseconds) / 1e9 : nil } ?? 600
        let task = Task { [self] in
            while !Task.isCancelled {
                // Check at least six times per lifetime of the shortest-lived certificate, so renewal is never late.
                let shortest =
                    store.all.filter(\.managed).map { $0.notAfter.timeIntervalSince($0.notBefore) }.min() ?? interval
                let wait = max(1, min(interval, shortest / 6))
                try? await Task.sleep(for: .seconds(wait))
                if Task.isCancelled { return }
                for name in self.names.withLock({ $0 }) {
                    do { try obtain(name, renewing: true) } catch {
                        logger.error("renewing certificate", metadata: ["identifier": "\(name)", "error": "\(error)"])
                    }
                }
            }
        }
        maintenance.withLock { $0 = task }
    }

    func stop() async {
        maintenance.withLock { t in
            t?.cancel()
            t = nil
        }
    }

    private func issuer(for name: String) -> any AutomationIssuer {
        automation?.issuer(for: name) ?? InternalIssuer()
    }

    /// Makes sure the store holds a fresh certificate for `name`: from storage if one is there and fresh, else
    /// newly issued (and written to storage).
    private func obtain(_ name: String, renewing: Bool) throws {
        let now = Date()
        func fresh(_ c: TLSCertificate) -> Bool {
            c.notAfter.timeIntervalSince(now) > c.notAfter.timeIntervalSince(c.notBefore) / 3
        }
        if let current = store.all.first(where: { $0.managed && $0.names == [name.lowercased()] }), fresh(current) {
            return
        }
        guard let issuer = issuer(for: name) as? InternalIssuer else {
            throw ConfigError(
                path: "apps.tls.automation", "no issuer in this build can obtain a certificate for \(name)")
        }
        let fileName = name.replacingOccurrences(of: "*", with: "wildcard_")
        let dir = "\(dataDirectory)/certificates/\(issuer.storageKey)/\(fileName)"
        let certPath = "\(dir)/\(fileName).crt"
        let keyPath = "\(dir)/\(fileName).key"
        if let chain = try? String(contentsOfFile: certPath, encoding: .utf8),
            let key = try? String(contentsOfFile: keyPath, encoding: .utf8),
            let cert = try? TLSCertificate(chainPEM: chain, keyPEM: key, managed: true, origin: certPath),
            fresh(cert), cert.covers(name)
        {
            store.add(cert)
            return
        }
        guard let ca = pki?.authority(issuer.ca) else {
            throw ConfigError(
                path: "apps.tls.automation", "certificate authority \(issuer.ca) is not configured in the pki app")
        }
        let issued: (chainPEM: String, keyPEM: String)
        do {
            issued = try ca.issue(names: [name], lifetime: issuer.lifetimeSeconds)
        } catch {
            throw ConfigError(
                path: "apps.tls.automation", "issuing certificate for \(name) from CA \(issuer.ca): \(error)")
        }
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try writeFile(keyPath, issued.keyPEM, mode: 0o600)
        try writeFile(certPath, issued.chainPEM, mode: 0o644)
        let cert = try TLSCertificate(chainPEM: issued.chainPEM, keyPEM: issued.keyPEM, managed: true, origin: certPath)
        store.add(cert)
        logger.info(
            renewing ? "certificate renewed successfully" : "certificate obtained successfully",
            metadata: ["identifier": "\(name)", "issuer": "\(issuer.ca)"])
    }
}
