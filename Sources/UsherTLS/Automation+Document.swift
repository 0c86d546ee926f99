public import UsherCore

// Automation policies and issuers as Caddy JSON, as the Caddyfile adapter builds them; the policy's keys are the
// decoder's `CodingKeys`.

extension AutomationPolicy {
    /// `caddytls.AutomationPolicy`.
    package final class Document {
        package var subjects: [String]?
        package var issuersRaw: [JSONObject]?
        package var managers: [JSONObject]?
        package var mustStaple = false
        package var renewalWindowRatio: Double = 0
        package var keyType = ""
        package var storage: JSONObject?
        package var onDemand = false
        package var reusePrivateKeys = false
        package var disableOCSPStapling = false
        package var ocspOverrides: [String: String]?
        /// Issuers not yet encoded (Go's `Issuers`, `json:"-"`).
        package var issuers: [Issuer] = []

        package init() {}

        package func copy() -> Document {
            let c = Document()
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

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.subjects, subjects ?? [])
            o.put(CodingKeys.issuers, issuersRaw ?? [])
            o.put(CodingKeys.getCertificate, managers ?? [])
            o.put(CodingKeys.mustStaple, mustStaple)
            o.put(CodingKeys.renewalWindowRatio, renewalWindowRatio)
            o.put(CodingKeys.keyType, keyType)
            o.put(CodingKeys.storage, storage)
            o.put(CodingKeys.onDemand, onDemand)
            o.put(CodingKeys.reusePrivateKeys, reusePrivateKeys)
            o.put(CodingKeys.disableOCSPStapling, disableOCSPStapling)
            if let ocspOverrides, !ocspOverrides.isEmpty {
                var m = JSONObject()
                for (k, v) in ocspOverrides { m[k] = .string(v) }
                o[CodingKeys.ocspOverrides] = .object(m.sortedByKey())
            }
            return o
        }

        /// `reflect.DeepEqual` on the two policies (subjects compared as Go slices: nil differs from empty).
        package func deepEquals(_ q: Document) -> Bool {
            subjects == q.subjects && sameObjectList(issuersRaw, q.issuersRaw) && sameObjectList(managers, q.managers)
                && mustStaple == q.mustStaple && renewalWindowRatio == q.renewalWindowRatio && keyType == q.keyType
                && optionalSame(storage, q.storage) && onDemand == q.onDemand && reusePrivateKeys == q.reusePrivateKeys
                && disableOCSPStapling == q.disableOCSPStapling && ocspOverrides == q.ocspOverrides
                && sameIssuers(issuers, q.issuers)
        }
    }
}

/// A certificate issuer (`tls.issuance.*`).
package enum Issuer {
    case acme(ACMEIssuer.Document)
    /// `internal`: ca, lifetime, sign_with_root.
    case `internal`(JSONObject)
    /// Any other issuer module, by name, as JSON.
    case other(String, JSONObject)

    package var moduleName: String {
        switch self {
        case .acme: return "acme"
        case .internal: return "internal"
        case .other(let n, _): return n
        }
    }

    /// The ACME issuer inside, for issuers that are ACME-capable.
    package var acmeIssuer: ACMEIssuer.Document? {
        if case .acme(let a) = self { return a }
        return nil
    }

    package var fields: JSONObject {
        switch self {
        case .acme(let a): return a.json
        case .internal(let o): return o
        case .other(_, let o): return o
        }
    }

    /// The module object (`"module": name`).
    package var json: JSONObject { moduleObject(fields, key: "module", name: moduleName) }

    package func sameAs(_ other: Issuer) -> Bool {
        moduleName == other.moduleName && fields.sameMembers(as: other.fields)
    }
}

package func sameIssuers(_ a: [Issuer], _ b: [Issuer]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.sameAs($1) }
}

package func sameObjectList(_ a: [JSONObject]?, _ b: [JSONObject]?) -> Bool {
    switch (a, b) {
    case (nil, nil): return true
    case (let x?, let y?): return x.count == y.count && zip(x, y).allSatisfy { $0.sameMembers(as: $1) }
    default: return false
    }
}
