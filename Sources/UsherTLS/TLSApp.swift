import Foundation
public import Synchronization
public import UsherCore

/// Certificate loaders under `tls.certificates` (`load_files`, `load_pem`, `load_folders`, `automate`), keyed by
/// name in the `certificates` object.
public protocol CertificateLoader: Module {
    /// The certificates this loader supplies when the config is provisioned.
    func loadCertificates() throws -> [TLSCertificate]
}

public enum CertificateLoaders: ModuleNamespace {
    public static let prefix = "tls.certificates"
    public static let inlineKey: String? = nil
    public typealias Instance = any CertificateLoader
}

/// Every certificate the `tls` app holds, for connection policies to select from. Shared by all servers of one
/// config; managed certificates are added as they are issued.
public final class CertificateStore: Sendable {
    private let certificates = Mutex<[TLSCertificate]>([])

    public init(_ initial: [TLSCertificate] = []) { certificates.withLock { $0 = initial } }

    public var all: [TLSCertificate] { certificates.withLock { $0 } }

    /// Adds or replaces (same names, managed) a certificate.
    public func add(_ cert: TLSCertificate) {
        certificates.withLock { list in
            if cert.managed { list.removeAll { $0.managed && $0.names == cert.names } }
            if !list.contains(where: { $0.id == cert.id }) { list.append(cert) }
        }
    }

    /// The managed certificate whose names are exactly `name`.
    func managedCertificate(for name: String) -> TLSCertificate? {
        let n = name.lowercased()
        return all.first { $0.managed && $0.names == [n] }
    }

    /// Certificates that cover `name`: exact names before wildcards, in load order (certmagic's lookup order).
    public func candidates(for name: String) -> [TLSCertificate] {
        let n = name.lowercased()
        let all = self.all
        let exact = all.filter { $0.names.contains(n) }
        let wild = all.filter { !$0.names.contains(n) && $0.covers(n) }
        return exact + wild
    }
}

/// The `tls` app: loads certificates and, with the `pki` app, issues internal ones for names that need them.
/// Connection policies live on each HTTP server (`tls_connection_policies`) and select from this app's store.
public struct TLSApp: App, Provisioner {
    public static let moduleID: ModuleID = "tls"

    /// `certificates`: loaders by name (`load_files`, `load_pem`, `load_folders`, `automate`).
    public var certificates: LoadedMap<CertificateLoaders>
    /// `automation`: how managed certificates are obtained.
    public var automation: AutomationConfig?
    /// `dns`: the DNS provider module DNS challenges use when they name none (global option `dns`).
    public var dns: Loaded<DNSProviderModules>?
    /// `resolvers`: DNS resolvers (`host[:port]`) DNS challenges use when they name none (`tls_resolvers`).
    public var resolvers: [String]
    /// `disable_ocsp_stapling`: staple no OCSP responses. Default: false.
    public var disableOCSPStapling: Bool
    /// The certificates loaded and issued under this config.
    public let store = CertificateStore()
    private let stapler = SharedState<OCSPStapler?>(nil)
    /// Names to manage, from `automate` loaders and from automatic HTTPS.
    private let managedNames = SharedState<[String]>([])
    private let runtime = SharedState<CertificateManager?>(nil)
    private let onDemandState = SharedState<OnDemandIssuance?>(nil)

