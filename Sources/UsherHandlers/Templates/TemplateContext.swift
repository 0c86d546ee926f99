import Foundation
import Logging
import NIOCore
import NIOHTTP1
import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// One response being rendered: the request, the writer whose headers `.RespHeader` edits, and the bodies
/// `httpInclude` fetched. Caddy's `TemplateContext`.
final class TemplateRun {
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// Caddy's header counting `httpInclude` depth.
    static let recursionHeader = "Caddy-Templates-Include"

    let handler: TemplatesHandler
    let request: Request
    let writer: any ResponseWriter
    /// `httpInclude` results by target, fetched between runs.
    var virtualResponses: [String: Result<String, Failure>] = [:]
    /// The directory files are read from (`file_root` with placeholders replaced, `.` for unknown ones).
    let root: String

    init(handler: TemplatesHandler, request: Request, writer: any ResponseWriter) {
        self.handler = handler
        self.request = request
        self.writer = writer
        let r = request.replacer.replaceAll(handler.fileRoot, empty: ".")
        root = r.isEmpty ? "." : r
    }

    /// How deep `include` and `httpInclude` renders are nested now.
    var depth = 0
    /// Nested renders beyond this fail (a file including itself would otherwise exhaust the stack).
    static let maxDepth = 32

    /// Parses and runs `source` as template `name` with `.Args` = `args`.
    func execute(_ source: String, name: String, args: [TemplateValue]) throws -> String {
        guard depth < Self.maxDepth else {
            throw Failure("templates nested more than \(Self.maxDepth) deep (an include loop?)")
        }
        depth += 1
        defer { depth -= 1 }
        let template = try parse(source, name: name)
        let env = PageEnvironment(run: self, args: args)
        return try template.execute(.object(PageContext(run: self, args: args)), environment: env)
    }

    func parse(_ source: String, name: String) throws -> GoTemplate {
        try handler.parsed.template(name: name, text: source) {
            try GoTemplate(
                name: name, text: source, delimiters: handler.delimiters, functions: Self.functions,
                contextual: Self.contextualFunctions, knownNames: Self.knownNames)
        }
    }

    // MARK: Files, as Go's http.Dir opens them

    /// `name` under the root: cleaned as an absolute path first, so it cannot climb out.
    func path(_ name: String) -> String {
        let clean = cleanPath("/" + name)
        return root == "/" ? clean : (root.hasSuffix("/") ? String(root.dropLast()) : root) + clean
    }

