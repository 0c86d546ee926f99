import UsherCaddyfile
import UsherCore
import UsherTLS

/// Cipher suites Go's `tls.CipherSuites()` lists (the ones Caddy accepts by name).
let supportedCipherSuites: Set<String> = [
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
]

let supportedCurves: Set<String> = ["x25519mlkem768", "x25519", "secp256r1", "secp384r1", "secp521r1"]

let supportedProtocols: Set<String> = ["tls1.2", "tls1.3"]

/// The `tls` directive.
func parseTLS(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    d.next()
    let cp = ConnectionPolicy.Document()
    var fileLoader: [JSONValue] = []
    var folderLoader: [String] = []
    var anyTag: [String] = []
    var acme: ACMEIssuer.Document?
    var keyType = ""
    var internalIssuer: JSONObject?
    var issuers: [Issuer] = []
    var certManagers: [JSONObject] = []
    var onDemand = false
    var reusePrivateKeys = false
    var forceAutomate = false
    var renewalWindowRatio: Double = 0
    var dnsOptionsSet: [String] = []
    func ensureACME() -> ACMEIssuer.Document {
        if acme == nil { acme = ACMEIssuer.Document() }
        return acme!
    }

    let firstLine = d.remainingArgs()
    switch firstLine.count {
    case 0: break
    case 1:
        if firstLine[0] == "internal" {
            internalIssuer = JSONObject()
        } else if firstLine[0] == "force_automate" {
            forceAutomate = true
        } else if !firstLine[0].contains("@") {
            throw d.err("single argument must either be 'internal', 'force_automate', or an email address")
        } else {
            ensureACME().email = firstLine[0]
        }
    case 2:
        let certFile = firstLine[0]
        let keyFile = firstLine[1]
        var tags = h.state["tlsCertTags"] as? [String: String] ?? [:]
        let tag: String
        if let t = tags[certFile] {
            tag = t
        } else {
            tag = "cert\(tags.count)"
            var pair = JSONObject()
            pair[CertificateFilePair.CodingKeys.certificate] = .string(certFile)
            pair[CertificateFilePair.CodingKeys.key] = .string(keyFile)
            pair[CertificateFilePair.CodingKeys.tags] = .strings([tag])
            fileLoader.append(.object(pair))
            tags[certFile] = tag
        }
        h.state["tlsCertTags"] = tags
        anyTag.append(tag)
    default:
        throw d.argErr()
    }

    var hasBlock = false
    while d.nextBlock(0) {
        hasBlock = true
        switch d.val {
        case "protocols":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.err("protocols requires one or two arguments") }
            if !supportedProtocols.contains(args[0]) {
                throw d.err("wrong protocol name or protocol not supported: '\(args[0])'")
            }
            cp.protocolMin = args[0]
            if args.count > 1 {
                if !supportedProtocols.contains(args[1]) {
                    throw d.err("wrong protocol name or protocol not supported: '\(args[1])'")
                }
                cp.protocolMax = args[1]
            }
        case "ciphers":
            while d.nextArg() {
                guard supportedCipherSuites.contains(d.val) else {
                    throw d.err("wrong cipher suite name or cipher suite not supported: '\(d.val)'")
                }
                cp.cipherSuites = (cp.cipherSuites ?? []) + [d.val]
            }
        case "curves":
            while d.nextArg() {
                guard supportedCurves.contains(d.val) else {
                    throw d.err("Wrong curve name or curve not supported: '\(d.val)'")
                }
                cp.curves = (cp.curves ?? []) + [d.val]
            }
        case "client_auth":
            cp.clientAuthentication = try parseClientAuthentication(d.newFromNextSegment(), h.registry)
        case "alpn":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            cp.alpn = args
        case "load":
            folderLoader.append(contentsOf: d.remainingArgs())
        case "ca":
            let a = d.remainingArgs()
            guard a.count == 1 else { throw d.argErr() }
            ensureACME().ca = a[0]
        case "key_type":
            let a = d.remainingArgs()
            guard a.count == 1 else { throw d.argErr() }
            keyType = a[0]
        case "eab":
            let a = d.remainingArgs()
            guard a.count == 2 else { throw d.argErr() }
            ensureACME().externalAccount = ExternalAccountBinding(keyID: a[0], macKey: a[1])
        case "issuer":
            guard d.nextArg() else { throw d.argErr() }
            issuers.append(try parseIssuerModule(d, d.val, h.registry))
        case "get_certificate":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try h.registry.unmarshalModuleObject(d, "tls.get_certificate." + name)
            certManagers.append(moduleObject(fields, key: "via", name: name))
        case "dns":
            let a = ensureACME()
            a.ensureDNS()
            if d.nextArg() {
                let name = d.val
                let fields = try h.registry.unmarshalModuleObject(d, "dns.providers." + name)
                a.challenges!.dns!.provider = moduleObject(fields, key: "name", name: name)
            } else if h.option("dns") == nil {
                throw d.argErr()
            }
        case "resolvers":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            let a = ensureACME()
            a.ensureDNS()
            dnsOptionsSet.append("resolvers")
            a.challenges!.dns!.resolvers = args
        case "propagation_delay", "propagation_timeout", "dns_ttl":
            let option = d.val
            let args = d.remainingArgs()
            guard args.count == 1 else { throw d.argErr() }
            let v = try dnsDuration(d, option, args[0])
            let a = ensureACME()
            a.ensureDNS()
            dnsOptionsSet.append(option)
            a.challenges!.dns!.setDuration(option, v)
        case "dns_challenge_override_domain":
            let args = d.remainingArgs()
            guard args.count == 1 else { throw d.argErr() }
            let a = ensureACME()
            a.ensureDNS()
            dnsOptionsSet.append("dns_challenge_override_domain")
            a.challenges!.dns!.overrideDomain = args[0]
        case "ca_root":
            let args = d.remainingArgs()
            guard args.count == 1 else { throw d.argErr() }
            let a = ensureACME()
            a.trustedRootsPEMFiles = (a.trustedRootsPEMFiles ?? []) + [args[0]]
        case "on_demand":
            if d.nextArg() { throw d.argErr() }
            onDemand = true
        case "reuse_private_keys":
            if d.nextArg() { throw d.argErr() }
            reusePrivateKeys = true
        case "insecure_secrets_log":
            guard d.nextArg() else { throw d.argErr() }
            cp.insecureSecretsLog = d.val
        case "renewal_window_ratio":
            let args = d.remainingArgs()
            guard args.count == 1 else { throw d.argErr() }
            let r: Double
            do { r = try Go.parseFloat(args[0]) } catch { throw d.err("parsing renewal_window_ratio: \(error)") }
            if r <= 0 || r >= 1 { throw d.err("renewal_window_ratio must be between 0 and 1 (exclusive)") }
            renewalWindowRatio = r
        default:
            throw d.err("unknown subdirective: \(d.val)")
        }
    }

    if let a = acme, a.challenges?.dns != nil {
        let providerSet = a.challenges!.dns!.provider != nil || h.option("dns") != nil || h.option("acme_dns") != nil
        if !dnsOptionsSet.isEmpty && !providerSet {
            throw d.err(
                "setting DNS challenge options [\(dnsOptionsSet.joined(separator: ", "))] requires a DNS provider (set with the 'dns' subdirective or 'acme_dns' global option)"
            )
        }
    }
    if firstLine.isEmpty && !hasBlock { throw d.argErr() }

    var values: [ConfigValue] = []
    if !fileLoader.isEmpty {
        values.append(ConfigValue("tls.cert_loader", CertificateLoaderValue(module: "load_files", items: fileLoader)))
    }
    if !folderLoader.isEmpty {
        values.append(
            ConfigValue(
                "tls.cert_loader",
                CertificateLoaderValue(module: "load_folders", items: folderLoader.map { .string($0) })))
    }
    if !issuers.isEmpty && (acme != nil || internalIssuer != nil) {
        throw d.err(
            "cannot mix issuer subdirective (explicit issuers) with other issuer-specific subdirectives (implicit issuers)"
        )
    }
    if acme != nil && internalIssuer != nil {
        throw d.err("cannot create both ACME and internal certificate issuers")
    }
    if !issuers.isEmpty {
        for i in issuers { values.append(ConfigValue("tls.cert_issuer", i)) }
    } else if let acme {
        for i in implicitACMEIssuers(h, acme) { values.append(ConfigValue("tls.cert_issuer", i)) }
    } else if let internalIssuer {
        values.append(ConfigValue("tls.cert_issuer", Issuer.internal(internalIssuer)))
    }
    if !keyType.isEmpty { values.append(ConfigValue("tls.key_type", keyType)) }
    if onDemand { values.append(ConfigValue("tls.on_demand", true)) }
    for m in certManagers { values.append(ConfigValue("tls.cert_manager", m)) }
    if reusePrivateKeys { values.append(ConfigValue("tls.reuse_private_keys", true)) }
    if renewalWindowRatio > 0 { values.append(ConfigValue("tls.renewal_window_ratio", renewalWindowRatio)) }
    if forceAutomate { values.append(ConfigValue("tls.force_automate", true)) }
    if !anyTag.isEmpty {
        var selection = CertificateSelection.Document()
        selection.anyTag = anyTag
        cp.certSelection = selection
    }
    values.append(ConfigValue("tls.connection_policy", cp))
    return values
}

