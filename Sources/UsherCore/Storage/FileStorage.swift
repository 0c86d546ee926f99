import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `caddy.storage.file_system`: storage in a folder, in certmagic's layout and lock protocol, so Caddy and Usher can
/// share one data directory (and several processes can share one folder on a network file system).
public struct FileSystemStorageModule: StorageModule {
    public static let moduleID: ModuleID = "caddy.storage.file_system"
    /// `root`: the folder. Default: the data directory.
    public var root: String?

    package enum CodingKeys: String, CodingKey { case root }

    public init(root: String? = nil) { self.root = root }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        root = try c.decodeIfPresent(String.self, forKey: .root)
        if root == "" { root = nil }
    }

    public func makeStorage(_ context: ProvisionContext) throws -> any Storage {
        FileStorage(root: root ?? context.environment.paths.dataDirectory)
    }
}

/// Storage in a folder. Values are written to a temporary file, synced, then renamed over the old one, so a crash
/// mid-write leaves the previous value. Locks are files under `locks/` created exclusively and kept fresh every
/// 5 seconds while held; a lock not refreshed for 10 seconds belongs to a holder that died and is taken over
/// (certmagic's protocol, so Caddy and Usher exclude each other).
public final class FileStorage: Storage {
    /// The folder keys live under.
    public let root: String
    private let held = Mutex<[String: Task<Void, Never>]>([:])

    /// How often a held lock's file is refreshed, and (twice this) when an unrefreshed lock counts as stale.
    static let lockFreshnessSeconds = 5
    /// How often a waiter checks whether a lock has been released.
    static let lockPollNanoseconds: UInt64 = 1_000_000_000

    public init(root: String) { self.root = root }

    public var description: String { "FileStorage:" + root }

    /// The file for `key`.
    public func filename(_ key: String) -> String {
        key.isEmpty ? root : root + "/" + key
    }

    public func store(_ key: String, _ value: [UInt8]) async throws {
        let path = filename(key)
        try Self.makeParents(path)
        #if DEBUG
        Self.crashIfAsked(key, path, value)
        #endif
        try Self.writeAtomically(path, value, mode: 0o600)
    }

    #if DEBUG
    /// Debug builds only, for the crash-consistency test: `USHER_DEBUG_CRASH_AT_CERT_WRITE=N` ends the process
    /// abruptly (no clean-up, as a power cut would) halfway through the Nth write under `certificates/`,
    /// leaving that write's temporary file half-written.
    private static let crashAt = getenv("USHER_DEBUG_CRASH_AT_CERT_WRITE").flatMap { Int(String(cString: $0)) }
    private static let certificateWrites = Mutex<Int>(0)

