import UsherCaddyfile
import UsherCore

// The parts of Caddy's `tls` app that the Caddyfile adapter builds and then reasons about (merging connection
// policies, consolidating automation policies, filling in global ACME defaults). They are classes because Caddy
// shares and mutates them through pointers, and the adapter's output depends on that sharing.

/// `acme.EAB`.
struct ExternalAccountBinding: Equatable {
    var keyID = ""
    var macKey = ""
    var json: JSONObject {
        var o = JSONObject()
        o.put("key_id", keyID)
        o.put("mac_key", macKey)
        return o
    }
}

/// `caddytls.ChainPreference`.
struct ChainPreference: Equatable {
    var smallest: Bool?
    var rootCommonName: [String]?
    var anyCommonName: [String]?
    var json: JSONObject {
        var o = JSONObject()
        if let smallest { o["smallest"] = .bool(smallest) }
        o.put("root_common_name", rootCommonName ?? [])
        o.put("any_common_name", anyCommonName ?? [])
        return o
    }
}

/// `caddytls.DNSChallengeConfig`.
struct DNSChallengeConfig: Equatable {
    var provider: JSONObject?
    var ttl: Int64 = 0
    var propagationDelay: Int64 = 0
    var propagationTimeout: Int64 = 0
    var resolvers: [String]?
    var overrideDomain = ""
    var json: JSONObject {
        var o = JSONObject()
        o.put("provider", provider)
        o.putDuration("ttl", ttl)
        o.putDuration("propagation_delay", propagationDelay)
        o.putDuration("propagation_timeout", propagationTimeout)
        o.put("resolvers", resolvers ?? [])
        o.put("override_domain", overrideDomain)
        return o
    }
}

/// `caddytls.HTTPChallengeConfig` and `TLSALPNChallengeConfig` (same shape).
struct PortChallengeConfig: Equatable {
    var disabled = false
    var alternatePort = 0
    var json: JSONObject {
        var o = JSONObject()
        o.put("disabled", disabled)
        o.put("alternate_port", alternatePort)
        return o
    }
}

/// `caddytls.ChallengesConfig`.
struct ChallengesConfig: Equatable {
    var http: PortChallengeConfig?
    var tlsALPN: PortChallengeConfig?
    var dns: DNSChallengeConfig?
    var bindHost = ""
    var distributed: Bool?
    var json: JSONObject {
        var o = JSONObject()
        o.put("http", http?.json)
        o.put("tls-alpn", tlsALPN?.json)
        o.put("dns", dns?.json)
        o.put("bind_host", bindHost)
        if let distributed { o["distributed"] = .bool(distributed) }
        return o
    }
}

/// `caddytls.ACMEIssuer`.
final class ACMEIssuer {
    var ca = ""
    var testCA = ""
    var email = ""
    var profile = ""
    var accountKey = ""
    var externalAccount: ExternalAccountBinding?
    var acmeTimeout: Int64 = 0
    var challenges: ChallengesConfig?
    var trustedRootsPEMFiles: [String]?
    var preferredChains: ChainPreference?
    var certificateLifetime: Int64 = 0
    var networkProxy: JSONObject?

    init() {}

    func clone() -> ACMEIssuer {
        let c = ACMEIssuer()
        c.ca = ca
        c.testCA = testCA
        c.email = email
        c.profile = profile
        c.accountKey = accountKey
        c.externalAccount = externalAccount
        c.acmeTimeout = acmeTimeout
        c.challenges = challenges
        c.trustedRootsPEMFiles = trustedRootsPEMFiles
        c.preferredChains = preferredChains
        c.certificateLifetime = certificateLifetime
        c.networkProxy = networkProxy
        return c
    }

    var json: JSONObject {
        var o = JSONObject()
        o.put("ca", ca)
        o.put("test_ca", testCA)
        o.put("email", email)
        o.put("profile", profile)
        o.put("account_key", accountKey)
        o.put("external_account", externalAccount?.json)
        o.putDuration("acme_timeout", acmeTimeout)
        o.put("challenges", challenges?.json)
        o.put("trusted_roots_pem_files", trustedRootsPEMFiles ?? [])
        o.put("preferred_chains", preferredChains?.json)
        o.putDuration("certificate_lifetime", certificateLifetime)
        o.put("network_proxy", networkProxy)
        return o
    }