    package enum CodingKeys: String, CodingKey {
        case certificates, automation
        case sessionTickets = "session_tickets", cache, disableOCSPStapling = "disable_ocsp_stapling"
        case disableStorageCheck = "disable_storage_check", disableStorageClean = "disable_storage_clean"
        case encryptedClientHello = "encrypted_client_hello", dns, resolvers
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.sessionTickets, .encryptedClientHello])
        dns = try c.decodeIfPresent(Loaded<DNSProviderModules>.self, forKey: .dns)
        resolvers = try c.decodeIfPresent([String].self, forKey: .resolvers) ?? []
        for (i, r) in resolvers.enumerated() where DNSResolvers.parse(r) == nil {
            throw c.error(.resolvers, "resolver \(i): \(r) is not an IPv4 address with an optional port")
        }
        certificates =
            try c.decodeIfPresent(LoadedMap<CertificateLoaders>.self, forKey: .certificates) ?? LoadedMap(entries: [])
        automation = try c.decodeIfPresent(AutomationConfig.self, forKey: .automation)
        disableOCSPStapling = try c.decodeIfPresent(Bool.self, forKey: .disableOCSPStapling) ?? false
        // Accepted for compatibility; they tune certmagic's cache and storage cleaning, which have no equivalent.
        _ = try c.decodeIfPresent(JSONValue.self, forKey: .cache)
        _ = try c.decodeIfPresent(Bool.self, forKey: .disableStorageCheck)
        _ = try c.decodeIfPresent(Bool.self, forKey: .disableStorageClean)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        // Before the issuers, whose DNS challenges fall back to these.
        try await dns?.provision(context)
        context.setLoadValue(DNSDefaults(provider: dns?.module, resolvers: resolvers))
        try await certificates.provision(context)
        // As Caddy's tls app, this one asks for the events app, which is thereby always there to emit events.
        let events = try await context.app("events") as? any EventEmitter
        for entry in certificates.entries {
            do {
                for cert in try entry.module.loadCertificates() {
                    store.add(cert)
                    await events?.emit(
                        "cached_unmanaged_cert", origin: "tls", data: ["sans": .array(cert.names.map { .string($0) })])
                }
            } catch var e as ConfigError {
                if e.path.isEmpty { e.path = entry.configPath }
                if e.moduleID == nil { e.moduleID = entry.moduleID }
                throw e
            }
            if let automate = entry.module as? AutomateLoader { manage(automate.names) }
        }
        if var a = automation {
            try await a.provision(context)
            automation = a
        }
        // Caddy's default issuers for names no policy covers: ACME for public names, the internal CA for others.
        let decoder = ConfigDecoder(registry: context.registry)
        let path = [AnyCodingKey("apps"), AnyCodingKey("tls"), AnyCodingKey("automation")]
        var defaultACME = try? decoder.decode(Loaded<Issuers>.self, from: ["module": "acme"], path: path)
        try await defaultACME?.provision(context)
        var defaultInternal = try decoder.decode(Loaded<Issuers>.self, from: ["module": "internal"], path: path)
        try await defaultInternal.provision(context)
        let defaults = DefaultIssuers(acme: defaultACME?.module, internalIssuer: defaultInternal.module)
        let manager = CertificateManager(
            store: store, storage: context.storage, automation: automation, logger: context.logger("tls"),
            defaultIssuers: defaults, events: events)
        runtime.withLock { $0 = manager }
        if context.mode == .run {
            // Distributed solving: this instance answers HTTP-01 challenges others sharing the storage started.
            let board = context.services.service(ACMEChallengeBoard.self) { ACMEChallengeBoard() }
            board.setDistributedLookup { [manager] name in
                let plan = manager.plan(for: name)
                return await ACMEIssuer.distributedChallenge(name, issuers: plan.issuers, storage: plan.storage)
            }
        }
        if !disableOCSPStapling && context.mode == .run {
            let made = OCSPStapler(
                store: store, storage: context.storage, automation: automation, logger: context.logger("tls.ocsp"),
                interval: automation?.ocspInterval.flatMap { $0.nanoseconds > 0 ? $0.seconds : nil } ?? 3600,
                group: context.eventLoopGroup)
            stapler.withLock { $0 = made }
        }
        if let automation, automation.policies.contains(where: { $0.onDemand || !$0.getCertificate.isEmpty }) {
            let made = OnDemandIssuance(manager: manager, permission: automation.onDemand?.permission?.module)
            onDemandState.withLock { $0 = made }
        }
    }

    /// On-demand issuance, when some automation policy enables it.
    public var onDemand: OnDemandIssuance? { onDemandState.withLock { $0 } }

    /// Asks for certificates for `names` (automatic HTTPS and `automate` call this during provisioning).
    public func manage(_ names: [String]) {
        managedNames.withLock { list in
            for n in names where !list.contains(n) { list.append(n) }
        }
    }

    /// The names this config manages.
    public var managed: [String] { managedNames.withLock { $0 } }

    /// Loads managed certificates from storage and obtains what the internal CA issues (throwing when it cannot).
    public func start() async throws {
        try await runtime.withLock({ $0 })?.start(names: managed)
        stapler.withLock({ $0 })?.start()
    }

    /// Orders from ACME what is missing or due, in the background, then keeps every certificate renewed: only now,
    /// as Caddy manages certificates after its HTTP servers listen, so the CA's HTTP-01 request finds a listener.
    public func allAppsStarted() async {
        runtime.withLock({ $0 })?.beginBackgroundWork()
    }

    public func stop() async {
        stapler.withLock({ $0 })?.stop()
        await runtime.withLock({ $0 })?.stop()
    }

    /// Revokes the stored certificate for `name` at the CA that issued it, then removes it from storage so the next
    /// start obtains a new one (certmagic's `RevokeCert`, behind `usher revoke`). `reason` is an RFC 5280 reason
    /// code. Returns the issuer's storage key.
    public func revoke(_ name: String, reason: Int) async throws -> String {
        guard let manager = runtime.withLock({ $0 }) else { throw ConfigError("the tls app was not provisioned") }
        let plan = manager.plan(for: name)
        for issuer in plan.issuers {
            let crt = StorageKeys.siteCertificate(issuerKey: issuer.issuerKey, name: name)
            guard let chain = try? await plan.storage.loadText(crt) else { continue }
            guard let acme = issuer as? ACMEIssuer else {
                throw ConfigError("the certificate for \(name) is from \(issuer.issuerKey), which cannot revoke it")
            }
            try await acme.revoke(chainPEM: chain, reason: reason)
            for key in [
                crt, StorageKeys.sitePrivateKey(issuerKey: issuer.issuerKey, name: name),
                StorageKeys.siteMetadata(issuerKey: issuer.issuerKey, name: name),
            ] {
                try await plan.storage.delete(key)
            }
            return issuer.issuerKey
        }
        throw ConfigError("no certificate for \(name) in storage (issuers: \(plan.issuers.map(\.issuerKey)))")
    }

    /// The issuer configured for `name` by `automation.policies` (first policy whose subjects match; a policy
    /// without subjects matches every name).
    public func issuer(for name: String) -> (any AutomationIssuer)? {
        automation?.issuer(for: name)
    }
}

