import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SwiftASN1
import Synchronization
import UsherACME
import UsherCore
import UsherTLS
import X509

/// One response of the ACME server.
struct ACMEReply {
    var status: Int
    var body: [UInt8]
    var contentType = "application/json"
    var headers: [(String, String)] = []

    static func json(_ status: Int, _ value: JSONValue, _ headers: [(String, String)] = []) -> ACMEReply {
        ACMEReply(status: status, body: value.serializedBytes(.pretty), headers: headers)
    }
}

/// Accounts, orders, authorizations and certificates of one ACME server (one `pki` CA), with the nonces it handed
/// out. Accounts are kept in storage (`acme_server/<ca>/accounts/<id>.json`), so clients keep them across restarts;
/// orders live in memory, bounded in number.
final class ACMEServerState: Sendable {
    struct Account {
        var id: String
        var jwk: JSONObject
        var contact: [String]
        var status = "valid"
    }
    struct Challenge {
        var id: String
        var type: String
        var token: String
        var status = "pending"
        var error: JSONValue?
        var validated: String?
    }
    struct Authorization {
        var id: String
        var account: String
        var identifier: ACMEIdentifier
        var status = "pending"
        var expires: WallTime
        var challenges: [Challenge]
        var wildcard: Bool
    }
    struct Order {
        var id: String
        var account: String
        var identifiers: [ACMEIdentifier]
        var authorizations: [String]
        var status = "pending"
        var expires: WallTime
        var certificate: String?
        var error: JSONValue?
    }
    struct Config {
        var authority: CertificateAuthority?
        var lifetime: Double = 12 * 3600
        var resolvers: [(host: String?, port: Int)] = []
        var allow: ACMEServerHandler.Rules?
        var deny: ACMEServerHandler.Rules?
        var allowWildcards = false
        /// The challenge types offered; empty: all of them.
        var challenges: [String] = []
    }
    struct Data {
        var nonces: Set<String> = []
        var nonceOrder: [String] = []
        var accounts: [String: Account] = [:]
        var orders: [String: Order] = [:]
        var authorizations: [String: Authorization] = [:]
        var certificates: [String: (chain: String, leaf: Certificate)] = [:]
        var revoked: Set<String> = []
        var config = Config()
    }

    let storage: any Storage
    let caID: String
    let logger: Logger
    let http: ACMEHTTPClient?
    let group: any EventLoopGroup
    private let data = Mutex<Data>(Data())
    /// Most orders (with their authorizations) kept; the oldest go first.
    static let maxOrders = 10_000

    init(storage: any Storage, caID: String, logger: Logger, group: any EventLoopGroup) {
        self.storage = storage
        self.caID = caID
        self.logger = logger
        self.group = group
        self.http = try? ACMEHTTPClient(group: group, trustedRoots: nil, timeout: .seconds(10))
    }

    func configure(
        authority: CertificateAuthority, lifetime: Double, resolvers: [(host: String?, port: Int)],
        allow: ACMEServerHandler.Rules?, deny: ACMEServerHandler.Rules?, allowWildcards: Bool,
        challenges: [String] = []
    ) {
        data.withLock {
            $0.config = Config(
                authority: authority, lifetime: lifetime, resolvers: resolvers, allow: allow, deny: deny,
                allowWildcards: allowWildcards, challenges: challenges)
        }
    }

    static func randomID() -> String { Base64URL.encode((0..<16).map { _ in UInt8.random(in: 0...255) }) }

    func newNonce() -> String {
        let n = Self.randomID()
        data.withLock { d in
            d.nonces.insert(n)
            d.nonceOrder.append(n)
            if d.nonceOrder.count > 50_000 {
                for old in d.nonceOrder.prefix(10_000) { d.nonces.remove(old) }
                d.nonceOrder.removeFirst(10_000)
            }
        }
        return n
    }

    private func useNonce(_ n: String) -> Bool {
        data.withLock { $0.nonces.remove(n) != nil }
    }

    // MARK: - Routing

