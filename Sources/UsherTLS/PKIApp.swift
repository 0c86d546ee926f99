import Crypto
public import Foundation
import Logging
import SwiftASN1
public import Synchronization
public import UsherCore
public import X509

#if canImport(Glibc)
import Glibc
#endif

/// The `pki` app: certificate authorities that issue internal certificates. `local` always exists.
public struct PKIApp: App, Provisioner {
    public static let moduleID: ModuleID = "pki"

    /// `certificate_authorities`: by ID; `local` is added when absent.
    public var certificateAuthorities: [String: CAConfig]
    private let authorities = SharedState<[String: CertificateAuthority]>([:])
    private let logger = SharedState<Logger?>(nil)

    package enum CodingKeys: String, CodingKey { case certificateAuthorities = "certificate_authorities" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificateAuthorities = try c.decodeIfPresent([String: CAConfig].self, forKey: .certificateAuthorities) ?? [:]
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        if certificateAuthorities["local"] == nil { certificateAuthorities["local"] = CAConfig() }
        var made: [String: CertificateAuthority] = [:]
        for id in certificateAuthorities.keys.sorted() {
            made[id] = CertificateAuthority(id: id, config: certificateAuthorities[id]!, storage: context.storage)
        }
        // When serving, the keys are loaded or made now, as Caddy's CA provisioning does, so modules provisioned
        // after this app (a CA pool reading the root from storage) find them; `validate` writes nothing.
        if context.mode == .run {
            for id in made.keys.sorted() { try await made[id]!.prepare() }
        }
        authorities.withLock { $0 = made }
        let log = context.logger("pki")
        logger.withLock { $0 = log }
    }

    /// The authority with ID `id`.
    public func authority(_ id: String) -> CertificateAuthority? { authorities.withLock { $0[id] } }

    /// Installs the roots of CAs with `install_trust` into the system store; failing to is a warning, as in Caddy.
    public func start() async throws {
        let log = logger.withLock { $0 }
        for (id, ca) in authorities.withLock({ $0 }).sorted(by: { $0.key < $1.key }) where ca.config.installTrust {
            do {
                try await ca.prepare()
                let installed = try await ca.installRootInSystemTrust()
                log?.info(
                    "root certificate is installed in the system trust store",
                    metadata: ["ca": "\(id)", "path": "\(installed)"])
            } catch {
                log?.warning("failed to install root certificate", metadata: ["ca": "\(id)", "error": "\(error)"])
            }
        }
    }
    public func stop() async {}
}

/// One entry of `certificate_authorities`.
public struct CAConfig: Decodable, Sendable {
    /// `name`: the CA's display name. Default: `Usher Local Authority`.
    public var name: String
    /// `root_common_name`: Default: `{name} - {year} ECC Root`.
    public var rootCommonName: String?
    /// `intermediate_common_name`: Default: `{name} - ECC Intermediate`.
    public var intermediateCommonName: String?
    /// `intermediate_lifetime`: Default: 7 days.
    public var intermediateLifetime: ConfigDuration?
    /// `install_trust`: install the root into the system store on start. Default: false here (Caddy's is true; use
    /// `usher trust --install` once instead of writing to the system store on every start).
    public var installTrust: Bool

    package enum CodingKeys: String, CodingKey {
        case name, rootCommonName = "root_common_name", intermediateCommonName = "intermediate_common_name"
        case intermediateLifetime = "intermediate_lifetime", installTrust = "install_trust", root, intermediate
        case maintenanceInterval = "maintenance_interval", renewalWindowRatio = "renewal_window_ratio", storage
    }

    init() {
        name = "Usher Local Authority"
        installTrust = false
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.root, .intermediate], note: "bring-your-own CA keys")
        try c.refuseUnsupported([.storage])
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? "Usher Local Authority"
        rootCommonName = try c.decodeIfPresent(String.self, forKey: .rootCommonName)
        intermediateCommonName = try c.decodeIfPresent(String.self, forKey: .intermediateCommonName)
        intermediateLifetime = try c.decodeIfPresent(ConfigDuration.self, forKey: .intermediateLifetime)
        installTrust = try c.decodeIfPresent(Bool.self, forKey: .installTrust) ?? false
        _ = try c.decodeIfPresent(ConfigDuration.self, forKey: .maintenanceInterval)
        _ = try c.decodeIfPresent(Double.self, forKey: .renewalWindowRatio)
    }
}

