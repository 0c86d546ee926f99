import UsherCaddyfile
import UsherCore
import UsherTLS

extension HTTPServerType {
    /// The `tls` app from the sites' TLS settings and the global options; nil when it would be empty.
    func buildTLSApp(_ pairings: [ServerPairing], _ ctx: AdaptContext) throws -> JSONObject? {
        let options = ctx.options
        var certificates = JSONObject()
        var automationPolicies: [AutomationPolicy.Document]?
        var automationExtra = JSONObject()
        var certLoaders: [ConfigValue] = []
        let httpPort = (options["http_port"] as? Int).map(String.init) ?? "80"
        let autoHTTPS = options["auto_https"] as? [String] ?? []

        func appendPolicy(_ ap: AutomationPolicy.Document) {
            if automationPolicies == nil { automationPolicies = [] }
            automationPolicies!.append(ap)
        }

        // Hosts that share a block with a hostless key still need certificates managed.
        var sharedWithHostless = Set<String>()
        if !autoHTTPS.contains("off") {
            for p in pairings {
                for sb in p.serverBlocks {
                    for addr in sb.parsedKeys where addr.host.isEmpty {
                        for other in sb.parsedKeys where other.original != addr.original {
                            if !other.host.isEmpty && other.scheme != "http" && other.port != httpPort {
                                sharedWithHostless.insert(other.host)
                            }
                        }
                        break
                    }
                }
            }
        }

        var catchAllAP = try newBaseAutomationPolicy(ctx, always: false)
        if let c = catchAllAP { appendPolicy(c) }

        var forcedAutomated = Set<String>()
        for p in pairings {
            guard listenersUseAnyPortOtherThan(p.addresses.map(\.address), httpPort) else { continue }
            for sb in p.serverBlocks {
                if sb.isAllHTTP { continue }
                var ap = try newBaseAutomationPolicy(ctx, always: true)!
                let hosts = sb.hostsFromKeys(loggerMode: false)
                if hosts.isEmpty, let c = catchAllAP { ap = c }
                if sb.pile["tls.on_demand"] != nil { ap.onDemand = true }
                if sb.pile["tls.force_automate"] != nil { for h in hosts { forcedAutomated.insert(h) } }
                if sb.pile["tls.reuse_private_keys"] != nil { ap.reusePrivateKeys = true }
                if let kt = sb.pile["tls.key_type"]?.first { ap.keyType = kt.value as! String }
                if let r = sb.pile["tls.renewal_window_ratio"]?.first {
                    ap.renewalWindowRatio = r.value as! Double
                } else if let r = options["renewal_window_ratio"] as? Double {
                    ap.renewalWindowRatio = r
                }
                if let vals = sb.pile["tls.cert_issuer"] {
                    let issuers = vals.map { $0.value as! Issuer }
                    if ap === catchAllAP && !sameIssuers(ap.issuers, issuers) {
                        throw CaddyfileError(
                            "automation policy from site block is also default/catch-all policy because of key without hostname, and the two are in conflict"
                        )
                    }
                    ap.issuers = issuers
                }
                for m in sb.pile["tls.cert_manager"] ?? [] {
                    if ap.managers == nil { ap.managers = [] }
                    ap.managers!.append(m.value as! JSONObject)
                }
                for b in sb.pile["bind"] ?? [] {
                    for iss in ap.issuers {
                        guard let acme = iss.acmeIssuer else { continue }
                        if acme.challenges == nil { acme.challenges = ChallengesConfig() }
                        if acme.challenges!.bindHost.isEmpty {
                            if let a = b.value as? AddressesWithProtocols, let first = a.addresses.first {
                                acme.challenges!.bindHost = first
                            }
                        }
                    }
                }
                if hosts.isEmpty && catchAllAP == nil { catchAllAP = ap }

                ap.subjects = sb.hostsFromKeysNotHTTP(httpPort)

                var ap2: AutomationPolicy.Document?
                if ap.issuers.isEmpty {
                    var internalNames: [String] = []
                    var external: [String] = []
                    for s in ap.subjects ?? [] {
                        if isTailscaleDomain(s) { continue }
                        guard subjectQualifiesForCert(s) else {
                            throw CaddyfileError("subject does not qualify for certificate: '\(s)'")
                        }
                        if subjectQualifiesForPublicCert(ap, s) { external.append(s) } else { internalNames.append(s) }
                    }
                    if !external.isEmpty && !internalNames.isEmpty {
                        ap.subjects = external
                        let copy = ap.copy()
                        copy.subjects = internalNames
                        copy.issuersRaw = [moduleObject(JSONObject(), key: "module", name: "internal")]
                        ap2 = copy
                    }
                }
                appendPolicy(ap)
                if let ap2 { appendPolicy(ap2) }
                certLoaders.append(contentsOf: sb.pile["tls.cert_loader"] ?? [])
            }
        }

        // Certificate loaders of one kind are combined.
        var loaderOrder: [String] = []
        var loaders: [String: [JSONValue]] = [:]
        for v in certLoaders {
            let l = v.value as! CertificateLoaderValue
            if loaders[l.module] == nil { loaderOrder.append(l.module) }
            loaders[l.module, default: []].append(contentsOf: l.items)
        }
        for name in loaderOrder { certificates[name] = .array(loaders[name]!) }

        if let od = options["on_demand_tls"] as? JSONObject {
            automationExtra[AutomationConfig.CodingKeys.onDemand] = .object(od)
        }

        var dnsRaw: JSONObject?
        if let dns = options["dns"] as? DNSProviderValue { dnsRaw = dns.json }
        let resolvers = options["tls_resolvers"] as? [String]

        var ech: JSONObject?
        if let e = options["ech"] as? ECHValue {
            ech = e.json
            let ap = try newBaseAutomationPolicy(ctx, always: true)!
            for name in e.publicNames where !name.isEmpty {
                if ap.subjects == nil { ap.subjects = [] }
                ap.subjects!.append(name)
            }
            appendPolicy(ap)
        }

        var disableStorageCheck = false
        var disableStorageClean = false
        if let sc = options["storage_check"] as? String, sc == "off" { disableStorageCheck = true }
        if let sci = options["storage_clean_interval"] as? Bool, !sci { disableStorageClean = true }
        if let d = options["storage_clean_interval"] as? CaddyDurationValue {
            automationExtra.putDuration(AutomationConfig.CodingKeys.storageCleanInterval, d.nanoseconds)
        }
        if let d = options["renew_interval"] as? CaddyDurationValue {
            automationExtra.putDuration(AutomationConfig.CodingKeys.renewInterval, d.nanoseconds)
        }
        if let d = options["ocsp_interval"] as? CaddyDurationValue {
            automationExtra.putDuration(AutomationConfig.CodingKeys.ocspInterval, d.nanoseconds)
        }
        var disableOCSPStapling = false
        if let o = options["ocsp_stapling"] as? OCSPOption { disableOCSPStapling = o.disableStapling }

        var automate: [String] = []
        let internalAP = AutomationPolicy.Document()
        internalAP.issuersRaw = [["module": "internal"]]
        if !autoHTTPS.contains("off") && !autoHTTPS.contains("disable_certs") {
            for h in sharedWithHostless.sorted(by: goLess) {
                automate.append(h)
                if !certmagicQualifiesForPublicCert(h) {
                    if internalAP.subjects == nil { internalAP.subjects = [] }
                    internalAP.subjects!.append(h)
                }
            }
        }
        for name in forcedAutomated.sorted(by: goLess) where !automate.contains(name) { automate.append(name) }
        automate.sort(by: goLess)
        if !automate.isEmpty { certificates[AutomateLoader.moduleID.name] = .strings(automate) }
        if !(internalAP.subjects ?? []).isEmpty { appendPolicy(internalAP) }

        let hasAutomation = automationPolicies != nil || !automationExtra.isEmpty
        if hasAutomation {
            let email = options["email"] as? String
            let hasGlobalACMEDefaults =
                ctx.option("email") != nil || ctx.option("acme_ca") != nil
                || ctx.option("acme_ca_root") != nil || options.keys.contains("acme_dns")
                || ctx.option("acme_eab") != nil
                || ctx.option("preferred_chains") != nil
            if hasGlobalACMEDefaults {
                for ap in automationPolicies ?? [] where ap.issuers.isEmpty && automationPolicyHasAllPublicNames(ap) {
                    ap.issuers = defaultIssuers(email ?? "")
                    if ctx.option("acme_ca") != nil { ap.issuers = [.acme(ACMEIssuer.Document())] }
                }
            }
            for (i, ap) in (automationPolicies ?? []).enumerated() {
                for (j, iss) in ap.issuers.enumerated() {
                    do { try fillInGlobalACMEDefaults(iss, ctx) } catch {
                        throw CaddyfileError("filling in global issuer defaults for AP \(i), issuer \(j): \(error)")
                    }
                }
                if !ap.issuers.isEmpty && ap.issuersRaw == nil {
                    ap.issuersRaw = ap.issuers.map(\.json)
                }
            }
            if let aps = automationPolicies {
                automationPolicies = consolidateAutomationPolicies(aps)
            }
            var seen = Set<String>()
            for ap in automationPolicies ?? [] {
                for s in ap.subjects ?? [] {
                    if seen.contains(s) {
                        throw CaddyfileError(
                            "hostname appears in more than one automation policy, making certificate management ambiguous: \(s)"
                        )
                    }
                    seen.insert(s)
                }
            }
        }

        typealias Keys = TLSApp.CodingKeys
        var tls = JSONObject()
        tls.putMap(Keys.certificates, certificates.sortedByKey())
        var automation = JSONObject()
        automation.put(AutomationConfig.CodingKeys.policies, (automationPolicies ?? []).map(\.json))
        for m in automationExtra { automation[m.key] = m.value }
        if hasAutomation && !automation.isEmpty { tls[Keys.automation] = .object(automation) }
        tls.put(Keys.disableOCSPStapling, disableOCSPStapling)
        tls.put(Keys.disableStorageCheck, disableStorageCheck)
        tls.put(Keys.disableStorageClean, disableStorageClean)
        tls.put(Keys.encryptedClientHello, ech)
        tls.put(Keys.dns, dnsRaw)
        tls.put(Keys.resolvers, resolvers ?? [])
        return tls.isEmpty ? nil : tls
    }

