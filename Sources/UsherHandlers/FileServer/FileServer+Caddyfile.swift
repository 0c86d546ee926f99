import UsherCaddyfile
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

// `file_server`, `try_files` and the `file` matcher.

let fileServerParsers = CaddyfileSupport(
    directives: ["try_files": parseTryFiles],
    handlerDirectives: ["file_server": parseFileServer],
    modules: [
        "http.matchers.file": parseFileMatcher,
        "http.precompressed.gzip": { _, _ in .object(JSONObject()) },
        "http.precompressed.zstd": { _, _ in .object(JSONObject()) },
        "http.precompressed.br": { _, _ in .object(JSONObject()) },
    ]
)

private func parseFileServer(_ h: Helper) throws -> JSONObject {
    let d = h.d
    d.next()
    var fs = ""
    var root = ""
    var hide: [String] = []
    var indexNames: [String] = []
    var browse: JSONObject?
    var canonicalURIs: Bool?
    var status = ""
    var passThru = false
    var precompressed = JSONObject()
    var precompressedOrder: [String] = []
    var etagExtensions: [String] = []

    let args = d.remainingArgs()
    switch args.count {
    case 0: break
    case 1:
        if args[0] != "browse" { throw d.argErr() }
        browse = JSONObject()
    default:
        throw d.argErr()
    }
    let nesting = d.nesting
    while d.nextBlock(nesting) {
        switch d.val {
        case "fs":
            try d.setArgOnce(&fs, duplicateMessage: "file system already specified")
        case "hide":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            hide += a
        case "index":
            indexNames = d.remainingArgs()
            if indexNames.isEmpty { throw d.argErr() }
        case "root":
            guard let a = d.args(1) else { throw d.argErr() }
            root = a[0]
        case "browse":
            if browse != nil { throw d.err("browsing is already configured") }
            var b = JSONObject()
            var templateFile = ""
            if let a = d.args(1) { templateFile = a[0] }
            var reveal = false
            var sort: [String] = []
            var fileLimit = 0
            let n2 = d.nesting
            while d.nextBlock(n2) {
                switch d.val {
                case "reveal_symlinks":
                    if reveal { throw d.err("Symlinks path reveal is already enabled") }
                    reveal = true
                case "sort":
                    while d.nextArg() {
                        guard ["name", "namedirfirst", "size", "time", "asc", "desc"].contains(d.val) else {
                            throw d.err("unknown sort option '\(d.val)'")
                        }
                        sort.append(d.val)
                    }
                case "file_limit":
                    let fl = d.remainingArgs()
                    guard fl.count == 1 else { throw d.err("file_limit should have an integer value") }
                    let v = (try? Go.atoi(fl[0])) ?? 0
                    if fileLimit != 0 { throw d.err("file_limit is already enabled") }
                    fileLimit = v
                default:
                    throw d.err("unknown subdirective '\(d.val)'")
                }
            }
            b.put("template_file", templateFile)
            b.put("reveal_symlinks", reveal)
            b.put("sort", sort)
            b.put("file_limit", fileLimit)
            browse = b
        case "precompressed":
            precompressedOrder = d.remainingArgs()
            if precompressedOrder.isEmpty { precompressedOrder = ["br", "zstd", "gzip"] }
            for format in precompressedOrder {
                let id = "http.precompressed." + format
                guard h.registry.hasModule(id) else {
                    throw d.err("getting module named '\(id)': module not registered: \(id)")
                }
                precompressed[format] = .object(JSONObject())
            }
        case "status":
            guard d.nextArg() else { throw d.argErr() }
            status = d.val
        case "disable_canonical_uris":
            if d.nextArg() { throw d.argErr() }
            canonicalURIs = false
        case "pass_thru":
            if d.nextArg() { throw d.argErr() }
            passThru = true
        case "etag_file_extensions":
            let a = d.remainingArgs()
            if a.isEmpty { throw d.argErr() }
            etagExtensions = a
        default:
            throw d.err("unknown subdirective '\(d.val)'")
        }
    }

    // The Caddyfile itself is hidden from the file server unless already covered.
    for var file in h.caddyfiles() {
        file = PathUtil.clean(file)
        if !fileHidden(file, hide) {
            if !file.contains("/") { file = "./" + file }
            hide.append(file)
        }
    }

    var o = JSONObject()
    o.put("fs", fs)
    o.put("root", root)
    o.put("hide", hide)
    o.put("index_names", indexNames)
    o.put("browse", browse)
    if let canonicalURIs { o["canonical_uris"] = .bool(canonicalURIs) }
    if !status.isEmpty { o["status_code"] = weakStringJSON(status) }
    o.put("pass_thru", passThru)
    o.putMap("precompressed", precompressed.sortedByKey())
    o.put("precompressed_order", precompressedOrder)
    o.put("etag_file_extensions", etagExtensions)
    return handlerObject("file_server", o)
}

