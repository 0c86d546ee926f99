/// Turns log entries into bytes; made by an encoder module (`caddy.logging.encoders.*`).
public protocol LogEncoder: Sendable {
    func encode(_ entry: LogEntry, into out: inout [UInt8])
    /// Encodes `entry` with its fields rewritten on the way (the `filter` encoder's). Default: a rewritten copy of
    /// the entry is encoded; the JSON and console encoders rewrite as they write, without the copy.
    func encode(_ entry: LogEntry, rewriting: any LogFieldRewriter, into out: inout [UInt8])
}

/// What becomes of a field as it is written.
public enum LogFieldRewrite {
    /// Written as it is.
    case keep
    /// Written as this field instead; `nil` leaves it out.
    case replace(LogField?)
    /// An object whose own fields the given rewriter rewrites.
    case descend(any LogFieldRewriter)
}

/// Rewrites fields while an encoder writes them, level by level of nested objects.
public protocol LogFieldRewriter: Sendable {
    func rewrite(_ field: LogField) -> LogFieldRewrite
}

extension LogFieldRewriter {
    /// The fields as rewritten, or `nil` when none changes (then the caller keeps its own, uncopied).
    public func rewritten(_ fields: [LogField]) -> [LogField]? {
        var result: [LogField]?
        for (i, field) in fields.enumerated() {
            var replacement: LogField?? = nil
            switch rewrite(field) {
            case .keep: break
            case .replace(let r): replacement = .some(r)
            case .descend(let inner):
                if case .object(let sub) = field.value, let changed = inner.rewritten(sub) {
                    replacement = .some(LogField(field.key, .object(changed)))
                }
            }
            if let replacement {
                if result == nil { result = Array(fields[..<i]) }
                if let r = replacement { result!.append(r) }
            } else if result != nil {
                result!.append(field)
            }
        }
        return result
    }
}

extension LogEncoder {
    public func encode(_ entry: LogEntry, rewriting: any LogFieldRewriter, into out: inout [UInt8]) {
        var e = entry
        if let fields = rewriting.rewritten(entry.fields) { e.fields = fields }
        encode(e, into: &out)
    }
}

/// A module in `caddy.logging.encoders` (inline key `format`).
public protocol LogEncoderModule: Module {
    func makeEncoder() -> any LogEncoder
    /// The encoder for entries going to `writer`, for encoders whose defaults depend on it (a terminal or not).
    /// Default: ``makeEncoder()``.
    func makeEncoder(for writer: (any LogWriter)?) -> any LogEncoder
}

public enum LogEncoders: ModuleNamespace {
    public static let prefix = "caddy.logging.encoders"
    public static let inlineKey: String? = "format"
    public typealias Instance = any LogEncoderModule
}

/// Fields common to Caddy's encoders (`LogEncoderConfig`).
public struct LogEncoderConfig: Codable, Sendable {
    /// `message_key`: the field holding the message. Default: `msg`.
    public var messageKey: String?
    /// `level_key`. Default: `level`.
    public var levelKey: String?
    /// `time_key`. Default: `ts`.
    public var timeKey: String?
    /// `name_key`: the logger name. Default: `logger`.
    public var nameKey: String?
    /// `caller_key` (accepted; no caller information is recorded).
    public var callerKey: String?
    /// `stacktrace_key` (accepted; no stack traces are recorded).
    public var stacktraceKey: String?
    /// `line_ending`. Default: `\n`.
    public var lineEnding: String?
    /// `time_format`: `unix_seconds_float` (default), `unix_milli_float`, `unix_nano`, `iso8601`, `rfc3339`,
    /// `rfc3339_nano`, `wall`, `wall_milli`, `wall_nano`, `common_log`, or a Go layout.
    public var timeFormat: String?
    /// `time_local`: local time instead of UTC. Default: false.
    public var timeLocal: Bool?
    /// `duration_format`: `seconds` (default), `nanos`, `millis` or `string`.
    public var durationFormat: String?
    /// `level_format`: `lower` (default), `upper` or `color`.
    public var levelFormat: String?

    package enum CodingKeys: String, CodingKey, CaseIterable {
        case messageKey = "message_key", levelKey = "level_key", timeKey = "time_key", nameKey = "name_key"
        case callerKey = "caller_key", stacktraceKey = "stacktrace_key", lineEnding = "line_ending"
        case timeFormat = "time_format", timeLocal = "time_local", durationFormat = "duration_format"
        case levelFormat = "level_format"
    }