    /// Ensures `challenges.dns` exists.
    func ensureDNS() {
        if challenges == nil { challenges = ChallengesConfig() }
        if challenges!.dns == nil { challenges!.dns = DNSChallengeConfig() }
    }
}

/// A certificate issuer (`tls.issuance.*`).
enum Issuer {
    case acme(ACMEIssuer)
    /// `internal`: ca, lifetime, sign_with_root.
    case `internal`(JSONObject)
    /// Any other issuer module, by name, as JSON.
    case other(String, JSONObject)

    var moduleName: String {
        switch self {
        case .acme: return "acme"
        case .internal: return "internal"
        case .other(let n, _): return n
        }
    }

    /// The ACME issuer inside, for issuers that are ACME-capable.
    var acmeIssuer: ACMEIssuer? {
        if case .acme(let a) = self { return a }
        return nil
    }

    var fields: JSONObject {
        switch self {
        case .acme(let a): return a.json
        case .internal(let o): return o
        case .other(_, let o): return o
        }
    }

    /// The module object (`"module": name`).
    var json: JSONObject { moduleObject(fields, key: "module", name: moduleName) }

    func sameAs(_ other: Issuer) -> Bool { moduleName == other.moduleName && fields.sameMembers(as: other.fields) }
}

func sameIssuers(_ a: [Issuer], _ b: [Issuer]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.sameAs($1) }
}

/// `caddytls.CustomCertSelectionPolicy`.
struct CertSelection: Equatable {
    var serialNumber: [String] = []
    var subjectOrganization: [String] = []
    var publicKeyAlgorithm = 0
    var anyTag: [String] = []
    var allTags: [String] = []
    var json: JSONObject {
        var o = JSONObject()
        o.put("serial_number", serialNumber)
        o.put("subject_organization", subjectOrganization)
        o.put("public_key_algorithm", publicKeyAlgorithm)
        o.put("any_tag", anyTag)
        o.put("all_tags", allTags)
        return o
    }
}

/// `caddytls.ConnectionPolicy`.
final class ConnectionPolicy {
    /// `match`: a module map; nil when absent (which matters for sorting catch-alls last).
    var matchers: JSONObject?
    var certSelection: CertSelection?
    var cipherSuites: [String]?
    var curves: [String]?
    var alpn: [String]?
    var protocolMin = ""
    var protocolMax = ""
    var drop = false
    var clientAuthentication: JSONObject?
    var defaultSNI = ""
    var fallbackSNI = ""
    var insecureSecretsLog = ""
    var handshakeContext: JSONObject?

    init() {}

    func copy() -> ConnectionPolicy {
        let c = ConnectionPolicy()
        c.matchers = matchers
        c.certSelection = certSelection
        c.cipherSuites = cipherSuites
        c.curves = curves
        c.alpn = alpn
        c.protocolMin = protocolMin
        c.protocolMax = protocolMax
        c.drop = drop
        c.clientAuthentication = clientAuthentication
        c.defaultSNI = defaultSNI
        c.fallbackSNI = fallbackSNI
        c.insecureSecretsLog = insecureSecretsLog
        c.handshakeContext = handshakeContext
        return c
    }

    var json: JSONObject {
        var o = JSONObject()
        o.putMap("match", matchers?.sortedByKey() ?? JSONObject())
        o.put("certificate_selection", certSelection?.json)
        o.put("cipher_suites", cipherSuites ?? [])
        o.put("curves", curves ?? [])
        o.put("alpn", alpn ?? [])
        o.put("protocol_min", protocolMin)
        o.put("protocol_max", protocolMax)
        o.put("drop", drop)
        o.put("client_authentication", clientAuthentication)
        o.put("default_sni", defaultSNI)
        o.put("fallback_sni", fallbackSNI)
        o.put("insecure_secrets_log", insecureSecretsLog)
        o.put("handshake_context", handshakeContext)
        return o
    }

    var settingsEmpty: Bool {
        certSelection == nil && cipherSuites == nil && curves == nil && alpn == nil && protocolMin.isEmpty
            && protocolMax.isEmpty && clientAuthentication == nil && defaultSNI.isEmpty && fallbackSNI.isEmpty
            && insecureSecretsLog.isEmpty
    }