/// A CA whose root and intermediate live in storage in Caddy's layout (`pki/authorities/<id>/root.crt`, `root.key`,
/// `intermediate.crt`, `intermediate.key`), created on first use under a storage lock (so processes sharing storage
/// make one root) and kept across runs; the intermediate is replaced when a third of its life is left.
public final class CertificateAuthority: Sendable {
    public let id: String
    let config: CAConfig
    /// Where the CA's files are kept.
    public let storage: any Storage
    struct Keys {
        var root: Certificate
        var intermediate: Certificate
        var intermediateKey: Certificate.PrivateKey
        var intermediatePEM: String
        var rootPEM: String
    }
    let keys = Mutex<Keys?>(nil)

    /// The CA `id` with default settings, kept in `dataDirectory` (for commands that run without a config).
    public static func stored(id: String, dataDirectory: String) -> CertificateAuthority {
        CertificateAuthority(id: id, config: CAConfig(), storage: FileStorage(root: dataDirectory))
    }

    init(id: String, config: CAConfig, storage: any Storage) {
        self.id = id
        self.config = config
        self.storage = storage
    }

    /// `pki/authorities/<id>`.
    var prefix: String { "pki/authorities/" + StorageKeys.safe(id) }

    /// The root certificate's file, when the storage is a folder.
    public var rootCertificatePath: String? { (storage as? FileStorage)?.filename(prefix + "/root.crt") }

    /// The root certificate as PEM (after ``prepare()``).
    public var rootPEM: String? { keys.withLock { $0?.rootPEM } }

    /// Where Debian keeps extra trusted roots (read by `update-ca-certificates`).
    public static let systemTrustDirectory = "/usr/local/share/ca-certificates"

    /// The root's file in the system trust directory.
    public var systemTrustPath: String { "\(Self.systemTrustDirectory)/usher-\(id)-root.crt" }

    /// Writes the root into the system trust directory and runs `update-ca-certificates`; returns the file written.
    @discardableResult
    public func installRootInSystemTrust() async throws -> String {
        if keys.withLock({ $0 == nil }) { try await prepare() }
        guard let pem = rootPEM else { throw ConfigError("CA \(id) is not ready") }
        try FileManager.default.createDirectory(atPath: Self.systemTrustDirectory, withIntermediateDirectories: true)
        try FileStorage.writeAtomically(systemTrustPath, Array(pem.utf8), mode: 0o644)
        try Self.updateSystemTrust()
        return systemTrustPath
    }

    /// Removes the root from the system trust directory; `false` when it was not installed.
    public func removeRootFromSystemTrust() throws -> Bool {
        guard FileManager.default.fileExists(atPath: systemTrustPath) else { return false }
        try FileManager.default.removeItem(atPath: systemTrustPath)
        try Self.updateSystemTrust()
        return true
    }