    /// A policy carrying the global automation settings; nil when there are none (unless `always`).
    func newBaseAutomationPolicy(_ ctx: AdaptContext, always: Bool) throws -> AutomationPolicy.Document? {
        let o = ctx.options
        let hasIssuers = o.keys.contains("cert_issuer")
        let hasLocalCerts = o.keys.contains("local_certs")
        let hasKeyType = o.keys.contains("key_type")
        let hasOCSP = o.keys.contains("ocsp_stapling")
        let hasRatio = o.keys.contains("renewal_window_ratio")
        let hasGlobalAutomation = hasIssuers || hasLocalCerts || hasKeyType || hasOCSP || hasRatio
        let hasGlobalACMEDefaults =
            ctx.option("acme_ca") != nil || ctx.option("acme_ca_root") != nil
            || o.keys.contains("acme_dns") || ctx.option("acme_eab") != nil || ctx.option("preferred_chains") != nil
        if !hasGlobalAutomation && !hasGlobalACMEDefaults {
            return always ? AutomationPolicy.Document() : nil
        }
        let ap = AutomationPolicy.Document()
        if hasKeyType { ap.keyType = o["key_type"] as? String ?? "" }
        if hasIssuers && hasLocalCerts {
            throw CaddyfileError(
                "global options are ambiguous: local_certs is confusing when combined with cert_issuer, because local_certs is also a specific kind of issuer"
            )
        }
        if hasIssuers {
            ap.issuers = o["cert_issuer"] as? [Issuer] ?? []
        } else if hasLocalCerts {
            ap.issuers = [.internal(JSONObject())]
        }
        if hasGlobalACMEDefaults {
            for (i, iss) in ap.issuers.enumerated() {
                do { try fillInGlobalACMEDefaults(iss, ctx) } catch {
                    throw CaddyfileError("filling in global issuer defaults for issuer \(i): \(error)")
                }
            }
        }
        if let ocsp = o["ocsp_stapling"] as? OCSPOption {
            ap.disableOCSPStapling = ocsp.disableStapling
        }
        if let r = o["renewal_window_ratio"] as? Double { ap.renewalWindowRatio = r }
        return ap
    }

