import CUsherSystem
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where encoded log entries go. Writes of one entry are atomic with respect to each other.
public protocol LogWriter: AnyObject, Sendable {
    func write(_ bytes: [UInt8])
    func close()
    /// Whether this writes to a terminal (the default encoder is then the console one).
    var isTerminal: Bool { get }
}

/// A module in `caddy.logging.writers` (inline key `output`).
public protocol LogWriterModule: Module {
    /// Identifies the destination, so that a reload keeps one open file rather than reopening it.
    var writerKey: String { get }
    func openWriter() throws -> any LogWriter
}

public enum LogWriters: ModuleNamespace {
    public static let prefix = "caddy.logging.writers"
    public static let inlineKey: String? = "output"
    public typealias Instance = any LogWriterModule
}

/// Writes to an inherited file descriptor (stdout, stderr), never closing it.
final class FileDescriptorLogWriter: LogWriter {
    let fd: Int32
    let lock = Mutex(())
    let isTerminal: Bool

    init(fd: Int32) {
        self.fd = fd
        self.isTerminal = isatty(fd) == 1
    }

    func write(_ bytes: [UInt8]) {
        lock.withLock { _ in writeFully(fd, bytes) }
    }

    func close() {}
}

func writeFully(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buf in
        var off = 0
        while off < buf.count {
            let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            off += n
        }
    }
}

/// `caddy.logging.writers.stdout`.
public struct StdoutWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.stdout"
    public init() {}
    public var writerKey: String { "std:out" }
    public func openWriter() throws -> any LogWriter { FileDescriptorLogWriter(fd: 1) }
}

/// `caddy.logging.writers.stderr`.
public struct StderrWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.stderr"
    public init() {}
    public var writerKey: String { "std:err" }
    public func openWriter() throws -> any LogWriter { FileDescriptorLogWriter(fd: 2) }
}

/// `caddy.logging.writers.discard`.
public struct DiscardWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.discard"
    public init() {}
    public var writerKey: String { "discard" }
    public func openWriter() throws -> any LogWriter { DiscardLogWriter() }
}

final class DiscardLogWriter: LogWriter {
    func write(_ bytes: [UInt8]) {}
    func close() {}
    var isTerminal: Bool { false }
}

