import CUsherSystem
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SwiftASN1
import Synchronization
import UsherACME
import UsherCore
import X509

/// An OCSP response (RFC 6960) for one certificate, and the parts of it stapling needs.
struct OCSPStaple: Sendable {
    enum Status: String, Sendable { case good, revoked, unknown }

    let der: [UInt8]
    let status: Status
    let thisUpdate: Date
    let nextUpdate: Date?

    /// Reads a successful response's first single response; nil when `der` is not one.
    init?(der: [UInt8]) {
        // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ResponseBytes }
        guard let top = try? DER.parse(der), let parts = top.children, parts.count == 2,
            parts[0].primitive == [0], let bytes = parts[1].children?.first?.children, bytes.count == 2,
            let basicDER = bytes[1].primitive,
            // BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, ... }
            let basic = try? DER.parse(basicDER), let data = basic.children?.first?.children,
            // ResponseData ::= SEQUENCE { version [0] OPTIONAL, responderID, producedAt, responses, ... }
            let responses = data.first(where: {
                $0.identifier == .sequence && $0.children?.first?.identifier == .sequence
            })?.children,
            let single = responses.first?.children, single.count >= 3
        else { return nil }
        // SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, nextUpdate [0] EXPLICIT OPTIONAL, ... }
        switch single[1].identifier.tagNumber {
        case 0: status = .good
        case 1: status = .revoked
        default: status = .unknown
        }
        guard let this = try? GeneralizedTime(derEncoded: single[2]) else { return nil }
        thisUpdate = Date(this)
        nextUpdate = single.dropFirst(3).first {
            $0.identifier.tagClass == .contextSpecific && $0.identifier.tagNumber == 0
        }
        .flatMap { $0.children?.first }.flatMap { try? GeneralizedTime(derEncoded: $0) }.map(Date.init)
        self.der = der
    }

    /// When to fetch a fresh response: halfway through this one's validity (certmagic's rule), else an hour on.
    var refreshAt: Date {
        guard let nextUpdate else { return thisUpdate.addingTimeInterval(3600) }
        return thisUpdate.addingTimeInterval(nextUpdate.timeIntervalSince(thisUpdate) / 2)
    }

    var expired: Bool { nextUpdate.map { $0 <= Date() } ?? false }
}

extension ASN1Node {
    fileprivate var children: [ASN1Node]? {
        guard case .constructed(let nodes) = content else { return nil }
        return Array(nodes)
    }

    fileprivate var primitive: [UInt8]? {
        guard case .primitive(let bytes) = content else { return nil }
        return Array(bytes)
    }
}

extension Date {
    fileprivate init(_ t: GeneralizedTime) {
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        c.timeZone = TimeZone(identifier: "UTC")
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        self = (calendar.date(from: c) ?? .distantPast).addingTimeInterval(t.fractionalSeconds)
    }
}

/// Hands staples to BoringSSL. swift-nio-ssl (2.37) has no stapling API: the context's `SSL_CTX` is found by
/// reflection and BoringSSL's own setter called on it before the context serves a connection. Should a later
/// swift-nio-ssl rename the field, stapling stops (logged once), never anything worse.
enum OCSPStapling {
    static func attach(_ der: [UInt8], to context: NIOSSLContext) -> Bool {
        guard let ctx = sslContext(of: context) else { return false }
        return der.withUnsafeBufferPointer { buf in
            CNIOBoringSSL_SSL_CTX_set_ocsp_response(UnsafeMutableRawPointer(ctx), buf.baseAddress, buf.count)
        } == 1
    }

    private static func sslContext(of context: NIOSSLContext) -> OpaquePointer? {
        Mirror(reflecting: context).children.first { $0.label == "sslContext" }?.value as? OpaquePointer
    }

    /// Whether this swift-nio-ssl still keeps its `SSL_CTX` where stapling looks for it.
    static let available: Bool = {
        guard let probe = try? NIOSSLContext(configuration: .makeClientConfiguration()) else { return false }
        return sslContext(of: probe) != nil
    }()
}

/// Keeps an OCSP staple on every certificate (loaded or managed) that names a responder: from storage when a
/// fresh one is there (`ocsp/<name>-<hash>`, certmagic's key), else from the responder, verified against the
/// issuer before it is stored and served. New certificates are stapled within a second of arriving; staples are
/// checked every `ocsp_interval` and refreshed halfway through their validity.
final class OCSPStapler: Sendable {
    let store: CertificateStore
    let storage: any Storage
    /// Per-policy `disable_ocsp_stapling` and `ocsp_overrides`, by the certificate's first name.
    let automation: AutomationConfig?
    let logger: Logger
    let interval: TimeInterval
    private let makeClient: @Sendable () throws -> ACMEHTTPClient
    private let client = Mutex<ACMEHTTPClient?>(nil)
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// Per certificate ID: when to try again after a failure, and when it was last checked.
    private let state = Mutex<[String: (retryAt: Date, checked: Date)]>([:])

    init(
        store: CertificateStore, storage: any Storage, automation: AutomationConfig?, logger: Logger,
        interval: TimeInterval, group: any EventLoopGroup
    ) {
        self.store = store
        self.storage = storage
        self.automation = automation
        self.logger = logger
        self.interval = interval
        makeClient = { try ACMEHTTPClient(group: group, trustedRoots: nil, timeout: .seconds(10)) }
    }