/// Parses an issuer module (`tls.issuance.<name>`) from the next segment.
func parseIssuerModule(_ d: Dispenser, _ name: String, _ registry: CaddyfileRegistry) throws -> Issuer {
    switch name {
    case "acme":
        return .acme(try parseACMEIssuer(d.newFromNextSegment(), registry))
    case "internal":
        return .internal(try registry.unmarshalModuleObject(d, "tls.issuance.internal"))
    default:
        let fields = try registry.unmarshalModuleObject(d, "tls.issuance." + name)
        return .other(name, fields)
    }
}

/// `tls.issuance.acme`.
func parseACMEIssuer(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> ACMEIssuer.Document {
    let iss = ACMEIssuer.Document()
    d.next()
    if d.nextArg() {
        iss.ca = d.val
        if d.nextArg() { throw d.argErr() }
    }
    func ensureChallenges() { if iss.challenges == nil { iss.challenges = ChallengesConfig() } }
    while d.nextBlock(0) {
        switch d.val {
        case "lifetime":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let v: Int64
            do { v = try Go.caddyDuration(a[0]) } catch { throw d.err("invalid lifetime \(a[0]): \(error)") }
            if v < 0 { throw d.err("lifetime must be >= 0: \(formatGoDuration(Double(v) / 1e9))") }
            iss.certificateLifetime = v
        case "dir":
            if !iss.ca.isEmpty { throw d.err("directory is already specified: \(iss.ca)") }
            guard let a = d.allArgs(1) else { throw d.argErr() }
            iss.ca = a[0]
        case "test_dir":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            iss.testCA = a[0]
        case "email":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            iss.email = a[0]
        case "profile":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            iss.profile = a[0]
        case "timeout":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            do { iss.acmeTimeout = try Go.caddyDuration(a[0]) } catch {
                throw d.err("invalid timeout duration \(a[0]): \(error)")
            }
        case "disable_http_challenge":
            if d.nextArg() { throw d.argErr() }
            ensureChallenges()
            if iss.challenges!.http == nil { iss.challenges!.http = PortChallengeConfig() }
            iss.challenges!.http!.disabled = true
        case "disable_tlsalpn_challenge":
            if d.nextArg() { throw d.argErr() }
            ensureChallenges()
            if iss.challenges!.tlsALPN == nil { iss.challenges!.tlsALPN = PortChallengeConfig() }
            iss.challenges!.tlsALPN!.disabled = true
        case "distributed":
            guard d.nextArg() else { throw d.argErr() }
            if d.val != "false" { throw d.err("only accepted value is 'false'") }
            ensureChallenges()
            if iss.challenges!.distributed == nil { iss.challenges!.distributed = false }
        case "alt_http_port":
            guard d.nextArg() else { throw d.argErr() }
            let port: Int
            do { port = try Go.atoi(d.val) } catch { throw d.err("invalid port \(d.val): \(error)") }
            ensureChallenges()
            if iss.challenges!.http == nil { iss.challenges!.http = PortChallengeConfig() }
            iss.challenges!.http!.alternatePort = port
        case "alt_tlsalpn_port":
            guard d.nextArg() else { throw d.argErr() }
            let port: Int
            do { port = try Go.atoi(d.val) } catch { throw d.err("invalid port \(d.val): \(error)") }
            ensureChallenges()
            if iss.challenges!.tlsALPN == nil { iss.challenges!.tlsALPN = PortChallengeConfig() }
            iss.challenges!.tlsALPN!.alternatePort = port
        case "eab":
            guard let a = d.allArgs(2) else { throw d.argErr() }
            iss.externalAccount = ExternalAccountBinding(keyID: a[0], macKey: a[1])
        case "trusted_roots":
            iss.trustedRootsPEMFiles = d.remainingArgs()
        case "dns":
            iss.ensureDNS()
            if d.nextArg() {
                let name = d.val
                let fields = try registry.unmarshalModuleObject(d, "dns.providers." + name)
                iss.challenges!.dns!.provider = moduleObject(fields, key: "name", name: name)
            }
        case "propagation_delay", "propagation_timeout":
            let option = d.val
            guard d.nextArg() else { throw d.argErr() }
            let v = try dnsDuration(d, option, d.val)
            iss.ensureDNS()
            iss.challenges!.dns!.setDuration(option, v)
        case "resolvers":
            iss.ensureDNS()
            let r = d.remainingArgs()
            iss.challenges!.dns!.resolvers = r
            if r.isEmpty { throw d.argErr() }
        case "dns_ttl":
            guard d.nextArg() else { throw d.argErr() }
            let v = try dnsDuration(d, "dns_ttl", d.val)
            iss.ensureDNS()
            iss.challenges!.dns!.setDuration("dns_ttl", v)
        case "dns_challenge_override_domain":
            let a = d.remainingArgs()
            guard a.count == 1 else { throw d.argErr() }
            iss.ensureDNS()
            iss.challenges!.dns!.overrideDomain = a[0]
        case "preferred_chains":
            iss.preferredChains = try parsePreferredChains(d)
        default:
            throw d.err("unrecognized ACME issuer property: \(d.val)")
        }
    }
    return iss
}

/// `preferred_chains [smallest] { root_common_name ... | any_common_name ... }`.
func parsePreferredChains(_ d: Dispenser) throws -> ChainPreference {
    var pref = ChainPreference()
    if d.nextArg() {
        if d.val == "smallest" {
            pref.smallest = true
            if d.nextArg() { throw d.argErr() }
            if d.nextBlock(d.nesting) { throw d.err("No more options are accepted when using the 'smallest' option") }
        } else {
            throw d.err("Invalid argument '\(d.val)'")
        }
    }
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "root_common_name":
            let args = d.remainingArgs()
            pref.rootCommonName = (pref.rootCommonName ?? []) + args
            if args.isEmpty { throw d.argErr() }
            if pref.anyCommonName != nil {
                throw d.err("Can't set root_common_name when any_common_name is already set")
            }
        case "any_common_name":
            let args = d.remainingArgs()
            pref.anyCommonName = (pref.anyCommonName ?? []) + args
            if args.isEmpty { throw d.argErr() }
            if pref.rootCommonName != nil {
                throw d.err("Can't set any_common_name when root_common_name is already set")
            }
        default:
            throw d.err("Received unrecognized parameter '\(d.val)'")
        }
    }
    if pref.smallest == nil && pref.rootCommonName == nil && pref.anyCommonName == nil {
        throw d.err("No options for preferred_chains received")
    }
    return pref
}

