import Foundation
public import NIOCore
import NIOHTTP1
public import NIOSSL
import Synchronization
import UsherACME
public import UsherCore

/// Sources of trusted CA certificates (`tls.ca_pool.source.*`, inline key `provider`), as `client_authentication.ca`.
public protocol CAPoolSource: Module {
    /// The CA certificates this source trusts.
    func certificates() throws -> [NIOSSLCertificate]
}

public enum CAPoolSources: ModuleNamespace {
    public static let prefix = "tls.ca_pool.source"
    public static let inlineKey: String? = "provider"
    public typealias Instance = any CAPoolSource
}

/// `tls.ca_pool.source.inline`: CA certificates given in the config as base64 DER.
public struct InlineCAPool: CAPoolSource {
    public static let moduleID: ModuleID = "tls.ca_pool.source.inline"
    /// `trusted_ca_certs`: base64 DER certificates.
    public var trustedCACerts: [[UInt8]]

    package enum CodingKeys: String, CodingKey { case trustedCACerts = "trusted_ca_certs" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        trustedCACerts = try (c.decodeIfPresent([String].self, forKey: .trustedCACerts) ?? []).enumerated().map {
            i, s in
            guard let d = Data(base64Encoded: s) else {
                throw ConfigError(path: c.error(.trustedCACerts, "").path + "[\(i)]", "invalid base64 DER certificate")
            }
            return Array(d)
        }
    }

    public func certificates() throws -> [NIOSSLCertificate] {
        try trustedCACerts.map(derCertificate)
    }
}

/// `tls.ca_pool.source.file`: CA certificates from PEM files.
public struct FileCAPool: CAPoolSource {
    public static let moduleID: ModuleID = "tls.ca_pool.source.file"
    /// `pem_files`: paths of PEM files, each with one or more certificates.
    public var pemFiles: [String]

    enum CodingKeys: String, CodingKey { case pemFiles = "pem_files" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pemFiles = try c.decodeIfPresent([String].self, forKey: .pemFiles) ?? []
    }

    public func certificates() throws -> [NIOSSLCertificate] {
        try pemFiles.flatMap(pemCertificates)
    }
}

/// `tls.ca_pool.source.combined`: the union of other sources.
public struct CombinedCAPool: CAPoolSource, Provisioner {
    public static let moduleID: ModuleID = "tls.ca_pool.source.combined"
    /// `sources`: the sources to combine.
    public var providers: [Loaded<CAPoolSources>]

    enum CodingKeys: String, CodingKey { case sources }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        providers = try c.decodeIfPresent([Loaded<CAPoolSources>].self, forKey: .sources) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await providers.provision(context)
    }

    public func certificates() throws -> [NIOSSLCertificate] {
        try providers.flatMap { try $0.module.certificates() }
    }
}

/// The certificates in a PEM file, with errors that say what went wrong.
public func pemCertificates(_ file: String) throws -> [NIOSSLCertificate] {
    guard FileManager.default.isReadableFile(atPath: file) else {
        let why = FileManager.default.fileExists(atPath: file) ? "permission denied" : "no such file or directory"
        throw ConfigError("loading CA certificates from \(file): \(why)")
    }
    do {
        return try NIOSSLCertificate.fromPEMFile(file)
    } catch {
        throw ConfigError("loading CA certificates from \(file): no valid certificate in PEM data")
    }
}

/// A DER certificate, with an error that says what went wrong.
public func derCertificate(_ der: [UInt8]) throws -> NIOSSLCertificate {
    do {
        return try NIOSSLCertificate(bytes: der, format: .der)
    } catch {
        throw ConfigError("parsing certificate: not a valid DER certificate")
    }
}