    func handle(method: HTTPMethod, route: String, root: String, body: [UInt8]) async -> ACMEReply {
        do {
            return try await dispatch(method: method, route: route, root: root, body: body)
        } catch let p as ACMEServerProblem {
            return ACMEReply(
                status: p.status, body: p.json.serializedBytes(), contentType: "application/problem+json")
        } catch {
            let p = ACMEServerProblem(type: "serverInternal", detail: "\(error)", status: 500)
            return ACMEReply(
                status: 500, body: p.json.serializedBytes(), contentType: "application/problem+json")
        }
    }

    private func dispatch(method: HTTPMethod, route: String, root: String, body: [UInt8]) async throws -> ACMEReply {
        let parts = route.split(separator: "/").map(String.init)
        switch (method, parts.first ?? "") {
        case (.GET, "directory"):
            return .json(200, directory(root))
        case (.HEAD, "new-nonce"):
            return ACMEReply(status: 200, body: [])
        case (.GET, "new-nonce"):
            return ACMEReply(status: 204, body: [])
        case (.GET, "renewal-info") where parts.count == 2:
            return try renewalInfo(parts[1])
        case (.POST, _):
            break
        default:
            throw ACMEServerProblem.notFound("no such ACME endpoint: \(method) \(route)")
        }
        let jws = try await JWSVerifier.verify(body) { kid in
            guard let id = kid.hasPrefix(root + "account/") ? String(kid.dropFirst((root + "account/").count)) : nil
            else { throw ACMEServerProblem.accountDoesNotExist("no account \(kid)") }
            guard let account = await account(id) else {
                throw ACMEServerProblem.accountDoesNotExist("no account \(kid)")
            }
            return account.jwk
        }
        guard useNonce(jws.nonce) else { throw ACMEServerProblem.badNonce("nonce \(jws.nonce) is not one we issued") }
        guard jws.url == root + route else {
            throw ACMEServerProblem.unauthorized("JWS url \(jws.url) is not the request's \(root + route)")
        }
        if parts.first == "new-account" { return try await newAccount(jws, root) }
        guard let kid = jws.kid, kid.hasPrefix(root + "account/") else {
            throw ACMEServerProblem.malformed("requests other than new-account are signed with a kid")
        }
        let accountID = String(kid.dropFirst((root + "account/").count))
        switch parts.first ?? "" {
        case "new-order": return try newOrder(jws, accountID, root)
        case "order" where parts.count == 2: return try orderReply(parts[1], accountID, root, status: 200)
        case "order" where parts.count == 3 && parts[2] == "finalize":
            return try await finalize(parts[1], jws, accountID, root)
        case "authz" where parts.count == 2: return try authzReply(parts[1], accountID, root)
        case "challenge" where parts.count == 3: return try challenge(parts[1], parts[2], accountID, root)
        case "certificate" where parts.count == 2: return try certificate(parts[1])
        case "account" where parts.count == 2 && parts[1] == accountID:
            guard let a = data.withLock({ $0.accounts[accountID] }) else {
                throw ACMEServerProblem.accountDoesNotExist("no account \(accountID)")
            }
            return .json(200, accountJSON(a, root))
        case "revoke-cert": return try revoke(jws)
        default: throw ACMEServerProblem.notFound("no such ACME endpoint: \(route)")
        }
    }

    private func directory(_ root: String) -> JSONValue {
        [
            "newNonce": .string(root + "new-nonce"), "newAccount": .string(root + "new-account"),
            "newOrder": .string(root + "new-order"), "revokeCert": .string(root + "revoke-cert"),
            "keyChange": .string(root + "key-change"), "renewalInfo": .string(root + "renewal-info"),
            "meta": ["externalAccountRequired": false],
        ]
    }

    // MARK: - Accounts

    private func accountKey(_ id: String) -> String {
        "acme_server/" + StorageKeys.safe(caID) + "/accounts/" + StorageKeys.safe(id) + ".json"
    }

