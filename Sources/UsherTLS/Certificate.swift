import Crypto
public import Foundation
import NIOSSL
import SwiftASN1
import Synchronization
public import UsherCore
public import X509

#if canImport(Glibc)
import Glibc
#endif

/// A certificate chain and its private key in one neutral form: the PEM text both TLS stacks read (swift-nio-ssl
/// for TCP, GnuTLS for QUIC), plus what selection needs to know about the leaf.
public final class TLSCertificate: Sendable, CustomStringConvertible {
    /// The chain, leaf first, as PEM.
    public let chainPEM: String
    /// The private key as PEM.
    public let keyPEM: String
    /// The leaf's DNS names and IP addresses (subject alternative names; the common name when there are none).
    public let names: [String]
    /// Tags from the config, for `certificate_selection`.
    public let tags: [String]
    /// When the leaf expires.
    public let notAfter: Date
    /// When the leaf becomes valid.
    public let notBefore: Date
    /// The leaf's serial number in decimal.
    public let serialNumber: String
    /// The leaf subject's organization names.
    public let subjectOrganizations: [String]
    /// `rsa`, `ecdsa` or `ed25519`, as Caddy names them.
    public let publicKeyAlgorithm: String
    /// A stable identity for caches: a hash of the chain.
    public let id: String
    /// Whether this certificate was issued by the internal CA (and so may be renewed by it).
    public let managed: Bool

    let nioChain: [NIOSSLCertificate]
    let nioKey: NIOSSLPrivateKey
    /// The leaf's OCSP responder URLs (authority information access).
    let ocspResponders: [String]
    /// The current OCSP staple and how many times it changed (part of the TLS context cache key).
    private let staple = Mutex<(staple: OCSPStaple?, generation: Int)>((nil, 0))

    /// Parses a PEM chain and key; `origin` names where they came from in errors.
    public init(chainPEM: String, keyPEM: String, tags: [String] = [], managed: Bool = false, origin: String) throws {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
        } catch {
            throw ConfigError("\(origin): no valid certificate in PEM data")
        }
        guard let leafNIO = chain.first else { throw ConfigError("\(origin): no certificate in PEM data") }
        do {
            nioKey = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        } catch {
            throw ConfigError("\(origin): no valid private key in PEM data")
        }
        let leaf: Certificate
        do {
            leaf = try Certificate(derEncoded: try leafNIO.toDERBytes())
        } catch {
            throw ConfigError("\(origin): parsing certificate: \(error)")
        }
        // The key must belong to the leaf, or every handshake would fail later with a less helpful error.
        do {
            let keyObject = try Certificate.PrivateKey(pemEncoded: keyPEM)
            if keyObject.publicKey != leaf.publicKey {
                throw ConfigError("\(origin): private key does not match the certificate's public key")
            }
        } catch let e as ConfigError {
            throw e
        } catch {
            // Key types swift-certificates cannot read (e.g. RSA in PKCS#1 on older releases) are left to NIOSSL.
        }
        self.chainPEM = chainPEM
        self.keyPEM = keyPEM
        self.nioChain = chain
        self.tags = tags
        self.managed = managed
        self.notAfter = leaf.notValidAfter
        self.notBefore = leaf.notValidBefore
        var names: [String] = []
        if let san = try? leaf.extensions.subjectAlternativeNames {
            for n in san {
                switch n {
                case .dnsName(let d): names.append(d.lowercased())
                case .ipAddress(let octets): if let ip = Self.formatIP(Array(octets.bytes)) { names.append(ip) }
                default: break
                }
            }
        }
        var orgs: [String] = []
        var commonName: String?
        for rdn in leaf.subject {
            for attr in rdn {
                if attr.type == .RDNAttributeType.organizationName { orgs.append(attr.value.description) }
                if attr.type == .RDNAttributeType.commonName { commonName = attr.value.description }
            }
        }
        if names.isEmpty, let cn = commonName, !cn.isEmpty { names.append(cn.lowercased()) }
        self.names = names
        var responders: [String] = []
        let access = (try? leaf.extensions.authorityInformationAccess).flatMap { $0 }.map(Array.init) ?? []
        for access in access where access.method == .ocspServer {
            if case .uniformResourceIdentifier(let uri) = access.location { responders.append(uri) }
        }
        self.ocspResponders = responders
        self.subjectOrganizations = orgs
        self.serialNumber = Self.decimal(Array(leaf.serialNumber.bytes))
        if P256.Signing.PublicKey(leaf.publicKey) != nil || P384.Signing.PublicKey(leaf.publicKey) != nil
            || P521.Signing.PublicKey(leaf.publicKey) != nil
        {
            publicKeyAlgorithm = "ecdsa"
        } else if Curve25519.Signing.PublicKey(leaf.publicKey) != nil {
            publicKeyAlgorithm = "ed25519"
        } else {
            publicKeyAlgorithm = "rsa"
        }
        id = SHA256.hash(data: Array(chainPEM.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The leaf, parsed.
    public var leafCertificate: Certificate? {
        guard let der = try? nioChain.first?.toDERBytes() else { return nil }
        return try? Certificate(derEncoded: der)
    }

    /// The certificate after the leaf in the chain, which issued it.
    var issuerCertificate: Certificate? {
        guard nioChain.count > 1, let der = try? nioChain[1].toDERBytes() else { return nil }
        return try? Certificate(derEncoded: der)
    }

    var ocspStaple: OCSPStaple? { staple.withLock { $0.staple } }
    var stapleGeneration: Int { staple.withLock { $0.generation } }

    func setOCSPStaple(_ new: OCSPStaple) {
        staple.withLock { s in
            guard s.staple?.der != new.der else { return }
            s = (new, s.generation + 1)
        }
    }

    public var description: String { "certificate for \(names.joined(separator: ", ")) (serial \(serialNumber))" }

    /// Whether the leaf covers `name`: exactly, or through a wildcard for one left-most label.
    public func covers(_ name: String) -> Bool {
        let n = name.lowercased()
        for c in names {
            if c == n { return true }
            if c.hasPrefix("*."), let dot = n.firstIndex(of: "."), n[dot...] == c.dropFirst(), n.first != "." {
                return true
            }
        }
        return false
    }

    private static func formatIP(_ b: [UInt8]) -> String? {
        if b.count == 4 { return b.map(String.init).joined(separator: ".") }
        guard b.count == 16 else { return nil }
        return ipv6Text(b)
    }

    /// A big-endian unsigned integer in decimal.
    static func decimal(_ bytes: [UInt8]) -> String {
        var digits: [UInt8] = [0]
        for byte in bytes {
            var carry = Int(byte)
            for i in 0..<digits.count {
                let v = Int(digits[i]) * 256 + carry
                digits[i] = UInt8(v % 10)
                carry = v / 10
            }
            while carry > 0 {
                digits.append(UInt8(carry % 10))
                carry /= 10
            }
        }
        while digits.count > 1 && digits.last == 0 { digits.removeLast() }
        return String(digits.reversed().map { Character(String($0)) })
    }
}

/// The text form of an IPv6 address (16 bytes), as inet_ntop writes it (RFC 5952).
func ipv6Text(_ b: [UInt8]) -> String {
    var addr = in6_addr()
    withUnsafeMutableBytes(of: &addr) { $0.copyBytes(from: b.prefix(16)) }
    var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    guard inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil else { return "" }
    return String(cString: buf)
}
