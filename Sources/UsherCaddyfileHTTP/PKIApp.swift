import UsherCaddyfile
import UsherCore
import UsherTLS

/// The `pki` global option's value: CAs by ID, in the order first defined.
final class PKIOption {
    var cas: [String: CAConfig.Document] = [:]
    var order: [String] = []
    func set(_ ca: CAConfig.Document) {
        if cas[ca.id] == nil { order.append(ca.id) }
        cas[ca.id] = ca
    }
}

func parsePKIOption(_ input: GlobalOptionInput) throws -> Any? {
    let d = input.d
    d.next()
    let pki = PKIOption()
    while d.nextBlock(0) {
        switch d.val {
        case "ca":
            let ca = CAConfig.Document()
            if d.nextArg() {
                ca.id = d.val
                if d.nextArg() { throw d.argErr() }
            }
            if ca.id.isEmpty { ca.id = "local" }
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                switch d.val {
                case "name":
                    guard d.nextArg() else { throw d.argErr() }
                    ca.name = d.val
                case "root_cn":
                    guard d.nextArg() else { throw d.argErr() }
                    ca.rootCommonName = d.val
                case "intermediate_cn":
                    guard d.nextArg() else { throw d.argErr() }
                    ca.intermediateCommonName = d.val
                case "intermediate_lifetime":
                    guard d.nextArg() else { throw d.argErr() }
                    ca.intermediateLifetime = try Go.caddyDuration(d.val)
                case "maintenance_interval":
                    guard d.nextArg() else { throw d.argErr() }
                    ca.maintenanceInterval = try Go.caddyDuration(d.val)
                case "renewal_window_ratio":
                    guard d.nextArg() else { throw d.argErr() }
                    guard let r = try? Go.parseFloat(d.val), r > 0, r <= 1 else {
                        throw d.err("renewal_window_ratio must be a number in (0, 1], got \(d.val)")
                    }
                    ca.renewalWindowRatio = r
                case "root", "intermediate":
                    let which = d.val
                    var kp = (which == "root" ? ca.root : ca.intermediate) ?? JSONObject()
                    let n2 = d.nesting
                    while d.nextBlock(n2) {
                        switch d.val {
                        case "cert":
                            guard d.nextArg() else { throw d.argErr() }
                            kp["certificate"] = .string(d.val)
                        case "key":
                            guard d.nextArg() else { throw d.argErr() }
                            kp["private_key"] = .string(d.val)
                        case "format":
                            guard d.nextArg() else { throw d.argErr() }
                            kp["format"] = .string(d.val)
                        default:
                            throw d.err("unrecognized pki ca \(which) option '\(d.val)'")
                        }
                    }
                    kp = orderKeyPair(kp)
                    if which == "root" { ca.root = kp } else { ca.intermediate = kp }
                default:
                    throw d.err("unrecognized pki ca option '\(d.val)'")
                }
            }
            pki.set(ca)
        default:
            throw d.err("unrecognized pki option '\(d.val)'")
        }
    }
    return pki
}

private func orderKeyPair(_ kp: JSONObject) -> JSONObject {
    var o = JSONObject()
    for k in ["certificate", "private_key", "format"] { if let v = kp[k] { o[k] = v } }
    return o
}

extension HTTPServerType {
    /// The `pki` app from the `pki` option and `acme_server` CAs; nil when it has no CAs.
    func buildPKIApp(_ pairings: [ServerPairing], _ ctx: AdaptContext) -> JSONObject? {
        let skipInstallTrust = ctx.options.keys.contains("skip_install_trust")
        let autoHTTPSOff = (ctx.options["auto_https"] as? [String] ?? []).contains("off")
        let pki = ctx.options["pki"] as? PKIOption ?? PKIOption()
        for id in pki.order where skipInstallTrust { pki.cas[id]!.installTrust = false }
        for p in pairings {
            for sb in p.serverBlocks {
                for v in sb.pile["pki.ca"] ?? [] {
                    let ca = v.value as! CAConfig.Document
                    if skipInstallTrust { ca.installTrust = false }
                    if pki.cas[ca.id] == nil { pki.set(ca) }
                }
            }
        }
        if pki.cas.isEmpty && skipInstallTrust && !autoHTTPSOff {
            let ca = CAConfig.Document()
            ca.id = "local"
            ca.installTrust = false
            pki.set(ca)
        }
        guard !pki.cas.isEmpty else { return nil }
        var cas = JSONObject()
        for id in pki.order { cas[id] = .object(pki.cas[id]!.json) }
        return [PKIApp.CodingKeys.certificateAuthorities.stringValue: .object(cas.sortedByKey())]
    }
}