/// `tls.ca_pool.source.system`: the system's trusted roots (Debian's `/etc/ssl/certs/ca-certificates.crt`).
public struct SystemCAPool: CAPoolSource {
    public static let moduleID: ModuleID = "tls.ca_pool.source.system"
    /// Where the system bundle is, as Go looks for it on Debian.
    static let bundles = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]

    public init(from decoder: any Decoder) throws {}

    public func certificates() throws -> [NIOSSLCertificate] {
        guard let bundle = Self.bundles.first(where: { FileManager.default.isReadableFile(atPath: $0) }) else {
            throw ConfigError(
                "failed to load system cert pool: no CA bundle in \(Self.bundles.joined(separator: ", "))")
        }
        return try pemCertificates(bundle)
    }
}

/// The certificates of named PKI authorities, read while provisioning (made on first use, as for issuance).
private func authorityCertificates(
    _ ids: [String], context: ProvisionContext, module: String, pick: (CertificateAuthority) -> String?
) async throws -> [NIOSSLCertificate] {
    guard let pki = try await context.app("pki") as? PKIApp else {
        throw ConfigError("\(module) CA pool requires that a PKI app is configured")
    }
    var out: [NIOSSLCertificate] = []
    for id in ids {
        guard let ca = pki.authority(id) else { throw ConfigError("getting CA \(id): no such certificate authority") }
        try await ca.prepare()
        guard let pem = pick(ca) else { throw ConfigError("CA \(id) has no root certificate") }
        out += try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
    }
    return out
}

/// Which certificate of a PKI authority a pool trusts.
public protocol PKIPoolKind: Sendable {
    static var moduleID: ModuleID { get }
    static func certificate(of ca: CertificateAuthority) -> String?
}

/// `root`: `tls.ca_pool.source.pki_root`.
public enum PKIRootKind: PKIPoolKind {
    public static let moduleID: ModuleID = "tls.ca_pool.source.pki_root"
    public static func certificate(of ca: CertificateAuthority) -> String? { ca.pems?.root }
}

/// `intermediate`: `tls.ca_pool.source.pki_intermediate`.
public enum PKIIntermediateKind: PKIPoolKind {
    public static let moduleID: ModuleID = "tls.ca_pool.source.pki_intermediate"
    public static func certificate(of ca: CertificateAuthority) -> String? { ca.pems?.intermediate }
}

/// `tls.ca_pool.source.pki_root` and `tls.ca_pool.source.pki_intermediate`: the root (or intermediate)
/// certificates of authorities of the `pki` app.
public struct PKIAuthorityCAPool<Kind: PKIPoolKind>: CAPoolSource, Provisioner {
    public static var moduleID: ModuleID { Kind.moduleID }
    /// `authority`: CA IDs (`local` is always there).
    public var authority: [String]
    private var loaded: [NIOSSLCertificate] = []

    enum CodingKeys: String, CodingKey { case authority }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        authority = try c.decodeIfPresent([String].self, forKey: .authority) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        loaded = try await authorityCertificates(authority, context: context, module: Kind.moduleID.name) {
            Kind.certificate(of: $0)
        }
    }

    public func certificates() throws -> [NIOSSLCertificate] { loaded }
}

public typealias PKIRootCAPool = PKIAuthorityCAPool<PKIRootKind>
public typealias PKIIntermediateCAPool = PKIAuthorityCAPool<PKIIntermediateKind>

/// `tls.ca_pool.source.storage`: CA certificates kept in the config's storage, by key (PEM; other blocks skipped).
public struct StorageCAPool: CAPoolSource, Provisioner {
    public static let moduleID: ModuleID = "tls.ca_pool.source.storage"
    /// `pem_keys`: storage keys.
    public var pemKeys: [String]
    private var loaded: [NIOSSLCertificate] = []

