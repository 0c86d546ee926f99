import CUsherSystem
import Foundation
import NIOCore
import Synchronization
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
    /// Identity and last change (any write or metadata change), for telling whether a cached copy is current.
    var device: UInt64 = 0
    var inode: UInt64 = 0
    var changeSeconds: Int = 0
    var changeNanoseconds: Int = 0

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
        return .success(
            FileStatus(
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

extension FileStatus {
    /// The status of an open file.
    init?(descriptor fd: CInt) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        self.init(st)
    }

    init(_ st: stat) {
        self.init(
            isDirectory: (st.st_mode & S_IFMT) == S_IFDIR, isSymlink: false, size: Int(st.st_size),
            modSeconds: Int(st.st_mtim.tv_sec), modNanoseconds: Int(st.st_mtim.tv_nsec), mode: UInt32(st.st_mode),
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
            changeSeconds: Int(st.st_ctim.tv_sec), changeNanoseconds: Int(st.st_ctim.tv_nsec)
        )
    }

    /// Same file, unchanged.
    func sameVersion(as other: FileStatus) -> Bool {
        inode == other.inode && device == other.device && size == other.size && modSeconds == other.modSeconds
            && modNanoseconds == other.modNanoseconds && changeSeconds == other.changeSeconds
            && changeNanoseconds == other.changeNanoseconds
    }
}

/// Why a file under the root could not be opened.
enum FileOpenError: Error {
    case notFound, outsideRoot, permission, invalid, other(Int32)

    init(errno e: Int32) {
        switch e {
        case ENOENT, ENOTDIR: self = .notFound
        // openat2's RESOLVE_BENEATH refusing a path that leads out of the root.
        case EXDEV, ELOOP: self = .outsideRoot
        case EACCES, EPERM: self = .permission
        case ENAMETOOLONG, EINVAL: self = .invalid
        default: self = .other(e)
        }
    }
}

/// A file opened for serving, with its status: an open descriptor (closed by whoever holds it), or, for a small
/// file from the cache, its whole content.
struct OpenFile {
    let fd: CInt
    let status: FileStatus
    var content: ByteBuffer?

    init(fd: CInt, status: FileStatus, content: ByteBuffer? = nil) {
        self.fd = fd
        self.status = status
        self.content = content
    }

    func close() { if fd >= 0 { _ = Glibc.close(fd) } }
}

/// Small files kept in memory between requests. Each use checks, with one `fstatat` under the root, that the path
/// still leads to the same unchanged file (device, inode, size, modification and change times); otherwise the
/// file is opened again the safe way (beneath the root) and the copy replaced. The check cannot serve a file from
/// outside the root: only a file that was opened beneath the root can match.
final class SmallFileCache: Sendable {
    struct Entry: Sendable {
        let rootDevice: UInt64
        let rootInode: UInt64
        let status: FileStatus
        let content: ByteBuffer
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var bytes = 0
    }

    private let state = Mutex(State())
    /// Files up to this size (bytes) are cached.
    static let maxFileSize = 64 * 1024
    /// The most bytes held; past it the cache starts over.
    static let maxBytes = 32 << 20

    init() {}

    func open(_ directory: RootDirectory, _ relative: String) -> Result<OpenFile, FileOpenError> {
        let key = directory.path + "\u{0}" + relative
        if let entry = state.withLock({ $0.entries[key] }), entry.rootInode == directory.inode,
            entry.rootDevice == directory.device
        {
            var st = stat()
            if fstatat(directory.fd, relative.isEmpty ? "." : relative, &st, 0) == 0,
                FileStatus(st).sameVersion(as: entry.status)
            {
                return .success(OpenFile(fd: -1, status: entry.status, content: entry.content))
            }
        }
        let opened = directory.open(relative)
        guard case .success(let file) = opened, !file.status.isDirectory, file.status.size <= Self.maxFileSize else {
            return opened
        }
        var buffer = ByteBufferAllocator().buffer(capacity: file.status.size)
        var offset = 0
        while offset < file.status.size {
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: file.status.size - offset) { ptr in
                max(0, pread(file.fd, ptr.baseAddress, file.status.size - offset, off_t(offset)))
            }
            if n == 0 { return opened }
            offset += n
        }
        file.close()
        let entry = Entry(
            rootDevice: directory.device, rootInode: directory.inode, status: file.status, content: buffer)
        state.withLock { s in
            if s.bytes + buffer.readableBytes > Self.maxBytes {
                s.entries.removeAll()
                s.bytes = 0
            }
            if let old = s.entries.updateValue(entry, forKey: key) { s.bytes -= old.content.readableBytes }
            s.bytes += buffer.readableBytes
        }
        return .success(OpenFile(fd: -1, status: file.status, content: buffer))
    }
}