    private static func updateSystemTrust() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/update-ca-certificates")
        p.arguments = ["--fresh"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            throw ConfigError(
                "running update-ca-certificates: \(error.localizedDescription) (is the ca-certificates package installed?)"
            )
        }
        p.waitUntilExit()
        if p.terminationStatus != 0 {
            throw ConfigError("update-ca-certificates exited with status \(p.terminationStatus)")
        }
    }

    /// Loads the root and intermediate from storage, creating (or renewing) what is missing or expiring.
    public func prepare() async throws {
        let now = Date()
        let rootRenew: @Sendable (Certificate) -> Bool = { $0.notValidAfter < now.addingTimeInterval(7 * 86400) }
        if let loaded = try await load(renewRoot: rootRenew, now: now) {
            keys.withLock { $0 = loaded }
            return
        }
        // Something is missing or due: make it under the storage lock, after looking again (another process
        // sharing the storage may have just made it).
        let made = try await storage.withLock("pki_authority_" + id) {
            if let loaded = try await load(renewRoot: rootRenew, now: now) { return loaded }
            return try await create(renewRoot: rootRenew, now: now)
        }
        keys.withLock { $0 = made }
    }

    private func read(_ name: String) async -> (Certificate, Certificate.PrivateKey, String)? {
        guard let certText = try? await storage.loadText(prefix + "/\(name).crt"),
            let keyText = try? await storage.loadText(prefix + "/\(name).key"),
            let cert = try? Certificate(pemEncoded: certText),
            let key = try? Certificate.PrivateKey(pemEncoded: keyText)
        else { return nil }
        return (cert, key, certText)
    }

    private func intermediateDue(_ c: Certificate, root: Certificate, now: Date) -> Bool {
        c.notValidAfter.timeIntervalSince(now) < c.notValidAfter.timeIntervalSince(c.notValidBefore) / 3
            || c.issuer != root.subject
    }

    private func load(renewRoot: (Certificate) -> Bool, now: Date) async throws -> Keys? {
        guard let (root, _, rootPEM) = await read("root"), !renewRoot(root),
            let (intermediate, key, pem) = await read("intermediate"),
            !intermediateDue(intermediate, root: root, now: now)
        else { return nil }
        return Keys(
            root: root, intermediate: intermediate, intermediateKey: key, intermediatePEM: Self.endLine(pem),
            rootPEM: Self.endLine(rootPEM))
    }

    private func create(renewRoot: (Certificate) -> Bool, now: Date) async throws -> Keys {
        var root: (Certificate, Certificate.PrivateKey)
        if let (cert, key, _) = await read("root"), !renewRoot(cert) {
            root = (cert, key)
        } else {
            root = try Self.makeCA(commonName: rootCommonName(now: now), lifetime: 3600 * 86400, issuer: nil)
            try await write("root", root)
        }
        let lifetime = Double(config.intermediateLifetime?.nanoseconds ?? 7 * 86400 * 1_000_000_000) / 1e9
        var intermediate: (Certificate, Certificate.PrivateKey)
        if let (cert, key, _) = await read("intermediate"), !intermediateDue(cert, root: root.0, now: now) {
            intermediate = (cert, key)
        } else {
            intermediate = try Self.makeCA(commonName: intermediateCommonName, lifetime: lifetime, issuer: root)
            try await write("intermediate", intermediate)
        }
        return Keys(
            root: root.0, intermediate: intermediate.0, intermediateKey: intermediate.1,
            intermediatePEM: try intermediate.0.serializeAsPEM().pemString + "\n",
            rootPEM: try root.0.serializeAsPEM().pemString + "\n")
    }

    /// The key first, then the certificate: a crash between them leaves a certificate that no longer matches its
    /// key, which ``read(_:)``'s caller replaces, rather than a certificate whose key is lost.
    private func write(_ name: String, _ pair: (Certificate, Certificate.PrivateKey)) async throws {
        try await storage.store(prefix + "/\(name).key", text: try pair.1.serializeAsPEM().pemString + "\n")
        try await storage.store(prefix + "/\(name).crt", text: try pair.0.serializeAsPEM().pemString + "\n")
    }

    private static func endLine(_ s: String) -> String { s.hasSuffix("\n") ? s : s + "\n" }

    static func makeCA(
        commonName: String, lifetime: TimeInterval,
        issuer: (Certificate, Certificate.PrivateKey)?
    ) throws -> (Certificate, Certificate.PrivateKey) {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: issuer == nil ? 1 : 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
            if let issuer {
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuer.0.publicKey).keyIdentifier)
            }
        }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(lifetime),
            issuer: issuer?.0.subject ?? subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: issuer?.1 ?? key
        )
        return (cert, key)
    }

    /// Issues a leaf for `names` (DNS names or IP addresses) and `publicKey`, valid for `lifetime`, chained to the
    /// intermediate; returns the chain as PEM.
    public func issue(names: [String], publicKey: Certificate.PublicKey, lifetime: TimeInterval) async throws
        -> String
    {
        if keys.withLock({ $0 == nil }) { try await prepare() }
        guard let k = keys.withLock({ $0 }) else { throw ConfigError("CA \(id) is not ready") }
        let now = Date()
        // A leaf never outlives its issuer. It is backdated a little for clocks running behind, but never by more
        // than a tenth of its life, so the renewal point (a third of the life left) stays where it belongs.
        let notAfter = min(now.addingTimeInterval(lifetime), k.intermediate.notValidAfter)
        let backdate = min(60, lifetime / 10)
        let sans = names.map(subjectAltName)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: k.intermediate.publicKey).keyIdentifier)
            SubjectAlternativeNames(sans)
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-backdate), notValidAfter: notAfter,
            issuer: k.intermediate.subject, subject: try DistinguishedName {}, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: k.intermediateKey
        )
        return try leaf.serializeAsPEM().pemString + "\n" + k.intermediatePEM
    }
}

/// A subject alternative name for `name`: an IP address entry for an address literal, else a DNS name.
func subjectAltName(_ name: String) -> GeneralName {
    if let ip = ipBytes(name) { return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip))) }
    return .dnsName(name)
}

/// The four or sixteen bytes of an IP address literal, or `nil` for a host name.
func ipBytes(_ s: String) -> [UInt8]? {
    // Plain byte buffers rather than in_addr/in6_addr: their imported initializers belong to whichever C module
    // Clang saw the header in first, which MemberImportVisibility then asks us to import.
    var bytes = [UInt8](repeating: 0, count: 16)
    if inet_pton(AF_INET, s, &bytes) == 1 { return Array(bytes.prefix(4)) }
    if inet_pton(AF_INET6, s, &bytes) == 1 { return bytes }
    return nil
}