    /// Every setting but the matchers equal (Go's `SettingsEqual`).
    func settingsEqual(_ q: ConnectionPolicy) -> Bool {
        certSelection == q.certSelection && cipherSuites == q.cipherSuites && curves == q.curves && alpn == q.alpn
            && protocolMin == q.protocolMin && protocolMax == q.protocolMax && drop == q.drop
            && optionalSame(clientAuthentication, q.clientAuthentication) && defaultSNI == q.defaultSNI
            && fallbackSNI == q.fallbackSNI && insecureSecretsLog == q.insecureSecretsLog
            && optionalSame(handshakeContext, q.handshakeContext)
    }

    /// `reflect.DeepEqual` on the two policies.
    func deepEquals(_ q: ConnectionPolicy) -> Bool {
        optionalSame(matchers, q.matchers) && settingsEqual(q)
    }

    /// The names of the `sni` matcher, when there is one.
    var sniNames: [String]? { matchers?["sni"]?.stringArray }
}

func optionalSame(_ a: JSONObject?, _ b: JSONObject?) -> Bool {
    switch (a, b) {
    case (nil, nil): return true
    case (let x?, let y?): return x.sameMembers(as: y)
    default: return false
    }
}

/// `caddytls.AutomationPolicy`.
final class AutomationPolicy {
    var subjects: [String]?
    var issuersRaw: [JSONObject]?
    var managers: [JSONObject]?
    var mustStaple = false
    var renewalWindowRatio: Double = 0
    var keyType = ""
    var storage: JSONObject?
    var onDemand = false
    var reusePrivateKeys = false
    var disableOCSPStapling = false
    var ocspOverrides: [String: String]?
    /// Issuers not yet encoded (Go's `Issuers`, `json:"-"`).
    var issuers: [Issuer] = []

    init() {}

    func copy() -> AutomationPolicy {
        let c = AutomationPolicy()
        c.subjects = subjects
        c.issuersRaw = issuersRaw
        c.managers = managers
        c.mustStaple = mustStaple
        c.renewalWindowRatio = renewalWindowRatio
        c.keyType = keyType
        c.storage = storage
        c.onDemand = onDemand
        c.reusePrivateKeys = reusePrivateKeys
        c.disableOCSPStapling = disableOCSPStapling
        c.ocspOverrides = ocspOverrides
        c.issuers = issuers
        return c
    }

    var json: JSONObject {
        var o = JSONObject()
        o.put("subjects", subjects ?? [])
        o.put("issuers", issuersRaw ?? [])
        o.put("get_certificate", managers ?? [])
        o.put("must_staple", mustStaple)
        o.put("renewal_window_ratio", renewalWindowRatio)
        o.put("key_type", keyType)
        o.put("storage", storage)
        o.put("on_demand", onDemand)
        o.put("reuse_private_keys", reusePrivateKeys)
        o.put("disable_ocsp_stapling", disableOCSPStapling)
        if let ocspOverrides, !ocspOverrides.isEmpty {
            var m = JSONObject()
            for (k, v) in ocspOverrides { m[k] = .string(v) }
            o["ocsp_overrides"] = .object(m.sortedByKey())
        }
        return o
    }

    /// `reflect.DeepEqual` on the two policies (subjects compared as Go slices: nil differs from empty).
    func deepEquals(_ q: AutomationPolicy) -> Bool {
        subjects == q.subjects && sameObjectList(issuersRaw, q.issuersRaw) && sameObjectList(managers, q.managers)
            && mustStaple == q.mustStaple && renewalWindowRatio == q.renewalWindowRatio && keyType == q.keyType
            && optionalSame(storage, q.storage) && onDemand == q.onDemand && reusePrivateKeys == q.reusePrivateKeys
            && disableOCSPStapling == q.disableOCSPStapling && ocspOverrides == q.ocspOverrides
            && sameIssuers(issuers, q.issuers)
    }
}

func sameObjectList(_ a: [JSONObject]?, _ b: [JSONObject]?) -> Bool {
    switch (a, b) {
    case (nil, nil): return true
    case (let x?, let y?): return x.count == y.count && zip(x, y).allSatisfy { $0.sameMembers(as: $1) }
    default: return false
    }
}

