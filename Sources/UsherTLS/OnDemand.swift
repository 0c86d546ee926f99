import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization
import UsherACME
public import UsherCore

/// Permission modules under `tls.permission` (inline key `module`): whether a certificate may be obtained (or
/// loaded from storage) for a name during a handshake.
public protocol OnDemandPermission: Module {
    /// Returns when `name` may have a certificate; throws why not.
    func certificateAllowed(_ name: String) async throws
}

public enum PermissionModules: ModuleNamespace {
    public static let prefix = "tls.permission"
    public static let inlineKey: String? = "module"
    public typealias Instance = any OnDemandPermission
}

/// A refusal by a permission module (Caddy's `ErrPermissionDenied`).
public struct PermissionDenied: Error, CustomStringConvertible {
    public let description: String
}

/// `tls.permission.http`: asks `endpoint?domain=<name>`; a 2xx answer allows, anything else refuses. Redirects are
/// not followed; the request times out after 10 seconds (Caddy's `ask`).
public struct PermissionByHTTP: OnDemandPermission, Provisioner {
    public static let moduleID: ModuleID = "tls.permission.http"
    /// `endpoint`: the URL to ask.
    public var endpoint: String
    private let client = SharedState<ACMEHTTPClient?>(nil)

    package enum CodingKeys: String, CodingKey { case endpoint }

    public init(endpoint: String) { self.endpoint = endpoint }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        endpoint = try c.decode(String.self, forKey: .endpoint)
        guard let u = URLComponents(string: endpoint), ["http", "https"].contains(u.scheme?.lowercased() ?? ""),
            u.host?.isEmpty == false
        else { throw c.error(.endpoint, "\(endpoint) is not an http(s) URL") }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        let made = try ACMEHTTPClient(group: context.eventLoopGroup, trustedRoots: nil, timeout: .seconds(10))
        client.withLock { $0 = made }
    }

    public func certificateAllowed(_ name: String) async throws {
        guard let client = client.withLock({ $0 }), var u = URLComponents(string: endpoint) else {
            throw PermissionDenied(description: "permission endpoint not provisioned")
        }
        u.queryItems = (u.queryItems ?? []).filter { $0.name != "domain" } + [URLQueryItem(name: "domain", value: name)]
        let url = u.string ?? endpoint
        let r: ACMEHTTPResponse
        do {
            r = try await client.request(.GET, url)
        } catch {
            throw PermissionDenied(
                description:
                    "checking \(endpoint) to determine if certificate for hostname '\(name)' should be allowed: \(error)"
            )
        }
        guard (200...299).contains(r.status) else {
            throw PermissionDenied(
                description:
                    "\(name): certificate not allowed by permission module \(endpoint) - non-2xx status code \(r.status)"
            )
        }
    }
}

/// `automation.on_demand`.
public struct OnDemandConfig: Decodable, Sendable {
    /// `permission`: the module that allows or refuses each name.
    public var permission: Loaded<PermissionModules>?
    /// `ask`: deprecated form of `permission` with the `http` module.
    public var ask: String?

    package enum CodingKeys: String, CodingKey { case permission, ask }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        permission = try c.decodeIfPresent(Loaded<PermissionModules>.self, forKey: .permission)
        ask = try c.decodeIfPresent(String.self, forKey: .ask).flatMap { $0.isEmpty ? nil : $0 }
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        if permission == nil, let ask {
            // The deprecated `ask` is the `http` permission module, as Caddy treats it.
            let decoder = ConfigDecoder(registry: context.registry)
            permission = try decoder.decode(
                Loaded<PermissionModules>.self, from: ["module": "http", "endpoint": .string(ask)],
                path: [
                    AnyCodingKey("apps"), AnyCodingKey("tls"), AnyCodingKey("automation"), AnyCodingKey("on_demand"),
                ])
        }
        try await permission?.provision(context)
    }
}

/// Obtains certificates during handshakes for names whose automation policy has `on_demand`: the permission
/// module is asked first, storage is checked, and concurrent handshakes for one name share one obtain (one
/// order). The TLS server calls it when no certificate covers a handshake's name.
public final class OnDemandIssuance: Sendable {
    let manager: CertificateManager
    let permission: (any OnDemandPermission)?
    private let inFlight = Mutex<[String: Task<Void, any Error>]>([:])

    init(manager: CertificateManager, permission: (any OnDemandPermission)?) {
        self.manager = manager
        self.permission = permission
    }

    /// Whether `name`'s automation policy obtains certificates on demand or asks `get_certificate` managers.
    public func eligible(_ name: String) -> Bool {
        guard !name.isEmpty, let policy = manager.automation?.policy(for: name) else { return false }
        return policy.onDemand || !policy.getCertificate.isEmpty
    }

    /// A certificate for a handshake whose name the store does not cover: the first that the policy's
    /// `get_certificate` managers give (for this handshake only), else one obtained into the store (then `nil`),
    /// when the policy is on demand or names `name` among its subjects, as certmagic allows.
    public func certificate(for name: String, _ hello: HandshakeInfo) async throws -> TLSCertificate? {
        guard let policy = manager.automation?.policy(for: name) else { return nil }
        var lastError: (any Error)?
        for (i, getter) in policy.getCertificate.enumerated() {
            do {
                if let cert = try await getter.module.certificate(for: hello) { return cert }
                lastError = nil
            } catch {
                lastError = error
                manager.logger.error(
                    "external certificate manager",
                    metadata: [
                        "sni": "\(name)", "cert_manager": "\(getter.moduleID)", "cert_manager_idx": "\(i)",
                        "error": "\(error)",
                    ])
            }
        }
        if let lastError {
            throw ConfigError(
                "external certificate manager indicated that it is unable to yield certificate: \(lastError)")
        }
        let listed = policy.subjects.contains { $0.lowercased() == name.lowercased() }
        guard policy.onDemand || listed else {
            throw ConfigError("no permission module configured; certificates not allowed except from external Managers")
        }
        try await obtain(name)
        return nil
    }

    /// Makes sure the store holds a certificate for `name`, obtaining one if allowed; throws why not.
    public func obtain(_ name: String) async throws {
        let n = name.lowercased()
        let task = inFlight.withLock { jobs -> Task<Void, any Error> in
            if let existing = jobs[n] { return existing }
            let made = Task { [self] in
                defer { _ = inFlight.withLock { $0.removeValue(forKey: n) } }
                if manager.store.managedCertificate(for: n) != nil { return }
                if let permission {
                    try await permission.certificateAllowed(n)
                }
                try await manager.obtainOnDemand(n)
            }
            jobs[n] = made
            return made
        }
        try await task.value
    }
}
