public import Foundation
public import UsherCore
public import X509

/// Issuers under `tls.issuance` (inline key `module`): they turn a CSR into a certificate chain.
public protocol AutomationIssuer: Module {
    /// The folder name under `certificates/` where this issuer's certificates are kept (certmagic's issuer key).
    var issuerKey: String { get }
    /// Obtains a certificate for the request's names and public key.
    func issue(_ request: CertificateRequest) async throws -> IssuedCertificate
}

/// An issuer whose CA suggests when to renew (ACME Renewal Information, RFC 9773).
public protocol RenewalWindowProvider: AutomationIssuer {
    /// The CA's suggested renewal window for `leaf` (DER), and when to ask again; `nil` when the CA offers none.
    func renewalWindow(for leaf: Certificate) async throws -> (start: Date, end: Date, retryAfter: Date?)?
    /// The identifier a renewal order names in `replaces`.
    func renewalIdentifier(for leaf: Certificate) -> String?
}

/// What an issuer is asked for: names, and a CSR signed by the new certificate's key.
public struct CertificateRequest: Sendable {
    /// DNS names and IP addresses, as the CSR lists them.
    public var names: [String]
    /// The PKCS #10 request, DER.
    public var csrDER: [UInt8]
    /// The certificate's public key (also inside the CSR).
    public var publicKey: Certificate.PublicKey
    /// For a renewal, the ARI identifier of the certificate it replaces.
    public var replaces: String?
    /// The issuer (by ``AutomationIssuer/issuerKey``) whose order rate limit slot was taken for this request
    /// before the issuing lock, so its first order does not wait again.
    public var orderSlotReservedBy: String?
}

/// What an issuer gives back.
public struct IssuedCertificate: Sendable {
    /// The chain, leaf first, PEM.
    public var chainPEM: String
    /// The issuer's record of it (certmagic's `issuer_data`): for ACME, the certificate URL, CA and account.
    public var metadata: JSONValue?
}

public enum Issuers: ModuleNamespace {
    public static let prefix = "tls.issuance"
    public static let inlineKey: String? = "module"
    public typealias Instance = any AutomationIssuer
}

/// `tls.issuance.internal`: certificates from a CA of the `pki` app.
public struct InternalIssuer: AutomationIssuer, Provisioner {
    public static let moduleID: ModuleID = "tls.issuance.internal"
    /// `ca`: the CA's ID in the `pki` app. Default: `local`.
    public var ca: String
    /// `lifetime`: validity of issued certificates. Default: 12h.
    public var lifetime: ConfigDuration?
    /// `sign_with_root`: sign with the root instead of the intermediate. Default: false.
    public var signWithRoot: Bool
    private let authority = SharedState<CertificateAuthority?>(nil)

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

    public mutating func provision(_ context: ProvisionContext) async throws {
        let pki = try await context.app("pki") as? PKIApp
        guard let found = pki?.authority(ca) else {
            throw ConfigError("ca: certificate authority \(ca) is not configured in the pki app")
        }
        authority.withLock { $0 = found }
    }

    public var issuerKey: String { ca }

    var lifetimeSeconds: TimeInterval {
        guard let l = lifetime, l.nanoseconds > 0 else { return 12 * 3600 }
        return Double(l.nanoseconds) / 1e9
    }

    public func issue(_ request: CertificateRequest) async throws -> IssuedCertificate {
        guard let ca = authority.withLock({ $0 }) else {
            throw ConfigError("certificate authority \(self.ca) is not configured in the pki app")
        }
        let chain = try await ca.issue(names: request.names, publicKey: request.publicKey, lifetime: lifetimeSeconds)
        return IssuedCertificate(chainPEM: chain, metadata: nil)
    }
}

/// One of `automation.policies`.
public struct AutomationPolicy: Decodable, Sendable {
    /// `subjects`: names this policy applies to (wildcards allowed); empty means every name.
    public var subjects: [String]
    /// `issuers`: tried in order. Default: ACME (Let's Encrypt, or the global `acme_ca`) for names that qualify
    /// for a public certificate, the internal CA for others.
    public var issuers: [Loaded<Issuers>]
    /// `key_type`: `ed25519`, `p256`, `p384`, `rsa2048` or `rsa4096`. Default: p256.
    public var keyType: String?
    /// `renewal_window_ratio`: renew when this fraction of the lifetime is left. Default: 1/3.
    public var renewalWindowRatio: Double
    /// `storage`: where this policy's certificates are kept. Default: the config's storage.
    public var storage: Loaded<StorageModules>?
    /// `reuse_private_keys`: keep the key across renewals. Default: false.
    public var reusePrivateKeys: Bool
    /// `must_staple`: ask for the TLS Feature (status_request) extension, so clients require a stapled OCSP
    /// response. Default: false.
    public var mustStaple: Bool
    /// `disable_ocsp_stapling`: staple nothing for this policy's names. Default: false.
    public var disableOCSPStapling: Bool
    /// `ocsp_overrides`: responder URLs to ask instead of the ones certificates name (original → replacement).
    public var ocspOverrides: [String: String]
    /// `on_demand`: obtain certificates for matching names during the first handshake that needs one, as the
    /// `tls` app's `automation.on_demand.permission` allows. Default: false.
    public var onDemand: Bool
    /// `get_certificate`: managers asked during a handshake for these names before any certificate is obtained;
    /// names they cover are not obtained at start (certmagic's on-demand deferral).
    public var getCertificate: [Loaded<CertificateGetters>]
    private let madeStorage = SharedState<(any Storage)?>(nil)