    public init() {}

    func validate() throws {
        if let d = durationFormat,
            !["s", "second", "seconds", "ns", "nano", "nanos", "ms", "milli", "millis", "string"].contains(d)
        {
            throw ConfigError("duration_format: unknown format \"\(d)\"")
        }
        if let l = levelFormat, !["lower", "upper", "color"].contains(l) {
            throw ConfigError("level_format: unknown format \"\(l)\"")
        }
    }
}

/// The rendering choices an encoder made from its config, shared by the JSON and console encoders.
struct ResolvedEncoderConfig: Sendable {
    var messageKey = "msg", levelKey = "level", timeKey = "ts", nameKey = "logger", lineEnding = "\n"
    var timeFormat = "unix_seconds_float"
    var timeLocal = false
    var durationFormat = "seconds"
    var levelFormat = "lower"

    init(_ c: LogEncoderConfig, defaultTimeFormat: String, defaultLevelFormat: String) {
        messageKey = c.messageKey ?? messageKey
        levelKey = c.levelKey ?? levelKey
        timeKey = c.timeKey ?? timeKey
        nameKey = c.nameKey ?? nameKey
        lineEnding = c.lineEnding ?? lineEnding
        timeFormat = c.timeFormat ?? defaultTimeFormat
        timeLocal = c.timeLocal ?? false
        durationFormat = c.durationFormat ?? "seconds"
        levelFormat = c.levelFormat ?? defaultLevelFormat
    }

    func time(_ t: WallTime) -> LogValue {
        switch timeFormat {
        case "", "unix_seconds_float": return .double(t.secondsSinceEpoch)
        case "unix_milli_float": return .double(Double(t.seconds) * 1000 + Double(t.nanoseconds) / 1e6)
        case "unix_nano": return .int(t.seconds * 1_000_000_000 + t.nanoseconds)
        case "iso8601": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.iso8601Zap, local: timeLocal))
        case "rfc3339": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.rfc3339, local: timeLocal))
        case "rfc3339_nano": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.rfc3339Nano, local: timeLocal))
        case "wall": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.wall, local: timeLocal))
        case "wall_milli": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.wallMilli, local: timeLocal))
        case "wall_nano": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.wallNano, local: timeLocal))
        case "common_log": return .string(GoTimeLayout.format(t, layout: GoTimeLayout.commonLog, local: timeLocal))
        default: return .string(GoTimeLayout.format(t, layout: timeFormat, local: timeLocal))
        }
    }

    func level(_ l: LogLevel) -> String {
        switch levelFormat {
        case "upper": return l.lowercaseName.uppercased()
        case "color":
            let color: String
            switch l {
            case .debug: color = "35"
            case .info: color = "34"
            case .warn: color = "33"
            default: color = "31"
            }
            return "\u{1B}[\(color)m\(l.lowercaseName.uppercased())\u{1B}[0m"
        default: return l.lowercaseName
        }
    }

    func writeValue(_ v: LogValue, into out: inout [UInt8]) {
        switch v {
        case .string(let s): JSONValue.writeString(s, into: &out, escapeHTML: false)
        case .int(let i): out += Array(String(i).utf8)
        case .double(let d): out += Array(formatDouble(d).utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .null: out += Array("null".utf8)
        case .duration(let seconds):
            switch durationFormat {
            case "ns", "nano", "nanos": out += Array(String(Int((seconds * 1e9).rounded())).utf8)
            case "ms", "milli", "millis": out += Array(formatDouble(seconds * 1000).utf8)
            case "string": JSONValue.writeString(formatGoDuration(seconds), into: &out, escapeHTML: false)
            default: out += Array(formatDouble(seconds).utf8)
            }
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeValue(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let fields):
            out.append(UInt8(ascii: "{"))
            writeFields(fields, into: &out)
            out.append(UInt8(ascii: "}"))
        }
    }

    func writeFields(
        _ fields: [LogField], into out: inout [UInt8], leadingComma: Bool = false,
        rewriter: (any LogFieldRewriter)? = nil
    ) {
        var first = !leadingComma
        for original in fields {
            var f = original
            var inner: (any LogFieldRewriter)?
            if let rewriter {
                switch rewriter.rewrite(original) {
                case .keep: break
                case .replace(let r):
                    guard let r else { continue }
                    f = r
                case .descend(let child): inner = child
                }
            }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONValue.writeString(f.key, into: &out, escapeHTML: false)
            out.append(UInt8(ascii: ":"))
            if let inner, case .object(let sub) = f.value {
                out.append(UInt8(ascii: "{"))
                writeFields(sub, into: &out, rewriter: inner)
                out.append(UInt8(ascii: "}"))
            } else {
                writeValue(f.value, into: &out)
            }
        }
    }
}