// MARK: - Loaders

/// One entry of `load_files`.
public struct CertificateFilePair: Decodable, Sendable {
    /// `certificate`: path to the PEM chain.
    public var certificate: String
    /// `key`: path to the PEM private key.
    public var key: String
    /// `format`: only `pem`. Default: `pem`.
    public var format: String
    /// `tags`: labels for `certificate_selection`.
    public var tags: [String]

    package enum CodingKeys: String, CodingKey { case certificate, key, format, tags }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificate = try c.decode(String.self, forKey: .certificate)
        key = try c.decode(String.self, forKey: .key)
        format = try c.decodeIfPresent(String.self, forKey: .format) ?? "pem"
        if format != "pem" && format != "" {
            throw c.error(.format, "unrecognized certificate/key encoding format: \(format)")
        }
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
    }
}

/// `tls.certificates.load_files`: certificate and key files.
public struct LoadFilesLoader: CertificateLoader {
    public static let moduleID: ModuleID = "tls.certificates.load_files"
    public var pairs: [CertificateFilePair]

    public init(from decoder: any Decoder) throws {
        pairs = try decoder.singleValueContainer().decode([CertificateFilePair].self)
    }

    public func loadCertificates() throws -> [TLSCertificate] {
        try pairs.enumerated().map { i, p in
            let cert = try readText(p.certificate, what: "certificate", index: i)
            let key = try readText(p.key, what: "key", index: i)
            do {
                return try TLSCertificate(
                    chainPEM: cert, keyPEM: key, tags: p.tags, origin: "\(p.certificate) and \(p.key)")
            } catch let e as ConfigError {
                throw ConfigError(path: "apps.tls.certificates.load_files[\(i)]", e.message)
            }
        }
    }

    private func readText(_ path: String, what: String, index: Int) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(
                path: "apps.tls.certificates.load_files[\(index)].\(what == "key" ? "key" : "certificate")",
                "reading \(what) file \(path): \(describeFileError(error))")
        }
    }
}

/// One entry of `load_pem`.
public struct CertificatePEMPair: Decodable, Sendable {
    /// `certificate`: the PEM chain.
    public var certificate: String
    /// `key`: the PEM private key.
    public var key: String
    /// `tags`: labels for `certificate_selection`.
    public var tags: [String]

    enum CodingKeys: String, CodingKey { case certificate, key, tags }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificate = try c.decode(String.self, forKey: .certificate)
        key = try c.decode(String.self, forKey: .key)
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
    }
}

/// `tls.certificates.load_pem`: certificates and keys given inline.
public struct LoadPEMLoader: CertificateLoader {
    public static let moduleID: ModuleID = "tls.certificates.load_pem"
    public var pairs: [CertificatePEMPair]

    public init(from decoder: any Decoder) throws {
        pairs = try decoder.singleValueContainer().decode([CertificatePEMPair].self)
    }

    public func loadCertificates() throws -> [TLSCertificate] {
        try pairs.enumerated().map { i, p in
            do {
                return try TLSCertificate(
                    chainPEM: p.certificate, keyPEM: p.key, tags: p.tags, origin: "load_pem[\(i)]")
            } catch let e as ConfigError {
                throw ConfigError(path: "apps.tls.certificates.load_pem[\(i)]", e.message)
            }
        }
    }
}