    /// The account `id`, from memory or as an earlier run stored it.
    private func account(_ id: String) async -> Account? {
        if let a = data.withLock({ $0.accounts[id] }) { return a }
        guard let bytes = try? await storage.load(accountKey(id)), case .object(let o)? = try? JSONValue.parse(bytes),
            let jwk = o["jwk"]?.objectValue
        else { return nil }
        let found = Account(id: id, jwk: jwk, contact: (o["contact"]?.arrayValue ?? []).compactMap(\.stringValue))
        data.withLock { $0.accounts[id] = found }
        return found
    }

    private func accountJSON(_ a: Account, _ root: String) -> JSONValue {
        var o: JSONObject = ["status": .string(a.status)]
        if !a.contact.isEmpty { o["contact"] = .array(a.contact.map { .string($0) }) }
        o["orders"] = .string(root + "account/\(a.id)/orders")
        return .object(o)
    }

    private func newAccount(_ jws: VerifiedJWS, _ root: String) async throws -> ACMEReply {
        guard let jwk = jws.jwk else { throw ACMEServerProblem.malformed("new-account is signed with a jwk") }
        // The account ID is the key's thumbprint, so a key finds its account again.
        let id = JWS.thumbprint(
            jwk: JSONObject(jwk.members.filter { ["crv", "e", "kty", "n", "x", "y"].contains($0.key) }))
        let payload = jws.payload?.objectValue ?? [:]
        let existing = await account(id)
        if let existing {
            return .json(200, accountJSON(existing, root), [("Location", root + "account/" + id)])
        }
        if payload["onlyReturnExisting"]?.boolValue == true {
            throw ACMEServerProblem.accountDoesNotExist("no account for this key")
        }
        let contact = (payload["contact"]?.arrayValue ?? []).compactMap(\.stringValue)
        let account = Account(id: id, jwk: jwk, contact: contact)
        data.withLock { $0.accounts[id] = account }
        let record: JSONValue = ["jwk": .object(jwk), "contact": .array(contact.map { .string($0) })]
        try await storage.store(accountKey(id), record.serializedBytes(.pretty))
        logger.info("registered ACME account", metadata: ["ca": "\(caID)", "account": "\(id)"])
        return .json(201, accountJSON(account, root), [("Location", root + "account/" + id)])
    }

    // MARK: - Orders

    private func newOrder(_ jws: VerifiedJWS, _ accountID: String, _ root: String) throws -> ACMEReply {
        guard let ids = jws.payload?.objectValue?["identifiers"]?.arrayValue, !ids.isEmpty else {
            throw ACMEServerProblem.malformed("an order needs identifiers")
        }
        var identifiers: [ACMEIdentifier] = []
        for v in ids {
            guard let o = v.objectValue, let t = o["type"]?.stringValue, let value = o["value"]?.stringValue,
                t == "dns" || t == "ip", !value.isEmpty
            else { throw ACMEServerProblem.malformed("identifiers are {type: dns|ip, value}") }
            identifiers.append(ACMEIdentifier(type: t, value: value.lowercased()))
        }
        let config = data.withLock { $0.config }
        for id in identifiers {
            if id.value.hasPrefix("*.") && !config.allowWildcards {
                throw ACMEServerProblem.rejectedIdentifier("wildcard names are not allowed: \(id.value)")
            }
            if let deny = config.deny, deny.matches(id) {
                throw ACMEServerProblem.rejectedIdentifier("\(id.value) is denied by policy")
            }
            if let allow = config.allow, !allow.matches(id) {
                throw ACMEServerProblem.rejectedIdentifier("\(id.value) is not allowed by policy")
            }
        }
        let expires = WallTime(seconds: WallTime.now().seconds + 86400, nanoseconds: 0)
        let order = data.withLock { d -> Order in
            var authzIDs: [String] = []
            for id in identifiers {
                // A wildcard is proven only through DNS; an IP address has no DNS name to put a record under.
                let wildcard = id.value.hasPrefix("*.")
                let types = ["http-01", "tls-alpn-01", "dns-01"].filter { t in
                    (config.challenges.isEmpty || config.challenges.contains(t))
                        && (wildcard ? t == "dns-01" : id.type != "ip" || t != "dns-01")
                }
                let authz = Authorization(
                    id: Self.randomID(), account: accountID,
                    identifier: ACMEIdentifier(
                        type: id.type, value: id.value.hasPrefix("*.") ? String(id.value.dropFirst(2)) : id.value),
                    expires: expires,
                    challenges: types.map {
                        Challenge(id: Self.randomID(), type: $0, token: Self.randomID() + Self.randomID())
                    },
                    wildcard: wildcard)
                d.authorizations[authz.id] = authz
                authzIDs.append(authz.id)
            }
            let order = Order(
                id: Self.randomID(), account: accountID, identifiers: identifiers, authorizations: authzIDs,
                expires: expires)
            d.orders[order.id] = order
            if d.orders.count > Self.maxOrders, let oldest = d.orders.values.min(by: { $0.expires < $1.expires }) {
                d.orders[oldest.id] = nil
                for a in oldest.authorizations { d.authorizations[a] = nil }
            }
            return order
        }
        return try orderReply(order.id, accountID, root, status: 201)
    }

