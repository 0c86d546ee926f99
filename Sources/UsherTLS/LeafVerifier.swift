import Foundation
public import NIOSSL
public import UsherCore

/// A check of a client's certificate beyond chain verification (`tls.client_auth.verifier.*`, inline key
/// `verifier`), run after the handshake's own verification.
public protocol ClientCertificateVerifier: Module {
    /// Whether the client's leaf certificate (DER) passes.
    func verify(leaf: [UInt8]) -> Bool
}

public enum ClientCertificateVerifiers: ModuleNamespace {
    public static let prefix = "tls.client_auth.verifier"
    public static let inlineKey: String? = "verifier"
    public typealias Instance = any ClientCertificateVerifier
}

/// A source of client leaf certificates to accept (`tls.leaf_cert_loader.*`, inline key `loader`).
public protocol LeafCertificateLoader: Module {
    /// The certificates, as DER; loaded when the config is provisioned.
    func leafCertificates() throws -> [[UInt8]]
}

public enum LeafCertificateLoaders: ModuleNamespace {
    public static let prefix = "tls.leaf_cert_loader"
    public static let inlineKey: String? = "loader"
    public typealias Instance = any LeafCertificateLoader
}

/// `tls.client_auth.verifier.leaf`: the client's certificate must be one of these exact certificates.
public struct LeafCertClientAuth: ClientCertificateVerifier, Provisioner {
    public static let moduleID: ModuleID = "tls.client_auth.verifier.leaf"
    /// `leaf_certs_loaders`: where the accepted certificates come from.
    public var loaders: [Loaded<LeafCertificateLoaders>]
    private var trusted: Set<[UInt8]> = []

    enum CodingKeys: String, CodingKey { case loaders = "leaf_certs_loaders" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        loaders = try c.decodeIfPresent([Loaded<LeafCertificateLoaders>].self, forKey: .loaders) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await loaders.provision(context)
        var all: Set<[UInt8]> = []
        for l in loaders {
            do {
                all.formUnion(try l.module.leafCertificates())
            } catch let e as ConfigError {
                throw ConfigError(path: l.configPath, "could not load leaf certificates: \(e.message)")
            }
        }
        trusted = all
    }

    public func verify(leaf: [UInt8]) -> Bool { trusted.contains(leaf) }
}

/// The certificates of PEM text as DER; every block must be a certificate, as Caddy's loaders require.
func leafDERs(pem: String, source: String) throws -> [[UInt8]] {
    let labels = pem.split(separator: "\n").filter { $0.hasPrefix("-----BEGIN ") }
    guard !labels.isEmpty, labels.allSatisfy({ $0.hasPrefix("-----BEGIN CERTIFICATE-----") }) else {
        throw ConfigError("no CERTIFICATE pem block found in \(source)")
    }
    do {
        return try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)).map { try $0.toDERBytes() }
    } catch {
        throw ConfigError("\(source): not a certificate: \(error)")
    }
}

private func readPEMFile(_ path: String) throws -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        let why = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file or directory"
        throw ConfigError("open \(path): \(why)")
    }
    return text
}

/// `tls.leaf_cert_loader.file`: certificates from PEM files.
public struct LeafFileLoader: LeafCertificateLoader {
    public static let moduleID: ModuleID = "tls.leaf_cert_loader.file"
    /// `files`: PEM files of one or more certificates.
    public var files: [String]

    enum CodingKeys: String, CodingKey { case files }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        files = try (c.decodeIfPresent([String].self, forKey: .files) ?? []).map { Replacer().replaceKnown($0) }
    }

    public func leafCertificates() throws -> [[UInt8]] {
        try files.flatMap { try leafDERs(pem: readPEMFile($0), source: $0) }
    }
}

/// `tls.leaf_cert_loader.folder`: every `.pem` file under these folders, one certificate each.
public struct LeafFolderLoader: LeafCertificateLoader {
    public static let moduleID: ModuleID = "tls.leaf_cert_loader.folder"
    /// `folders`: directories, walked recursively.
    public var folders: [String]

    enum CodingKeys: String, CodingKey { case folders }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        folders = try (c.decodeIfPresent([String].self, forKey: .folders) ?? []).map { Replacer().replaceKnown($0) }
    }

    public func leafCertificates() throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        for dir in folders {
            guard let walker = FileManager.default.enumerator(atPath: dir) else {
                throw ConfigError("unable to traverse into path: \(dir)")
            }
            for case let name as String in walker where name.lowercased().hasSuffix(".pem") {
                let path = dir + "/" + name
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue { continue }
                out.append(contentsOf: try leafDERs(pem: readPEMFile(path), source: path).prefix(1))
            }
        }
        return out
    }
}

/// `tls.leaf_cert_loader.pem`: certificates given inline as PEM.
public struct LeafPEMLoader: LeafCertificateLoader {
    public static let moduleID: ModuleID = "tls.leaf_cert_loader.pem"
    /// `certificates`: PEM texts.
    public var certificates: [String]

    enum CodingKeys: String, CodingKey { case certificates }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificates = try (c.decodeIfPresent([String].self, forKey: .certificates) ?? []).map {
            Replacer().replaceKnown($0)
        }
    }

    public func leafCertificates() throws -> [[UInt8]] {
        try certificates.enumerated().flatMap { i, pem in
            try leafDERs(pem: pem, source: "PEM leaf certificate loader, cert \(i)")
        }
    }
}

/// `tls.leaf_cert_loader.storage`: certificates kept in the config's storage, by key.
public struct LeafStorageLoader: LeafCertificateLoader, Provisioner {
    public static let moduleID: ModuleID = "tls.leaf_cert_loader.storage"
    /// `certificates`: storage keys of PEM certificates.
    public var certificates: [String]
    private var loaded: [[UInt8]] = []

    enum CodingKeys: String, CodingKey { case certificates, storage }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.storage], note: "the config's own storage is used")
        certificates = try (c.decodeIfPresent([String].self, forKey: .certificates) ?? []).map {
            Replacer().replaceKnown($0)
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        var out: [[UInt8]] = []
        for key in certificates {
            guard let text = try? await context.storage.loadText(key) else {
                throw ConfigError("loading \(key) from storage: not found")
            }
            out += try leafDERs(pem: text, source: key)
        }
        loaded = out
    }

    public func leafCertificates() throws -> [[UInt8]] { loaded }
}