/// `tls.issuance.zerossl`.
func parseZeroSSLIssuer(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    let apiKey = d.val
    if d.nextArg() { throw d.argErr() }
    var validityDays = 0
    var altPort = 0
    var cname: DNSChallengeConfig.Document?
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "validity_days":
            if validityDays != 0 { throw d.err("validity days is already specified: \(validityDays)") }
            do { validityDays = try Go.atoi(d.val) } catch { throw d.err("invalid number of days \(d.val): \(error)") }
        case "alt_http_port":
            guard d.nextArg() else { throw d.argErr() }
            do { altPort = try Go.atoi(d.val) } catch { throw d.err("invalid port \(d.val): \(error)") }
        case "dns":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            if cname == nil { cname = DNSChallengeConfig.Document() }
            let fields = try registry.unmarshalModuleObject(d, "dns.providers." + name)
            cname!.provider = moduleObject(fields, key: "name", name: name)
        case "propagation_delay", "propagation_timeout", "dns_ttl":
            let option = d.val
            guard d.nextArg() else { throw d.argErr() }
            let v = try dnsDuration(d, option, d.val)
            if cname == nil { cname = DNSChallengeConfig.Document() }
            cname!.setDuration(option, v)
        case "resolvers":
            if cname == nil { cname = DNSChallengeConfig.Document() }
            let r = d.remainingArgs()
            cname!.resolvers = r
            if r.isEmpty { throw d.argErr() }
        default:
            throw d.err("unrecognized zerossl issuer property: \(d.val)")
        }
    }
    var o = JSONObject()
    o.put("api_key", apiKey)
    o.put("validity_days", validityDays)
    o.put("alternate_http_port", altPort)
    o.put("cname_validation", cname?.json)
    return o
}

