import UsherCaddyfile
import UsherCore
import UsherHTTP

let encodeParsers = CaddyfileSupport(
    handlerDirectives: ["encode": parseEncode],
    modules: [
        "http.encoders.gzip": parseGzip,
        "http.encoders.zstd": parseZstd,
    ]
)

func parseEncode(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var prefer: [String] = []
    var remaining = d.remainingArgs()
    var encodings = JSONObject()
    var minLength = 0
    var match: JSONObject?
    var matchers: [String: JSONObject] = [:]
    while d.nextBlock(0) {
        switch d.val {
        case "minimum_length":
            guard d.nextArg() else { throw d.argErr() }
            minLength = try Go.atoi(d.val)
        case "match":
            try parseNamedResponseMatcher(d.newFromNextSegment(), &matchers)
            match = matchers["match"]
        default:
            let name = d.val
            encodings[name] = try h.registry.unmarshalModule(d, "http.encoders." + name)
            prefer.append(name)
        }
    }
    if prefer.isEmpty && remaining.isEmpty { remaining = ["zstd", "gzip"] }
    for arg in remaining {
        guard h.registry.hasModule("http.encoders." + arg) else {
            throw d.err("finding encoder module '': module not registered: http.encoders.\(arg)")
        }
        encodings[arg] = .object(JSONObject())
        prefer.append(arg)
    }
    var o = JSONObject()
    o.putMap("encodings", encodings.sortedByKey())
    o.put("prefer", prefer)
    o.put("minimum_length", minLength)
    o.put("match", match)
    return handlerObject("encode", o)
}

func parseGzip(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { return .object(JSONObject()) }
    var o = JSONObject()
    o.put("level", try Go.atoi(d.val))
    return .object(o)
}

let zstdLevels = ["fastest", "better", "best", "default"]

func parseZstd(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var level = ""
    var checksum: Bool?
    let levelError = "unexpected compression level, use one of 'fastest', 'better', 'best', 'default'"
    let args = d.remainingArgs()
    switch args.count {
    case 0: break
    case 1:
        guard zstdLevels.contains(args[0].lowercased()) else { throw d.err(levelError) }
        level = args[0]
    default:
        throw d.argErr()
    }
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "level":
            let a = d.remainingArgs()
            guard a.count == 1 else { throw d.argErr() }
            if !level.isEmpty { throw d.err("compression level already specified") }
            guard zstdLevels.contains(a[0].lowercased()) else { throw d.err(levelError) }
            level = a[0]
        case "disable_checksum":
            if d.nextArg() { throw d.argErr() }
            if checksum != nil { throw d.err("checksum already specified") }
            checksum = false
        default:
            throw d.err("unknown subdirective '\(d.val)'")
        }
    }
    var o = JSONObject()
    o.put("level", level)
    if let checksum { o["checksum"] = .bool(checksum) }
    return .object(o)
}
