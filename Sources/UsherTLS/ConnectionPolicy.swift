import Foundation
public import NIOCore
public import NIOSSL
import Synchronization
public import UsherCore

/// What is known of a connection when its ClientHello arrives.
public struct HandshakeInfo: Sendable {
    /// The server name the client asked for, lowercased; `nil` without SNI.
    public var serverName: String?
    public var remoteAddress: SocketAddress?
    public var localAddress: SocketAddress?
    /// The application protocols the client offered (ALPN), in its order.
    public var alpn: [String]
    /// The cipher suites and signature schemes the client offered (for `tls.get_certificate.http`).
    public var cipherSuites: [UInt16] = []
    public var signatureSchemes: [UInt16] = []

    public init(
        serverName: String?, remoteAddress: SocketAddress?, localAddress: SocketAddress?, alpn: [String] = []
    ) {
        self.serverName = serverName?.lowercased()
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.alpn = alpn
    }
}

/// Handshake matchers under `tls.handshake_match`, keyed by name in a policy's `match`.
public protocol HandshakeMatcher: Module {
    func matches(_ hello: HandshakeInfo) -> Bool
}

public enum HandshakeMatchers: ModuleNamespace {
    public static let prefix = "tls.handshake_match"
    public static let inlineKey: String? = nil
    public typealias Instance = any HandshakeMatcher
}

/// `tls.handshake_match.sni`: the ClientHello's server name is one of these (`*` labels allowed).
public struct SNIMatcher: HandshakeMatcher {
    public static let moduleID: ModuleID = "tls.handshake_match.sni"
    public var names: [String]

    public init(from decoder: any Decoder) throws {
        names = try decoder.singleValueContainer().decode([String].self).map { $0.lowercased() }
    }

    public func matches(_ hello: HandshakeInfo) -> Bool {
        guard let sni = hello.serverName else { return names.contains("") }
        return names.contains { $0 == sni || wildcardMatch(sni, $0) }
    }
}

/// `certificate_selection` of a connection policy: which of the certificates that cover the name may be used.
public struct CertificateSelection: Decodable, Sendable {
    /// `serial_number`: decimal serial numbers.
    public var serialNumbers: [String]
    /// `subject_organization`: any of these organizations.
    public var subjectOrganizations: [String]
    /// `public_key_algorithm`: `rsa`, `ecdsa` or `ed25519`.
    public var publicKeyAlgorithm: String?
    /// `any_tag`: at least one of these tags.
    public var anyTag: [String]
    /// `all_tags`: every one of these tags.
    public var allTags: [String]

    package enum CodingKeys: String, CodingKey {
        case serialNumbers = "serial_number", subjectOrganizations = "subject_organization"
        case publicKeyAlgorithm = "public_key_algorithm", anyTag = "any_tag", allTags = "all_tags"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var serials: [String] = []
        if let raw = try c.decodeIfPresent([JSONValue].self, forKey: .serialNumbers) {
            for v in raw {
                switch v {
                case .string(let s): serials.append(s)
                case .number(let n): serials.append(n.text)
                default: throw c.error(.serialNumbers, "serial numbers must be numbers or strings")
                }
            }
        }
        serialNumbers = serials
        subjectOrganizations = try c.decodeIfPresent([String].self, forKey: .subjectOrganizations) ?? []
        publicKeyAlgorithm = try c.decodeIfPresent(String.self, forKey: .publicKeyAlgorithm)
        if let a = publicKeyAlgorithm, !["rsa", "ecdsa", "ed25519", ""].contains(a.lowercased()) {
            throw c.error(.publicKeyAlgorithm, "unrecognized public key algorithm: \(a)")
        }
        anyTag = try c.decodeIfPresent([String].self, forKey: .anyTag) ?? []
        allTags = try c.decodeIfPresent([String].self, forKey: .allTags) ?? []
    }