    /// The storage `storage` configures, once provisioned.
    var storageInstance: (any Storage)? { madeStorage.withLock { $0 } }

    package enum CodingKeys: String, CodingKey {
        case subjects, issuers, keyType = "key_type", renewalWindowRatio = "renewal_window_ratio"
        case onDemand = "on_demand", getCertificate = "get_certificate", storage, mustStaple = "must_staple"
        case reusePrivateKeys = "reuse_private_keys", disableOCSPStapling = "disable_ocsp_stapling"
        case ocspOverrides = "ocsp_overrides"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        subjects = try c.decodeIfPresent([String].self, forKey: .subjects) ?? []
        issuers = try c.decodeIfPresent([Loaded<Issuers>].self, forKey: .issuers) ?? []
        keyType = try c.decodeIfPresent(String.self, forKey: .keyType).flatMap { $0.isEmpty ? nil : $0 }
        if let keyType, KeyType(rawValue: keyType) == nil {
            throw c.error(
                .keyType, "unknown key type \(keyType) (expected ed25519, p256, p384, rsa2048 or rsa4096)")
        }
        renewalWindowRatio = try c.decodeIfPresent(Double.self, forKey: .renewalWindowRatio) ?? 0
        if renewalWindowRatio < 0 || renewalWindowRatio >= 1 {
            throw c.error(.renewalWindowRatio, "must be at least 0 and less than 1")
        }
        storage = try c.decodeIfPresent(Loaded<StorageModules>.self, forKey: .storage)
        reusePrivateKeys = try c.decodeIfPresent(Bool.self, forKey: .reusePrivateKeys) ?? false
        mustStaple = try c.decodeIfPresent(Bool.self, forKey: .mustStaple) ?? false
        onDemand = try c.decodeIfPresent(Bool.self, forKey: .onDemand) ?? false
        getCertificate = try c.decodeIfPresent([Loaded<CertificateGetters>].self, forKey: .getCertificate) ?? []
        disableOCSPStapling = try c.decodeIfPresent(Bool.self, forKey: .disableOCSPStapling) ?? false
        ocspOverrides = try c.decodeIfPresent([String: String].self, forKey: .ocspOverrides) ?? [:]
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        try await issuers.provision(context)
        try await getCertificate.provision(context)
        if var loaded = storage {
            try await loaded.provision(context)
            let made = try loaded.module.makeStorage(context)
            madeStorage.withLock { $0 = made }
            storage = loaded
        }
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
    /// `on_demand`: what allows certificates to be obtained during handshakes.
    public var onDemand: OnDemandConfig?
    /// `ocsp_interval`: how often OCSP staples are checked for refreshing. Default: 1h.
    public var ocspInterval: ConfigDuration?

    package enum CodingKeys: String, CodingKey {
        case policies, renewInterval = "renew_interval", onDemand = "on_demand", ocspInterval = "ocsp_interval"
        case storageCleanInterval = "storage_clean_interval"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        policies = try c.decodeIfPresent([AutomationPolicy].self, forKey: .policies) ?? []
        onDemand = try c.decodeIfPresent(OnDemandConfig.self, forKey: .onDemand)
        renewInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .renewInterval)
        ocspInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .ocspInterval)
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .storageCleanInterval)
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        for i in policies.indices { try await policies[i].provision(context) }
        try await onDemand?.provision(context)
        // Caddy's rule since on-demand TLS was abused: a policy that may cover any name and issues from a public
        // CA needs a permission module.
        for (i, p) in policies.enumerated() where p.onDemand && onDemand?.permission == nil {
            let anyName = p.subjects.isEmpty || p.subjects.contains { $0.hasPrefix("*") }
            let internalOnly = !p.issuers.isEmpty && p.issuers.allSatisfy { $0.module is InternalIssuer }
            if anyName && !internalOnly {
                throw ConfigError(
                    path: "apps.tls.automation.policies[\(i)]",
                    "on-demand TLS cannot be enabled without a permission module to prevent abuse; please refer to documentation for details"
                )
            }
        }
    }

    /// The first policy whose subjects match `name` (a policy without subjects matches every name).
    func policy(for name: String) -> AutomationPolicy? {
        policies.first { $0.matches(name) }
    }

    func issuer(for name: String) -> (any AutomationIssuer)? {
        policy(for: name)?.issuers.first?.module
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
