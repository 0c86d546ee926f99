import UsherCaddyfile
import UsherCore

let templatesParsers = CaddyfileSupport(handlerDirectives: ["templates": parseTemplates])

/// `templates [<matcher>] { mime <types...>; between <open> <close>; root <path>; extensions { … } }`.
func parseTemplates(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var fileRoot = ""
    var mime: [String] = []
    var delimiters: [String] = []
    var extensions: JSONObject?
    while d.nextBlock(0) {
        switch d.val {
        case "mime":
            mime = d.remainingArgs()
            if mime.isEmpty { throw d.argErr() }
        case "between":
            delimiters = d.remainingArgs()
            if delimiters.count != 2 { throw d.argErr() }
        case "root":
            guard let a = d.args(1) else { throw d.argErr() }
            fileRoot = a[0]
        case "extensions":
            if d.nextArg() { throw d.argErr() }
            if extensions != nil { throw d.err("extensions already specified") }
            let nesting = d.nesting
            while d.nextBlock(nesting) {
                let name = d.val
                let v = try h.registry.unmarshalModule(d, "http.handlers.templates.functions." + name)
                var e = extensions ?? JSONObject()
                e[name] = v
                extensions = e
            }
        default:
            break
        }
    }
    var o = JSONObject()
    o.put("file_root", fileRoot)
    o.put("mime_types", mime)
    o.put("delimiters", delimiters)
    o.putMap("match", extensions?.sortedByKey() ?? JSONObject())
    return handlerObject("templates", o)
}
