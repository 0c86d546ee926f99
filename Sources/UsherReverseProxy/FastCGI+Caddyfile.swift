import UsherCaddyfile
import UsherCore

// `php_fastcgi` and the `fastcgi` transport (runtime in FastCGI.swift).

/// `http.reverse_proxy.transport.fastcgi`.
func parseFastCGITransport(_ d: Dispenser) throws -> JSONObject {
    var root = ""
    var split: [String] = []
    var env: [(String, String)] = []
    var resolveRootSymlink = false
    var dialTimeout: Int64 = 0
    var readTimeout: Int64 = 0
    var writeTimeout: Int64 = 0
    var captureStderr = false
    d.next()
    while d.nextBlock(0) {
        func duration() throws -> Int64 {
            do { return try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
        }
        switch d.val {
        case "root":
            guard d.nextArg() else { throw d.argErr() }
            root = d.val
        case "split":
            split = d.remainingArgs()
            if split.isEmpty { throw d.argErr() }
        case "env":
            let a = d.remainingArgs()
            guard a.count == 2 else { throw d.argErr() }
            env.removeAll { $0.0 == a[0] }
            env.append((a[0], a[1]))
        case "resolve_root_symlink":
            if d.nextArg() { throw d.argErr() }
            resolveRootSymlink = true
        case "dial_timeout":
            guard d.nextArg() else { throw d.argErr() }
            dialTimeout = try duration()
        case "read_timeout":
            guard d.nextArg() else { throw d.argErr() }
            readTimeout = try duration()
        case "write_timeout":
            guard d.nextArg() else { throw d.argErr() }
            writeTimeout = try duration()
        case "capture_stderr":
            if d.nextArg() { throw d.argErr() }
            captureStderr = true
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
    }
    return fastCGITransportJSON(
        root: root, split: split, env: env, resolveRootSymlink: resolveRootSymlink,
        dialTimeout: dialTimeout, readTimeout: readTimeout, writeTimeout: writeTimeout,
        captureStderr: captureStderr)
}

func fastCGITransportJSON(
    root: String, split: [String], env: [(String, String)], resolveRootSymlink: Bool,
    dialTimeout: Int64, readTimeout: Int64, writeTimeout: Int64, captureStderr: Bool
) -> JSONObject {
    var o = JSONObject()
    o.put("root", root)
    o.put("split_path", split)
    o.put("resolve_root_symlink", resolveRootSymlink)
    var e = JSONObject()
    for (k, v) in env { e[k] = .string(v) }
    o.putMap("env", e.sortedByKey())
    o.putDuration("dial_timeout", dialTimeout)
    o.putDuration("read_timeout", readTimeout)
    o.putDuration("write_timeout", writeTimeout)
    o.put("capture_stderr", captureStderr)
    return o
}

func parsePHPFastCGI(_ h: Helper) throws -> [ConfigValue] {
    guard h.d.next() else { throw h.d.argErr() }
    var root = ""
    var env: [(String, String)] = []
    var resolveRootSymlink = false
    var dialTimeout: Int64 = 0
    var readTimeout: Int64 = 0
    var writeTimeout: Int64 = 0
    var captureStderr = false
    var extensions = [".php"]
    var indexFile = "index.php"
    var tryFiles: [String] = []

    let userMatcherSet = try h.extractMatcherSet()
    let d = h.d.newFromNextSegment()

    // Subdirectives for the transport and the file matchers are taken out; the rest go to reverse_proxy.
    while d.next() {
        while d.nextBlock(0) {
            if d.nesting != 1 { continue }
            func duration() throws -> Int64 {
                do { return try Go.caddyDuration(d.val) } catch { throw d.err("bad timeout value \(d.val): \(error)") }
            }
            switch d.val {
            case "root":
                guard d.nextArg() else { throw d.argErr() }
                root = d.val
                d.deleteN(2)
            case "split":
                extensions = d.remainingArgs()
                d.deleteN(extensions.count + 1)
                if extensions.isEmpty { throw d.argErr() }
            case "env":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                guard a.count == 2 else { throw d.argErr() }
                env.removeAll { $0.0 == a[0] }
                env.append((a[0], a[1]))
            case "index":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                guard a.count == 1 else { throw d.argErr() }
                indexFile = a[0]
            case "try_files":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                if a.isEmpty { throw d.argErr() }
                tryFiles = a
            case "resolve_root_symlink":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                resolveRootSymlink = true
            case "dial_timeout":
                guard d.nextArg() else { throw d.argErr() }
                dialTimeout = try duration()
                d.deleteN(2)
            case "read_timeout":
                guard d.nextArg() else { throw d.argErr() }
                readTimeout = try duration()
                d.deleteN(2)
            case "write_timeout":
                guard d.nextArg() else { throw d.argErr() }
                writeTimeout = try duration()
                d.deleteN(2)
            case "capture_stderr":
                let a = d.remainingArgs()
                d.deleteN(a.count + 1)
                captureStderr = true
            default:
                break
            }
        }
    }
    d.reset()

    var routes: [HTTPRoute] = []
    if indexFile != "off" {
        var dirRedirect: Bool
        let dirIndex = "{http.request.uri.path}/" + indexFile
        var tryPolicy = "first_exist_fallback"
        if tryFiles.isEmpty {
            tryFiles = ["{http.request.uri.path}", dirIndex, indexFile]
            dirRedirect = true
        } else {
            if !(tryFiles.last!.hasSuffix(".php")) { tryPolicy = "" }
            dirRedirect = tryFiles.contains(dirIndex)
        }
        if dirRedirect {
            let matcher: JSONObject = [
                "file": .object(["try_files": .strings([dirIndex])]),
                "not": .array([.object(["path": .strings(["*/"])])]),
            ]
            var redirect = JSONObject()
            redirect["headers"] = .object([
                "Location": .strings(["{http.request.orig_uri.path}/{http.request.orig_uri.prefixed_query}"])
            ])
            redirect["status_code"] = .number(JSONNumber(308))
            routes.append(HTTPRoute(matcherSets: [matcher], handlers: [handlerObject("static_response", redirect)]))
        }
        var file = JSONObject()
        file["try_files"] = .strings(tryFiles)
        file.put("try_policy", tryPolicy)
        file["split_path"] = .strings(extensions)
        routes.append(
            HTTPRoute(
                matcherSets: [["file": .object(file)]],
                handlers: [handlerObject("rewrite", ["uri": "{http.matchers.file.relative}"])]))
    }

    let transport = fastCGITransportJSON(
        root: root, split: extensions, env: env, resolveRootSymlink: resolveRootSymlink,
        dialTimeout: dialTimeout, readTimeout: readTimeout, writeTimeout: writeTimeout,
        captureStderr: captureStderr)
    var rp = ReverseProxyHandler.Document()
    rp.transport = moduleObject(transport, key: "protocol", name: "fastcgi")
    d.next()
    try rp.unmarshal(d, h.registry)
    try rp.finalize(h)
    routes.append(HTTPRoute(matcherSets: [["path": .strings(extensions.map { "*" + $0 })]], handlers: [rp.handler]))

    let sub = HTTPSubroute(routes: routes)
    if let userMatcherSet {
        return [ConfigValue("route", HTTPRoute(matcherSets: [userMatcherSet], handlers: [sub.handler]))]
    }
    return [ConfigValue("route", sub)]
}