/// `tls.certificates.load_folders`: every `.pem` file under the folders that holds both a certificate and a key.
public struct LoadFoldersLoader: CertificateLoader {
    public static let moduleID: ModuleID = "tls.certificates.load_folders"
    public var folders: [String]

    public init(from decoder: any Decoder) throws {
        folders = try decoder.singleValueContainer().decode([String].self)
    }

    public func loadCertificates() throws -> [TLSCertificate] {
        var out: [TLSCertificate] = []
        for (i, folder) in folders.enumerated() {
            let fm = FileManager.default
            guard let walker = fm.enumerator(atPath: folder) else {
                throw ConfigError(
                    path: "apps.tls.certificates.load_folders[\(i)]",
                    "unable to load certificates from folder \(folder): cannot read it")
            }
            var files: [String] = []
            while let rel = walker.nextObject() as? String {
                if rel.lowercased().hasSuffix(".pem") { files.append(rel) }
            }
            for rel in files.sorted() {
                let path = folder + "/" + rel
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
                let (certs, key) = splitPEMBlocks(text)
                guard !certs.isEmpty, let key else {
                    throw ConfigError(
                        path: "apps.tls.certificates.load_folders[\(i)]",
                        "\(path): must contain a certificate and a private key")
                }
                out.append(try TLSCertificate(chainPEM: certs, keyPEM: key, origin: path))
            }
        }
        return out
    }
}

/// `tls.certificates.automate`: names to obtain and renew certificates for.
public struct AutomateLoader: CertificateLoader {
    public static let moduleID: ModuleID = "tls.certificates.automate"
    public var names: [String]

    public init(from decoder: any Decoder) throws {
        names = try decoder.singleValueContainer().decode([String].self)
    }

    public func loadCertificates() throws -> [TLSCertificate] { [] }
}

/// Separates a PEM file's certificate blocks from its private key block.
func splitPEMBlocks(_ text: String) -> (certificates: String, key: String?) {
    var certs = ""
    var key: String?
    var current: [Substring] = []
    var label = ""
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let l = line.trimmingCharacters(in: .whitespaces)
        if l.hasPrefix("-----BEGIN ") {
            label = String(l.dropFirst(11).dropLast(5))
            current = [Substring(l)]
        } else if l.hasPrefix("-----END ") {
            current.append(Substring(l))
            let block = current.joined(separator: "\n") + "\n"
            if label == "CERTIFICATE" { certs += block } else if label.hasSuffix("PRIVATE KEY") { key = block }
            current = []
            label = ""
        } else if !label.isEmpty {
            current.append(Substring(l))
        }
    }
    return (certs, key)
}

/// A file error in plain words.
func describeFileError(_ error: any Error) -> String {
    let ns = error as NSError
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code))).lowercased()
    }
    switch ns.code {
    case NSFileReadNoSuchFileError: return "no such file or directory"
    case NSFileReadNoPermissionError: return "permission denied"
    default: return ns.localizedDescription
    }
}

/// `tls.certificates.load_storage`: certificates and keys kept in the config's storage, by key (`pairs` as
/// `load_files` takes them, with storage keys for file names). Read when the config is provisioned.
public struct LoadStorageLoader: CertificateLoader, Provisioner {
    public static let moduleID: ModuleID = "tls.certificates.load_storage"
    /// `pairs`: storage keys of each certificate chain and key (PEM), with tags.
    public var pairs: [CertificateFilePair]
    private var loaded: [TLSCertificate] = []

    enum CodingKeys: String, CodingKey { case pairs }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pairs = try c.decodeIfPresent([CertificateFilePair].self, forKey: .pairs) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        var out: [TLSCertificate] = []
        for (i, p) in pairs.enumerated() {
            let path = "apps.tls.certificates.load_storage.pairs[\(i)]"
            func load(_ key: String, _ what: String) async throws -> String {
                do { return try await context.storage.loadText(key) } catch {
                    throw ConfigError(path: path + ".\(what)", "loading \(key) from storage: \(error)")
                }
            }
            let cert = try await load(p.certificate, "certificate")
            let key = try await load(p.key, "key")
            if key.prefix(40).contains("ENCRYPTED") {
                throw ConfigError(
                    path: path + ".key", "encrypted private keys are not supported; please decrypt the key first")
            }
            do {
                out.append(
                    try TLSCertificate(
                        chainPEM: cert, keyPEM: key, tags: p.tags, origin: "storage \(p.certificate) and \(p.key)"))
            } catch let e as ConfigError {
                throw ConfigError(path: path, e.message)
            }
        }
        loaded = out
    }

    public func loadCertificates() throws -> [TLSCertificate] { loaded }
}