/// A site root held open as a directory descriptor. Files are opened relative to it with openat2's
/// RESOLVE_BENEATH, so no path (`..`, an absolute symlink, a symlink leading out) can reach outside it; kernels
/// without openat2 get the same guarantee from realpath.
final class RootDirectory: Sendable {
    let path: String
    let fd: CInt
    /// The directory's identity, to notice when another directory takes its path.
    let device: UInt64
    let inode: UInt64
    /// When the path was last checked to still name this directory (monotonic nanoseconds).
    let checkedAt: Atomic<Int64>

    init?(path: String) {
        let fd = c_usher_open_directory(path)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            Glibc.close(fd)
            return nil
        }
        self.path = path
        self.fd = fd
        self.device = UInt64(st.st_dev)
        self.inode = UInt64(st.st_ino)
        self.checkedAt = Atomic(monotonicNanoseconds())
    }

    deinit { Glibc.close(fd) }

    /// Opens `relative` (no leading slash; empty for the root itself) for reading.
    func open(_ relative: String) -> Result<OpenFile, FileOpenError> {
        var fd = c_usher_open_beneath(self.fd, relative.isEmpty ? "." : relative, O_RDONLY)
        // No openat2 (old kernels), or a symlink openat2 will not follow (absolute, or leading out): decide by
        // where the path really ends up, so absolute symlinks to files inside the root still work, as in Caddy.
        if fd < 0 && (errno == ENOSYS || errno == EXDEV) {
            return openWithoutOpenat2(relative)
        }
        guard fd >= 0 else { return .failure(FileOpenError(errno: errno)) }
        guard let status = FileStatus(descriptor: fd) else {
            let e = errno
            Glibc.close(fd)
            fd = -1
            return .failure(.other(e))
        }
        return .success(OpenFile(fd: fd, status: status))
    }

    private func openWithoutOpenat2(_ relative: String) -> Result<OpenFile, FileOpenError> {
        let full = relative.isEmpty ? path : path + "/" + relative
        let fd = Glibc.open(full, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(FileOpenError(errno: errno)) }
        guard let real = realPath(full), let realRoot = realPath(path),
            real == realRoot || real.hasPrefix(realRoot == "/" ? "/" : realRoot + "/"),
            let status = FileStatus(descriptor: fd)
        else {
            Glibc.close(fd)
            return .failure(.outsideRoot)
        }
        return .success(OpenFile(fd: fd, status: status))
    }
}

extension RootDirectory {
    /// Whether the directory was removed since it was opened (a new one may stand at the same path).
    var isRemoved: Bool {
        var st = stat()
        return fstat(fd, &st) != 0 || st.st_nlink == 0
    }

    /// Whether `path` still names this directory (a deploy may have renamed it, or swapped a symlink).
    var stillAtPath: Bool {
        var st = stat()
        return stat(path, &st) == 0 && UInt64(st.st_dev) == device && UInt64(st.st_ino) == inode && !isRemoved
    }
}

/// Root directories kept open by path, so a root (fixed, or from a placeholder such as `{http.vars.root}`) costs
/// no extra system calls per request. Each is checked against its path at most every `recheck` (a root that was
/// replaced, renamed or re-pointed by a symlink is reopened then), and at once when a file is not found in it.
final class RootDirectoryCache: Sendable {
    private let directories = Mutex<[String: RootDirectory]>([:])
    /// Roots from placeholders could be many; past this the cache starts over.
    static let limit = 256
    /// How stale the path-to-directory mapping may get, in nanoseconds.
    static let recheck: Int64 = 250_000_000

    init() {}

    func get(_ path: String) -> RootDirectory? {
        if let d = directories.withLock({ $0[path] }) {
            let now = monotonicNanoseconds()
            if now - d.checkedAt.load(ordering: .relaxed) < Self.recheck { return d }
            if d.stillAtPath {
                d.checkedAt.store(now, ordering: .relaxed)
                return d
            }
            return reopen(path, replacing: d)
        }
        return reopen(path, replacing: nil)
    }