/// Caddy's `fileHidden`, for deciding whether the Caddyfile is already hidden.
private func fileHidden(_ filenameIn: String, _ hide: [String]) -> Bool {
    if hide.isEmpty { return false }
    var filename = filenameIn
    filename = absolutePath(filename)
    var components: [String] = []
    for h in hide {
        if !h.contains("/") {
            if components.isEmpty {
                components = filename.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            }
            for c in components where goFilepathMatch(h, c) { return true }
        } else if filename.hasPrefix(h) {
            if filename.dropFirst(h.count).hasPrefix("/") { return true }
        }
        if goFilepathMatch(h, filename) { return true }
    }
    return false
}

/// Go's `filepath.Match` (`*`, `?`, `[...]`, `\` escapes; `*` does not cross `/`).
func goFilepathMatch(_ pattern: String, _ name: String) -> Bool {
    let p = Array(pattern.unicodeScalars)
    let n = Array(name.unicodeScalars)
    func match(_ pi: Int, _ ni: Int) -> Bool {
        var pi = pi
        var ni = ni
        while pi < p.count {
            switch p[pi] {
            case "*":
                var k = ni
                while true {
                    if match(pi + 1, k) { return true }
                    if k >= n.count || n[k] == "/" { return false }
                    k += 1
                }
            case "?":
                guard ni < n.count, n[ni] != "/" else { return false }
                pi += 1
                ni += 1
            case "[":
                guard ni < n.count, n[ni] != "/" else { return false }
                var j = pi + 1
                var negate = false
                if j < p.count && p[j] == "^" {
                    negate = true
                    j += 1
                }
                var matched = false
                var first = true
                while j < p.count && (p[j] != "]" || first) {
                    first = false
                    var lo = p[j]
                    if lo == "\\" && j + 1 < p.count {
                        j += 1
                        lo = p[j]
                    }
                    var hi = lo
                    if j + 2 < p.count && p[j + 1] == "-" && p[j + 2] != "]" {
                        hi = p[j + 2]
                        if hi == "\\" && j + 3 < p.count { hi = p[j + 3]; j += 1 }
                        j += 2
                    }
                    if lo <= n[ni] && n[ni] <= hi { matched = true }
                    j += 1
                }
                guard j < p.count else { return false }
                if matched == negate { return false }
                pi = j + 1
                ni += 1
            case "\\":
                guard pi + 1 < p.count, ni < n.count, p[pi + 1] == n[ni] else { return false }
                pi += 2
                ni += 1
            default:
                guard ni < n.count, p[pi] == n[ni] else { return false }
                pi += 1
                ni += 1
            }
        }
        return ni == n.count
    }
    return match(0, 0)
}

private func parseTryFiles(_ h: Helper) throws -> [ConfigValue] {
    let d = h.d
    guard d.next() else { throw d.argErr() }
    let tryFiles = d.remainingArgs()
    if tryFiles.isEmpty { throw d.argErr() }
    var policy = ""
    while d.nextBlock(0) {
        switch d.val {
        case "policy":
            if !policy.isEmpty { throw d.err("try policy already configured") }
            guard d.nextArg() else { throw d.argErr() }
            policy = d.val
            guard
                ["first_exist", "first_exist_fallback", "largest_size", "smallest_size", "most_recently_modified"]
                    .contains(policy)
            else {
                throw d.err("unrecognized try policy: \(policy)")
            }
        default:
            break
        }
    }
    func makeRoute(_ try_: [String], _ query: String) -> [ConfigValue] {
        var file = JSONObject()
        file.put("try_files", try_)
        file.put("try_policy", policy)
        return h.newRoute(
            ["file": .object(file)], handlerObject("rewrite", ["uri": .string("{http.matchers.file.relative}" + query)])
        )
    }
    var result: [ConfigValue] = []
    var pending: [String] = []
    for item in tryFiles {
        if let q = item.firstIndex(of: "?") {
            if !pending.isEmpty {
                result += makeRoute(pending, "")
                pending = []
            }
            result += makeRoute([String(item[..<q])], String(item[q...]))
            continue
        }
        pending.append(item)
    }
    if !pending.isEmpty { result += makeRoute(pending, "") }
    h.groupRoutes(&result)
    return result
}

private func parseFileMatcher(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    var root = ""
    var tryFiles: [String] = []
    var tryPolicy = ""
    var splitPath: [String] = []
    while d.next() {
        tryFiles += d.remainingArgs()
        while d.nextBlock(0) {
            switch d.val {
            case "root":
                guard d.nextArg() else { throw d.argErr() }
                root = d.val
            case "try_files":
                tryFiles += d.remainingArgs()
                if tryFiles.isEmpty { throw d.argErr() }
            case "try_policy":
                guard d.nextArg() else { throw d.argErr() }
                tryPolicy = d.val
            case "split_path":
                splitPath = d.remainingArgs()
                if splitPath.isEmpty { throw d.argErr() }
            default:
                throw d.err("unrecognized subdirective: \(d.val)")
            }
        }
    }
    var o = JSONObject()
    o.put("root", root)
    o.put("try_files", tryFiles)
    o.put("try_policy", tryPolicy)
    o.put("split_path", splitPath)
    return .object(o)
}