    private func orderReply(_ id: String, _ accountID: String, _ root: String, status: Int) throws -> ACMEReply {
        guard let order = data.withLock({ $0.orders[id] }), order.account == accountID else {
            throw ACMEServerProblem.notFound("no order \(id)")
        }
        var o: JSONObject = [
            "status": .string(order.status), "expires": .string(order.expires.rfc3339Nano),
            "identifiers": .array(order.identifiers.map { ["type": .string($0.type), "value": .string($0.value)] }),
            "authorizations": .array(order.authorizations.map { .string(root + "authz/" + $0) }),
            "finalize": .string(root + "order/\(id)/finalize"),
        ]
        if let c = order.certificate { o["certificate"] = .string(root + "certificate/" + c) }
        if let e = order.error { o["error"] = e }
        return .json(status, .object(o), [("Location", root + "order/" + id)])
    }

    private func authzReply(_ id: String, _ accountID: String, _ root: String) throws -> ACMEReply {
        guard let a = data.withLock({ $0.authorizations[id] }), a.account == accountID else {
            throw ACMEServerProblem.notFound("no authorization \(id)")
        }
        return .json(200, authzJSON(a, root))
    }

    private func authzJSON(_ a: Authorization, _ root: String) -> JSONValue {
        var o: JSONObject = [
            "status": .string(a.status), "expires": .string(a.expires.rfc3339Nano),
            "identifier": ["type": .string(a.identifier.type), "value": .string(a.identifier.value)],
            "challenges": .array(a.challenges.map { challengeJSON($0, a.id, root) }),
        ]
        if a.wildcard { o["wildcard"] = true }
        return .object(o)
    }

    private func challengeJSON(_ c: Challenge, _ authzID: String, _ root: String) -> JSONValue {
        var o: JSONObject = [
            "type": .string(c.type), "url": .string(root + "challenge/\(authzID)/\(c.id)"),
            "status": .string(c.status), "token": .string(c.token),
        ]
        if let v = c.validated { o["validated"] = .string(v) }
        if let e = c.error { o["error"] = e }
        return .object(o)
    }

    private func challenge(_ authzID: String, _ challengeID: String, _ accountID: String, _ root: String) throws
        -> ACMEReply
    {
        let (authz, jwk) = data.withLock { d in (d.authorizations[authzID], d.accounts[accountID]?.jwk) }
        guard let authz, authz.account == accountID, let jwk,
            let c = authz.challenges.first(where: { $0.id == challengeID })
        else { throw ACMEServerProblem.notFound("no challenge \(challengeID)") }
        if c.status == "pending" && authz.status == "pending" {
            data.withLock { d in
                if let i = d.authorizations[authzID]?.challenges.firstIndex(where: { $0.id == challengeID }) {
                    d.authorizations[authzID]!.challenges[i].status = "processing"
                }
            }
            let keyAuthorization = c.token + "." + JWS.thumbprint(jwk: jwk)
            Task { await validate(authzID: authzID, challenge: c, keyAuthorization: keyAuthorization) }
        }
        var current = c
        current.status = c.status == "pending" ? "processing" : c.status
        return .json(200, challengeJSON(current, authzID, root), [("Link", "<\(root)authz/\(authzID)>;rel=\"up\"")])
    }

