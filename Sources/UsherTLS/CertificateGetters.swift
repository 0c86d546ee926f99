import Foundation
import Logging
import NIOCore
import NIOHTTP1
import UsherACME
public import UsherCore

/// A `tls.get_certificate.*` module (certmagic's `Manager`): asked during a handshake for a name no certificate in
/// the cache covers, before any is obtained. `nil` means it manages no certificate for this handshake.
public protocol CertificateGetter: Module {
    func certificate(for hello: HandshakeInfo) async throws -> TLSCertificate?
}

/// The `tls.get_certificate` namespace (inline key `via`).
public enum CertificateGetters: ModuleNamespace {
    public static let prefix = "tls.get_certificate"
    public static let inlineKey: String? = "via"
    public typealias Instance = any CertificateGetter
}

/// `tls.get_certificate.http`: GETs `url` with the handshake's `server_name`, `signature_schemes` and
/// `cipher_suites` (comma-separated hex) and `local_ip` added to its query, as Caddy does. 200 with a PEM body
/// (the chain and the private key) is the certificate; 204 means none for this handshake; any other status is an
/// error. Certificates got this way serve the handshake that asked and are not cached or managed.
public struct HTTPCertificateGetter: CertificateGetter, Provisioner {
    public static let moduleID: ModuleID = "tls.get_certificate.http"
    /// `url`: where to ask. Required.
    public var url: String
    private var client: ACMEHTTPClient?

    enum CodingKeys: String, CodingKey { case url }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decodeIfPresent(String.self, forKey: .url) ?? ""
        if url.isEmpty { throw c.error(.url, "URL is required") }
        guard let parsed = URLComponents(string: url), parsed.scheme == "http" || parsed.scheme == "https" else {
            throw c.error(.url, "not an http or https URL: \(url)")
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        client = try ACMEHTTPClient(group: context.eventLoopGroup, trustedRoots: nil, timeout: .seconds(30))
    }

    /// The request URL for a handshake: `url` with the handshake's parameters set in its query.
    func requestURL(for hello: HandshakeInfo) -> String {
        var parsed = URLComponents(string: url)!
        var items = (parsed.queryItems ?? []).filter {
            !["server_name", "signature_schemes", "cipher_suites", "local_ip"].contains($0.name)
        }
        items.append(URLQueryItem(name: "server_name", value: hello.serverName ?? ""))
        items.append(
            URLQueryItem(
                name: "signature_schemes",
                value: hello.signatureSchemes.map { String($0, radix: 16) }.joined(separator: ",")))
        items.append(
            URLQueryItem(
                name: "cipher_suites", value: hello.cipherSuites.map { String($0, radix: 16) }.joined(separator: ",")))
        if let ip = hello.localAddress?.ipAddress, !ip.isEmpty {
            items.append(
                URLQueryItem(
                    name: "local_ip", value: ip.hasPrefix("::ffff:") && ip.contains(".") ? String(ip.dropFirst(7)) : ip)
            )
        }
        // Go's url.Values.Encode: sorted by name, form-encoded.
        items.sort { $0.name < $1.name }
        parsed.percentEncodedQuery = items.map {
            URLEscaping.queryEscape($0.name) + "=" + URLEscaping.queryEscape($0.value ?? "")
        }.joined(separator: "&")
        return parsed.string ?? url
    }

    public func certificate(for hello: HandshakeInfo) async throws -> TLSCertificate? {
        guard let client else { throw ConfigError("\(Self.moduleID) was not provisioned") }
        let response = try await client.request(.GET, requestURL(for: hello))
        if response.status == 204 { return nil }
        guard response.status == 200 else { throw ConfigError("got HTTP \(response.status)") }
        // The chain's blocks and the key's, in one body.
        let (chain, key) = splitPEMBlocks(String(decoding: response.body, as: UTF8.self))
        guard !chain.isEmpty else { throw ConfigError("no certificate in the response from \(url)") }
        guard let key else { throw ConfigError("no private key in the response from \(url)") }
        return try TLSCertificate(chainPEM: chain, keyPEM: key, origin: url)
    }
}