    func consolidateAutomationPolicies(_ input: [AutomationPolicy.Document]) -> [AutomationPolicy.Document]? {
        var aps = goStableSort(input) { a, b in
            if automationPolicyIsSubset(a, b) { return true }
            if automationPolicyIsSubset(b, a) { return false }
            return (a.subjects?.count ?? 0) > (b.subjects?.count ?? 0)
        }
        var emptyCount = 0
        let origCount = aps.count
        let empty = AutomationPolicy.Document()
        var i = 0
        while i < aps.count {
            empty.subjects = aps[i].subjects
            empty.managers = nil
            if aps[i].deepEquals(empty) {
                emptyCount += 1
                let shadow = automationPolicyShadows(i, aps)
                empty.subjects = nil
                if shadow >= 0 {
                    empty.subjects = aps[shadow].subjects
                    empty.managers = aps[shadow].managers
                }
                if i == aps.count - 1 || (shadow >= 0 && aps[shadow].deepEquals(empty)) {
                    aps.remove(at: i)
                    continue
                }
            }
            i += 1
        }
        if emptyCount == origCount { return nil }

        i = 0
        outer: while i < aps.count {
            var j = i + 1
            while j < aps.count {
                if aps[i].deepEquals(aps[j]) {
                    aps.remove(at: j)
                    continue outer
                }
                let a = aps[i]
                let b = aps[j]
                if automationPoliciesHaveSameIssuers(a, b) && sameObjectList(a.managers, b.managers)
                    && optionalSame(a.storage, b.storage) && a.mustStaple == b.mustStaple && a.keyType == b.keyType
                    && a.onDemand == b.onDemand && a.reusePrivateKeys == b.reusePrivateKeys
                    && a.renewalWindowRatio == b.renewalWindowRatio
                {
                    if !(a.subjects ?? []).isEmpty && (b.subjects ?? []).isEmpty {
                        if automationPolicyShadows(i, aps) >= j {
                            aps.remove(at: i)
                            continue outer
                        }
                    } else {
                        for s in b.subjects ?? [] where !(a.subjects ?? []).contains(s) {
                            if a.subjects == nil { a.subjects = [] }
                            a.subjects!.append(s)
                        }
                        aps.remove(at: j)
                        continue
                    }
                }
                j += 1
            }
            i += 1
        }
        return aps
    }
}