    func readFile(_ name: String) throws -> String {
        let full = path(name)
        // Reading a directory fails (EISDIR) like a missing file; Go's message then names the read.
        guard let data = FileManager.default.contents(atPath: full) else {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), isDirectory.boolValue {
                throw Failure("read \(full): is a directory")
            }
            throw Failure("open \(full): \(Self.errnoText(full))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func errnoText(_ path: String) -> String {
        FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file or directory"
    }

    /// Entry names in the order the directory lists them (Go's `Readdir` does not sort).
    func listFiles(_ name: String) throws -> [String] {
        let full = path(name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) else {
            throw Failure("open \(full): no such file or directory")
        }
        guard isDirectory.boolValue else { throw Failure("\(name) is not a directory") }
        guard let dir = opendir(full) else { throw Failure("open \(full): \(Self.errnoText(full))") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let n = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if n != "." && n != ".." { names.append(n) }
        }
        return names
    }

    // MARK: The function table

    static let functions: [String: TemplateFunction] = {
        var f = SprigFunctions.all
        f["stripHTML"] = { a in
            try SprigFunctions.args(a, 1, "stripHTML")
            return .string(stripHTML(SprigFunctions.str(a[0])))
        }
        f["markdown"] = { a in
            try SprigFunctions.args(a, 1, "markdown")
            return .string(try Markdown.html(SprigFunctions.str(a[0])))
        }
        f["splitFrontMatter"] = { a in
            try SprigFunctions.args(a, 1, "splitFrontMatter")
            let (meta, body) = try FrontMatter.split(SprigFunctions.str(a[0]))
            return .map(["Meta": .map(meta), "Body": .string(body)])
        }
        f["env"] = { a in
            try SprigFunctions.args(a, 1, "env")
            return .string(ProcessInfo.processInfo.environment[SprigFunctions.str(a[0])] ?? "")
        }
        f["pathEscape"] = { a in
            try SprigFunctions.args(a, 1, "pathEscape")
            return .string(URLEscaping.pathSegmentEscape(SprigFunctions.str(a[0])))
        }
        f.merge(SprigDates.all) { a, _ in a }
        f["humanize"] = { a in
            try SprigFunctions.args(a, 2, "humanize")
            return .string(try Humanize.format(SprigFunctions.str(a[0]), SprigFunctions.str(a[1])))
        }
        return f
    }()

    static let contextualFunctions: [String: ContextualTemplateFunction] = {
        var f: [String: ContextualTemplateFunction] = [:]
        @Sendable func page(_ env: TemplateEnvironment) -> PageEnvironment { env as! PageEnvironment }
        f["include"] = { env, a in
            guard let name = a.first else { throw Failure("wrong number of args for include: want at least 1 got 0") }
            let run = page(env).run
            let file = SprigFunctions.str(name)
            return .string(try run.execute(try run.readFile(file), name: file, args: Array(a.dropFirst())))
        }
        f["readFile"] = { env, a in
            try SprigFunctions.args(a, 1, "readFile")
            return .string(try page(env).run.readFile(SprigFunctions.str(a[0])))
        }
        f["import"] = { env, a in
            try SprigFunctions.args(a, 1, "import")
            let run = page(env).run
            let file = SprigFunctions.str(a[0])
            env.define(from: try run.parse(try run.readFile(file), name: file))
            return .string("")
        }
        f["httpInclude"] = { env, a in
            try SprigFunctions.args(a, 1, "httpInclude")
            let run = page(env).run
            let uri = SprigFunctions.str(a[0])
            guard let fetched = run.virtualResponses[uri] else { throw VirtualRequestNeeded(uri: uri) }
            return .string(try run.execute(try fetched.get(), name: uri, args: page(env).args))
        }
        f["listFiles"] = { env, a in
            try SprigFunctions.args(a, 1, "listFiles")
            return .list(try page(env).run.listFiles(SprigFunctions.str(a[0])).map(TemplateValue.string))
        }
        f["fileStat"] = { env, a in
            try SprigFunctions.args(a, 1, "fileStat")
            let full = page(env).run.path(SprigFunctions.str(a[0]))
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: full) else {
                throw Failure("open \(full): no such file or directory")
            }
            return .object(FileInfoObject(path: full, attributes: attributes))
        }
        f["fileExists"] = { env, a in
            try SprigFunctions.args(a, 1, "fileExists")
            return .bool(FileManager.default.isReadableFile(atPath: page(env).run.path(SprigFunctions.str(a[0]))))
        }
        let placeholder: ContextualTemplateFunction = { env, a in
            try SprigFunctions.args(a, 1, "placeholder")
            let name = SprigFunctions.str(a[0])
            // As Caddy: file placeholders would read any file, so templates do not get them.
            if name.hasPrefix("file.") { return .string("") }
            return .string(page(env).run.request.replacer.get(name) ?? "")
        }
        f["placeholder"] = placeholder
        f["ph"] = placeholder
        f["httpError"] = { env, a in
            try SprigFunctions.args(a, 1, "httpError")
            let w = page(env).run.writer
            for h in ["Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges"] {
                w.headers.remove(name: h)
            }
            throw HandlerError(status: SprigFunctions.int(a[0]), trace: TemplatesHandler.moduleID.rawValue)
        }
        f["maybe"] = { env, a in
            let name = a.first.map(SprigFunctions.str) ?? ""
            page(env).run.handler.logMissingFunction(name)
            return .string("")
        }
        return f
    }()

    static let knownNames: Set<String> = GoTemplate.builtinNames.union(functions.keys).union(contextualFunctions.keys)

    /// Caddy's `stripHTML`: drops tags (quoted attribute values may hold `>`), keeps a stray `>`.
    static func stripHTML(_ s: String) -> String {
        var out = ""
        var depth = 0
        var quote: Unicode.Scalar?
        for ch in s.unicodeScalars {
            if depth > 0 && quote == nil && (ch == "\"" || ch == "'") {
                quote = ch
            } else if depth > 0 && ch == quote {
                quote = nil
            } else if ch == "<" && quote == nil {
                depth += 1
            } else if ch == ">" && quote == nil {
                if depth > 0 { depth -= 1 } else { out.unicodeScalars.append(ch) }
            } else if depth == 0 {
                out.unicodeScalars.append(ch)
            }
        }
        return out
    }
}

extension TemplatesHandler {
    func logMissingFunction(_ name: String) {
        logger.warning(
            "template function could not be found; ignoring invocation", metadata: ["name": "\(name)"])
    }
}

/// A run's environment: the run and the `.Args` of the template being executed.
final class PageEnvironment: TemplateEnvironment {
    let run: TemplateRun
    let args: [TemplateValue]
    init(run: TemplateRun, args: [TemplateValue]) {
        self.run = run
        self.args = args
    }
}