/// `client_auth { ... }` inside `tls`.
func parseClientAuthentication(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    var caRaw: JSONObject?
    var trustedCACerts: [String] = []
    var trustedLeafCerts: [String] = []
    var verifiers: [JSONObject] = []
    var mode = ""
    while d.nextArg() {}
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        let sub = d.val
        switch sub {
        case "mode":
            if d.countRemainingArgs() > 1 { throw d.argErr() }
            guard let a = d.args(1) else { throw d.argErr() }
            mode = a[0]
        case "trusted_ca_cert":
            if caRaw != nil {
                throw d.err("cannot specify both 'trust_pool' and 'trusted_ca_cert' or 'trusted_ca_cert_file'")
            }
            guard d.nextArg() else { throw d.argErr() }
            trustedCACerts.append(d.val)
        case "trusted_leaf_cert":
            guard d.nextArg() else { throw d.argErr() }
            trustedLeafCerts.append(d.val)
        case "trusted_ca_cert_file":
            if caRaw != nil {
                throw d.err("cannot specify both 'trust_pool' and 'trusted_ca_cert' or 'trusted_ca_cert_file'")
            }
            guard d.nextArg() else { throw d.argErr() }
            do { trustedCACerts.append(contentsOf: try pemFileToDERBase64(d.val)) } catch { throw d.wrap(error) }
        case "trusted_leaf_cert_file":
            guard d.nextArg() else { throw d.argErr() }
            do { trustedLeafCerts.append(contentsOf: try pemFileToDERBase64(d.val)) } catch { throw d.wrap(error) }
        case "trust_pool":
            if !trustedCACerts.isEmpty {
                throw d.err("cannot specify both 'trust_pool' and 'trusted_ca_cert' or 'trusted_ca_cert_file'")
            }
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "tls.ca_pool.source." + name)
            caRaw = moduleObject(fields, key: "provider", name: name)
        case "verifier":
            guard d.nextArg() else { throw d.argErr() }
            let name = d.val
            let fields = try registry.unmarshalModuleObject(d, "tls.client_auth.verifier." + name)
            verifiers.append(moduleObject(fields, key: "verifier", name: name))
        default:
            throw d.err("unknown subdirective for client_auth: \(sub)")
        }
    }
    if !trustedCACerts.isEmpty {
        var inline = JSONObject()
        inline.put(InlineCAPool.CodingKeys.trustedCACerts, trustedCACerts)
        caRaw = moduleObject(inline, key: "provider", name: "inline")
    }
    typealias Key = ClientAuthentication.CodingKeys
    var o = JSONObject()
    o.put(Key.ca, caRaw)
    o.put(Key.trustedLeafCerts, trustedLeafCerts)
    o.put(Key.verifiers, verifiers)
    o.put(Key.mode, mode)
    return o
}