    func allows(_ cert: TLSCertificate) -> Bool {
        if !serialNumbers.isEmpty && !serialNumbers.contains(cert.serialNumber) { return false }
        if !subjectOrganizations.isEmpty && !cert.subjectOrganizations.contains(where: subjectOrganizations.contains) {
            return false
        }
        if let a = publicKeyAlgorithm, !a.isEmpty, a.lowercased() != cert.publicKeyAlgorithm { return false }
        if !anyTag.isEmpty && !cert.tags.contains(where: anyTag.contains) { return false }
        if !allTags.allSatisfy(cert.tags.contains) { return false }
        return true
    }
}

/// `client_authentication` of a connection policy (mutual TLS).
public struct ClientAuthentication: Decodable, Sendable {
    public enum Mode: String, Sendable {
        case request, require, verifyIfGiven = "verify_if_given", requireAndVerify = "require_and_verify"
    }
    /// `trusted_ca_certs`: base64 DER CA certificates.
    public var trustedCACerts: [[UInt8]]
    /// `trusted_ca_certs_pem_files`: PEM files of CA certificates.
    public var trustedCACertPEMFiles: [String]
    /// `trusted_leaf_certs`: base64 DER client certificates accepted as they are.
    public var trustedLeafCerts: [[UInt8]]
    /// `ca`: a CA pool source (`inline`, `file`, `combined`), Caddy's newer form of the trusted CAs.
    public var ca: Loaded<CAPoolSources>?
    /// `mode`. Default: `require_and_verify` when trusted certificates are given, else `require`.
    public var mode: Mode
    /// `verifiers`: further checks of the client's certificate (`tls.client_auth.verifier.*`), all of which must
    /// pass.
    public var verifiers: [Loaded<ClientCertificateVerifiers>]

    package enum CodingKeys: String, CodingKey {
        case trustedCACerts = "trusted_ca_certs", trustedCACertPEMFiles = "trusted_ca_certs_pem_files"
        case trustedLeafCerts = "trusted_leaf_certs", mode, ca, verifiers
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func base64List(_ key: CodingKeys) throws -> [[UInt8]] {
            try (c.decodeIfPresent([String].self, forKey: key) ?? []).enumerated().map { i, s in
                guard let d = Data(base64Encoded: s) else {
                    throw ConfigError(path: c.error(key, "").path + "[\(i)]", "invalid base64 DER certificate")
                }
                return Array(d)
            }
        }
        trustedCACerts = try base64List(.trustedCACerts)
        trustedCACertPEMFiles = try c.decodeIfPresent([String].self, forKey: .trustedCACertPEMFiles) ?? []
        trustedLeafCerts = try base64List(.trustedLeafCerts)
        ca = try c.decodeIfPresent(Loaded<CAPoolSources>.self, forKey: .ca)
        verifiers = try c.decodeIfPresent([Loaded<ClientCertificateVerifiers>].self, forKey: .verifiers) ?? []
        if let m = try c.decodeIfPresent(String.self, forKey: .mode), !m.isEmpty {
            guard let mode = Mode(rawValue: m) else { throw c.error(.mode, "client auth mode not recognized: \(m)") }
            self.mode = mode
        } else {
            let trusted =
                !trustedCACerts.isEmpty || !trustedCACertPEMFiles.isEmpty || !trustedLeafCerts.isEmpty || ca != nil
            mode = trusted ? .requireAndVerify : .require
        }
    }
}