    func start() {
        guard OCSPStapling.available else {
            logger.error("OCSP stapling is unavailable: this swift-nio-ssl keeps its SSL_CTX elsewhere")
            return
        }
        let made = Task { [self] in
            var first = true
            while !Task.isCancelled {
                if !first { try? await Task.sleep(for: .seconds(1)) }
                first = false
                for cert in store.all where !cert.ocspResponders.isEmpty {
                    if Task.isCancelled { return }
                    await maintain(cert)
                }
            }
        }
        task.withLock { $0 = made }
    }

    func stop() {
        task.withLock { $0?.cancel() }
    }

    private func maintain(_ cert: TLSCertificate) async {
        if policy(cert)?.disableOCSPStapling == true { return }
        let now = Date()
        let s = state.withLock { $0[cert.id] }
        if let s, now < s.retryAt { return }
        if let staple = cert.ocspStaple {
            // A staple is looked at every `ocsp_interval`, and replaced once half its validity has passed.
            if let s, now.timeIntervalSince(s.checked) < interval, !staple.expired { return }
            state.withLock { $0[cert.id] = (.distantPast, now) }
            if now < staple.refreshAt && !staple.expired { return }
        }
        do {
            let staple = try await staple(for: cert)
            cert.setOCSPStaple(staple)
            state.withLock { $0[cert.id] = (.distantPast, Date()) }
            if staple.status != .good {
                logger.warning(
                    "OCSP status is not good; not stapling",
                    metadata: ["identifiers": "\(cert.names)", "status": "\(staple.status.rawValue)"])
            }
        } catch {
            // Retried each minute; a staple still valid keeps being served meanwhile.
            state.withLock { $0[cert.id] = (Date().addingTimeInterval(60), Date()) }
            logger.warning(
                "stapling OCSP", metadata: ["identifiers": "\(cert.names)", "error": "\(error)"])
        }
    }

    /// certmagic's storage key: the first name, `-`, and the FNV-1a hash of the certificate PEM.
    static func storageKey(_ cert: TLSCertificate) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in cert.chainPEM.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        let prefix = cert.names.first.map { StorageKeys.safe($0) + "-" } ?? ""
        return "ocsp/" + prefix + String(hash, radix: 16)
    }

    /// A fresh staple: the stored one if still fresh, else a new one from the responder (stored on success).
    func staple(for cert: TLSCertificate) async throws -> OCSPStaple {
        let key = Self.storageKey(cert)
        if cert.ocspStaple == nil, let stored = try? await storage.load(key), let staple = OCSPStaple(der: stored),
            Date() < staple.refreshAt, !staple.expired
        {
            return staple
        }
        let staple = try await fetch(cert)
        try await storage.store(key, staple.der)
        return staple
    }

    private func fetch(_ cert: TLSCertificate) async throws -> OCSPStaple {
        guard let leaf = cert.leafCertificate, let issuer = cert.issuerCertificate else {
            throw OCSPError("the chain holds no issuer certificate to ask about the leaf with")
        }
        let http = try client.withLock { c in
            if let c { return c }
            let made = try makeClient()
            c = made
            return made
        }
        let requester = OCSPHTTPRequester(client: http, overrides: policy(cert)?.ocspOverrides ?? [:])
        // RFC 5280's rules handle the critical extensions CA certificates carry; without them no chain is built.
        var verifier = Verifier(rootCertificates: X509.CertificateStore([issuer])) {
            RFC5280Policy(validationTime: Date())
            OCSPVerifierPolicy(failureMode: .hard, requester: requester, validationTime: Date())
        }
        let result = await verifier.validate(leaf: leaf, intermediates: X509.CertificateStore())
        if let failure = requester.failure { throw failure }
        guard let der = requester.response, let staple = OCSPStaple(der: der) else {
            throw OCSPError("no OCSP response from \(cert.ocspResponders.joined(separator: ", ")): \(result)")
        }
        if case .couldNotValidate(let failures) = result, staple.status == .good {
            throw OCSPError("the OCSP response does not verify: \(failures.map { "\($0.policyFailureReason)" })")
        }
        return staple
    }
}

extension OCSPStapler {
    fileprivate func policy(_ cert: TLSCertificate) -> AutomationPolicy? {
        cert.names.first.flatMap { automation?.policy(for: $0) }
    }
}

struct OCSPError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Posts the request swift-certificates builds to the responder and keeps the raw answer for stapling.
final class OCSPHTTPRequester: OCSPRequester {
    let client: ACMEHTTPClient
    let overrides: [String: String]
    private let answer = Mutex<(response: [UInt8]?, failure: OCSPError?)>((nil, nil))

    init(client: ACMEHTTPClient, overrides: [String: String]) {
        self.client = client
        self.overrides = overrides
    }

    var response: [UInt8]? { answer.withLock { $0.response } }
    var failure: OCSPError? { answer.withLock { $0.failure } }

    func query(request: [UInt8], uri named: String) async -> OCSPRequesterQueryResult {
        let uri = overrides[named] ?? named
        do {
            let r = try await client.request(.POST, uri, body: request, contentType: "application/ocsp-request")
            guard r.status == 200 else {
                let e = OCSPError("\(uri) answered HTTP \(r.status)")
                answer.withLock { $0.failure = e }
                return .terminalError(e)
            }
            answer.withLock { $0.response = r.body }
            return .response(r.body)
        } catch {
            let e = OCSPError("asking \(uri): \(error)")
            answer.withLock { $0.failure = e }
            return .terminalError(e)
        }
    }
}