/// A certificate loader value (`tls.cert_loader`): the loader module and its entries.
struct CertificateLoaderValue {
    var module: String
    var items: [JSONValue]
}

/// The `dns` / `acme_dns` option: a DNS provider module.
struct DNSProviderValue {
    var name: String
    var fields: JSONObject
    var json: JSONObject { moduleObject(fields, key: "name", name: name) }
}

/// The `ocsp_stapling` option.
struct OCSPOption {
    var disableStapling: Bool
}

/// The `ech` option.
struct ECHValue {
    var publicNames: [String]
    var publication: [JSONObject]
    var json: JSONObject {
        var o = JSONObject()
        o.put("configs", publicNames.map { name -> JSONObject in ["public_name": .string(name)] })
        o.put("publication", publication)
        return o
    }
}

/// Caddy's `DefaultIssuers`: Let's Encrypt, plus ZeroSSL's ACME endpoint when an email is known.
func defaultIssuers(_ email: String) -> [Issuer] {
    var out: [Issuer] = [.acme(ACMEIssuer.Document())]
    if !email.trimmingWhitespace().isEmpty {
        let z = ACMEIssuer.Document()
        z.ca = "https://acme.zerossl.com/v2/DV90"
        z.email = email
        out.append(.acme(z))
    }
    return out
}