/// The base64 DER of each certificate in a PEM file.
func pemFileToDERBase64(_ path: String) throws -> [String] {
    let text = try readTextFile(path)
    var ders: [String] = []
    var inBlock = false
    var type = ""
    var body = ""
    for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let line = String(raw).trimmingCharacters(in: "\r")
        if line.hasPrefix("-----BEGIN ") && line.hasSuffix("-----") {
            inBlock = true
            type = String(line.dropFirst(11).dropLast(5))
            body = ""
        } else if line.hasPrefix("-----END ") {
            guard inBlock else { continue }
            inBlock = false
            guard type == "CERTIFICATE" else { throw CaddyfileError("no CERTIFICATE pem block found in \(path)") }
            guard let der = Base64Text.decode(body) else {
                throw CaddyfileError("no CERTIFICATE pem block found in \(path)")
            }
            ders.append(Base64Text.encode(der))
        } else if inBlock && !line.contains(":") {
            body += line.trimmingWhitespace()
        }
    }
    if ders.isEmpty { throw CaddyfileError("no CERTIFICATE pem block found in \(path)") }
    return ders
}

/// A DNS challenge duration option's argument (`propagation_timeout` also takes `-1`: no timeout).
func dnsDuration(_ d: Dispenser, _ option: String, _ text: String) throws -> Int64 {
    if option == "propagation_timeout" && text == "-1" { return -1 }
    do { return try Go.caddyDuration(text) } catch { throw d.err("invalid \(option) duration \(text): \(error)") }
}

extension DNSChallengeConfig.Document {
    mutating func setDuration(_ option: String, _ value: Int64) {
        switch option {
        case "propagation_delay": propagationDelay = value
        case "propagation_timeout": propagationTimeout = value
        default: ttl = value
        }
    }
}
