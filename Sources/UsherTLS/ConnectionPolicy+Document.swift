public import UsherCore

// Connection policies as Caddy JSON, built field by field: the Caddyfile adapter fills these, merges them and writes
// them out. Their keys are the decoder's `CodingKeys`, so each JSON key is spelled once, beside the runtime.

extension CertificateSelection {
    /// `caddytls.CustomCertSelectionPolicy`.
    package struct Document: Equatable {
        package init() {}
        package var serialNumber: [String] = []
        package var subjectOrganization: [String] = []
        package var publicKeyAlgorithm = 0
        package var anyTag: [String] = []
        package var allTags: [String] = []
        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.serialNumbers, serialNumber)
            o.put(CodingKeys.subjectOrganizations, subjectOrganization)
            o.put(CodingKeys.publicKeyAlgorithm, publicKeyAlgorithm)
            o.put(CodingKeys.anyTag, anyTag)
            o.put(CodingKeys.allTags, allTags)
            return o
        }
    }
}

extension ConnectionPolicy {
    /// `caddytls.ConnectionPolicy`.
    package final class Document {
        /// `match`: a module map; nil when absent (which matters for sorting catch-alls last).
        package var matchers: JSONObject?
        package var certSelection: CertificateSelection.Document?
        package var cipherSuites: [String]?
        package var curves: [String]?
        package var alpn: [String]?
        package var protocolMin = ""
        package var protocolMax = ""
        package var drop = false
        package var clientAuthentication: JSONObject?
        package var defaultSNI = ""
        package var fallbackSNI = ""
        package var insecureSecretsLog = ""
        package var handshakeContext: JSONObject?

        package init() {}

        package func copy() -> Document {
            let c = Document()
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

        package var json: JSONObject {
            var o = JSONObject()
            o.putMap(CodingKeys.match, matchers?.sortedByKey() ?? JSONObject())
            o.put(CodingKeys.certificateSelection, certSelection?.json)
            o.put(CodingKeys.cipherSuites, cipherSuites ?? [])
            o.put(CodingKeys.curves, curves ?? [])
            o.put(CodingKeys.alpn, alpn ?? [])
            o.put(CodingKeys.protocolMin, protocolMin)
            o.put(CodingKeys.protocolMax, protocolMax)
            o.put(CodingKeys.drop, drop)
            o.put(CodingKeys.clientAuthentication, clientAuthentication)
            o.put(CodingKeys.defaultSNI, defaultSNI)
            o.put(CodingKeys.fallbackSNI, fallbackSNI)
            o.put(CodingKeys.insecureSecretsLog, insecureSecretsLog)
            o.put(CodingKeys.handshakeContext, handshakeContext)
            return o
        }

        package var settingsEmpty: Bool {
            certSelection == nil && cipherSuites == nil && curves == nil && alpn == nil && protocolMin.isEmpty
                && protocolMax.isEmpty && clientAuthentication == nil && defaultSNI.isEmpty && fallbackSNI.isEmpty
                && insecureSecretsLog.isEmpty
        }

        /// Every setting but the matchers equal (Go's `SettingsEqual`).
        package func settingsEqual(_ q: Document) -> Bool {
            certSelection == q.certSelection && cipherSuites == q.cipherSuites && curves == q.curves && alpn == q.alpn
                && protocolMin == q.protocolMin && protocolMax == q.protocolMax && drop == q.drop
                && optionalSame(clientAuthentication, q.clientAuthentication) && defaultSNI == q.defaultSNI
                && fallbackSNI == q.fallbackSNI && insecureSecretsLog == q.insecureSecretsLog
                && optionalSame(handshakeContext, q.handshakeContext)
        }

        /// `reflect.DeepEqual` on the two policies.
        package func deepEquals(_ q: Document) -> Bool {
            optionalSame(matchers, q.matchers) && settingsEqual(q)
        }

        /// The names of the `sni` matcher, when there is one.
        package var sniNames: [String]? { matchers?["sni"]?.stringArray }
    }
}

package func optionalSame(_ a: JSONObject?, _ b: JSONObject?) -> Bool {
    switch (a, b) {
    case (nil, nil): return true
    case (let x?, let y?): return x.sameMembers(as: y)
    default: return false
    }
}