/// `.` in a page: `.Req`, `.OriginalReq`, `.Host`, `.Cookie`, `.RemoteIP`, `.ClientIP`, `.RespHeader`, `.Args`.
final class PageContext: TemplateObject {
    var goTypeName: String { "*templates.TemplateContext" }
    let run: TemplateRun
    let args: [TemplateValue]
    init(run: TemplateRun, args: [TemplateValue]) {
        self.run = run
        self.args = args
    }

    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let r = run.request
        switch name {
        case "Req": return .object(RequestObject(run.request, original: false))
        case "OriginalReq": return .object(RequestObject(run.request, original: true))
        case "Args": return .list(self.args)
        case "Host":
            if r.host.hasPrefix("[") || r.host.filter({ $0 == ":" }).count == 1 { return .string(r.hostWithoutPort) }
            if r.host.contains(":") { throw TemplateRun.Failure("address \(r.host): too many colons in address") }
            return .string(r.host)
        case "Cookie":
            guard let n = args.first.map(SprigFunctions.str) else { return .string("") }
            return .string(Self.cookie(n, in: r.headers) ?? "")
        case "RemoteIP": return .string(r.remoteHost)
        case "ClientIP": return .string(r.clientIP)
        case "RespHeader": return .object(ResponseHeaderObject(writer: run.writer))
        default: return nil
        }
    }

    /// The first cookie called `name`, parsed as `{http.request.cookie.*}` parses them.
    static func cookie(_ name: String, in headers: HTTPHeaders) -> String? {
        parseCookies(headers[canonicalForm: "Cookie"].map(String.init)).first { $0.0 == name }?.1
    }

}

/// `.Req`: Go's `*http.Request` as templates use it.
final class RequestObject: TemplateObject {
    var goTypeName: String { "*http.Request" }
    let request: Request
    let original: Bool
    init(_ request: Request, original: Bool) {
        self.request = request
        self.original = original
    }

    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let r = request
        switch name {
        case "Method": return .string(original ? r.original.method.rawValue : r.method.rawValue)
        case "Host": return .string(r.host)
        case "RemoteAddr":
            guard let a = r.remoteAddress, let port = a.port else { return .string("") }
            let ip = r.remoteHost
            return .string(ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)")
        case "Proto": return .string(r.protocolString)
        case "ProtoMajor": return .int(r.version.major)
        case "ProtoMinor": return .int(r.version.minor)
        case "RequestURI": return .string(r.original.uri)
        case "URL":
            return .object(
                URLObject(
                    path: original ? r.original.path : r.path,
                    rawQuery: original ? r.original.rawQuery : r.rawQuery,
                    escapedPath: original
                        ? (r.original.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "")
                        : r.escapedPath))
        case "Header": return .object(RequestHeaderObject(headers: r.headers))
        case "Cookie":
            guard let n = args.first.map(SprigFunctions.str), let v = PageContext.cookie(n, in: r.headers) else {
                throw TemplateRun.Failure("http: named cookie not present")
            }
            return .map(["Name": .string(args.first.map(SprigFunctions.str) ?? ""), "Value": .string(v)])
        case "UserAgent": return .string(r.headers.first(name: "User-Agent") ?? "")
        case "Referer": return .string(r.headers.first(name: "Referer") ?? "")
        case "ContentLength": return .int(Int(r.headers.first(name: "Content-Length") ?? "") ?? 0)
        default: return nil
        }
    }
}

/// `.Req.URL`: Go's `*url.URL` as a server sees it (no scheme or host).
final class URLObject: TemplateObject {
    var goTypeName: String { "*url.URL" }
    let path: String
    let rawQuery: String
    let escapedPath: String
    init(path: String, rawQuery: String, escapedPath: String) {
        self.path = path
        self.rawQuery = rawQuery
        self.escapedPath = escapedPath
    }

    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        switch name {
        case "Path": return .string(path)
        case "RawQuery": return .string(rawQuery)
        case "RawPath": return .string(escapedPath == URLEscaping.escapePath(path) ? "" : escapedPath)
        case "EscapedPath": return .string(escapedPath)
        case "Scheme", "Host", "Fragment", "Opaque", "RawFragment": return .string("")
        case "String", "RequestURI": return .string(escapedPath + (rawQuery.isEmpty ? "" : "?" + rawQuery))
        case "Query":
            var m: [String: [TemplateValue]] = [:]
            for (k, v) in URLEscaping.parseQuery(rawQuery) { m[k, default: []].append(.string(v)) }
            return .object(ValuesObject(values: m.mapValues { $0 }))
        default: return nil
        }
    }
}

