public import UsherCore

// `tls.issuance.acme` as Caddy JSON, as the Caddyfile adapter builds it. The ACME issuer's runtime is not in this
// build yet (issue 17); it decodes these keys here, in the room these types take.

/// `acme.EAB`.
package struct ExternalAccountBinding: Equatable {
    package init() {}
    package init(keyID: String, macKey: String) {
        self.keyID = keyID
        self.macKey = macKey
    }
    package var keyID = ""
    package var macKey = ""
    package var json: JSONObject {
        var o = JSONObject()
        o.put("key_id", keyID)
        o.put("mac_key", macKey)
        return o
    }
}

/// `caddytls.ChainPreference`.
package struct ChainPreference: Equatable {
    package init() {}
    package var smallest: Bool?
    package var rootCommonName: [String]?
    package var anyCommonName: [String]?
    package var json: JSONObject {
        var o = JSONObject()
        if let smallest { o["smallest"] = .bool(smallest) }
        o.put("root_common_name", rootCommonName ?? [])
        o.put("any_common_name", anyCommonName ?? [])
        return o
    }
}

/// `caddytls.DNSChallengeConfig`.
package struct DNSChallengeConfig: Equatable {
    package init() {}
    package var provider: JSONObject?
    package var ttl: Int64 = 0
    package var propagationDelay: Int64 = 0
    package var propagationTimeout: Int64 = 0
    package var resolvers: [String]?
    package var overrideDomain = ""
    package var json: JSONObject {
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
package struct PortChallengeConfig: Equatable {
    package init() {}
    package var disabled = false
    package var alternatePort = 0
    package var json: JSONObject {
        var o = JSONObject()
        o.put("disabled", disabled)
        o.put("alternate_port", alternatePort)
        return o
    }
}

/// `caddytls.ChallengesConfig`.
package struct ChallengesConfig: Equatable {
    package init() {}
    package var http: PortChallengeConfig?
    package var tlsALPN: PortChallengeConfig?
    package var dns: DNSChallengeConfig?
    package var bindHost = ""
    package var distributed: Bool?
    package var json: JSONObject {
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
package final class ACMEIssuer {
    package var ca = ""
    package var testCA = ""
    package var email = ""
    package var profile = ""
    package var accountKey = ""
    package var externalAccount: ExternalAccountBinding?
    package var acmeTimeout: Int64 = 0
    package var challenges: ChallengesConfig?
    package var trustedRootsPEMFiles: [String]?
    package var preferredChains: ChainPreference?
    package var certificateLifetime: Int64 = 0
    package var networkProxy: JSONObject?

    package init() {}

    package func clone() -> ACMEIssuer {
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

    package var json: JSONObject {
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
    package func ensureDNS() {
        if challenges == nil { challenges = ChallengesConfig() }
        if challenges!.dns == nil { challenges!.dns = DNSChallengeConfig() }
    }
}