/// One of a server's `tls_connection_policies`.
public struct ConnectionPolicy: Decodable, Sendable {
    /// `match`: handshake matchers; a policy without them matches every connection.
    public var match: LoadedMap<HandshakeMatchers>?
    /// `certificate_selection`.
    public var certificateSelection: CertificateSelection?
    /// `cipher_suites`: Go names of the TLS 1.2 suites to allow. Default: the library's.
    public var cipherSuites: [String]
    /// `curves`: key exchange groups, e.g. `x25519`, `secp256r1`.
    public var curves: [String]
    /// `alpn`: application protocols to offer. Default: from the server's `protocols`.
    public var alpn: [String]
    /// `protocol_min`, `protocol_max`: `tls1.2` or `tls1.3`. Defaults: `tls1.2`, `tls1.3`.
    public var protocolMin: String?
    public var protocolMax: String?
    /// `client_authentication`.
    public var clientAuthentication: ClientAuthentication?
    /// `default_sni`: the name to use when the client sends none.
    public var defaultSNI: String?
    /// `fallback_sni`: the name to use when no certificate covers the client's.
    public var fallbackSNI: String?
    /// `drop`: close matching connections without a handshake.
    public var drop: Bool

    package enum CodingKeys: String, CodingKey {
        case match, certificateSelection = "certificate_selection", cipherSuites = "cipher_suites", curves, alpn
        case protocolMin = "protocol_min", protocolMax = "protocol_max", clientAuthentication = "client_authentication"
        case defaultSNI = "default_sni", fallbackSNI = "fallback_sni", drop
        case insecureSecretsLog = "insecure_secrets_log", handshakeContext = "handshake_context"
    }

    /// A policy that matches everything with every default.
    public init() {
        cipherSuites = []
        curves = []
        alpn = []
        drop = false
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.insecureSecretsLog, .handshakeContext])
        match = try c.decodeIfPresent(LoadedMap<HandshakeMatchers>.self, forKey: .match)
        certificateSelection = try c.decodeIfPresent(CertificateSelection.self, forKey: .certificateSelection)
        cipherSuites = try c.decodeIfPresent([String].self, forKey: .cipherSuites) ?? []
        for (i, s) in cipherSuites.enumerated() where goCipherSuites[s] == nil {
            throw ConfigError(path: c.error(.cipherSuites, "").path + "[\(i)]", "unsupported cipher suite: \(s)")
        }
        curves = try c.decodeIfPresent([String].self, forKey: .curves) ?? []
        for (i, s) in curves.enumerated() where namedCurves[s] == nil {
            throw ConfigError(path: c.error(.curves, "").path + "[\(i)]", "unsupported curve: \(s)")
        }
        alpn = try c.decodeIfPresent([String].self, forKey: .alpn) ?? []
        protocolMin = try c.decodeIfPresent(String.self, forKey: .protocolMin)
        protocolMax = try c.decodeIfPresent(String.self, forKey: .protocolMax)
        for (key, v) in [(CodingKeys.protocolMin, protocolMin), (.protocolMax, protocolMax)] {
            if let v, !v.isEmpty, tlsVersions[v] == nil {
                throw c.error(key, "protocol \(v) not supported (use tls1.2 or tls1.3)")
            }
        }
        if let lo = protocolMin.flatMap({ tlsVersions[$0] }), let hi = protocolMax.flatMap({ tlsVersions[$0] }),
            lo.rank > hi.rank
        {
            throw c.error(
                .protocolMin, "protocol min (\(protocolMin!)) cannot be greater than protocol max (\(protocolMax!))")
        }
        clientAuthentication = try c.decodeIfPresent(ClientAuthentication.self, forKey: .clientAuthentication)
        defaultSNI = try c.decodeIfPresent(String.self, forKey: .defaultSNI)
        fallbackSNI = try c.decodeIfPresent(String.self, forKey: .fallbackSNI)
        drop = try c.decodeIfPresent(Bool.self, forKey: .drop) ?? false
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await match?.provision(context)
        try await clientAuthentication?.ca?.provision(context)
        try await clientAuthentication?.verifiers.provision(context)
    }

    func matches(_ hello: HandshakeInfo) -> Bool {
        guard let match else { return true }
        return match.entries.allSatisfy { $0.module.matches(hello) }
    }
}

