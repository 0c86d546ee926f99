public import UsherCore

/// What went wrong talking to a CA.
public enum ACMEError: Error, CustomStringConvertible, Sendable {
    /// The CA answered with a problem document (RFC 7807 / RFC 8555 §6.7).
    case problem(ACMEProblem)
    /// The connection failed or timed out.
    case transport(String)
    /// The CA answered something this client cannot use.
    case protocolViolation(String)
    /// A URL in the config or from the CA is not an http(s) URL.
    case badURL(String)
    /// An account or certificate key cannot be used.
    case badKey(String)
    /// An authorization or order ended `invalid`; the problem is the CA's reason.
    case failed(String, ACMEProblem?)

    public var description: String {
        switch self {
        case .problem(let p): return p.description
        case .transport(let s): return "transport: \(s)"
        case .protocolViolation(let s): return "unexpected answer from the CA: \(s)"
        case .badURL(let u): return "not an http(s) URL: \(u)"
        case .badKey(let s): return "key: \(s)"
        case .failed(let s, let p): return p.map { "\(s): \($0)" } ?? s
        }
    }

    /// The CA's problem document, if it sent one.
    public var problem: ACMEProblem? {
        switch self {
        case .problem(let p): return p
        case .failed(_, let p): return p
        default: return nil
        }
    }
}

/// A problem document: `type` (`urn:ietf:params:acme:error:…`), `detail`, HTTP `status`, `subproblems`.
public struct ACMEProblem: Sendable, CustomStringConvertible {
    public var type: String
    public var detail: String
    public var status: Int
    public var subproblems: [ACMEProblem]
    /// The raw document, for logs.
    public var json: JSONValue

    public init(json: JSONValue, status: Int) {
        let o = json.objectValue ?? JSONObject()
        type = o["type"]?.stringValue ?? ""
        detail = o["detail"]?.stringValue ?? ""
        self.status = o["status"].flatMap { if case .number(let n) = $0 { return n.int } else { return nil } } ?? status
        subproblems = (o["subproblems"]?.arrayValue ?? []).map { ACMEProblem(json: $0, status: status) }
        self.json = json
    }

    /// `type` without the `urn:ietf:params:acme:error:` prefix (`badNonce`, `rateLimited`, …).
    public var shortType: String {
        let prefix = "urn:ietf:params:acme:error:"
        return type.hasPrefix(prefix) ? String(type.dropFirst(prefix.count)) : type
    }

    public var description: String {
        var s = "HTTP \(status) \(type) - \(detail)"
        for sub in subproblems { s += "; \(sub.type) - \(sub.detail)" }
        return s
    }
}

/// The CA's directory (RFC 8555 §7.1.1).
public struct ACMEDirectory: Sendable {
    public var newNonce: String
    public var newAccount: String
    public var newOrder: String
    public var revokeCert: String
    public var keyChange: String?
    /// ACME Renewal Information (RFC 9773), when the CA offers it.
    public var renewalInfo: String?
    public var termsOfService: String?
    public var externalAccountRequired: Bool
    public var profiles: [String]

    init(json: JSONValue) throws {
        guard let o = json.objectValue, let nn = o["newNonce"]?.stringValue, let na = o["newAccount"]?.stringValue,
            let no = o["newOrder"]?.stringValue
        else { throw ACMEError.protocolViolation("directory lacks newNonce, newAccount or newOrder") }
        newNonce = nn
        newAccount = na
        newOrder = no
        revokeCert = o["revokeCert"]?.stringValue ?? ""
        keyChange = o["keyChange"]?.stringValue
        renewalInfo = o["renewalInfo"]?.stringValue
        let meta = o["meta"]?.objectValue
        termsOfService = meta?["termsOfService"]?.stringValue
        externalAccountRequired = meta?["externalAccountRequired"]?.boolValue ?? false
        profiles = meta?["profiles"]?.objectValue?.keys ?? []
    }
}

/// An account as certmagic stores it in `registration.json` (acmez's JSON names), plus its key.
public struct ACMEAccount: Sendable {
    public var status: String
    public var contact: [String]
    public var termsOfServiceAgreed: Bool
    public var orders: String
    /// The account URL (the `kid` of every request after registration).
    public var location: String
    public var key: ACMESigningKey

    public init(contact: [String], key: ACMESigningKey) {
        status = ""
        self.contact = contact
        termsOfServiceAgreed = false
        orders = ""
        location = ""
        self.key = key
    }

    /// Reads `registration.json` as certmagic writes it.
    public init(registration: JSONValue, key: ACMESigningKey) {
        let o = registration.objectValue ?? JSONObject()
        status = o["status"]?.stringValue ?? ""
        contact = (o["contact"]?.arrayValue ?? []).compactMap(\.stringValue)
        termsOfServiceAgreed = o["termsOfServiceAgreed"]?.boolValue ?? false
        orders = o["orders"]?.stringValue ?? ""
        location = o["location"]?.stringValue ?? ""
        self.key = key
    }

