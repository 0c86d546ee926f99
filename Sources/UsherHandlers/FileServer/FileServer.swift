import Foundation
import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// Sidecar files of precompressed content (`http.precompressed.*`, keyed by encoding name).
public protocol Precompressor: Module {
    /// The file name suffix, e.g. `.gz`.
    var suffix: String { get }
}

public enum Precompressors: ModuleNamespace {
    public static let prefix = "http.precompressed"
    public static let inlineKey: String? = nil
    public typealias Instance = any Precompressor
}

/// `http.precompressed.gzip`: `.gz` sidecars.
public struct PrecompressedGzip: Precompressor {
    public static let moduleID: ModuleID = "http.precompressed.gzip"
    public var suffix: String { ".gz" }
    public init(from decoder: any Decoder) throws {}
}

/// `http.precompressed.zstd`: `.zst` sidecars.
public struct PrecompressedZstd: Precompressor {
    public static let moduleID: ModuleID = "http.precompressed.zstd"
    public var suffix: String { ".zst" }
    public init(from decoder: any Decoder) throws {}
}

/// `http.precompressed.br`: `.br` sidecars.
public struct PrecompressedBrotli: Precompressor {
    public static let moduleID: ModuleID = "http.precompressed.br"
    public var suffix: String { ".br" }
    public init(from decoder: any Decoder) throws {}
}

/// `browse` of `file_server`.
public struct BrowseConfig: Decodable, Sendable {
    /// `reveal_symlinks`: show symlink targets. Default: false.
    public var revealSymlinks: Bool
    /// `sort`: default sort field (`name`, `namedirfirst`, `size`, `time`) and order (`asc`, `desc`).
    public var sort: [String]
    /// `file_limit`: most entries listed. Default: 10000.
    public var fileLimit: Int

    enum CodingKeys: String, CodingKey {
        case templateFile = "template_file", revealSymlinks = "reveal_symlinks", sort, fileLimit = "file_limit"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.templateFile], note: "browse templates need the templates module")
        revealSymlinks = try c.decodeIfPresent(Bool.self, forKey: .revealSymlinks) ?? false
        sort = try c.decodeIfPresent([String].self, forKey: .sort) ?? []
        for (i, s) in sort.enumerated() where !["name", "namedirfirst", "size", "time", "asc", "desc"].contains(s) {
            throw ConfigError(path: c.error(.sort, "").path + "[\(i)]", "unknown sort option '\(s)'")
        }
        fileLimit = try c.decodeIfPresent(Int.self, forKey: .fileLimit) ?? 0
        if fileLimit <= 0 { fileLimit = 10000 }
    }
}