/// `caddy.logging.writers.file`: appends to a file, rolling it by size, by interval or at set times. Rolled
/// files are named `<name>-<time>-<reason><ext>` beside it (reason `size` or `time`, as Caddy 2.11's timberjack
/// names them) and compressed with gzip (default) or zstd.
public struct FileWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.file"

    /// `filename`: the file to write. Required.
    public var filename: String
    /// `mode`: permissions for a new file, in octal; an existing file is changed to them. Default: `0600`.
    public var mode: String?
    /// `dir_mode`: permissions for directories created on the way to the file: octal, `inherit` (the nearest
    /// existing parent's) or `from_file` (the file's, plus search bits). Default: `0700`.
    public var dirMode: String?
    /// `roll`: whether to roll the file. Default: true.
    public var roll: Bool?
    /// `roll_size_mb`: size in MiB at which the file is rolled. Default: 100.
    public var rollSizeMB: Int?
    /// `roll_interval`: also roll when this long has passed since the last roll. Default: none.
    public var rollInterval: ConfigDuration?
    /// `roll_minutes`: also roll at these minutes of every hour (0–59).
    public var rollMinutes: [Int]?
    /// `roll_at`: also roll at these times of day, `HH:MM`.
    public var rollAt: [String]?
    /// `roll_keep`: rolled files to keep. Default: 10.
    public var rollKeep: Int?
    /// `roll_keep_days`: days to keep rolled files. Default: 90.
    public var rollKeepDays: Int?
    /// `roll_local_time`: name rolled files, and place `roll_at`/`roll_minutes`, in local time. Default: UTC.
    public var rollLocalTime: Bool?
    /// `roll_gzip`: compress rolled files (false keeps them as they are). Default: true.
    public var rollGzip: Bool?
    /// `roll_compression`: `gzip`, `zstd` or `none`; overrides `roll_gzip`. Default: gzip.
    public var rollCompression: String?
    /// `backup_time_format`: a Go time layout for the time in rolled files' names. Default:
    /// `2006-01-02T15-04-05.000`; a layout that does not name the time to the second falls back to it, with a
    /// warning, as in Caddy.
    public var backupTimeFormat: String?

    package enum CodingKeys: String, CodingKey {
        case filename, mode, roll
        case rollSizeMB = "roll_size_mb", rollKeep = "roll_keep", rollKeepDays = "roll_keep_days"
        case rollLocalTime = "roll_local_time", rollGzip = "roll_gzip", rollCompression = "roll_compression"
        case rollInterval = "roll_interval", rollAt = "roll_at", rollMinutes = "roll_minutes", dirMode = "dir_mode"
        case backupTimeFormat = "backup_time_format"
    }

    public init(filename: String) { self.filename = filename }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .filename)
        do { filename = try Replacer().replaceOrError(name, errorOnEmpty: true) } catch {
            throw c.error(.filename, "invalid filename for log file: \(error)")
        }
        if filename.isEmpty { throw c.error(.filename, "must not be empty") }
        mode = try c.decodeIfPresent(String.self, forKey: .mode)
        if let mode, Self.parseMode(mode) == nil { throw c.error(.mode, "\"\(mode)\" is not an octal file mode") }
        dirMode = try c.decodeIfPresent(String.self, forKey: .dirMode)
        if let d = dirMode?.trimmingWhitespace().lowercased(), !["", "inherit", "from_file"].contains(d),
            Self.parseMode(d) == nil
        {
            throw c.error(.dirMode, "\"\(dirMode!)\" is not an octal mode, inherit or from_file")
        }
        roll = try c.decodeIfPresent(Bool.self, forKey: .roll)
        rollSizeMB = try c.decodeIfPresent(Int.self, forKey: .rollSizeMB)
        rollInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .rollInterval)
        if let i = rollInterval, i.nanoseconds < 0 { throw c.error(.rollInterval, "must not be negative") }
        rollMinutes = try c.decodeIfPresent([Int].self, forKey: .rollMinutes)
        for m in rollMinutes ?? [] where !(0...59).contains(m) {
            throw c.error(.rollMinutes, "\(m) is not a minute of the hour (0-59)")
        }
        rollAt = try c.decodeIfPresent([String].self, forKey: .rollAt)
        for t in rollAt ?? [] where Self.parseTimeOfDay(t) == nil {
            throw c.error(.rollAt, "\"\(t)\" is not a time of day (HH:MM)")
        }
        rollKeep = try c.decodeIfPresent(Int.self, forKey: .rollKeep)
        rollKeepDays = try c.decodeIfPresent(Int.self, forKey: .rollKeepDays)
        rollLocalTime = try c.decodeIfPresent(Bool.self, forKey: .rollLocalTime)
        rollGzip = try c.decodeIfPresent(Bool.self, forKey: .rollGzip)
        rollCompression = try c.decodeIfPresent(String.self, forKey: .rollCompression)
        if let rc = rollCompression, !["", "none", "gzip", "zstd"].contains(rc.trimmingWhitespace().lowercased()) {
            throw c.error(.rollCompression, "must be 'none', 'gzip' or 'zstd', not \"\(rc)\"")
        }
        backupTimeFormat = try c.decodeIfPresent(String.self, forKey: .backupTimeFormat)
    }

    /// Caddy's `parseFileMode`: octal, padded to four digits.
    static func parseMode(_ s: String) -> mode_t? {
        guard !s.isEmpty, let m = UInt32(s, radix: 8), m <= 0o7777 else { return nil }
        return mode_t(m)
    }

    /// `HH:MM` as timberjack reads `RotateAt`.
    static func parseTimeOfDay(_ s: String) -> (hour: Int, minute: Int)? {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]), (0...23).contains(h), (0...59).contains(m)
        else { return nil }
        return (h, m)
    }

    public var writerKey: String { "file:" + filename }

    /// How rolled files are compressed.
    var compression: RollCompression {
        switch rollCompression?.trimmingWhitespace().lowercased() {
        case "none": return .none
        case "gzip": return .gzip
        case "zstd": return .zstd
        default: return rollGzip == false ? .none : .gzip
        }
    }

    /// The times of day (minutes since midnight) to roll at, sorted and without repeats.
    var rollSlots: [Int] {
        var slots = Set<Int>()
        for m in rollMinutes ?? [] { for h in 0..<24 { slots.insert(h * 60 + m) } }
        for t in rollAt ?? [] { if let (h, m) = Self.parseTimeOfDay(t) { slots.insert(h * 60 + m) } }
        return slots.sorted()
    }

    /// The layout for rolled files' names; an unusable one falls back to the default with a warning on stderr.
    var backupLayout: String {
        let fallback = "2006-01-02T15-04-05.000"
        guard let layout = backupTimeFormat, !layout.isEmpty else { return fallback }
        // Timberjack keeps a layout only when a time formatted with it parses back to the same second.
        let names: [[String]] = [
            ["2006", "06"], ["01", "Jan", "1"], ["02", "_2", "2", "002"], ["15", "03", "3"],
            ["04", "4"], ["05", "5"],
        ]
        let complete =
            names.allSatisfy { $0.contains { layout.contains($0) } }
            && (layout.contains("15") || layout.contains("PM") || layout.contains("pm"))
        if !complete {
            writeFully(
                2,
                Array(
                    "timberjack: invalid BackupTimeFormat: time.Time parsed from the format does not match the time.Time supplied — falling back to default format: \(fallback)\n"
                        .utf8))
            return fallback
        }
        return layout
    }

    public func openWriter() throws -> any LogWriter {
        let fileMode = mode.flatMap(Self.parseMode) ?? 0
        try makeDirectories(fileMode: fileMode)
        let rolling = roll ?? true
        return try RollingFileLogWriter(
            path: filename,
            mode: fileMode == 0 ? 0o600 : fileMode,
            enforceMode: fileMode != 0,
            maxBytes: rolling ? max(1, rollSizeMB ?? 100) * 1024 * 1024 : nil,
            keep: rollKeep ?? 10,
            keepDays: rollKeepDays ?? 90,
            localTime: rollLocalTime ?? false,
            compression: compression,
            interval: rolling ? (rollInterval?.nanoseconds ?? 0) : 0,
            slots: rolling ? rollSlots : [],
            backupLayout: rolling ? backupLayout : ""
        )
    }

    /// Creates the file's directory as `dir_mode` says.
    func makeDirectories(fileMode: mode_t) throws {
        guard let slash = filename.lastIndex(of: "/") else { return }
        let dir = String(filename[..<slash])
        if dir.isEmpty { return }
        var st = stat()
        if stat(dir, &st) == 0 { return }
        var perm: mode_t
        switch dirMode?.trimmingWhitespace().lowercased() ?? "" {
        case "", "0": perm = 0o700
        case "inherit":
            var parent = dir
            perm = 0o700
            while let s = parent.lastIndex(of: "/") {
                parent = String(parent[..<s])
                if stat(parent.isEmpty ? "/" : parent, &st) == 0 {
                    perm = Self.withSearchBits(st.st_mode & 0o777)
                    break
                }
            }
        case "from_file": perm = Self.withSearchBits(fileMode & 0o777) | 0o200
        case let m: perm = Self.parseMode(m) ?? 0o700
        }
        var path = dir.hasPrefix("/") ? "" : "."
        for part in dir.split(separator: "/") {
            path += "/" + part
            if mkdir(path, perm) != 0 && errno != EEXIST { throw SystemError("creating log directory \(path)") }
        }
    }

    /// Caddy's `normalizeDirPerm`: whoever may read may also search.
    static func withSearchBits(_ p: mode_t) -> mode_t {
        var p = p
        if p & 0o400 != 0 { p |= 0o100 }
        if p & 0o040 != 0 { p |= 0o010 }
        if p & 0o004 != 0 { p |= 0o001 }
        return p
    }
}

