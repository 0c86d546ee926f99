import UsherCaddyfile
import UsherCore

let authenticationParsers = CaddyfileSupport(handlerDirectives: [
    "basicauth": parseBasicAuth,
    "basic_auth": parseBasicAuth,
])

/// `basic_auth [<hash_algorithm> [<realm>]] { <username> <hashed_password> ... }` (Caddy's `parseCaddyfile`).
func parseBasicAuth(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    if d.val == "basicauth" { h.warn("the 'basicauth' directive is deprecated, please use 'basic_auth' instead!") }
    let args = d.remainingArgs()
    var hashName = "bcrypt"
    var realm = ""
    switch args.count {
    case 0: break
    case 1: hashName = args[0]
    case 2:
        hashName = args[0]
        realm = args[1]
    default: throw d.argErr()
    }
    guard hashName == "bcrypt" || hashName == "argon2id" else {
        throw d.err("unrecognized hash algorithm: \(hashName)")
    }
    var accounts: [JSONObject] = []
    while d.nextBlock(0) {
        let username = d.val
        var password = ""
        if let a = d.args(1) { password = a[0] }
        if d.nextArg() { throw d.argErr() }
        if username.isEmpty || password.isEmpty { throw d.err("username and password cannot be empty or missing") }
        accounts.append(["username": .string(username), "password": .string(password)])
    }
    var basic = JSONObject()
    basic["hash"] = .object(moduleObject(JSONObject(), key: "algorithm", name: hashName))
    basic.put("accounts", accounts)
    basic.put("realm", realm)
    basic["hash_cache"] = .object(JSONObject())
    return handlerObject("authentication", ["providers": .object(["http_basic": .object(basic)])])
}