    /// Validates one challenge and records the outcome on its authorization and orders.
    private func validate(authzID: String, challenge c: Challenge, keyAuthorization: String) async {
        guard let authz = data.withLock({ $0.authorizations[authzID] }) else { return }
        let name = authz.identifier.value
        var problem: ACMEServerProblem?
        switch c.type {
        case "dns-01": problem = await validateDNS(name, keyAuthorization)
        case "tls-alpn-01": problem = await validateTLSALPN(name, ip: authz.identifier.type == "ip", keyAuthorization)
        default: problem = await validateHTTP(name, ip: authz.identifier.type == "ip", c.token, keyAuthorization)
        }
        record(authzID, c, problem)
    }

    /// HTTP-01 (RFC 8555 §8.3): GET `http://<identifier>/.well-known/acme-challenge/<token>` on port 80, at the
    /// address the resolvers give, must return the key authorization.
    private func validateHTTP(_ name: String, ip: Bool, _ token: String, _ keyAuthorization: String) async
        -> ACMEServerProblem?
    {
        var problem: ACMEServerProblem?
        do {
            let address = try await resolve(name, ip: ip)
            let hostPart = address.contains(":") ? "[\(address)]" : address
            guard let http else {
                throw ACMEServerProblem(type: "serverInternal", detail: "no HTTP client", status: 500)
            }
            let r = try await http.request(
                .GET, "http://\(hostPart)/.well-known/acme-challenge/\(token)", hostHeader: name)
            let body = String(decoding: r.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if r.status != 200 {
                problem = ACMEServerProblem(
                    type: "unauthorized", detail: "\(name): HTTP \(r.status) from the challenge URL", status: 403)
            } else if body != keyAuthorization {
                problem = ACMEServerProblem(
                    type: "unauthorized", detail: "\(name): the key authorization served is not the expected one",
                    status: 403)
            }
        } catch let p as ACMEServerProblem {
            problem = p
        } catch {
            problem = ACMEServerProblem(type: "connection", detail: "\(name): \(error)", status: 400)
        }
        return problem
    }

    /// DNS-01 (RFC 8555 §8.4): a TXT record at `_acme-challenge.<name>`, through the resolvers, must hold the
    /// base64url SHA-256 of the key authorization.
    private func validateDNS(_ name: String, _ keyAuthorization: String) async -> ACMEServerProblem? {
        let expected = Base64URL.encode(Array(SHA256.hash(data: Array(keyAuthorization.utf8))))
        let servers = data.withLock { $0.config.resolvers }
        let fqdn = "_acme-challenge." + name
        let records = await DNSClient.lookup(fqdn, type: 16, servers: servers.isEmpty ? [(nil, 53)] : servers)
        let texts = (records ?? []).compactMap { $0.text?.joined() }
        if texts.contains(expected) { return nil }
        return ACMEServerProblem(
            type: texts.isEmpty ? "dns" : "unauthorized",
            detail: texts.isEmpty
                ? "\(fqdn): no TXT record" : "\(fqdn): none of the TXT records is the expected digest",
            status: 403)
    }

    /// TLS-ALPN-01 (RFC 8737): a handshake with the name on port 443 offering only `acme-tls/1` must negotiate it
    /// and present a certificate for the name alone, with the critical acmeIdentifier extension holding the
    /// SHA-256 of the key authorization.
    private func validateTLSALPN(_ name: String, ip: Bool, _ keyAuthorization: String) async -> ACMEServerProblem? {
        do {
            let address = try await resolve(name, ip: ip)
            let (alpn, leafDER) = try await TLSALPNProbe.handshake(
                address: address, port: 443, serverName: ip ? nil : name, group: group)
            guard alpn == "acme-tls/1" else {
                return ACMEServerProblem(
                    type: "unauthorized", detail: "\(name): acme-tls/1 was not negotiated", status: 403)
            }
            let leaf = try Certificate(derEncoded: leafDER)
            let names = ((try? leaf.extensions.subjectAlternativeNames) ?? nil).map { Array($0) } ?? []
            let expectedName: GeneralName =
                ip
                ? .ipAddress(ASN1OctetString(contentBytes: ArraySlice(IPAddress(name)?.bytes ?? [])))
                : .dnsName(name)
            guard names == [expectedName] else {
                return ACMEServerProblem(
                    type: "unauthorized", detail: "\(name): the challenge certificate names \(names)", status: 403)
            }
            let digest = Array(SHA256.hash(data: Array(keyAuthorization.utf8)))
            guard let ext = leaf.extensions[oid: [1, 3, 6, 1, 5, 5, 7, 1, 31]], ext.critical,
                Array(ext.value) == [0x04, 0x20] + digest
            else {
                return ACMEServerProblem(
                    type: "unauthorized",
                    detail: "\(name): the challenge certificate lacks the expected critical acmeIdentifier",
                    status: 403)
            }
            return nil
        } catch let p as ACMEServerProblem {
            return p
        } catch {
            return ACMEServerProblem(type: "connection", detail: "\(name): \(error)", status: 400)
        }
    }

    private func record(_ authzID: String, _ c: Challenge, _ problem: ACMEServerProblem?) {
        let name = data.withLock { $0.authorizations[authzID]?.identifier.value } ?? ""
        data.withLock { d in
            guard var a = d.authorizations[authzID], let i = a.challenges.firstIndex(where: { $0.id == c.id }) else {
                return
            }
            if let problem {
                a.challenges[i].status = "invalid"
                a.challenges[i].error = problem.json
                a.status = "invalid"
            } else {
                a.challenges[i].status = "valid"
                a.challenges[i].validated = WallTime.now().rfc3339Nano
                a.status = "valid"
            }
            d.authorizations[authzID] = a
            for (oid, var order) in d.orders where order.authorizations.contains(authzID) && order.status == "pending" {
                let states = order.authorizations.map { d.authorizations[$0]?.status ?? "invalid" }
                if states.contains("invalid") {
                    order.status = "invalid"
                    order.error = problem?.json
                } else if states.allSatisfy({ $0 == "valid" }) {
                    order.status = "ready"
                }
                d.orders[oid] = order
            }
        }
        logger.info(
            problem == nil ? "challenge validated" : "challenge failed",
            metadata: ["identifier": "\(name)", "ca": "\(caID)", "error": "\(problem?.detail ?? "")"])
    }

    private func resolve(_ name: String, ip: Bool) async throws -> String {
        if ip { return name }
        let servers = data.withLock { $0.config.resolvers }
        if servers.isEmpty {
            return name
        }
        let records = try await NIOThreadPool.singleton.runIfActive {
            DNSClient.query(name, type: 1, servers: servers) ?? DNSClient.query(name, type: 28, servers: servers)
        }
        guard let address = records?.compactMap(\.address).first else {
            throw ACMEServerProblem(type: "dns", detail: "\(name): no address from the resolvers", status: 400)
        }
        return address
    }

    // MARK: - Finalize, certificates, revocation, renewal information

    private func finalize(_ id: String, _ jws: VerifiedJWS, _ accountID: String, _ root: String) async throws
        -> ACMEReply
    {
        guard let order = data.withLock({ $0.orders[id] }), order.account == accountID else {
            throw ACMEServerProblem.notFound("no order \(id)")
        }
        guard order.status == "ready" else { throw ACMEServerProblem.orderNotReady("order is \(order.status)") }
        guard let csr64 = jws.payload?.objectValue?["csr"]?.stringValue, let der = Base64URL.decode(csr64),
            let csr = try? CertificateSigningRequest(derEncoded: der)
        else { throw ACMEServerProblem.badCSR("csr is not a base64url DER PKCS #10 request") }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw ACMEServerProblem.badCSR("the CSR's signature does not verify")
        }
        var names: [String] = []
        if let ext = try? csr.attributes.extensionRequest?.extensions, let san = try? ext.subjectAlternativeNames {
            for n in san {
                switch n {
                case .dnsName(let d): names.append(d.lowercased())
                case .ipAddress(let b): if let ip = IPAddress(bytes: Array(b.bytes)) { names.append(ip.description) }
                default: break
                }
            }
        }
        let wanted = Set(order.identifiers.map(\.value))
        guard Set(names) == wanted else {
            throw ACMEServerProblem.badCSR("the CSR names \(names.sorted()), the order \(wanted.sorted())")
        }
        let config = data.withLock { $0.config }
        guard let authority = config.authority else { throw ACMEServerProblem.orderNotReady("no CA") }
        let chain = try await authority.issue(names: names, publicKey: csr.publicKey, lifetime: config.lifetime)
        let firstBlock: String? = chain.components(separatedBy: "-----END CERTIFICATE-----").first.map {
            String($0) + "-----END CERTIFICATE-----"
        }
        guard let leaf = firstBlock.flatMap({ try? Certificate(pemEncoded: $0) }) else {
            throw ACMEServerProblem(type: "serverInternal", detail: "issued chain unreadable", status: 500)
        }
        let certID = Self.randomID()
        data.withLock { d in
            d.certificates[certID] = (chain, leaf)
            d.orders[id]?.status = "valid"
            d.orders[id]?.certificate = certID
        }
        logger.info("issued certificate", metadata: ["ca": "\(caID)", "names": "\(names)"])
        return try orderReply(id, accountID, root, status: 200)
    }

