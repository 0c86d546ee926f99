import Foundation
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// What `stat(2)` says about a path.
struct FileStatus {
    var isDirectory: Bool
    var isSymlink: Bool
    var size: Int
    var modSeconds: Int
    var modNanoseconds: Int
    var mode: UInt32

    enum Failure: Error {
        case notFound, permission, invalid, other(Int32)
    }

    /// Follows symlinks (the target's status); `isSymlink` says whether the path itself is one.
    static func of(_ path: String) -> Result<FileStatus, Failure> {
        if path.utf8.contains(0) { return .failure(.invalid) }
        var st = stat()
        guard stat(path, &st) == 0 else {
            switch errno {
            case ENOENT, ENOTDIR: return .failure(.notFound)
            case EACCES, EPERM: return .failure(.permission)
            case ENAMETOOLONG, EINVAL: return .failure(.invalid)
            default: return .failure(.other(errno))
            }
        }
        var lst = stat()
        let link = lstat(path, &lst) == 0 && (lst.st_mode & S_IFMT) == S_IFLNK
        return .success(FileStatus(
            isDirectory: (st.st_mode & S_IFMT) == S_IFDIR, isSymlink: link, size: Int(st.st_size),
            modSeconds: Int(st.st_mtim.tv_sec), modNanoseconds: Int(st.st_mtim.tv_nsec), mode: UInt32(st.st_mode)
        ))
    }

    /// A modification time worth sending: not the zero time or the Unix epoch (Go's `usefulModTime`).
    var usefulModTime: Bool { modSeconds > 0 || modNanoseconds > 0 }

    /// Caddy's ETag: modification time in nanoseconds and size, both base 36.
    var etag: String? {
        guard usefulModTime else { return nil }
        let nanos = modSeconds * 1_000_000_000 + modNanoseconds
        return "\"" + String(nanos, radix: 36) + "-" + String(size, radix: 36) + "\""
    }
}

/// Joins a request path onto a root so the result never leaves the root (Caddy's `SanitizedPathJoin`).
func sanitizedPathJoin(_ root: String, _ requestPath: String) -> String {
    let root = root.isEmpty ? "." : root
    let cleaned = cleanPath("/" + requestPath)
    var joined = root.hasSuffix("/") ? String(root.dropLast()) + cleaned : root + cleaned
    if cleaned == "/" { joined = root.hasSuffix("/") ? root : root + "/" }
    if requestPath.hasSuffix("/") && !joined.hasSuffix("/") { joined += "/" }
    return joined
}

/// Go's `path.Clean`: removes `.` and `..` elements and doubled slashes.
func cleanPath(_ p: String) -> String {
    if p.isEmpty { return "." }
    let rooted = p.hasPrefix("/")
    var out: [Substring] = []
    for part in p.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == ".." {
            if let last = out.last, last != ".." { out.removeLast() } else if !rooted { out.append(part) }
            continue
        }
        out.append(part)
    }
    let body = out.joined(separator: "/")
    if rooted { return "/" + body }
    return body.isEmpty ? "." : body
}

/// The canonical absolute path, symlinks resolved; `nil` if it does not exist.
func realPath(_ path: String) -> String? {
    guard let r = realpath(path, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}

/// Go's `filepath.Match` for one pattern against one name (`*`, `?`, `[...]`, `\` escapes; `*` does not cross `/`).
func globMatch(_ pattern: String, _ name: String) -> Bool {
    fnmatch(pattern, name, FNM_PATHNAME) == 0
}

/// Content types by file extension: Go's built-in table, then `/etc/mime.types` (as Go reads it on Linux).
enum MIMETypes {
    static let table: [String: String] = {
        var t: [String: String] = [
            ".avif": "image/avif", ".css": "text/css; charset=utf-8", ".gif": "image/gif",
            ".htm": "text/html; charset=utf-8", ".html": "text/html; charset=utf-8", ".jpeg": "image/jpeg",
            ".jpg": "image/jpeg", ".js": "text/javascript; charset=utf-8", ".json": "application/json",
            ".mjs": "text/javascript; charset=utf-8", ".pdf": "application/pdf", ".png": "image/png",
            ".svg": "image/svg+xml", ".wasm": "application/wasm", ".webp": "image/webp",
            ".xml": "text/xml; charset=utf-8",
        ]
        for file in ["/etc/mime.types", "/etc/apache2/mime.types", "/etc/apache/mime.types", "/etc/httpd/conf/mime.types"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard fields.count > 1, !fields[0].hasPrefix("#") else { continue }
                var type = String(fields[0])
                if type.hasPrefix("text/") && !type.contains("charset") { type += "; charset=utf-8" }
                for ext in fields.dropFirst() {
                    if ext.hasPrefix("#") { break }
                    let key = "." + ext.lowercased()
                    // Go's built-ins win for the types it knows.
                    if t[key] == nil { t[key] = type }
                }
            }
        }
        return t
    }()

    static func forExtension(of path: String) -> String? {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        guard let dot = base.lastIndex(of: ".") else { return nil }
        return table[String(base[dot...]).lowercased()]
    }
}

/// Parses an HTTP date (IMF-fixdate, RFC 850 or asctime, as Go's `http.ParseTime` does) to Unix seconds.
func parseHTTPDate(_ s: String) -> Int? {
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    let parts = s.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
    var day = 0, month = 0, year = 0
    var clock = ""
    if parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT" {
        // Sun, 06 Nov 1994 08:49:37 GMT
        guard let d = Int(parts[1]), let m = months.firstIndex(of: parts[2]), let y = Int(parts[3]) else { return nil }
        (day, month, year, clock) = (d, m, y, parts[4])
    } else if parts.count == 4, parts[0].hasSuffix(","), parts[3] == "GMT" {
        // Sunday, 06-Nov-94 08:49:37 GMT
        let dmy = parts[1].split(separator: "-").map(String.init)
        guard dmy.count == 3, let d = Int(dmy[0]), let m = months.firstIndex(of: dmy[1]), let y = Int(dmy[2]) else { return nil }
        (day, month, year, clock) = (d, m, y < 70 ? 2000 + y : 1900 + y, parts[2])
    } else if parts.count == 5 {
        // Sun Nov  6 08:49:37 1994
        guard let m = months.firstIndex(of: parts[1]), let d = Int(parts[2]), let y = Int(parts[4]) else { return nil }
        (day, month, year, clock) = (d, m, y, parts[3])
    } else {
        return nil
    }
    let hms = clock.split(separator: ":").compactMap { Int($0) }
    guard hms.count == 3, (1...31).contains(day), (0..<24).contains(hms[0]), (0..<60).contains(hms[1]),
          (0...60).contains(hms[2]) else { return nil }
    var t = tm()
    t.tm_year = Int32(year - 1900)
    t.tm_mon = Int32(month)
    t.tm_mday = Int32(day)
    t.tm_hour = Int32(hms[0])
    t.tm_min = Int32(hms[1])
    t.tm_sec = Int32(hms[2])
    return timegm(&t)
}