enum RollCompression: Sendable {
    case none, gzip, zstd
    var suffix: String {
        switch self {
        case .none: return ""
        case .gzip: return ".gz"
        case .zstd: return ".zst"
        }
    }
}

/// An error opening a file or socket, with the OS's reason.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ what: String, errno code: Int32) {
        description = "\(what): \(String(cString: strerror(code)))"
    }

    /// An error for `what` with the calling thread's current `errno`.
    public init(_ what: String) {
        self.init(what, errno: errno)
    }
}

final class RollingFileLogWriter: LogWriter {
    struct State {
        var fd: Int32
        var size: Int
        /// When the file was last rolled by time (or opened), for `roll_interval` and the daily slots.
        var lastRotation: WallTime
        var closed = false
    }
    let path: String
    let mode: mode_t
    let maxBytes: Int?
    let keep: Int
    let keepDays: Int
    let localTime: Bool
    let compression: RollCompression
    /// `roll_interval` in nanoseconds; 0 for none.
    let interval: Int64
    /// Minutes since midnight to roll at.
    let slots: [Int]
    let backupLayout: String
    let state: Mutex<State>
    var isTerminal: Bool { false }

    init(
        path: String, mode: mode_t, enforceMode: Bool = false, maxBytes: Int?, keep: Int, keepDays: Int,
        localTime: Bool, compression: RollCompression = .gzip, interval: Int64 = 0, slots: [Int] = [],
        backupLayout: String = "2006-01-02T15-04-05.000"
    ) throws {
        self.path = path
        self.mode = mode
        self.maxBytes = maxBytes
        self.keep = keep
        self.keepDays = keepDays
        self.localTime = localTime
        self.compression = compression
        self.interval = interval
        self.slots = slots
        self.backupLayout = backupLayout
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("opening log file \(path)") }
        var st = stat()
        fstat(fd, &st)
        if enforceMode && st.st_mode & 0o7777 != mode { fchmod(fd, mode) }
        self.state = Mutex(State(fd: fd, size: Int(st.st_size), lastRotation: .now()))
        if !slots.isEmpty { startSlotThread() }
    }

    func write(_ bytes: [UInt8]) {
        state.withLock { s in
            guard !s.closed else { return }
            let now = WallTime.now()
            if interval > 0, nanoseconds(from: s.lastRotation, to: now) >= interval {
                rollLocked(&s, reason: "time")
                s.lastRotation = now
            }
            if let mark = crossedSlot(since: s.lastRotation, now: now) {
                rollLocked(&s, reason: "time")
                s.lastRotation = mark
            }
            if let maxBytes, s.size + bytes.count > maxBytes, s.size > 0 { rollLocked(&s, reason: "size") }
            writeFully(s.fd, bytes)
            s.size += bytes.count
        }
    }

    private func nanoseconds(from a: WallTime, to b: WallTime) -> Int64 {
        Int64(b.seconds - a.seconds) * 1_000_000_000 + Int64(b.nanoseconds - a.nanoseconds)
    }

    /// The instant `minutes` after midnight of the day `t` falls on (in local time or UTC).
    private func instant(onDayOf t: WallTime, minutes: Int) -> WallTime {
        var secs = time_t(t.seconds)
        var tm = Glibc.tm()
        if localTime { localtime_r(&secs, &tm) } else { gmtime_r(&secs, &tm) }
        tm.tm_hour = Int32(minutes / 60)
        tm.tm_min = Int32(minutes % 60)
        tm.tm_sec = 0
        tm.tm_isdst = -1
        return WallTime(seconds: Int(localTime ? mktime(&tm) : timegm(&tm)), nanoseconds: 0)
    }

    /// Timberjack's check on write: the first of today's slots passed since the last time roll, if any.
    func crossedSlot(since last: WallTime, now: WallTime) -> WallTime? {
        for m in slots {
            let mark = instant(onDayOf: now, minutes: m)
            if last < mark && mark <= now { return mark }
        }
        return nil
    }

    /// The next slot after `now`, today or tomorrow.
    func nextSlot(after now: WallTime) -> WallTime? {
        for day in 0...1 {
            let base = WallTime(seconds: now.seconds + day * 86400, nanoseconds: 0)
            for m in slots {
                let mark = instant(onDayOf: base, minutes: m)
                if now < mark { return mark }
            }
        }
        return nil
    }

    /// Rolls at each slot even when nothing is written, as timberjack's scheduler does.
    private func startSlotThread() {
        startDetachedThread { [self] in
            while true {
                guard let mark = nextSlot(after: .now()) else { return }
                while WallTime.now() < mark {
                    if state.withLock({ $0.closed }) { return }
                    let left = nanoseconds(from: .now(), to: mark)
                    var ts = timespec(tv_sec: 0, tv_nsec: Int(min(max(left, 1_000_000), 500_000_000)))
                    nanosleep(&ts, nil)
                }
                let stop = state.withLock { s -> Bool in
                    if s.closed { return true }
                    if s.lastRotation < mark {
                        rollLocked(&s, reason: "time")
                        s.lastRotation = mark
                    }
                    return false
                }
                if stop { return }
            }
        }
    }

    private func rollLocked(_ s: inout State, reason: String) {
        Glibc.close(s.fd)
        let stamp = GoTimeLayout.format(.now(), layout: backupLayout, local: localTime)
        let (base, ext) = splitExtension(path)
        // Two rolls within one tick of the layout would otherwise overwrite the first backup.
        var candidate = "\(base)-\(stamp)-\(reason)\(ext)"
        var n = 1
        while ["", ".gz", ".zst"].contains(where: { access(candidate + $0, F_OK) == 0 }) {
            candidate = "\(base)-\(stamp)-\(reason)-\(n)\(ext)"
            n += 1
        }
        let backup = candidate
        Glibc.rename(path, backup)
        s.fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode)
        fchmod(s.fd, mode)
        s.size = 0
        if compression != .none {
            // Compressing takes a while; writers go on with the new file meanwhile.
            let kind: Int32 = compression == .zstd ? 2 : 1
            let target = backup + compression.suffix
            DispatchQueue.global(qos: .utility).async {
                if c_usher_compress_file(backup, target, kind) == 0 { unlink(backup) }
            }
        }
        pruneBackups(base: base, ext: ext)
    }

    /// Keeps the newest `keep` rolled files (by modification time) and none older than `keepDays`.
    private func pruneBackups(base: String, ext: String) {
        let dir = base.lastIndex(of: "/").map { String(base[..<$0]) } ?? "."
        let prefix = (base.lastIndex(of: "/").map { String(base[base.index(after: $0)...]) } ?? base) + "-"
        guard let d = opendir(dir) else { return }
        var backups: [(name: String, mtime: Int)] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            let isBackup = [ext, ext + ".gz", ext + ".zst"].contains {
                name.hasSuffix($0) && name.count > prefix.count + $0.count
            }
            guard name.hasPrefix(prefix), isBackup else { continue }
            var st = stat()
            guard stat(dir + "/" + name, &st) == 0 else { continue }
            backups.append((name, Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)))
        }
        closedir(d)
        backups.sort { ($0.mtime, $0.name) > ($1.mtime, $1.name) }
        let cutoff = (WallTime.now().seconds - keepDays * 86400) * 1_000_000_000
        for (i, b) in backups.enumerated() {
            let old = keepDays > 0 && b.mtime < cutoff
            if (keep > 0 && i >= keep) || old { unlink(dir + "/" + b.name) }
        }
    }

    func close() {
        state.withLock { s in
            if s.fd >= 0 { Glibc.close(s.fd) }
            s.fd = -1
            s.closed = true
        }
    }
}

func splitExtension(_ path: String) -> (String, String) {
    let slash = path.lastIndex(of: "/")
    if let dot = path.lastIndex(of: "."), slash.map({ dot > $0 }) ?? true, dot != path.startIndex {
        return (String(path[..<dot]), String(path[dot...]))
    }
    return (path, "")
}
