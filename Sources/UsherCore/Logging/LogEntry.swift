#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A log level, named as in Caddy's config (`DEBUG`, `INFO`, `WARN`, `ERROR`, `PANIC`, `FATAL`).
public enum LogLevel: Int, Comparable, Sendable, CaseIterable {
    case debug, info, warn, error, panic, fatal

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    /// Parses a level name, case-insensitively; the empty string is `info`.
    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "", "info": self = .info
        case "warn", "warning": self = .warn
        case "error": self = .error
        case "panic": self = .panic
        case "fatal": self = .fatal
        default: return nil
        }
    }

    public var lowercaseName: String {
        switch self {
        case .debug: "debug"
        case .info: "info"
        case .warn: "warn"
        case .error: "error"
        case .panic: "panic"
        case .fatal: "fatal"
        }
    }
}

/// A structured log value. Objects keep their field order. Not `indirect`: arrays already hold their elements
/// out of line, and a box per value would be an allocation per field of every access log entry.
public enum LogValue: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    /// A duration in seconds, rendered per the encoder's `duration_format`.
    case duration(Double)
    case null
    case array([LogValue])
    case object([LogField])

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
}

/// A named log value.
public struct LogField: Sendable {
    public var key: String
    public var value: LogValue
    public init(_ key: String, _ value: LogValue) {
        self.key = key
        self.value = value
    }
}

/// A wall-clock instant with nanosecond precision.
public struct WallTime: Sendable, Comparable {
    public var seconds: Int
    public var nanoseconds: Int

    public init(seconds: Int, nanoseconds: Int) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func now() -> WallTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return WallTime(seconds: Int(ts.tv_sec), nanoseconds: Int(ts.tv_nsec))
    }

    public var secondsSinceEpoch: Double { Double(seconds) + Double(nanoseconds) / 1e9 }

    public static func < (a: WallTime, b: WallTime) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// One log entry: a level, a time, the logger's dotted name, a message and ordered fields.
public struct LogEntry: Sendable {
    public var level: LogLevel
    public var time: WallTime
    public var logger: String
    public var message: String
    public var fields: [LogField]

    public init(level: LogLevel, time: WallTime = .now(), logger: String, message: String, fields: [LogField] = []) {
        self.level = level
        self.time = time
        self.logger = logger
        self.message = message
        self.fields = fields
    }
}