/// Applies global ACME options to an ACME issuer where it has no setting of its own.
func fillInGlobalACMEDefaults(_ issuer: Issuer, _ ctx: AdaptContext) throws {
    guard let acme = issuer.acmeIssuer else { return }
    let o = ctx.options
    let hasACMEDNS = o.keys.contains("acme_dns")
    let globalACMEDNS = o["acme_dns"] as? DNSProviderValue
    if let email = o["email"] as? String, acme.email.isEmpty { acme.email = email }
    if let ca = o["acme_ca"] as? String, acme.ca.isEmpty { acme.ca = ca }
    if let root = o["acme_ca_root"] as? String, !(acme.trustedRootsPEMFiles ?? []).contains(root) {
        acme.trustedRootsPEMFiles = (acme.trustedRootsPEMFiles ?? []) + [root]
    }
    if hasACMEDNS && acme.challenges?.dns?.provider == nil {
        if ctx.option("dns") == nil && globalACMEDNS == nil {
            throw CaddyfileError(
                "acme_dns specified without DNS provider config, but no provider specified with 'dns' global option")
        }
        acme.ensureDNS()
        if let g = globalACMEDNS, acme.challenges!.dns!.provider == nil {
            acme.challenges!.dns!.provider = g.json
        }
    }
    if let eab = o["acme_eab"] as? ExternalAccountBinding, acme.externalAccount == nil { acme.externalAccount = eab }
    if let pc = o["preferred_chains"] as? ChainPreference, acme.preferredChains == nil { acme.preferredChains = pc }
    if let port = o["http_port"] as? Int, acme.challenges?.dns == nil, (acme.challenges?.http?.alternatePort ?? 0) == 0
    {
        if acme.challenges == nil { acme.challenges = ChallengesConfig() }
        if acme.challenges!.http == nil { acme.challenges!.http = PortChallengeConfig() }
        acme.challenges!.http!.alternatePort = port
    }
    if let port = o["https_port"] as? Int, acme.challenges?.dns == nil,
        (acme.challenges?.tlsALPN?.alternatePort ?? 0) == 0
    {
        if acme.challenges == nil { acme.challenges = ChallengesConfig() }
        if acme.challenges!.tlsALPN == nil { acme.challenges!.tlsALPN = PortChallengeConfig() }
        acme.challenges!.tlsALPN!.alternatePort = port
    }
    if acme.challenges == nil || (acme.challenges!.dns == nil && acme.challenges!.bindHost.isEmpty) {
        if let binds = o["default_bind"] as? [ConfigValue], let first = binds.first,
            let abp = first.value as? AddressesWithProtocols, let addr = abp.addresses.first
        {
            if acme.challenges == nil { acme.challenges = ChallengesConfig() }
            acme.challenges!.bindHost = addr
        }
    }
    if let lifetime = o["cert_lifetime"] as? CaddyDurationValue, acme.certificateLifetime == 0 {
        acme.certificateLifetime = lifetime.nanoseconds
    }
    if let resolvers = o["tls_resolvers"] as? [String], acme.challenges?.dns != nil {
        let hasDNSChallenge = hasACMEDNS || acme.challenges!.dns!.provider != nil
        if hasDNSChallenge && (acme.challenges!.dns!.resolvers ?? []).isEmpty {
            acme.challenges!.dns!.resolvers = resolvers
        }
    }
}

/// The issuers a site's `tls` ACME settings imply: each global `cert_issuer` (or the defaults) with the site's
/// settings merged over it.
func implicitACMEIssuers(_ h: Helper, _ acme: ACMEIssuer.Document) -> [Issuer] {
    let globals = h.option("cert_issuer") as? [Issuer] ?? []
    var out: [Issuer] = []
    for g in globals {
        guard let base = g.acmeIssuer else { continue }
        out.append(.acme(mergeACMEIssuers(base, acme)))
    }
    if !out.isEmpty { return out }
    var defaults = defaultIssuers(acme.email)
    if !acme.ca.isEmpty { defaults = [.acme(ACMEIssuer.Document())] }
    for d in defaults {
        guard let base = d.acmeIssuer else {
            out.append(d)
            continue
        }
        out.append(.acme(mergeACMEIssuers(base, acme)))
    }
    return out
}

func mergeACMEIssuers(_ base: ACMEIssuer.Document, _ o: ACMEIssuer.Document) -> ACMEIssuer.Document {
    let m = base.clone()
    if !o.ca.isEmpty { m.ca = o.ca }
    if !o.testCA.isEmpty { m.testCA = o.testCA }
    if !o.email.isEmpty { m.email = o.email }
    if !o.profile.isEmpty { m.profile = o.profile }
    if !o.accountKey.isEmpty { m.accountKey = o.accountKey }
    if let e = o.externalAccount { m.externalAccount = e }
    if o.acmeTimeout != 0 { m.acmeTimeout = o.acmeTimeout }
    if let roots = o.trustedRootsPEMFiles, !roots.isEmpty {
        var merged = m.trustedRootsPEMFiles ?? []
        for r in roots where !merged.contains(r) { merged.append(r) }
        m.trustedRootsPEMFiles = merged
    }
    if let pc = o.preferredChains { m.preferredChains = pc }
    if o.certificateLifetime != 0 { m.certificateLifetime = o.certificateLifetime }
    if let np = o.networkProxy, !np.isEmpty { m.networkProxy = np }
    m.challenges = mergeChallenges(m.challenges, o.challenges)
    return m
}

