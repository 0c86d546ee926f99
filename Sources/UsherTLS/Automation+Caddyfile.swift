import UsherCaddyfile
import UsherCore

/// `tls.issuance.internal`.
func parseInternalIssuer(_ d: Dispenser) throws -> JSONObject {
    d.next()
    var ca = ""
    var lifetime: Int64 = 0
    var signWithRoot = false
    while d.nextBlock(0) {
        switch d.val {
        case "ca":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            ca = a[0]
        case "lifetime":
            guard d.nextArg() else { throw d.argErr() }
            lifetime = try Go.caddyDuration(d.val)
        case "sign_with_root":
            if d.nextArg() { throw d.argErr() }
            signWithRoot = true
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put(InternalIssuer.CodingKeys.ca, ca)
    o.putDuration(InternalIssuer.CodingKeys.lifetime, lifetime)
    o.put(InternalIssuer.CodingKeys.signWithRoot, signWithRoot)
    return o
}
