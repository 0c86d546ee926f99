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

/// `caddy.logging.writers.file`: appends to a file, rolling it by size. Rolled files are named
/// `<name>-<UTC time><ext>` beside it and compressed with gzip (default) or zstd, as Caddy's are.
public struct FileWriterModule: LogWriterModule {
    public static let moduleID: ModuleID = "caddy.logging.writers.file"

    /// `filename`: the file to write. Required.
    public var filename: String
    /// `mode`: permissions for a new file, in octal. Default: `0600`.
    public var mode: String?
    /// `roll`: whether to roll the file when it grows. Default: true.
    public var roll: Bool?
    /// `roll_size_mb`: size in MiB at which the file is rolled. Default: 100.
    public var rollSizeMB: Int?
    /// `roll_keep`: rolled files to keep. Default: 10.
    public var rollKeep: Int?
    /// `roll_keep_days`: days to keep rolled files. Default: 90.
    public var rollKeepDays: Int?
    /// `roll_local_time`: name rolled files by local time. Default: false.
    public var rollLocalTime: Bool?
    /// `roll_gzip`: compress rolled files (false keeps them as they are). Default: true.
    public var rollGzip: Bool?
    /// `roll_compression`: `gzip`, `zstd` or `none`; overrides `roll_gzip`. Default: gzip.
    public var rollCompression: String?

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
        try c.refuseUnsupported([.rollInterval, .rollAt, .rollMinutes, .dirMode, .backupTimeFormat])
        filename = try c.decode(String.self, forKey: .filename)
        if filename.isEmpty { throw c.error(.filename, "must not be empty") }
        mode = try c.decodeIfPresent(String.self, forKey: .mode)
        if let mode, UInt32(mode, radix: 8) == nil { throw c.error(.mode, "\"\(mode)\" is not an octal file mode") }
        roll = try c.decodeIfPresent(Bool.self, forKey: .roll)
        rollSizeMB = try c.decodeIfPresent(Int.self, forKey: .rollSizeMB)
        rollKeep = try c.decodeIfPresent(Int.self, forKey: .rollKeep)
        rollKeepDays = try c.decodeIfPresent(Int.self, forKey: .rollKeepDays)
        rollLocalTime = try c.decodeIfPresent(Bool.self, forKey: .rollLocalTime)
        rollGzip = try c.decodeIfPresent(Bool.self, forKey: .rollGzip)
        rollCompression = try c.decodeIfPresent(String.self, forKey: .rollCompression)
        if let rc = rollCompression, !["", "none", "gzip", "zstd"].contains(rc.lowercased()) {
            throw c.error(.rollCompression, "must be 'none', 'gzip' or 'zstd', not \"\(rc)\"")
        }
    }

    public var writerKey: String { "file:" + filename }

    /// How rolled files are compressed.
    var compression: RollCompression {
        switch rollCompression?.lowercased() {
        case "none": return .none
        case "gzip": return .gzip
        case "zstd": return .zstd
        default: return rollGzip == false ? .none : .gzip
        }
    }

    public func openWriter() throws -> any LogWriter {
        try RollingFileLogWriter(
            path: filename,
            mode: mode_t(UInt32(mode ?? "600", radix: 8) ?? 0o600),
            maxBytes: (roll ?? true) ? max(1, rollSizeMB ?? 100) * 1024 * 1024 : nil,
            keep: rollKeep ?? 10,
            keepDays: rollKeepDays ?? 90,
            localTime: rollLocalTime ?? false,
            compression: compression
        )
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
    }
    let path: String
    let mode: mode_t
    let maxBytes: Int?
    let keep: Int
    let keepDays: Int
    let localTime: Bool
    let compression: RollCompression
    let state: Mutex<State>
    var isTerminal: Bool { false }

    init(
        path: String, mode: mode_t, maxBytes: Int?, keep: Int, keepDays: Int, localTime: Bool,
        compression: RollCompression = .gzip
    ) throws {
        self.path = path
        self.mode = mode
        self.maxBytes = maxBytes
        self.keep = keep
        self.keepDays = keepDays
        self.localTime = localTime
        self.compression = compression
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("opening log file \(path)") }
        var st = stat()
        fstat(fd, &st)
        self.state = Mutex(State(fd: fd, size: Int(st.st_size)))
    }

    func write(_ bytes: [UInt8]) {
        state.withLock { s in
            if let maxBytes, s.size + bytes.count > maxBytes, s.size > 0 { rollLocked(&s) }
            writeFully(s.fd, bytes)
            s.size += bytes.count
        }
    }

    private func rollLocked(_ s: inout State) {
        Glibc.close(s.fd)
        let stamp = GoTimeLayout.format(.now(), layout: "2006-01-02T15-04-05.000", local: localTime)
        let (base, ext) = splitExtension(path)
        // Two rolls within one millisecond would otherwise overwrite the first backup.
        var candidate = "\(base)-\(stamp)\(ext)"
        var n = 1
        while ["", ".gz", ".zst"].contains(where: { access(candidate + $0, F_OK) == 0 }) {
            candidate = "\(base)-\(stamp)-\(n)\(ext)"
            n += 1
        }
        let backup = candidate
        Glibc.rename(path, backup)
        s.fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode)
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

    private func pruneBackups(base: String, ext: String) {
        let dir = base.lastIndex(of: "/").map { String(base[..<$0]) } ?? "."
        let prefix = (base.lastIndex(of: "/").map { String(base[base.index(after: $0)...]) } ?? base) + "-"
        guard let d = opendir(dir) else { return }
        var backups: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            let isBackup = [ext, ext + ".gz", ext + ".zst"].contains {
                name.hasSuffix($0) && name.count > prefix.count + $0.count
            }
            if name.hasPrefix(prefix), isBackup { backups.append(name) }
        }
        closedir(d)
        backups.sort(by: >)
        let cutoff = WallTime.now().seconds - keepDays * 86400
        for (i, name) in backups.enumerated() {
            let full = dir + "/" + name
            var st = stat()
            let old = stat(full, &st) == 0 && keepDays > 0 && Int(st.st_mtim.tv_sec) < cutoff
            if (keep > 0 && i >= keep) || old { unlink(full) }
        }
    }

    func close() {
        state.withLock { s in
            if s.fd >= 0 { Glibc.close(s.fd) }
            s.fd = -1
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
