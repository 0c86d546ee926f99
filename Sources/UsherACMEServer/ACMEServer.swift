import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwiftASN1
import Synchronization
import UsherACME
public import UsherCore
public import UsherHTTP
import UsherTLS
import X509

/// `http.handlers.acme_server`: an ACME (RFC 8555) CA for internal networks, issuing from a CA of the `pki` app.
/// Serves `<path_prefix><ca>/directory` and the endpoints it names; other requests go to the next handler.
/// Validates HTTP-01 (on port 80 of the identifier, as Caddy's smallstep-based server does), applies the
/// `policy` allow/deny rules, and answers ACME Renewal Information.
public struct ACMEServerHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.acme_server"

    /// `ca`: the `pki` CA to issue from. Default: `local`.
    public var ca: String
    /// `lifetime`: validity of issued certificates. Default: 12h.
    public var lifetime: ConfigDuration?
    /// `host`: the host in the directory's URLs. Default: the request's Host.
    public var host: String?
    /// `path_prefix`: where the endpoints live. Default: `/acme/`.
    public var pathPrefix: String
    /// `resolvers`: DNS servers (`host:port`) for looking up identifiers to validate. Default: the system's.
    public var resolvers: [String]
    /// `challenges`: the challenge types offered (`http-01`, `tls-alpn-01`, `dns-01`). Default: all three.
    public var challenges: [String]
    /// `policy.allow` / `policy.deny`: `domains` (wildcards allowed) and `ip_ranges` (CIDR).
    public var allow: Rules?
    public var deny: Rules?
    /// `policy.allow_wildcard_names`.
    public var allowWildcardNames: Bool

    private let runtime = Box()

    /// Holds the provisioned state; shared by the copies of the handler struct.
    final class Box: Sendable {
        let state = Mutex<ACMEServerState?>(nil)
        func withLock<R>(_ body: (inout ACMEServerState?) -> R) -> R { state.withLock { body(&$0) } }
    }

    /// `domains` and `ip_ranges` of a policy rule set.
    public struct Rules: Decodable, Sendable {
        public var domains: [String]
        public var ipRanges: [IPPrefix]

        enum CodingKeys: String, CodingKey { case domains, ipRanges = "ip_ranges" }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            domains = try c.decodeIfPresent([String].self, forKey: .domains) ?? []
            ipRanges = try (c.decodeIfPresent([String].self, forKey: .ipRanges) ?? []).enumerated().map { i, s in
                guard let p = IPPrefix(s.contains("/") ? s : s + (s.contains(":") ? "/128" : "/32")) else {
                    throw ConfigError(path: "ip_ranges[\(i)]", "invalid IP range \(s)")
                }
                return p
            }
        }

        func matches(_ id: ACMEIdentifier) -> Bool {
            if id.type == "ip" {
                guard let ip = IPAddress(id.value) else { return false }
                return ipRanges.contains { $0.contains(ip) }
            }
            let name = id.value.lowercased()
            return domains.contains { d in
                let rule = d.lowercased()
                if rule.hasPrefix("*.") { return name.hasSuffix(rule.dropFirst()) }
                return rule == name
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case ca, lifetime, host, pathPrefix = "path_prefix", resolvers, challenges, policy
        case signWithRoot = "sign_with_root"
    }
    enum PolicyKeys: String, CodingKey { case allow, deny, allowWildcardNames = "allow_wildcard_names" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.signWithRoot])
        ca = try c.decodeIfPresent(String.self, forKey: .ca) ?? "local"
        if ca.isEmpty { ca = "local" }
        lifetime = try c.decodeIfPresent(ConfigDuration.self, forKey: .lifetime)
        host = try c.decodeIfPresent(String.self, forKey: .host).flatMap { $0.isEmpty ? nil : $0 }
        pathPrefix = try c.decodeIfPresent(String.self, forKey: .pathPrefix) ?? "/acme/"
        if pathPrefix.isEmpty { pathPrefix = "/acme/" }
        if !pathPrefix.hasSuffix("/") { pathPrefix += "/" }
        resolvers = try c.decodeIfPresent([String].self, forKey: .resolvers) ?? []
        challenges = try c.decodeIfPresent([String].self, forKey: .challenges) ?? []
        for (i, ch) in challenges.enumerated() {
            guard ["http-01", "dns-01", "tls-alpn-01"].contains(ch) else {
                throw ConfigError(path: "challenges[\(i)]", "acme challenge \"\(ch)\" is not supported")
            }
        }
        allowWildcardNames = false
        if c.contains(.policy) {
            let p = try c.nestedContainer(keyedBy: PolicyKeys.self, forKey: .policy)
            allow = try p.decodeIfPresent(Rules.self, forKey: .allow)
            deny = try p.decodeIfPresent(Rules.self, forKey: .deny)
            allowWildcardNames = try p.decodeIfPresent(Bool.self, forKey: .allowWildcardNames) ?? false
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        guard let pki = try await context.app("pki") as? PKIApp, let authority = pki.authority(ca) else {
            throw ConfigError("ca: certificate authority \(ca) is not configured in the pki app")
        }
        let seconds = lifetime.flatMap { $0.nanoseconds > 0 ? Double($0.nanoseconds) / 1e9 : nil } ?? 12 * 3600
        // State (nonces, accounts, orders) outlives a reload, so orders in progress finish.
        let states = context.services.service(ACMEServerStates.self) { ACMEServerStates() }
        let log = context.logger("http.handlers.acme_server")
        let state = states.state(for: ca) {
            ACMEServerState(storage: context.storage, caID: ca, logger: log, group: context.eventLoopGroup)
        }
        var servers: [(host: String?, port: Int)] = []
        for r in resolvers {
            let (h, p) = splitHostPort(r)
            servers.append((h, Int(p) ?? 53))
        }
        state.configure(
            authority: authority, lifetime: seconds, resolvers: servers, allow: allow, deny: deny,
            allowWildcards: allowWildcardNames, challenges: challenges)
        if allow == nil && deny == nil {
            log.warning(
                "acme_server policy has no allow/deny rules; order identifiers are unrestricted (allow-all)",
                metadata: ["ca": "\(ca)", "allow_wildcard_names": "\(allowWildcardNames)"])
        }
        runtime.withLock { $0 = state }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let base = pathPrefix + ca + "/"
        let path = request.escapedPath
        guard path.hasPrefix(base), let state = runtime.withLock({ $0 }) else {
            return try await next.serve(request, writer)
        }
        let scheme = request.tls != nil ? "https" : "http"
        let root = "\(scheme)://\(host ?? request.host)\(base)"
        let route = String(path.dropFirst(base.count))
        let body: [UInt8]
        if request.method == .POST {
            var buffer = try await request.body.collect(upTo: 1 << 20)
            body = buffer.readBytes(length: buffer.readableBytes) ?? []
        } else {
            body = []
        }
        let reply = await state.handle(method: request.method, route: route, root: root, body: body)
        writer.headers.replaceOrAdd(name: "Replay-Nonce", value: state.newNonce())
        writer.headers.replaceOrAdd(name: "Cache-Control", value: "no-store")
        writer.headers.add(name: "Link", value: "<\(root)directory>;rel=\"index\"")
        for (name, value) in reply.headers { writer.headers.add(name: name, value: value) }
        writer.headers.replaceOrAdd(name: "Content-Type", value: reply.contentType)
        writer.headers.replaceOrAdd(name: "Content-Length", value: String(reply.body.count))
        try await writer.writeHead(HTTPResponseStatus(statusCode: reply.status))
        if !reply.body.isEmpty && request.method != .HEAD {
            try await writer.write(ByteBuffer(bytes: reply.body))
        }
    }
}

/// The ACME servers' state by CA ID, shared across config reloads.
final class ACMEServerStates: Sendable {
    private let states = Mutex<[String: ACMEServerState]>([:])
    func state(for ca: String, make: () -> ACMEServerState) -> ACMEServerState {
        states.withLock { s in
            if let existing = s[ca] { return existing }
            let made = make()
            s[ca] = made
            return made
        }
    }
}