/// The TLS side of one server: its connection policies compiled against the `tls` app's certificates. Picks a
/// policy and a certificate for each ClientHello and hands out a cached `NIOSSLContext` for the pair.
public final class ServerTLS: Sendable {
    struct Compiled: Sendable {
        let policy: ConnectionPolicy
        let base: TLSConfiguration
        let leafAllowList: Set<[UInt8]>?
        let verifyPresented: Bool
        /// The policy's `verifiers`, run on the client's leaf certificate.
        let verifiers: [any ClientCertificateVerifier]
    }

    /// What a handshake should use.
    public struct Choice {
        public let context: NIOSSLContext
        /// Set when the policy accepts client certificates by rules NIOSSL's trust store cannot express.
        public let verification: NIOSSLCustomVerificationCallback?
        /// Set when the client's leaf (DER; `nil` when none was sent) must also pass `verifiers` after a handshake
        /// the TLS stack verified: a connection whose leaf fails is closed.
        public let leafCheck: (@Sendable ([UInt8]?) -> Bool)?
    }

    /// Why a handshake cannot proceed.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
        /// A policy's `drop`: close without a word.
        public var dropped = false
        /// No certificate covers the name (on-demand TLS may obtain one).
        public var noCertificate = false
    }

    let compiled: [Compiled]
    let store: CertificateStore
    /// Where TLS-ALPN-01 challenge certificates come from.
    public let challenges: ACMEChallengeBoard?
    /// Obtains certificates during handshakes for names whose policy is `on_demand`.
    public let onDemand: OnDemandIssuance?
    private let contexts = Mutex<[String: NIOSSLContext]>([:])

    /// Compiles `policies`; `defaultALPN` is what policies without `alpn` offer. `challenges` supplies TLS-ALPN-01
    /// certificates to handshakes that offer `acme-tls/1`.
    public init(
        policies: [ConnectionPolicy], store: CertificateStore, defaultALPN: [String], path: String,
        challenges: ACMEChallengeBoard? = nil, onDemand: OnDemandIssuance? = nil
    ) throws {
        self.store = store
        self.challenges = challenges
        self.onDemand = onDemand
        var out: [Compiled] = []
        for (i, p) in policies.enumerated() {
            // The certificate and key are set per selected certificate; everything else is the policy's.
            var c = TLSConfiguration.makeClientConfiguration()
            c.certificateVerification = .none
            c.minimumTLSVersion = tlsVersions[p.protocolMin ?? ""]?.version ?? .tlsv12
            c.maximumTLSVersion = tlsVersions[p.protocolMax ?? ""]?.version ?? .tlsv13
            c.applicationProtocols = p.alpn.isEmpty ? defaultALPN : p.alpn
            if !p.cipherSuites.isEmpty {
                c.cipherSuiteValues = p.cipherSuites.compactMap { goCipherSuites[$0] }.map(NIOTLSCipher.init(rawValue:))
            }
            if !p.curves.isEmpty { c.curves = p.curves.compactMap { namedCurves[$0] }.map(NIOTLSCurve.init(rawValue:)) }
            var leafAllowList: Set<[UInt8]>?
            var verifyPresented = false
            if let auth = p.clientAuthentication {
                var roots: [NIOSSLCertificate] = []
                for (j, der) in auth.trustedCACerts.enumerated() {
                    do {
                        roots.append(try derCertificate(der))
                    } catch let e as ConfigError {
                        throw ConfigError(path: "\(path)[\(i)].client_authentication.trusted_ca_certs[\(j)]", e.message)
                    }
                }
                for (j, file) in auth.trustedCACertPEMFiles.enumerated() {
                    do {
                        roots += try pemCertificates(file)
                    } catch let e as ConfigError {
                        throw ConfigError(
                            path: "\(path)[\(i)].client_authentication.trusted_ca_certs_pem_files[\(j)]", e.message)
                    }
                }
                if let ca = auth.ca {
                    do {
                        roots += try ca.module.certificates()
                    } catch let e as ConfigError {
                        throw ConfigError(path: "\(path)[\(i)].client_authentication.ca", e.message)
                    }
                }
                if !auth.trustedLeafCerts.isEmpty { leafAllowList = Set(auth.trustedLeafCerts) }
                let verifies = auth.mode == .verifyIfGiven || auth.mode == .requireAndVerify
                switch auth.mode {
                case .request, .verifyIfGiven: c.certificateVerification = .optionalVerification
                case .require, .requireAndVerify: c.certificateVerification = .noHostnameVerification
                }
                if verifies && !roots.isEmpty {
                    c.trustRoots = .certificates(roots)
                    c.sendCANameList = true
                } else if verifies && leafAllowList == nil {
                    throw ConfigError(
                        path: "\(path)[\(i)].client_authentication",
                        "client auth mode \(auth.mode.rawValue) needs trusted CA or leaf certificates")
                }
                // Without roots to verify against (request/require, or leaf pinning) our callback decides.
                verifyPresented = !verifies || roots.isEmpty
                if leafAllowList != nil { verifyPresented = true }
            }
            let verifiers = p.clientAuthentication?.verifiers.map(\.module) ?? []
            out.append(
                Compiled(
                    policy: p, base: c, leafAllowList: leafAllowList, verifyPresented: verifyPresented,
                    verifiers: verifiers))
        }
        compiled = out
    }

    /// The first policy that matches the hello, the certificate it selects, and the context for both.
    /// `challenge`: a TLS-ALPN-01 certificate found for this hello beforehand (distributed solving).
    /// `challenge`: a TLS-ALPN-01 validation certificate; `external`: a certificate a `get_certificate` manager gave
    /// for this handshake, used in place of the policy's selection.
    public func choose(for hello: HandshakeInfo, challenge: TLSCertificate? = nil, external: TLSCertificate? = nil)
        throws -> Choice
    {
        if let cert = challenge
            ?? challenges?.tlsALPNCertificate(serverName: hello.serverName, alpn: hello.alpn)
        {
            // TLS-ALPN-01 (RFC 8737): the validation certificate, and only acme-tls/1, to a client that asked.
            var c = TLSConfiguration.makeServerConfiguration(
                certificateChain: cert.nioChain.map { .certificate($0) }, privateKey: .privateKey(cert.nioKey))
            c.applicationProtocols = [ACMEChallengeBoard.acmeTLS1]
            return Choice(context: try NIOSSLContext(configuration: c), verification: nil, leafCheck: nil)
        }
        guard let index = compiled.firstIndex(where: { $0.policy.matches(hello) }) else {
            throw Refusal(description: "no connection policy matches server name '\(hello.serverName ?? "")'")
        }
        let p = compiled[index]
        if p.policy.drop { throw Refusal(description: "connection policy drops this connection", dropped: true) }
        guard let cert = external ?? selectCertificate(p.policy, hello) else {
            throw Refusal(description: "no certificate available for '\(hello.serverName ?? "")'", noCertificate: true)
        }
        let key = "\(index)/\(cert.id)/\(cert.stapleGeneration)"
        let context: NIOSSLContext
        if let cached = contexts.withLock({ $0[key] }) {
            context = cached
        } else {
            var c = p.base
            c.certificateChain = cert.nioChain.map { .certificate($0) }
            c.privateKey = .privateKey(cert.nioKey)
            let made = try NIOSSLContext(configuration: c)
            if let staple = cert.ocspStaple, staple.status == .good, !staple.expired {
                _ = OCSPStapling.attach(staple.der, to: made)
            }
            contexts.withLock { d in
                // Managed certificates are replaced on renewal; drop contexts for certificates no longer held.
                if d.count > 64 { d.removeAll() }
                d[key] = made
            }
            context = made
        }
        var verification: NIOSSLCustomVerificationCallback?
        if p.verifyPresented {
            let allow = p.leafAllowList
            verification = { chain, promise in
                guard let allow else { promise.succeed(.certificateVerified); return }
                let leaf = chain.first.flatMap { try? $0.toDERBytes() }
                promise.succeed(leaf.map { allow.contains($0) } == true ? .certificateVerified : .failed)
            }
        }
        // Verifiers judge the leaf once the TLS stack is done with the handshake, as Caddy's VerifyConnection does;
        // a client that sent none fails them ("no client certificate provided").
        let verifiers = p.verifiers
        var leafCheck: (@Sendable ([UInt8]?) -> Bool)?
        if !verifiers.isEmpty {
            leafCheck = { leaf in
                guard let leaf else { return false }
                return verifiers.allSatisfy { $0.verify(leaf: leaf) }
            }
        }
        return Choice(context: context, verification: verification, leafCheck: leafCheck)
    }

    /// The certificate a handshake gets (for TLS stacks other than NIOSSL, such as QUIC's): the first matching
    /// policy's selection, or a ``Refusal``.
    public func certificate(for hello: HandshakeInfo) throws -> TLSCertificate {
        guard let p = compiled.first(where: { $0.policy.matches(hello) }) else {
            throw Refusal(description: "no connection policy matches server name '\(hello.serverName ?? "")'")
        }
        if p.policy.drop { throw Refusal(description: "connection policy drops this connection", dropped: true) }
        guard let cert = selectCertificate(p.policy, hello) else {
            throw Refusal(description: "no certificate available for '\(hello.serverName ?? "")'")
        }
        return cert
    }

    /// Whether some policy asks clients for certificates (which the QUIC stack does not verify).
    public var requestsClientCertificates: Bool { compiled.contains { $0.policy.clientAuthentication != nil } }

    func selectCertificate(_ policy: ConnectionPolicy, _ hello: HandshakeInfo) -> TLSCertificate? {
        var names: [String] = []
        if let sni = hello.serverName, !sni.isEmpty {
            names.append(sni)
        } else if let d = policy.defaultSNI, !d.isEmpty {
            names.append(d)
        }
        // Without SNI, a certificate for the address the client connected to (certmagic does the same).
        if hello.serverName == nil, var ip = hello.localAddress?.ipAddress {
            // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses.
            if ip.hasPrefix("::ffff:") && ip.contains(".") { ip.removeFirst(7) }
            names.append(ip)
        }
        if let f = policy.fallbackSNI, !f.isEmpty { names.append(f) }
        for name in names {
            let candidates = store.candidates(for: name).filter { policy.certificateSelection?.allows($0) ?? true }
            // Prefer a certificate that is valid now; among those, the one that lasts longest.
            let now = Date()
            if let best = candidates.filter({ $0.notBefore <= now && now < $0.notAfter }).max(by: {
                $0.notAfter < $1.notAfter
            })
                ?? candidates.first
            {
                return best
            }
        }
        // A client without SNI gets whatever certificate the policy allows: it may still connect (certmagic does
        // the same); with SNI, a name no certificate covers is an error.
        if hello.serverName == nil {
            return store.all.first { policy.certificateSelection?.allows($0) ?? true }
        }
        return nil
    }
}

let tlsVersions: [String: (version: TLSVersion, rank: Int)] = [
    "tls1.2": (.tlsv12, 2), "tls1.3": (.tlsv13, 3),
]

/// Go's cipher suite names and their IANA code points.
let goCipherSuites: [String: UInt16] = [
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F, "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C, "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": 0xCCA8, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": 0xCCA9,
    "TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302, "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
]

/// Caddy's curve names and their TLS group IDs.
let namedCurves: [String: UInt16] = [
    "x25519": 0x001D, "secp256r1": 0x0017, "secp384r1": 0x0018, "secp521r1": 0x0019, "x25519mlkem768": 0x11EC,
]