/// Formats a double the way Go's strconv 'g'-like encoders do for log output: shortest round-trip form.
func formatDouble(_ d: Double) -> String {
    if d.isNaN { return "\"NaN\"" }
    if d.isInfinite { return d > 0 ? "\"+Inf\"" : "\"-Inf\"" }
    if d == d.rounded(), abs(d) < 1e21 { return String(Int64(d)) }
    return String(d)
}

/// Formats seconds as Go's `time.Duration.String()` does: `1.5s`, `250ms`, `2m3s`.
public func formatGoDuration(_ seconds: Double) -> String {
    let ns = Int64((seconds * 1e9).rounded())
    if ns == 0 { return "0s" }
    let neg = ns < 0
    var u = UInt64(neg ? -ns : ns)
    var s: String
    if u < 1_000_000_000 {
        let (unit, div): (String, UInt64) = u < 1_000 ? ("ns", 1) : u < 1_000_000 ? ("µs", 1_000) : ("ms", 1_000_000)
        s = trimmedDecimal(u, div) + unit
    } else {
        let h = u / 3_600_000_000_000
        u -= h * 3_600_000_000_000
        let m = u / 60_000_000_000
        u -= m * 60_000_000_000
        s = trimmedDecimal(u, 1_000_000_000) + "s"
        if h > 0 { s = "\(h)h\(m)m" + s } else if m > 0 { s = "\(m)m" + s }
    }
    return neg ? "-" + s : s
}

private func trimmedDecimal(_ v: UInt64, _ div: UInt64) -> String {
    let whole = v / div
    var frac = v % div
    if frac == 0 { return String(whole) }
    var digits = String(frac)
    var width = String(div).count - 1
    while digits.count < width { digits = "0" + digits }
    while frac % 10 == 0, width > 0 {
        frac /= 10
        width -= 1
        digits.removeLast()
    }
    return "\(whole).\(digits)"
}

/// `caddy.logging.encoders.json`: one JSON object per entry.
public struct JSONLogEncoderModule: LogEncoderModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.json"
    public var config: LogEncoderConfig

    public init(config: LogEncoderConfig = LogEncoderConfig()) { self.config = config }
    public init(from decoder: any Decoder) throws {
        config = try LogEncoderConfig(from: decoder)
        try config.validate()
    }

    public func makeEncoder() -> any LogEncoder {
        JSONLogEncoder(
            config: ResolvedEncoderConfig(config, defaultTimeFormat: "unix_seconds_float", defaultLevelFormat: "lower"))
    }
}

struct JSONLogEncoder: LogEncoder {
    let config: ResolvedEncoderConfig

    func encode(_ entry: LogEntry, into out: inout [UInt8]) { encode(entry, rewriter: nil, into: &out) }

    func encode(_ entry: LogEntry, rewriting: any LogFieldRewriter, into out: inout [UInt8]) {
        encode(entry, rewriter: rewriting, into: &out)
    }

    private func encode(_ entry: LogEntry, rewriter: (any LogFieldRewriter)?, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var head: [LogField] = []
        if !config.levelKey.isEmpty { head.append(LogField(config.levelKey, .string(config.level(entry.level)))) }
        if !config.timeKey.isEmpty { head.append(LogField(config.timeKey, config.time(entry.time))) }
        if !config.nameKey.isEmpty, !entry.logger.isEmpty {
            head.append(LogField(config.nameKey, .string(entry.logger)))
        }
        if !config.messageKey.isEmpty { head.append(LogField(config.messageKey, .string(entry.message))) }
        config.writeFields(head, into: &out)
        config.writeFields(entry.fields, into: &out, leadingComma: !head.isEmpty, rewriter: rewriter)
        out.append(UInt8(ascii: "}"))
        out += Array(config.lineEnding.utf8)
    }
}

