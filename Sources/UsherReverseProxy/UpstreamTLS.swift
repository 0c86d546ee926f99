import Foundation
import NIOCore
import NIOSSL
import NIOTLS
public import UsherCore
import UsherHTTP
public import UsherTLS

/// `transport.tls` of the `http` transport: TLS to upstreams, verified against the system roots or the CAs given.
public struct UpstreamTLS: Decodable, Sendable {
    /// `ca`: a CA pool source (`inline`, `file`, `combined`) to verify upstreams against.
    public var ca: Loaded<CAPoolSources>?
    /// `root_ca_pool`: base64 DER CA certificates (deprecated form of `ca`).
    public var rootCAPool: [String]
    /// `root_ca_pem_files`: PEM files of CA certificates (deprecated form of `ca`).
    public var rootCAPEMFiles: [String]
    /// `client_certificate_file` and `client_certificate_key_file`: a certificate to present (mTLS).
    public var clientCertificateFile: String?
    public var clientCertificateKeyFile: String?
    /// `insecure_skip_verify`: accept any certificate. Default: false.
    public var insecureSkipVerify: Bool
    /// `handshake_timeout`. Default: 10s.
    public var handshakeTimeout: ConfigDuration?
    /// `server_name`: SNI and the name the certificate must match. Default: the dial address's host.
    public var serverName: String?
    /// `except_ports`: upstream ports spoken to in cleartext.
    public var exceptPorts: [String]

    enum CodingKeys: String, CodingKey {
        case ca, rootCAPool = "root_ca_pool", rootCAPEMFiles = "root_ca_pem_files"
        case clientCertificateFile = "client_certificate_file", clientCertificateKeyFile = "client_certificate_key_file"
        case clientCertificateAutomate = "client_certificate_automate", insecureSkipVerify = "insecure_skip_verify"
        case handshakeTimeout = "handshake_timeout", serverName = "server_name", renegotiation, exceptPorts =
            "except_ports"
        case curves
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.clientCertificateAutomate, .curves])
        ca = try c.decodeIfPresent(Loaded<CAPoolSources>.self, forKey: .ca)
        rootCAPool = try c.decodeIfPresent([String].self, forKey: .rootCAPool) ?? []
        rootCAPEMFiles = try c.decodeIfPresent([String].self, forKey: .rootCAPEMFiles) ?? []
        clientCertificateFile = try c.decodeIfPresent(String.self, forKey: .clientCertificateFile)
        clientCertificateKeyFile = try c.decodeIfPresent(String.self, forKey: .clientCertificateKeyFile)
        if (clientCertificateFile == nil) != (clientCertificateKeyFile == nil) {
            throw c.error(.clientCertificateFile, "client_certificate_file and client_certificate_key_file go together")
        }
        insecureSkipVerify = try c.decodeIfPresent(Bool.self, forKey: .insecureSkipVerify) ?? false
        handshakeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .handshakeTimeout)
        serverName = try c.decodeIfPresent(String.self, forKey: .serverName)
        if let r = try c.decodeIfPresent(String.self, forKey: .renegotiation), r != "never" {
            throw c.error(.renegotiation, "renegotiation \(r) is not supported (only never)")
        }
        exceptPorts = try c.decodeIfPresent([String].self, forKey: .exceptPorts) ?? []
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        try await ca?.provision(context)
    }

    /// The client context: trust, verification, client certificate and ALPN (`protocols`).
    func makeContext(alpn protocols: [String]) throws -> NIOSSLContext {
        var config = TLSConfiguration.makeClientConfiguration()
        var roots: [NIOSSLCertificate] = []
        for (i, b64) in rootCAPool.enumerated() {
            guard let der = Data(base64Encoded: b64) else {
                throw ConfigError("tls.root_ca_pool[\(i)]: invalid base64 DER certificate")
            }
            roots.append(try derCertificate(Array(der)))
        }
        do {
            for file in rootCAPEMFiles { roots += try pemCertificates(file) }
            if let ca { roots += try ca.module.certificates() }
        } catch let e as ConfigError {
            throw ConfigError("tls: \(e.message)")
        }
        if !roots.isEmpty { config.trustRoots = .certificates(roots) }
        config.certificateVerification = insecureSkipVerify ? .none : .fullVerification
        if let certFile = clientCertificateFile, let keyFile = clientCertificateKeyFile {
            do {
                config.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
                config.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw ConfigError("tls.client_certificate_file: loading \(certFile) and \(keyFile): \(error)")
            }
        }
        config.applicationProtocols = protocols
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw ConfigError("tls: building the TLS client: \(error)")
        }
    }

    /// The name to send as SNI and verify the certificate against, for an upstream host; IP literals have none
    /// (the certificate is then checked against the peer's address).
    func sni(for host: String) -> String? {
        if let serverName, !serverName.isEmpty { return serverName }
        if host.isEmpty || IPAddress(host) != nil { return nil }
        return host
    }
}

/// Waits for the TLS handshake of a new upstream connection, so a failure counts as a failed dial.
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    /// Completed with the protocol ALPN chose (`nil` when none was).
    let promise: EventLoopPromise<String?>

    init(promise: EventLoopPromise<String?>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            promise.succeed(negotiated)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.eof)
        context.fireChannelInactive()
    }
}
