import Foundation
import Synchronization
public import UsherCore

/// `admin.api.pki`: `GET /pki/ca/<id>` (the CA's names and its root and intermediate certificates as PEM, JSON)
/// and `GET /pki/ca/<id>/certificates` (the intermediate chain then the root, PEM), as Caddy serves them. The
/// `local` CA answers even when no `pki` app is configured; its keys are made on first use, as for issuance.
public struct PKIAdminEndpoint: AdminEndpoint {
    public init() {}
    public var path: String { "/pki" }

    public func handle(_ request: AdminRequest, runtime: ServerRuntime) async throws -> AdminResponse {
        let parts = request.path.dropFirst("/pki/".count).split(separator: "/", omittingEmptySubsequences: false)
        let info: Bool
        switch parts.count {
        case 2 where parts[0] == "ca" && !parts[1].isEmpty: info = true
        case 3 where parts[0] == "ca" && !parts[1].isEmpty && parts[2] == "certificates": info = false
        default: throw AdminError(404, "resource not found: \(request.path)")
        }
        guard request.method == "GET" else { throw AdminError(405, "method not allowed: \(request.method)") }
        let id = String(parts[1])
        let ca: CertificateAuthority
        if let configured = (await runtime.app("pki") as? PKIApp)?.authority(id) {
            ca = configured
        } else if id == "local" {
            let storage = try await ServerRuntime.storage(
                for: await runtime.currentConfig, environment: runtime.environment)
            ca = CertificateAuthority(id: id, config: CAConfig(), storage: storage)
        } else {
            throw AdminError(404, "no certificate authority configured with id: \(id)")
        }
        do {
            try await ca.prepare()
        } catch {
            throw AdminError(500, "failed to get root and intermediate cert for CA \(id): \(error)")
        }
        guard let (root, intermediate) = ca.pems else {
            throw AdminError(500, "failed to get root and intermediate cert for CA \(id)")
        }
        if !info {
            return AdminResponse(
                headers: [("Content-Type", "application/pem-certificate-chain")],
                body: Array((intermediate + root).utf8))
        }
        var o = JSONObject()
        o["id"] = .string(id)
        o["name"] = .string(ca.config.name)
        o["root_common_name"] = .string(ca.rootCommonName(now: Date()))
        o["intermediate_common_name"] = .string(ca.intermediateCommonName)
        o["root_certificate"] = .string(root)
        o["intermediate_certificate"] = .string(intermediate)
        // Go's json.Marshal, written as is: no trailing newline.
        return AdminResponse(
            headers: [("Content-Type", "application/json")], body: JSONValue.object(o).serializedBytes())
    }
}

extension CertificateAuthority {
    /// The root and intermediate certificates as PEM, after ``prepare()``.
    var pems: (root: String, intermediate: String)? {
        keys.withLock { k in k.map { ($0.rootPEM, $0.intermediatePEM) } }
    }

    /// The root's common name as configured (`{name} - {year} ECC Root` by default).
    func rootCommonName(now: Date) -> String {
        let year = Calendar(identifier: .gregorian).component(.year, from: now)
        return config.rootCommonName ?? "\(config.name) - \(year) ECC Root"
    }

    var intermediateCommonName: String { config.intermediateCommonName ?? "\(config.name) - ECC Intermediate" }
}