/// `caddy.logging.encoders.console`: tab-separated time, level, logger and message, then the fields as JSON.
public struct ConsoleLogEncoderModule: LogEncoderModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.console"
    public var config: LogEncoderConfig

    public init(config: LogEncoderConfig = LogEncoderConfig()) { self.config = config }
    public init(from decoder: any Decoder) throws {
        config = try LogEncoderConfig(from: decoder)
        try config.validate()
    }

    public func makeEncoder() -> any LogEncoder {
        ConsoleLogEncoder(
            config: ResolvedEncoderConfig(config, defaultTimeFormat: "wall_milli", defaultLevelFormat: "color"))
    }
}

struct ConsoleLogEncoder: LogEncoder {
    let config: ResolvedEncoderConfig

    func encode(_ entry: LogEntry, into out: inout [UInt8]) { encode(entry, rewriter: nil, into: &out) }

    func encode(_ entry: LogEntry, rewriting: any LogFieldRewriter, into out: inout [UInt8]) {
        encode(entry, rewriter: rewriting, into: &out)
    }

    private func encode(_ entry: LogEntry, rewriter: (any LogFieldRewriter)?, into out: inout [UInt8]) {
        var parts: [[UInt8]] = []
        if !config.timeKey.isEmpty {
            switch config.time(entry.time) {
            case .string(let s): parts.append(Array(s.utf8))
            case let v:
                var b: [UInt8] = []
                config.writeValue(v, into: &b)
                parts.append(b)
            }
        }
        if !config.levelKey.isEmpty { parts.append(Array(config.level(entry.level).utf8)) }
        if !config.nameKey.isEmpty, !entry.logger.isEmpty { parts.append(Array(entry.logger.utf8)) }
        if !config.messageKey.isEmpty { parts.append(Array(entry.message.utf8)) }
        for (i, p) in parts.enumerated() {
            if i > 0 { out.append(0x09) }
            out += p
        }
        if !entry.fields.isEmpty {
            var fieldBytes: [UInt8] = []
            config.writeFields(entry.fields, into: &fieldBytes, rewriter: rewriter)
            // Every field may have been filtered out.
            if !fieldBytes.isEmpty {
                out.append(0x09)
                out.append(UInt8(ascii: "{"))
                out += fieldBytes
                out.append(UInt8(ascii: "}"))
            }
        }
        out += Array(config.lineEnding.utf8)
    }
}

/// `caddy.logging.encoders.journald`: another encoder's output with a syslog priority prefix (`<6>` info, `<4>`
/// warn, `<3>` error, `<7>` debug, `<2>` panic and fatal), which journald reads from a service's stdout and stderr
/// to file each line at its level. A console encoder underneath leaves out its timestamp (the journal has its own).
public struct JournaldLogEncoderModule: LogEncoderModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.journald"
    /// `wrap`: the encoder whose output is prefixed. Default: console on a terminal, otherwise JSON.
    public var wrap: Loaded<LogEncoders>?

    package enum CodingKeys: String, CodingKey { case wrap }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        wrap = try c.decodeIfPresent(Loaded<LogEncoders>.self, forKey: .wrap)
    }

    public func makeEncoder() -> any LogEncoder { makeEncoder(for: nil) }

    public func makeEncoder(for writer: (any LogWriter)?) -> any LogEncoder {
        var inner: any LogEncoderModule
        if let w = wrap?.module {
            inner = w
        } else if writer?.isTerminal == true {
            inner = ConsoleLogEncoderModule()
        } else {
            inner = JSONLogEncoderModule()
        }
        if var console = inner as? ConsoleLogEncoderModule {
            console.config.timeKey = ""
            inner = console
        }
        return JournaldLogEncoder(wrapped: inner.makeEncoder(for: writer))
    }

    /// The prefix journald reads as the line's priority (syslog levels).
    public static func priorityPrefix(_ level: LogLevel) -> String {
        switch level {
        case .debug: "<7>"
        case .info: "<6>"
        case .warn: "<4>"
        case .error: "<3>"
        case .panic, .fatal: "<2>"
        }
    }
}

struct JournaldLogEncoder: LogEncoder {
    let wrapped: any LogEncoder

    func encode(_ entry: LogEntry, into out: inout [UInt8]) {
        out += JournaldLogEncoderModule.priorityPrefix(entry.level).utf8
        wrapped.encode(entry, into: &out)
    }
}

extension LogEncoderModule {
    public func makeEncoder(for writer: (any LogWriter)?) -> any LogEncoder { makeEncoder() }
}