    private static func crashIfAsked(_ key: String, _ path: String, _ value: [UInt8]) {
        guard let crashAt, key.hasPrefix("certificates/") else { return }
        guard
            certificateWrites.withLock({ n in
                n += 1; return n
            }) == crashAt
        else { return }
        let fd = open(path + ".tmp-\(getpid())-crash", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        _ = value.withUnsafeBytes { write(fd, $0.baseAddress, $0.count / 2) }
        _exit(70)
    }
    #endif

    public func load(_ key: String) async throws -> [UInt8] {
        do {
            return try readWholeFile(filename(key))
        } catch {
            // A directory is a prefix of other keys, not a value.
            if error.reason == String(cString: strerror(ENOENT)) || error.reason == String(cString: strerror(EISDIR)) {
                throw StorageError.notFound(key)
            }
            throw StorageError.failed(error.description)
        }
    }

    public func delete(_ key: String) async throws {
        try Self.removeTree(filename(key))
    }

    public func exists(_ key: String) async -> Bool {
        var st = Glibc.stat()
        return lstat(filename(key), &st) == 0
    }

    public func list(_ prefix: String, recursive: Bool) async throws -> [String] {
        var out: [String] = []
        let base = filename(prefix)
        var st = Glibc.stat()
        guard lstat(base, &st) == 0 else { throw StorageError.notFound(prefix) }
        func walk(_ dir: String, _ keyPrefix: String) throws {
            guard let d = opendir(dir) else { throw StorageError.failed(SystemError("opendir \(dir)").description) }
            defer { closedir(d) }
            var names: [String] = []
            while let entry = readdir(d) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name == "." || name == ".." { continue }
                names.append(name)
            }
            for name in names.sorted() {
                let key = keyPrefix.isEmpty ? name : keyPrefix + "/" + name
                out.append(key)
                var est = Glibc.stat()
                if recursive, lstat(dir + "/" + name, &est) == 0, (est.st_mode & S_IFMT) == S_IFDIR {
                    try walk(dir + "/" + name, key)
                }
            }
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { try walk(base, prefix) }
        return out
    }

    public func stat(_ key: String) async throws -> StorageKeyInfo {
        var st = Glibc.stat()
        guard lstat(filename(key), &st) == 0 else {
            if errno == ENOENT { throw StorageError.notFound(key) }
            throw StorageError.failed(SystemError("stat \(filename(key))").description)
        }
        let isDir = (st.st_mode & S_IFMT) == S_IFDIR
        return StorageKeyInfo(
            key: key, modified: WallTime(seconds: Int(st.st_mtim.tv_sec), nanoseconds: Int(st.st_mtim.tv_nsec)),
            size: isDir ? 0 : Int64(st.st_size), isTerminal: !isDir)
    }

    // MARK: - Locks

    /// `locks/<safe name>.lock`.
    public func lockFilename(_ name: String) -> String { root + "/locks/" + StorageKeys.safe(name) + ".lock" }

    public func lock(_ name: String) async throws {
        let path = lockFilename(name)
        try Self.makeParents(path)
        var emptyCount = 0
        while true {
            try Task.checkCancellation()
            if Self.createLockFile(path) {
                let refresher = Task.detached {
                    while !Task.isCancelled {
                        try? await Task.sleep(nanoseconds: UInt64(Self.lockFreshnessSeconds) * 1_000_000_000)
                        if Task.isCancelled { return }
                        if !Self.refreshLockFile(path) { return }
                    }
                }
                held.withLock {
                    $0[name]?.cancel(); $0[name] = refresher
                }
                return
            }
            // Held by someone: take it over only if its holder stopped refreshing it (or died before writing it).
            switch Self.lockState(path) {
            case .stale:
                unlink(path)
                continue
            case .empty where emptyCount < 8:
                // Probably being written (or rewritten) right now: look again shortly, as certmagic does.
                emptyCount += 1
                try await Task.sleep(nanoseconds: 250_000_000)
                continue
            case .empty:
                unlink(path)
                continue
            case .gone:
                continue
            case .held:
                try await Task.sleep(nanoseconds: Self.lockPollNanoseconds)
            }
        }
    }

    public func unlock(_ name: String) async throws {
        let refresher = held.withLock { $0.removeValue(forKey: name) }
        refresher?.cancel()
        if unlink(lockFilename(name)) != 0 && errno != ENOENT {
            throw StorageError.failed(SystemError("removing lock \(lockFilename(name))").description)
        }
    }

    /// The `{"created":…,"updated":…}` document certmagic writes into a lock file.
    static func lockMetadata(created: WallTime, updated: WallTime) -> [UInt8] {
        Array("{\"created\":\"\(created.rfc3339Nano)\",\"updated\":\"\(updated.rfc3339Nano)\"}\n".utf8)
    }

    static func createLockFile(_ path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        let now = WallTime.now()
        let meta = lockMetadata(created: now, updated: now)
        _ = meta.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
        return true
    }

    /// Writes a new `updated` time into a held lock; `false` once the file is gone (unlocked or taken over).
    static func refreshLockFile(_ path: String) -> Bool {
        guard let bytes = try? readWholeFile(path) else { return false }
        let created = lockTimes(bytes)?.created ?? WallTime.now()
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { return false }
        let meta = lockMetadata(created: created, updated: WallTime.now())
        _ = meta.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
        return true
    }

    static func lockTimes(_ bytes: [UInt8]) -> (created: WallTime?, updated: WallTime?)? {
        guard case .object(let o)? = try? JSONValue.parse(bytes) else { return nil }
        func time(_ k: String) -> WallTime? {
            if case .string(let s)? = o[k] { return WallTime.parseRFC3339(s) }
            return nil
        }
        return (time("created"), time("updated"))
    }

    enum LockState { case held, stale, empty, gone }

    /// A lock is stale when its last refresh (or creation) is more than two refresh intervals old; an empty or
    /// unreadable file is reported as such (its holder may be writing it, or may have died doing so).
    static func lockState(_ path: String) -> LockState {
        guard let bytes = try? readWholeFile(path) else { return .gone }
        guard let times = lockTimes(bytes), let ref = times.updated ?? times.created else { return .empty }
        return WallTime.now().seconds - ref.seconds > 2 * lockFreshnessSeconds ? .stale : .held
    }

    // MARK: - Files

    static func makeParents(_ path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        var current = ""
        for part in path[..<slash].split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw StorageError.failed(SystemError("creating folder \(current)").description)
            }
        }
    }

    /// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and syncs the folder, so
    /// `path` holds the old bytes or the new ones whatever happens.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: UInt32) throws {
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw StorageError.failed(SystemError("creating \(tmp)").description) }
        var written = 0
        let ok = bytes.withUnsafeBytes { buf -> Bool in
            while written < buf.count {
                let n = write(fd, buf.baseAddress! + written, buf.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return fsync(fd) == 0
        }
        let err = SystemError("writing \(tmp)")
        close(fd)
        guard ok else {
            unlink(tmp)
            throw StorageError.failed(err.description)
        }
        guard rename(tmp, path) == 0 else {
            let e = SystemError("renaming \(tmp) to \(path)")
            unlink(tmp)
            throw StorageError.failed(e.description)
        }
        if let slash = path.lastIndex(of: "/") {
            let dfd = open(String(path[..<slash]), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 {
                fsync(dfd)
                close(dfd)
            }
        }
    }

    static func removeTree(_ path: String) throws {
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if let d = opendir(path) {
                var names: [String] = []
                while let entry = readdir(d) {
                    let name = withUnsafePointer(to: entry.pointee.d_name) {
                        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                    }
                    if name != "." && name != ".." { names.append(name) }
                }
                closedir(d)
                for n in names { try removeTree(path + "/" + n) }
            }
            if rmdir(path) != 0 && errno != ENOENT {
                throw StorageError.failed(SystemError("removing \(path)").description)
            }
        } else if unlink(path) != 0 && errno != ENOENT {
            throw StorageError.failed(SystemError("removing \(path)").description)
        }
    }
}