/// certmagic's `hostOnly`.
func hostOnly(_ hostport: String) -> String {
    if let hp = try? Go.splitHostPort(hostport) { return hp.host }
    if hostport.count > 1 && hostport.hasPrefix("[") && hostport.hasSuffix("]") {
        return String(hostport.dropFirst().dropLast())
    }
    return hostport
}

/// certmagic's `MatchWildcard`: whether `subject` is matched by `wildcard` (one label replaced by `*`).
func matchWildcard(_ subjectIn: String, _ wildcardIn: String) -> Bool {
    let subject = hostOnly(subjectIn).lowercased()
    let wildcard = wildcardIn.lowercased()
    if subject == wildcard { return true }
    if !wildcard.contains("*") { return false }
    var labels = subject.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    for i in labels.indices {
        if labels[i].isEmpty { continue }
        labels[i] = "*"
        if labels.joined(separator: ".") == wildcard { return true }
    }
    return false
}

/// Go's `net.ParseIP` as 16 bytes (IPv4 mapped), or nil.
func goParseIP(_ s: String) -> [UInt8]? {
    if isIPv4(s) {
        return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + s.split(separator: ".").map { UInt8($0)! }
    }
    guard !s.contains("%"), let g = IPAddressText.parseIPv6(Substring(s)) else { return nil }
    return g.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
}

/// certmagic's `SubjectIsIP`.
func subjectIsIP(_ s: String) -> Bool { goParseIP(s) != nil }

/// Dotted-quad IPv4 as Go accepts it (no leading zeros).
func isIPv4(_ s: String) -> Bool {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4 else { return false }
    return parts.allSatisfy { p in
        !p.isEmpty && p.count <= 3 && p.allSatisfy { $0.isASCII && $0.isNumber } && (Int(p) ?? 999) <= 255
            && !(p.count > 1 && p.first == "0")
    }
}

/// certmagic's `SubjectIsInternal`.
func subjectIsInternal(_ subj: String) -> Bool {
    var s = hostOnly(subj)
    if s.hasSuffix(".") { s.removeLast() }
    s = s.lowercased()
    return s == "localhost" || s.hasSuffix(".localhost") || s.hasSuffix(".local") || s.hasSuffix(".internal")
        || s.hasSuffix(".home.arpa") || isInternalIP(s)
}

/// Whether `addr` is in a loopback, private or link-local range (certmagic's `isInternalIP`).
func isInternalIP(_ addr: String) -> Bool {
    guard let ip = goParseIP(hostOnly(addr)) else { return false }
    let v4mapped = ip[0..<10].allSatisfy { $0 == 0 } && ip[10] == 0xff && ip[11] == 0xff
    if v4mapped {
        let a = ip[12], b = ip[13]
        return a == 127 || (a == 0 && b == 0) || a == 10 || (a == 172 && b >= 16 && b <= 31)
            || (a == 192 && b == 168) || (a == 169 && b == 254)
    }
    return ip[0] & 0xfe == 0x00 || (ip[0] == 0xfe && ip[1] & 0xc0 == 0x80) || ip[0] & 0xfe == 0xfc
}

/// certmagic's `SubjectQualifiesForCert`.
func subjectQualifiesForCert(_ subj: String) -> Bool {
    subj.trimmingWhitespace() != "" && !subj.hasPrefix(".") && !subj.hasSuffix(".")
        && (!subj.contains("*") || subj.hasPrefix("*.") || subj == "*")
        && !subj.contains(where: { "()[]{}<> \t\n\"\\!@#$%^&|;'+=".contains($0) })
}

/// certmagic's `SubjectQualifiesForPublicCert`.
func certmagicQualifiesForPublicCert(_ subj: String) -> Bool {
    subjectQualifiesForCert(subj) && !subjectIsInternal(subj)
        && (!subj.contains("*")
            || (subj.filter { $0 == "*" }.count == 1 && subj.filter { $0 == "." }.count > 1 && subj.utf8.count > 2
                && subj.hasPrefix("*.")))
}

extension String {
    /// How many times `sep` occurs (Go's `strings.Count`).
    func occurrences(of sep: String) -> Int {
        var n = 0
        var rest = Substring(self)
        while let r = rest.firstRange(of: sep) {
            n += 1
            rest = rest[r.upperBound...]
        }
        return n
    }
}