    private func certificate(_ id: String) throws -> ACMEReply {
        guard let c = data.withLock({ $0.certificates[id] }) else {
            throw ACMEServerProblem.notFound("no certificate \(id)")
        }
        return ACMEReply(status: 200, body: Array(c.chain.utf8), contentType: "application/pem-certificate-chain")
    }

    private func revoke(_ jws: VerifiedJWS) throws -> ACMEReply {
        guard let b64 = jws.payload?.objectValue?["certificate"]?.stringValue, let der = Base64URL.decode(b64),
            let cert = try? Certificate(derEncoded: der)
        else { throw ACMEServerProblem.malformed("certificate is not base64url DER") }
        let serial = Array(Array(cert.serialNumber.bytes).drop { $0 == 0 })
        let known = data.withLock { d in
            d.certificates.values.contains { Array($0.leaf.serialNumber.bytes).drop { $0 == 0 }.elementsEqual(serial) }
        }
        guard known else { throw ACMEServerProblem.notFound("certificate not issued here") }
        data.withLock { _ = $0.revoked.insert(Base64URL.encode(serial)) }
        return ACMEReply(status: 200, body: [])
    }

    /// RFC 9773: the window is the last third of the certificate's life, from its two-thirds point to five-sixths,
    /// at once for a revoked certificate.
    private func renewalInfo(_ certID: String) throws -> ACMEReply {
        let parts = certID.split(separator: ".")
        guard parts.count == 2, let serial = Base64URL.decode(String(parts[1])) else {
            throw ACMEServerProblem.malformed("renewal information identifiers are <aki>.<serial>")
        }
        // Serials compare as numbers: ARI sends the DER integer (a leading zero byte when the high bit is set).
        func number(_ b: [UInt8]) -> ArraySlice<UInt8> { b.drop { $0 == 0 } }
        let found = data.withLock { d in
            d.certificates.values.first { number(Array($0.leaf.serialNumber.bytes)) == number(serial) }
        }
        guard let leaf = found?.leaf else { throw ACMEServerProblem.notFound("certificate not issued here") }
        let revoked = data.withLock { $0.revoked.contains(Base64URL.encode(Array(number(serial)))) }
        let start = leaf.notValidBefore.timeIntervalSince1970
        let life = leaf.notValidAfter.timeIntervalSince1970 - start
        let now = Date().timeIntervalSince1970
        let from = revoked ? now - 60 : start + life * 2 / 3
        let to = revoked ? now : start + life * 5 / 6
        func t(_ s: Double) -> JSONValue { .string(WallTime(seconds: Int(s), nanoseconds: 0).rfc3339Nano) }
        return .json(200, ["suggestedWindow": ["start": t(from), "end": t(to)]], [("Retry-After", "21600")])
    }
}
