import Foundation
public import NIOCore
public import NIOSSL
import Synchronization
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