    /// `registration.json`, as certmagic writes it (tab-indented, empty members left out).
    public var registration: JSONValue {
        var o = JSONObject()
        o.put("status", status)
        o.put("contact", contact)
        o.put("termsOfServiceAgreed", termsOfServiceAgreed)
        o.put("orders", orders)
        o.put("location", location)
        return .object(o)
    }

    /// The first contact without its `mailto:` scheme, or `""`.
    public var primaryContact: String {
        guard let c = contact.first else { return "" }
        if let colon = c.firstIndex(of: ":") { return String(c[c.index(after: colon)...]) }
        return c
    }
}

/// An identifier: `dns` or `ip`.
public struct ACMEIdentifier: Sendable, Equatable {
    public var type: String
    public var value: String

    public init(type: String, value: String) {
        self.type = type
        self.value = value
    }

    /// `ip` for an IP address literal, else `dns`.
    public init(_ name: String) {
        let isIP = name.contains(":") || (!name.isEmpty && name.allSatisfy { $0.isNumber || $0 == "." })
        self.init(type: isIP ? "ip" : "dns", value: name)
    }

    var json: JSONValue { .object(["type": .string(type), "value": .string(value)]) }

    init?(json: JSONValue?) {
        guard let o = json?.objectValue, let t = o["type"]?.stringValue, let v = o["value"]?.stringValue else {
            return nil
        }
        self.init(type: t, value: v)
    }
}

/// An order (RFC 8555 §7.1.3).
public struct ACMEOrder: Sendable {
    public var url: String
    public var status: String
    public var identifiers: [ACMEIdentifier]
    public var authorizations: [String]
    public var finalize: String
    public var certificate: String?
    public var error: ACMEProblem?

    init(url: String, json: JSONValue) throws {
        guard let o = json.objectValue, let status = o["status"]?.stringValue else {
            throw ACMEError.protocolViolation("order without status")
        }
        self.url = url
        self.status = status
        identifiers = (o["identifiers"]?.arrayValue ?? []).compactMap { ACMEIdentifier(json: $0) }
        authorizations = (o["authorizations"]?.arrayValue ?? []).compactMap(\.stringValue)
        finalize = o["finalize"]?.stringValue ?? ""
        certificate = o["certificate"]?.stringValue
        error = o["error"].map { ACMEProblem(json: $0, status: 0) }
    }
}

/// A challenge of an authorization.
public struct ACMEChallenge: Sendable {
    public var type: String
    public var url: String
    public var status: String
    public var token: String
    public var error: ACMEProblem?
    /// The identifier being validated (from the authorization).
    public var identifier: ACMEIdentifier
    /// `token.thumbprint`: what HTTP-01 serves and what DNS-01 and TLS-ALPN-01 hash.
    public var keyAuthorization: String

    /// `/.well-known/acme-challenge/<token>`.
    public var http01Path: String { "/.well-known/acme-challenge/" + token }
}

/// An authorization (RFC 8555 §7.1.4).
public struct ACMEAuthorization: Sendable {
    public var url: String
    public var status: String
    public var identifier: ACMEIdentifier
    public var wildcard: Bool
    public var challenges: [ACMEChallenge]

    init(url: String, json: JSONValue, thumbprint: String) throws {
        guard let o = json.objectValue, let status = o["status"]?.stringValue,
            let identifier = ACMEIdentifier(json: o["identifier"])
        else { throw ACMEError.protocolViolation("authorization without status or identifier") }
        self.url = url
        self.status = status
        self.identifier = identifier
        wildcard = o["wildcard"]?.boolValue ?? false
        challenges = (o["challenges"]?.arrayValue ?? []).compactMap { c in
            guard let co = c.objectValue, let type = co["type"]?.stringValue, let url = co["url"]?.stringValue else {
                return nil
            }
            let token = co["token"]?.stringValue ?? ""
            return ACMEChallenge(
                type: type, url: url, status: co["status"]?.stringValue ?? "", token: token,
                error: co["error"].map { ACMEProblem(json: $0, status: 0) }, identifier: identifier,
                keyAuthorization: token + "." + thumbprint)
        }
    }

    /// Why the authorization failed: the first challenge error.
    public var problem: ACMEProblem? { challenges.compactMap(\.error).first }
}

/// ACME Renewal Information (RFC 9773): when the CA suggests renewing.
public struct ACMERenewalInfo: Sendable {
    public var windowStart: WallTime
    public var windowEnd: WallTime
    public var explanationURL: String?
    /// When to ask again (`Retry-After`).
    public var retryAfter: WallTime?
}