/// `url.Values` and `http.Header` alike: `.Get name`, `.Has name`, `.Values name`.
final class ValuesObject: TemplateObject {
    var goTypeName: String { "url.Values" }
    let values: [String: [TemplateValue]]
    init(values: [String: [TemplateValue]]) { self.values = values }
    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let key = args.first.map(SprigFunctions.str) ?? ""
        switch name {
        case "Get": return values[key]?.first ?? .string("")
        case "Has": return .bool(values[key] != nil)
        case "Values": return .list(values[key] ?? [])
        case "Encode":
            return .string(
                values.keys.sorted().flatMap { k in
                    values[k]!.map {
                        URLEscaping.queryEscape(k) + "=" + URLEscaping.queryEscape(SprigFunctions.str($0))
                    }
                }.joined(separator: "&"))
        default: return nil
        }
    }
}

/// `.Req.Header`: `.Get "Name"` (case-insensitive) and `.Values`.
final class RequestHeaderObject: TemplateObject {
    var goTypeName: String { "http.Header" }
    let headers: HTTPHeaders
    init(headers: HTTPHeaders) { self.headers = headers }
    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let key = args.first.map(SprigFunctions.str) ?? ""
        switch name {
        case "Get": return .string(headers.first(name: key) ?? "")
        case "Values": return .list(headers[key].map(TemplateValue.string))
        default: return nil
        }
    }
}

/// `.RespHeader`: `.Add`, `.Set`, `.Del` on the response's headers, each printing nothing.
final class ResponseHeaderObject: TemplateObject {
    var goTypeName: String { "templates.WrappedHeader" }
    let writer: any ResponseWriter
    init(writer: any ResponseWriter) { self.writer = writer }
    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let field = args.first.map(SprigFunctions.str) ?? ""
        let value = args.count > 1 ? SprigFunctions.str(args[1]) : ""
        switch name {
        case "Add": writer.headers.add(name: canonicalHeaderName(field), value: value)
        case "Set": writer.headers.replaceOrAdd(name: canonicalHeaderName(field), value: value)
        case "Del": writer.headers.remove(name: field)
        case "Get": return .string(writer.headers.first(name: field) ?? "")
        default: return nil
        }
        return .string("")
    }
}

/// `fileStat`'s result: Go's `fs.FileInfo`.
final class FileInfoObject: TemplateObject {
    var goTypeName: String { "*os.fileStat" }
    let path: String
    let attributes: [FileAttributeKey: Any]
    init(path: String, attributes: [FileAttributeKey: Any]) {
        self.path = path
        self.attributes = attributes
    }

    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        switch name {
        case "Name": return .string(path == "/" ? "/" : String(path.split(separator: "/").last ?? ""))
        case "Size": return .int((attributes[.size] as? NSNumber)?.intValue ?? 0)
        case "IsDir": return .bool((attributes[.type] as? FileAttributeType) == .typeDirectory)
        case "ModTime":
            let d = (attributes[.modificationDate] as? Date) ?? Date(timeIntervalSince1970: 0)
            return .object(TimeObject(date: d, zone: .current))
        default: return nil
        }
    }
}

/// A time in a zone (Go's `time.Time`): `.Unix`, `.Format` with Go's reference layout, `.Year`, `.Month`,
/// `.Day`, `.Hour`, `.Minute`, `.Second`, `.UTC`, `.Local`, and `.String` as it prints.
final class TimeObject: TemplateObject, Sendable {
    var goTypeName: String { "time.Time" }
    let date: Date
    let zone: TimeZone
    init(date: Date, zone: TimeZone = TimeZone(identifier: "UTC")!) {
        self.date = date
        self.zone = zone
    }

    func member(_ name: String, _ args: [TemplateValue]) throws -> TemplateValue? {
        let t = CivilTime(date, zone: zone)
        switch name {
        case "Unix": return .int(Int(date.timeIntervalSince1970.rounded(.down)))
        case "Format":
            return .string(GoTime.format(date, layout: args.first.map(SprigFunctions.str) ?? "", zone: zone))
        case "String": return .string(GoTime.string(date, zone: zone))
        case "Year": return .int(t.year)
        case "Month": return .string(GoTime.months[t.month - 1])
        case "Day": return .int(t.day)
        case "Hour": return .int(t.hour)
        case "Minute": return .int(t.minute)
        case "Second": return .int(t.second)
        case "YearDay": return .int(t.yearDay)
        case "UTC": return .object(TimeObject(date: date, zone: TimeZone(identifier: "UTC")!))
        case "Local": return .object(TimeObject(date: date, zone: .current))
        default: return nil
        }
    }
}