/// `http.handlers.file_server`: serves files from a root directory, with index files, directory listings,
/// precompressed sidecars, validators, conditional and range requests.
public struct FileServerHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.file_server"

    /// `root`: the site root (placeholders allowed). Default: `{http.vars.root}`, else the current directory.
    public var root: String
    /// `hide`: names, paths or globs never served.
    public var hide: [String]
    /// `index_names`: files served for a directory. Default: `index.html`, `index.txt`.
    public var indexNames: [String]
    /// `browse`: list directories without an index file.
    public var browse: BrowseConfig?
    /// `canonical_uris`: redirect directories to a trailing slash and files away from one. Default: true.
    public var canonicalURIs: Bool
    /// `status_code`: the status to respond with instead of 200.
    public var statusCode: WeakString?
    /// `pass_thru`: call the next handler when no file is found, instead of 404.
    public var passThru: Bool
    /// `precompressed`: sidecar encodings by name (`gzip`, `zstd`, `br`).
    public var precompressed: LoadedMap<Precompressors>?
    /// `precompressed_order`: which sidecar wins when the client accepts several equally.
    public var precompressedOrder: [String]
    /// `etag_file_extensions`: suffixes of files holding a file's ETag.
    public var etagFileExtensions: [String]

    private var precompressors: [String: String] = [:]
    /// The root, absolute, when it has no placeholders.
    private var staticRoot: String?
    /// Root directories held open, by path.
    /// `fs`: the name of the file system to serve from (placeholders allowed); default `{http.vars.fs}`, which
    /// names the local one. Only `default` (or empty) exists in this build: no `caddy.fs.*` backends.
    public var fileSystem: String
    private let roots = RootDirectoryCache()
    /// Small files held in memory, checked against the file system on every use.
    private let smallFiles = SmallFileCache()
    /// The hide list, absolute, when it has no placeholders.
    private var staticHide: [HidePattern]?

    enum CodingKeys: String, CodingKey {
        case root, hide, indexNames = "index_names", browse, canonicalURIs = "canonical_uris"
        case statusCode = "status_code", passThru = "pass_thru", precompressed
        case precompressedOrder = "precompressed_order", etagFileExtensions = "etag_file_extensions", fs
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fileSystem = try c.decodeIfPresent(String.self, forKey: .fs) ?? ""
        if fileSystem.isEmpty { fileSystem = "{http.vars.fs}" }
        root = try c.decodeIfPresent(String.self, forKey: .root) ?? "{http.vars.root}"
        hide = try c.decodeIfPresent([String].self, forKey: .hide) ?? []
        indexNames = try c.decodeIfPresent([String].self, forKey: .indexNames) ?? ["index.html", "index.txt"]
        browse = try c.decodeIfPresent(BrowseConfig.self, forKey: .browse)
        canonicalURIs = try c.decodeIfPresent(Bool.self, forKey: .canonicalURIs) ?? true
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
        passThru = try c.decodeIfPresent(Bool.self, forKey: .passThru) ?? false
        precompressed = try c.decodeIfPresent(LoadedMap<Precompressors>.self, forKey: .precompressed)
        precompressedOrder = try c.decodeIfPresent([String].self, forKey: .precompressedOrder) ?? []
        etagFileExtensions = try c.decodeIfPresent([String].self, forKey: .etagFileExtensions) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await precompressed?.provision(context)
        for entry in precompressed?.entries ?? [] { precompressors[entry.moduleID.name] = entry.module.suffix }
        if precompressedOrder.isEmpty {
            precompressedOrder =
                ["br", "zstd", "gzip"].filter { precompressors[$0] != nil }
                + precompressors.keys.sorted().filter { !["br", "zstd", "gzip"].contains($0) }
        }
        if !Replacer.mayContainPlaceholders(root) { staticRoot = absolutePath(root) }
        if !hide.contains(where: Replacer.mayContainPlaceholders) { staticHide = hide.map(HidePattern.init) }
    }

    /// A `hide` entry as Caddy compares it: a bare name matches any path component; a path (made absolute)
    /// matches itself and everything under it; either may be a glob.
    struct HidePattern: Sendable {
        let text: String
        let isPath: Bool

        init(_ raw: String) {
            isPath = raw.utf8.contains(UInt8(ascii: "/"))
            text = isPath ? absolutePath(raw) : raw
        }
    }

    static func isHidden(_ filename: String, _ hide: [HidePattern]) -> Bool {
        guard !hide.isEmpty else { return false }
        let abs = filename.hasPrefix("/") ? filename : absolutePath(filename)
        var components: [Substring]?
        for h in hide {
            if !h.isPath {
                if components == nil { components = abs.split(separator: "/") }
                if components!.contains(where: { globMatch(h.text, String($0)) }) { return true }
            } else if abs.hasPrefix(h.text), abs.utf8.dropFirst(h.text.utf8.count).first == UInt8(ascii: "/") {
                return true
            }
            if globMatch(h.text, abs) { return true }
        }
        return false
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let requestPath = request.path
        if requestPath.utf8.contains(0) { throw HandlerError(status: 400, HTTPErrorMessage("invalid path")) }
        if fileSystem != "{http.vars.fs}" || request.vars["fs"] != nil {
            guard FileSystemsApp.isLocal(request.replacer.replaceAll(fileSystem)) else {
                throw HandlerError(status: 404, HTTPErrorMessage("filesystem not found"))
            }
        }
        let hide = staticHide ?? self.hide.map { HidePattern(request.replacer.replaceAll($0)) }
        let rootPath = staticRoot ?? absolutePath(request.replacer.replaceAll(root, empty: "."))
        guard var directory = roots.get(rootPath) else { return try await notFound(request, writer, next) }

        // Everything below opens relative to the root and cannot resolve outside it (`..`, symlinks out).
        var relative = String(cleanPath("/" + requestPath).dropFirst())
        var filename = relative.isEmpty ? rootPath : (rootPath == "/" ? "/" : rootPath + "/") + relative
        var opened = smallFiles.open(directory, relative)
        if case .failure(.notFound) = opened, let fresh = roots.recheck(directory) {
            // The root was replaced since it was opened: look again in the new one.
            directory = fresh
            opened = smallFiles.open(directory, relative)
        }
        var file: OpenFile
        switch opened {
        case .success(let f): file = f
        case .failure(let e): return try await openFailed(e, request, writer, next)
        }
        defer { file.close() }

        var implicitIndex = false
        if file.status.isDirectory && !indexNames.isEmpty {
            for name in indexNames {
                let index = Replacer.mayContainPlaceholders(name) ? request.replacer.replaceAll(name) : name
                let indexRelative = relative.isEmpty ? index : relative + "/" + index
                let indexPath = sanitizedPathJoin(filename, index)
                if Self.isHidden(indexPath, hide) { continue }
                guard case .success(let f) = smallFiles.open(directory, indexRelative) else { continue }
                file.close()
                file = f
                filename = indexPath
                relative = indexRelative
                implicitIndex = true
                break
            }
        }

        if file.status.isDirectory {
            if let browse, !Self.isHidden(filename, hide) {
                return try await serveBrowse(browse, dir: filename, hide: hide, request, writer)
            }
            return try await notFound(request, writer, next)
        }
        if Self.isHidden(filename, hide) { return try await notFound(request, writer, next) }

        if canonicalURIs {
            let origPath = request.original.path
            if lastElement(origPath) == lastElement(requestPath) {
                if implicitIndex && !origPath.hasSuffix("/") {
                    return try await redirect(request, writer, to: origPath + "/")
                } else if !implicitIndex && origPath.hasSuffix("/") {
                    return try await redirect(request, writer, to: String(origPath.dropLast()))
                }
            }
        }

        var etag = writer.headers.first(name: "ETag")
        writer.headers.add(name: "Vary", value: "Accept-Encoding")
        var servePath = filename
        if !precompressors.isEmpty {
            for encoding in acceptedEncodings(request, preferredOrder: precompressedOrder) {
                guard let suffix = precompressors[encoding] else { continue }
                guard case .success(let sidecar) = smallFiles.open(directory, relative + suffix) else { continue }
                if sidecar.status.isDirectory {
                    sidecar.close()
                    continue
                }
                file.close()
                file = sidecar
                servePath = filename + suffix
                writer.headers.replaceOrAdd(name: "Content-Encoding", value: encoding)
                break
            }
        }
        if etag == nil || etag!.isEmpty {
            etag = etagFromFile(servePath) ?? file.status.etag
        }
        if request.method != .GET && request.method != .HEAD && request.handlerError == nil {
            writer.headers.add(name: "Allow", value: "GET, HEAD")
            throw HandlerError(status: 405, HTTPErrorMessage("method not allowed"))
        }
        if let etag, !etag.isEmpty { writer.headers.replaceOrAdd(name: "ETag", value: etag) }
        if !writer.headers.contains(name: "Content-Type") {
            // Unknown types go out without a Content-Type (and are not sniffed), as in Caddy.
            writer.headers.add(name: "Content-Type", value: MIMETypes.forExtension(of: filename) ?? "")
        }

        var override: Int?
        if let he = request.handlerError { override = he.status }
        if let code = statusCode?.value {
            let text = Replacer.mayContainPlaceholders(code) ? request.replacer.replaceAll(code) : code
            guard let n = Int(text) else {
                throw HandlerError(status: 500, HTTPErrorMessage("invalid status code \"\(text)\""))
            }
            override = n
        }
        try await ServeContent(request: request, writer: writer, file: file, statusOverride: override).run()
    }

    private func openFailed(
        _ e: FileOpenError, _ request: Request, _ writer: any ResponseWriter, _ next: any HTTPHandler
    ) async throws {
        switch e {
        case .notFound, .outsideRoot: return try await notFound(request, writer, next)
        case .permission: throw HandlerError(status: 403, HTTPErrorMessage("permission denied"))
        case .invalid: throw HandlerError(status: 400, HTTPErrorMessage("invalid path"))
        case .other(let code): throw HandlerError(status: 500, HTTPErrorMessage(String(cString: strerror(code))))
        }
    }

    private func lastElement(_ p: String) -> Substring {
        let trimmed = p.hasSuffix("/") ? p.dropLast() : Substring(p)
        return trimmed.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
    }

    private func etagFromFile(_ path: String) -> String? {
        for ext in etagFileExtensions {
            if let text = try? String(contentsOfFile: path + ext, encoding: .utf8) {
                return text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        return nil
    }

    private func notFound(_ request: Request, _ writer: any ResponseWriter, _ next: any HTTPHandler) async throws {
        if passThru { return try await next.serve(request, writer) }
        throw HandlerError(status: 404, HTTPErrorMessage("not found"))
    }

    private func redirect(_ request: Request, _ writer: any ResponseWriter, to path: String) async throws {
        var to = path
        // No protocol-relative redirects (an open redirect to another host).
        while to.hasPrefix("//") { to.removeFirst() }
        to = URLEscaping.escapePath(to)
        if !request.rawQuery.isEmpty { to += "?" + request.rawQuery }
        writer.headers.replaceOrAdd(name: "Location", value: to)
        if request.method == .GET || request.method == .HEAD {
            writer.headers.replaceOrAdd(name: "Content-Type", value: "text/html; charset=utf-8")
            try await writer.writeHead(.permanentRedirect)
            if request.method == .GET {
                try await writer.write("<a href=\"\(htmlEscape(to))\">Permanent Redirect</a>.\n\n")
            }
        } else {
            try await writer.writeHead(.permanentRedirect)
        }
    }
}

/// Go's `http.ServeContent` for an open file: validators, preconditions, ranges (one or many), HEAD.
struct ServeContent {
    let request: Request
    let writer: any ResponseWriter
    let file: OpenFile
    let statusOverride: Int?

    var info: FileStatus { file.status }

    enum Condition { case none, yes, no }

    func run() async throws {
        let modTime: Int? = info.usefulModTime ? info.modSeconds : nil
        if let modTime {
            writer.headers.replaceOrAdd(
                name: "Last-Modified", value: GoTimeLayout.httpDate(WallTime(seconds: modTime, nanoseconds: 0)))
        }
        var ch = checkIfMatch()
        if ch == .none { ch = checkIfUnmodifiedSince(modTime) }
        if ch == .no { return try await writeStatus(.preconditionFailed) }
        switch checkIfNoneMatch() {
        case .no:
            if request.method == .GET || request.method == .HEAD { return try await writeNotModified() }
            return try await writeStatus(.preconditionFailed)
        case .none:
            if checkIfModifiedSince(modTime) == .no { return try await writeNotModified() }
        case .yes:
            break
        }
        var rangeHeader = request.headers.first(name: "Range") ?? ""
        if !rangeHeader.isEmpty && checkIfRange(modTime) == .no { rangeHeader = "" }

        let size = info.size
        let contentType = writer.headers.first(name: "Content-Type") ?? ""
        var ranges: [(start: Int, length: Int)]
        switch parseRanges(rangeHeader, size: size) {
        case .failure(let e):
            if case .noOverlap = e { writer.headers.replaceOrAdd(name: "Content-Range", value: "bytes */\(size)") }
            return try await serveError(
                e == .noOverlap ? "invalid range: failed to overlap" : "invalid range", .rangeNotSatisfiable)
        case .success(let r):
            ranges = r
        }
        // Ranges that add up to more than the file are a way to make the server do much work; serve it all.
        if ranges.reduce(0, { $0 + $1.length }) > size { ranges = [] }

        var status: HTTPResponseStatus = .ok
        var sendRange = (start: 0, length: size)
        var multipart: (boundary: String, parts: [(header: String, start: Int, length: Int)], closing: String)?
        if ranges.count == 1 {
            sendRange = ranges[0]
            status = .partialContent
            writer.headers.replaceOrAdd(
                name: "Content-Range",
                value: "bytes \(ranges[0].start)-\(ranges[0].start + ranges[0].length - 1)/\(size)")
        } else if ranges.count > 1 {
            status = .partialContent
            let boundary = (0..<30).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            var parts: [(String, Int, Int)] = []
            var total = 0
            for (i, r) in ranges.enumerated() {
                var h = (i == 0 ? "" : "\r\n") + "--\(boundary)\r\n"
                h += "Content-Range: bytes \(r.start)-\(r.start + r.length - 1)/\(size)\r\n"
                if !contentType.isEmpty { h += "Content-Type: \(contentType)\r\n" }
                h += "\r\n"
                parts.append((h, r.start, r.length))
                total += h.utf8.count + r.length
            }
            let closing = "\r\n--\(boundary)--\r\n"
            total += closing.utf8.count
            multipart = (boundary, parts, closing)
            writer.headers.replaceOrAdd(name: "Content-Type", value: "multipart/byteranges; boundary=\(boundary)")
            sendRange = (0, total)
        }
        writer.headers.replaceOrAdd(name: "Accept-Ranges", value: "bytes")
        if !writer.headers.contains(name: "Content-Encoding") || writer.headers.first(name: "Content-Encoding") == "" {
            writer.headers.replaceOrAdd(name: "Content-Length", value: String(sendRange.length))
        } else if ranges.isEmpty {
            writer.headers.replaceOrAdd(name: "Content-Length", value: String(size))
        }
        try await writer.writeHead(overridden(status))
        guard request.method != .HEAD else { return }
        if let multipart {
            for part in multipart.parts {
                try await writer.write(part.header)
                try await copyFile(start: part.start, length: part.length)
            }
            try await writer.write(multipart.closing)
        } else {
            try await copyFile(start: sendRange.start, length: sendRange.length)
        }
    }

    private func overridden(_ status: HTTPResponseStatus) -> HTTPResponseStatus {
        statusOverride.map { HTTPResponseStatus(statusCode: $0) } ?? status
    }

    /// Bytes of the file to the writer: with sendfile where the writer allows it, else read in chunks.
    private func copyFile(start: Int, length: Int) async throws {
        guard length > 0 else { return }
        if let content = file.content {
            try await writer.write(content.getSlice(at: content.readerIndex + start, length: length)!)
            return
        }
        let fd = file.fd
        if length >= 64 * 1024, let direct = writer as? any FileBodyWriting,
            try await direct.writeFileRegion(descriptor: fd, offset: start, length: length)
        {
            return
        }
        let chunk = 128 * 1024
        var offset = start
        var remaining = length
        var buffer = ByteBufferAllocator().buffer(capacity: min(chunk, remaining))
        while remaining > 0 {
            buffer.clear()
            let want = min(chunk, remaining)
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { ptr in
                pread(fd, ptr.baseAddress, want, off_t(offset))
            }
            if n <= 0 { throw HandlerError(status: 500, HTTPErrorMessage("reading file: unexpected end")) }
            offset += n
            remaining -= n
            try await writer.write(buffer)
        }
    }

    private func writeStatus(_ status: HTTPResponseStatus) async throws {
        try await writer.writeHead(overridden(status))
    }

    private func writeNotModified() async throws {
        writer.headers.remove(name: "Content-Type")
        writer.headers.remove(name: "Content-Length")
        writer.headers.remove(name: "Content-Encoding")
        if writer.headers.contains(name: "ETag") { writer.headers.remove(name: "Last-Modified") }
        try await writer.writeHead(overridden(.notModified))
    }

    private func serveError(_ text: String, _ status: HTTPResponseStatus) async throws {
        writer.headers.remove(name: "ETag")
        writer.headers.remove(name: "Last-Modified")
        writer.headers.remove(name: "Content-Encoding")
        writer.headers.remove(name: "Content-Length")
        writer.headers.replaceOrAdd(name: "Content-Type", value: "text/plain; charset=utf-8")
        writer.headers.replaceOrAdd(name: "X-Content-Type-Options", value: "nosniff")
        try await writer.writeHead(status)
        try await writer.write(text + "\n")
    }

    // MARK: Preconditions (RFC 9110 section 13, in Go's order)

    private var etag: String? { writer.headers.first(name: "ETag") }

    private func checkIfMatch() -> Condition {
        guard let im = request.headers.first(name: "If-Match"), !im.isEmpty else { return .none }
        for tag in etagList(im) {
            if tag == "*" { return .yes }
            if let etag, strongMatch(tag, etag) { return .yes }
        }
        return .no
    }

    private func checkIfUnmodifiedSince(_ modTime: Int?) -> Condition {
        guard let ius = request.headers.first(name: "If-Unmodified-Since"), !ius.isEmpty, let modTime,
            let t = parseHTTPDate(ius)
        else { return .none }
        return modTime <= t ? .yes : .no
    }

    private func checkIfNoneMatch() -> Condition {
        guard let inm = request.headers.first(name: "If-None-Match"), !inm.isEmpty else { return .none }
        for tag in etagList(inm) {
            if tag == "*" { return .no }
            if let etag, weakMatch(tag, etag) { return .no }
        }
        return .yes
    }

    private func checkIfModifiedSince(_ modTime: Int?) -> Condition {
        guard request.method == .GET || request.method == .HEAD else { return .none }
        guard let ims = request.headers.first(name: "If-Modified-Since"), !ims.isEmpty, let modTime,
            let t = parseHTTPDate(ims)
        else { return .none }
        return modTime <= t ? .no : .yes
    }

    private func checkIfRange(_ modTime: Int?) -> Condition {
        guard request.method == .GET || request.method == .HEAD else { return .none }
        guard let ir = request.headers.first(name: "If-Range"), !ir.isEmpty else { return .none }
        if ir.hasPrefix("\"") || ir.hasPrefix("W/") {
            if let etag, strongMatch(ir, etag) { return .yes }
            return .no
        }
        guard let modTime, let t = parseHTTPDate(ir) else { return .no }
        return t == modTime ? .yes : .no
    }

    private func etagList(_ header: String) -> [String] {
        header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    private func strongMatch(_ a: String, _ b: String) -> Bool {
        !a.hasPrefix("W/") && !b.hasPrefix("W/") && a == b
    }

    private func weakMatch(_ a: String, _ b: String) -> Bool {
        func strip(_ s: String) -> String { s.hasPrefix("W/") ? String(s.dropFirst(2)) : s }
        return strip(a) == strip(b)
    }

    enum RangeError: Error, Equatable { case invalid, noOverlap }

    /// Go's `parseRange`.
    func parseRanges(_ s: String, size: Int) -> Result<[(start: Int, length: Int)], RangeError> {
        guard !s.isEmpty else { return .success([]) }
        guard s.hasPrefix("bytes=") else { return .failure(.invalid) }
        var out: [(Int, Int)] = []
        var noOverlap = false
        for raw in s.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false) {
            let ra = raw.trimmingCharacters(in: .whitespaces)
            if ra.isEmpty { continue }
            guard let dash = ra.firstIndex(of: "-") else { return .failure(.invalid) }
            let startText = ra[..<dash].trimmingCharacters(in: .whitespaces)
            let endText = ra[ra.index(after: dash)...].trimmingCharacters(in: .whitespaces)
            if startText.isEmpty {
                guard !endText.isEmpty, !endText.hasPrefix("-"), var n = Int(endText), n >= 0 else {
                    return .failure(.invalid)
                }
                if n > size { n = size }
                out.append((size - n, n))
            } else {
                guard let start = Int(startText), start >= 0 else { return .failure(.invalid) }
                if start >= size {
                    noOverlap = true
                    continue
                }
                if endText.isEmpty {
                    out.append((start, size - start))
                } else {
                    guard var end = Int(endText), start <= end else { return .failure(.invalid) }
                    if end >= size { end = size - 1 }
                    out.append((start, end - start + 1))
                }
            }
        }
        if noOverlap && out.isEmpty { return .failure(.noOverlap) }
        return .success(out)
    }
}

func htmlEscape(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&#34;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}