    enum CodingKeys: String, CodingKey { case pemKeys = "pem_keys", storage }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.storage], note: "the config's own storage is used")
        pemKeys = try c.decodeIfPresent([String].self, forKey: .pemKeys) ?? []
        if pemKeys.isEmpty { throw c.error(.pemKeys, "no PEM keys specified") }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        var out: [NIOSSLCertificate] = []
        for key in pemKeys {
            let bytes: [UInt8]
            do { bytes = try await context.storage.load(key) } catch {
                throw ConfigError("error loading cert '\(key)' from storage: \(error)")
            }
            do { out += try NIOSSLCertificate.fromPEMBytes(bytes) } catch {
                throw ConfigError("parsing certificate '\(key)': \(error)")
            }
        }
        loaded = out
    }

    public func certificates() throws -> [NIOSSLCertificate] { loaded }
}

/// `tls.ca_pool.source.http`: the certificates in the PEM bodies of `endpoints`, fetched once when the config
/// loads (a failure or a non-2xx answer refuses the config). `tls` tunes the fetch: `ca` (a pool source to trust
/// instead of the system roots), `insecure_skip_verify`, `renegotiation` (`never`, `once`, `freely`);
/// `handshake_timeout` and `server_name` are accepted and, as in Caddy 2.11, have no effect.
public struct HTTPCAPool: CAPoolSource, Provisioner {
    public static let moduleID: ModuleID = "tls.ca_pool.source.http"

    public struct ClientTLS: Decodable, Sendable {
        public var ca: Loaded<CAPoolSources>?
        public var insecureSkipVerify: Bool?
        public var handshakeTimeout: ConfigDuration?
        public var serverName: String?
        public var renegotiation: String?

        enum CodingKeys: String, CodingKey {
            case ca, insecureSkipVerify = "insecure_skip_verify", handshakeTimeout = "handshake_timeout"
            case serverName = "server_name", renegotiation
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ca = try c.decodeIfPresent(Loaded<CAPoolSources>.self, forKey: .ca)
            insecureSkipVerify = try c.decodeIfPresent(Bool.self, forKey: .insecureSkipVerify)
            handshakeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .handshakeTimeout)
            serverName = try c.decodeIfPresent(String.self, forKey: .serverName)
            renegotiation = try c.decodeIfPresent(String.self, forKey: .renegotiation)
            if let r = renegotiation, !["", "never", "once", "freely"].contains(r) {
                throw c.error(.renegotiation, "invalid TLS renegotiation level: \(r)")
            }
        }
    }

    /// `endpoints`: URLs whose bodies are PEM certificates to trust.
    public var endpoints: [String]
    /// `tls`: the client side of fetching them.
    public var tls: ClientTLS?
    var loaded: [NIOSSLCertificate] = []

    enum CodingKeys: String, CodingKey { case endpoints, tls }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        endpoints = try c.decodeIfPresent([String].self, forKey: .endpoints) ?? []
        tls = try c.decodeIfPresent(ClientTLS.self, forKey: .tls)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await tls?.ca?.provision(context)
        var config = TLSConfiguration.makeClientConfiguration()
        if let ca = tls?.ca { config.trustRoots = .certificates(try ca.module.certificates()) }
        if tls?.insecureSkipVerify == true { config.certificateVerification = .none }
        switch tls?.renegotiation ?? "" {
        case "once": config.renegotiationSupport = .once
        case "freely": config.renegotiationSupport = .always
        default: config.renegotiationSupport = .none
        }
        let client = try ACMEHTTPClient(group: context.eventLoopGroup, tlsConfiguration: config, timeout: .seconds(30))
        var certs: [NIOSSLCertificate] = []
        for uri in endpoints {
            let response = try await client.request(.GET, uri)
            guard (200..<300).contains(response.status) else {
                throw ConfigError("HTTP \(response.status) fetching CA certificate bundle from \(uri)")
            }
            do {
                // Only CERTIFICATE blocks count, as in Caddy.
                let pem = splitPEMBlocks(String(decoding: response.body, as: UTF8.self)).certificates
                if !pem.isEmpty { certs += try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)) }
            } catch {
                throw ConfigError("parsing certificate from URL \(uri): \(error)")
            }
        }
        loaded = certs
    }

    public func certificates() throws -> [NIOSSLCertificate] { loaded }
}