private func mergeChallenges(_ base: ChallengesConfig?, _ o: ChallengesConfig?) -> ChallengesConfig? {
    guard var m = base else { return o }
    guard let o else { return m }
    m.http = mergePort(m.http, o.http)
    m.tlsALPN = mergePort(m.tlsALPN, o.tlsALPN)
    if let od = o.dns {
        if var md = m.dns {
            if let p = od.provider, !p.isEmpty { md.provider = p }
            if od.propagationDelay != 0 { md.propagationDelay = od.propagationDelay }
            if od.propagationTimeout != 0 { md.propagationTimeout = od.propagationTimeout }
            if let r = od.resolvers { md.resolvers = r }
            if !od.overrideDomain.isEmpty { md.overrideDomain = od.overrideDomain }
            if od.ttl != 0 { md.ttl = od.ttl }
            m.dns = md
        } else {
            m.dns = od
        }
    }
    if !o.bindHost.isEmpty { m.bindHost = o.bindHost }
    if let d = o.distributed { m.distributed = d }
    return m
}

private func mergePort(_ base: PortChallengeConfig?, _ o: PortChallengeConfig?) -> PortChallengeConfig? {
    guard var m = base else { return o }
    guard let o else { return m }
    if o.disabled { m.disabled = true }
    if o.alternatePort != 0 { m.alternatePort = o.alternatePort }
    return m
}

func automationPolicyIsSubset(_ a: AutomationPolicy.Document, _ b: AutomationPolicy.Document) -> Bool {
    let bs = b.subjects ?? []
    let asubj = a.subjects ?? []
    if bs.isEmpty { return true }
    if asubj.isEmpty { return false }
    return asubj.allSatisfy { s in bs.contains { matchWildcard(s, $0) } }
}

func automationPolicyShadows(_ i: Int, _ aps: [AutomationPolicy.Document]) -> Int {
    var j = i + 1
    while j < aps.count {
        if automationPolicyIsSubset(aps[i], aps[j]) { return j }
        j += 1
    }
    return -1
}

func subjectQualifiesForPublicCert(_ ap: AutomationPolicy.Document, _ subj: String) -> Bool {
    !subjectIsIP(subj) && !subjectIsInternal(subj) && (subj.occurrences(of: "*.") < 2 || ap.onDemand)
}

func automationPoliciesHaveSameIssuers(_ a: AutomationPolicy.Document, _ b: AutomationPolicy.Document) -> Bool {
    if sameObjectList(a.issuersRaw, b.issuersRaw) { return automationPoliciesHaveCompatibleImplicitIssuers(a, b) }
    return automationPolicyUsesDefaultInternalIssuer(a) && automationPolicyUsesDefaultInternalIssuer(b)
}

func automationPolicyUsesDefaultInternalIssuer(_ ap: AutomationPolicy.Document) -> Bool {
    if (ap.issuersRaw ?? []).isEmpty && ap.issuers.isEmpty {
        return automationPolicyImplicitIssuerClass(ap) == "internal"
    }
    return ap.issuersRaw?.count == 1 && ap.issuers.isEmpty && ap.issuersRaw![0] == ["module": "internal"]
}

func automationPoliciesHaveCompatibleImplicitIssuers(_ a: AutomationPolicy.Document, _ b: AutomationPolicy.Document)
    -> Bool
{
    if !(a.issuersRaw ?? []).isEmpty || !a.issuers.isEmpty || !(b.issuersRaw ?? []).isEmpty || !b.issuers.isEmpty {
        return true
    }
    let ac = automationPolicyImplicitIssuerClass(a)
    let bc = automationPolicyImplicitIssuerClass(b)
    return ac == "catch-all" || bc == "catch-all" || ac == bc
}

func automationPolicyImplicitIssuerClass(_ ap: AutomationPolicy.Document) -> String {
    let subjects = ap.subjects ?? []
    if subjects.isEmpty { return "catch-all" }
    let hasPublic = subjects.contains { subjectQualifiesForPublicCert(ap, $0) }
    let hasInternal = subjects.contains { !subjectQualifiesForPublicCert(ap, $0) }
    if hasPublic && hasInternal { return "mixed" }
    return hasPublic ? "public" : "internal"
}

func automationPolicyHasAllPublicNames(_ ap: AutomationPolicy.Document) -> Bool {
    !(ap.subjects ?? []).contains { !subjectQualifiesForPublicCert(ap, $0) || isTailscaleDomain($0) }
}

func isTailscaleDomain(_ name: String) -> Bool { name.lowercased().hasSuffix(".ts.net") }
