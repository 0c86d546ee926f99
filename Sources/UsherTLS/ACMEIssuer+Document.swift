public import UsherCore

// `tls.issuance.acme` as Caddy JSON, as the Caddyfile adapter builds it; the runtime (ACMEIssuer.swift) decodes
// the same keys.

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
        o.put(ACMEIssuer.EABKeys.keyID, keyID)
        o.put(ACMEIssuer.EABKeys.macKey, macKey)
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
        if let smallest { o[ChainPreferences.CodingKeys.smallest.stringValue] = .bool(smallest) }
        o.put(ChainPreferences.CodingKeys.rootCommonName, rootCommonName ?? [])
        o.put(ChainPreferences.CodingKeys.anyCommonName, anyCommonName ?? [])
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
        o.put(ACMEIssuer.PortChallengeKeys.disabled, disabled)
        o.put(ACMEIssuer.PortChallengeKeys.alternatePort, alternatePort)
        return o
    }
}

/// `caddytls.ChallengesConfig`.
package struct ChallengesConfig: Equatable {
    package init() {}
    package var http: PortChallengeConfig?
    package var tlsALPN: PortChallengeConfig?
    package var dns: DNSChallengeConfig.Document?
    package var bindHost = ""
    package var distributed: Bool?
    package var json: JSONObject {
        var o = JSONObject()
        o.put(ACMEIssuer.ChallengeKeys.http, http?.json)
        o.put(ACMEIssuer.ChallengeKeys.tlsALPN, tlsALPN?.json)
        o.put(ACMEIssuer.ChallengeKeys.dns, dns?.json)
        o.put(ACMEIssuer.ChallengeKeys.bindHost, bindHost)
        if let distributed { o[ACMEIssuer.ChallengeKeys.distributed.stringValue] = .bool(distributed) }
        return o
    }
}

extension ACMEIssuer {
    /// `caddytls.ACMEIssuer`.
    package final class Document {
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

        package func clone() -> Document {
            let c = Document()
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
            o.put(CodingKeys.ca, ca)
            o.put(CodingKeys.testCA, testCA)
            o.put(CodingKeys.email, email)
            o.put(CodingKeys.profile, profile)
            o.put(CodingKeys.accountKey, accountKey)
            o.put(CodingKeys.externalAccount, externalAccount?.json)
            o.putDuration(CodingKeys.acmeTimeout.stringValue, acmeTimeout)
            o.put(CodingKeys.challenges, challenges?.json)
            o.put(CodingKeys.trustedRootsPEMFiles, trustedRootsPEMFiles ?? [])
            o.put(CodingKeys.preferredChains, preferredChains?.json)
            o.putDuration(CodingKeys.certificateLifetime.stringValue, certificateLifetime)
            o.put(CodingKeys.networkProxy, networkProxy)
            return o
        }

        /// Ensures `challenges.dns` exists.
        package func ensureDNS() {
            if challenges == nil { challenges = ChallengesConfig() }
            if challenges!.dns == nil { challenges!.dns = DNSChallengeConfig.Document() }
        }
    }
}
