import Crypto
public import Foundation
public import NIOSSL
import SwiftASN1
import X509

/// What a TLS handshake settled, for placeholders, logs and `strict_sni_host`.
public struct TLSConnectionInfo: Sendable {
    /// The server name the client sent (SNI), lowercased; empty without SNI.
    public var serverName: String
    /// The protocol version's code point (0x0303 TLS 1.2, 0x0304 TLS 1.3), as Go reports it.
    public var version: UInt16
    /// The application protocol ALPN chose (`h2`, `http/1.1`), empty if none.
    public var negotiatedProtocol: String
    /// The client's certificate, when it sent one.
    public var clientCertificate: ClientCertificate?

    public init(
        serverName: String?, version: UInt16, negotiatedProtocol: String?, clientCertificate: ClientCertificate?
    ) {
        self.serverName = serverName?.lowercased() ?? ""
        self.version = version
        self.negotiatedProtocol = negotiatedProtocol ?? ""
        self.clientCertificate = clientCertificate
    }

    /// `tls1.2` or `tls1.3`, as Caddy's `{http.request.tls.version}` prints it.
    public var versionName: String {
        switch version {
        case 0x0304: return "tls1.3"
        case 0x0303: return "tls1.2"
        case 0x0302: return "tls1.1"
        case 0x0301: return "tls1.0"
        default: return ""
        }
    }
}

/// A client certificate's fields as Caddy's `{http.request.tls.client.*}` placeholders give them.
public struct ClientCertificate: Sendable {
    public let der: [UInt8]
    /// SHA-256 of the DER bytes, lowercase hex (`fingerprint`).
    public let fingerprint: String
    /// Distinguished names in RFC 4514 form, most specific first (Go's `pkix.Name.String`).
    public let subject: String
    public let issuer: String
    /// The subject's common name, if any.
    public let commonName: String
    /// Serial number in decimal.
    public let serial: String
    public let dnsNames: [String]
    public let emails: [String]
    public let ips: [String]
    public let uris: [String]

    public init?(_ certificate: NIOSSLCertificate) {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else {
            return nil
        }
        self.der = der
        fingerprint = SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined()
        subject = parsed.subject.description
        var cn = ""
        for rdn in parsed.subject {
            for attr in rdn where attr.type == .RDNAttributeType.commonName { cn = attr.value.description }
        }
        commonName = cn
        issuer = parsed.issuer.description
        serial = TLSCertificate.decimal(Array(parsed.serialNumber.bytes))
        var dns: [String] = []
        var emails: [String] = []
        var ips: [String] = []
        var uris: [String] = []
        if let san = try? parsed.extensions.subjectAlternativeNames {
            for name in san {
                switch name {
                case .dnsName(let d): dns.append(d)
                case .rfc822Name(let e): emails.append(e)
                case .uniformResourceIdentifier(let u): uris.append(u)
                case .ipAddress(let octets):
                    let b = Array(octets.bytes)
                    if b.count == 4 {
                        ips.append(b.map(String.init).joined(separator: "."))
                    } else if b.count == 16 {
                        ips.append(ipv6Text(b))
                    }
                default: break
                }
            }
        }
        dnsNames = dns
        self.emails = emails
        self.ips = ips
        self.uris = uris
    }

    /// The certificate as PEM.
    public var pem: String {
        let b64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN CERTIFICATE-----\n\(b64)\n-----END CERTIFICATE-----\n"
    }
}

extension TLSVersion {
    /// The protocol version's code point.
    public var codePoint: UInt16 {
        switch self {
        case .tlsv13: return 0x0304
        case .tlsv12: return 0x0303
        case .tlsv11: return 0x0302
        case .tlsv1: return 0x0301
        }
    }
}