    /// A fresh look at `directory`'s path after a file was not found in it; `nil` when nothing changed.
    func recheck(_ directory: RootDirectory) -> RootDirectory? {
        guard !directory.stillAtPath else { return nil }
        return reopen(directory.path, replacing: directory)
    }

    private func reopen(_ path: String, replacing old: RootDirectory?) -> RootDirectory? {
        let d = RootDirectory(path: path)
        directories.withLock { cache in
            if let old, cache[path] !== old { return }
            if cache.count >= Self.limit { cache.removeAll() }
            cache[path] = d
        }
        return d
    }
}

func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// `path` made absolute against the working directory, cleaned (Caddy's `FastAbs`).
package func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return cleanPath(path) }
    return cleanPath(currentDirectory + "/" + path)
}

/// The working directory, read once: a server does not change it.
package let currentDirectory: String = FileManager.default.currentDirectoryPath

/// Joins a request path onto a root so the result never leaves the root, exactly as Caddy's `SanitizedPathJoin`
/// (the file matcher's placeholders show the result): cleaned, with a trailing slash kept unless the path is `/`.
package func sanitizedPathJoin(_ root: String, _ requestPath: String) -> String {
    let root = root.isEmpty ? "." : root
    let relative = String(cleanPath("/" + requestPath).dropFirst())
    var joined = relative.isEmpty ? cleanPath(root) : cleanPath(root + "/" + relative)
    if requestPath.hasSuffix("/") && requestPath.utf8.count > 1 { joined += "/" }
    return joined
}

/// Go's `path.Clean`: removes `.` and `..` elements and doubled slashes (with a fast path for paths that are
/// already clean, as most request paths are).
package func cleanPath(_ p: String) -> String {
    if p.isEmpty { return "." }
    if isClean(p) { return p }
    return PathUtil.clean(p)
}

/// Whether `cleanPath` would return `p` unchanged: no empty, `.` or `..` elements and no trailing slash (a
/// lone `/` excepted). Most request paths are, and checking is much cheaper than rebuilding them.
private func isClean(_ p: String) -> Bool {
    var previous: UInt8 = 0
    var dots = 0
    var elementLength = 0
    for b in p.utf8 {
        if b == UInt8(ascii: "/") {
            if previous == UInt8(ascii: "/") { return false }
            if elementLength > 0 && dots == elementLength && dots <= 2 { return false }
            dots = 0
            elementLength = 0
        } else {
            elementLength += 1
            if b == UInt8(ascii: ".") { dots += 1 }
        }
        previous = b
    }
    if elementLength > 0 && dots == elementLength && dots <= 2 { return false }
    return previous != UInt8(ascii: "/") || p.utf8.count == 1
}

/// The canonical absolute path, symlinks resolved; `nil` if it does not exist.
func realPath(_ path: String) -> String? {
    guard let r = realpath(path, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}

/// Go's `filepath.Match` for one pattern against one name (`*`, `?`, `[...]`, `\` escapes; `*` does not cross `/`).
func globMatch(_ pattern: String, _ name: String) -> Bool {
    if !pattern.utf8.contains(where: {
        $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "\\")
    }) {
        return pattern == name
    }
    return fnmatch(pattern, name, FNM_PATHNAME) == 0
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
        for file in [
            "/etc/mime.types", "/etc/apache2/mime.types", "/etc/apache/mime.types", "/etc/httpd/conf/mime.types",
        ] {
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
        // The extension: from the last dot of the last path element.
        let bytes = path.utf8
        var i = bytes.endIndex
        while i > bytes.startIndex {
            let prev = bytes.index(before: i)
            let b = bytes[prev]
            if b == UInt8(ascii: "/") { return nil }
            if b == UInt8(ascii: ".") {
                let ext = String(path[prev...])
                return table[ext] ?? table[ext.lowercased()]
            }
            i = prev
        }
        return nil
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
        guard dmy.count == 3, let d = Int(dmy[0]), let m = months.firstIndex(of: dmy[1]), let y = Int(dmy[2]) else {
            return nil
        }
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
        (0...60).contains(hms[2])
    else { return nil }
    var t = tm()
    t.tm_year = Int32(year - 1900)
    t.tm_mon = Int32(month)
    t.tm_mday = Int32(day)
    t.tm_hour = Int32(hms[0])
    t.tm_min = Int32(hms[1])
    t.tm_sec = Int32(hms[2])
    return timegm(&t)
}
