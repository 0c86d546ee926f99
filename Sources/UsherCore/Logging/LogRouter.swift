public import Logging
import Synchronization

/// One configured log (Caddy's `CustomLog`), ready to take entries.
public struct LogSink: Sendable {
    public let name: String
    public let level: LogLevel
    public let include: [String]
    public let exclude: [String]
    let encoder: any LogEncoder
    let writer: any LogWriter
    let writerKey: String

    /// Whether entries of the logger `name` go to this log (Caddy's `loggerAllowed`: the longest matching
    /// namespace in `include`/`exclude` decides).
    public func allows(_ loggerName: String) -> Bool {
        if include.isEmpty && exclude.isEmpty { return true }
        var name = loggerName
        if !name.isEmpty && name != "*" && name != "." { name += "." }
        var longestAccept = 0
        var longestReject = 0
        if !include.isEmpty {
            for ns in include where name.hasPrefix(ns + ".") && ns.count > longestAccept { longestAccept = ns.count }
            if longestAccept == 0 { return false }
        }
        for ns in exclude {
            if (ns == "*" && name != ".") || (ns == "." && name == ".") { return false }
            if name.hasPrefix(ns + ".") && ns.count > longestReject { longestReject = ns.count }
        }
        if longestReject > longestAccept { return false }
        return longestAccept > longestReject || (include.isEmpty && longestReject == 0)
    }
}

/// Routes log entries to the configured logs. One router serves the process; a config load replaces its sinks,
/// keeping writers whose destination did not change open.
public final class LogRouter: Sendable {
    private struct State {
        var sinks: [LogSink] = []
        /// Sink indexes per logger name, and the lowest level any of them takes.
        var routes: [String: (sinks: [Int], minLevel: LogLevel?)] = [:]
    }

    private let state: Mutex<State>

    /// The router every `usher` process logs through.
    public static let shared = LogRouter()

    public init() {
        let stderr = FileDescriptorLogWriter(fd: 2)
        let encoder: any LogEncoder =
            stderr.isTerminal
            ? ConsoleLogEncoderModule().makeEncoder()
            : JSONLogEncoderModule().makeEncoder()
        state = Mutex(
            State(sinks: [
                LogSink(
                    name: "default", level: .info, include: [], exclude: [], encoder: encoder, writer: stderr,
                    writerKey: "std:err")
            ]))
    }

    /// Swaps in new sinks; writers the old sinks used and the new ones do not are closed.
    public func replaceSinks(_ sinks: [LogSink]) {
        let old = state.withLock { s in
            let old = s.sinks
            s.sinks = sinks
            s.routes = [:]
            return old
        }
        let keep = Set(sinks.map { ObjectIdentifier($0.writer) })
        var closed = Set<ObjectIdentifier>()
        for sink in old where !keep.contains(ObjectIdentifier(sink.writer)) {
            if closed.insert(ObjectIdentifier(sink.writer)).inserted { sink.writer.close() }
        }
    }

    /// The open writer for a destination, so a reload reuses it.
    func existingWriter(key: String) -> (any LogWriter)? {
        state.withLock { s in s.sinks.first { $0.writerKey == key }?.writer }
    }

    private func route(_ logger: String, _ s: inout State) -> (sinks: [Int], minLevel: LogLevel?) {
        if let r = s.routes[logger] { return r }
        var idx: [Int] = []
        var minLevel: LogLevel?
        for (i, sink) in s.sinks.enumerated() where sink.allows(logger) {
            idx.append(i)
            minLevel = min(minLevel ?? sink.level, sink.level)
        }
        let r = (sinks: idx, minLevel: minLevel)
        if s.routes.count > 4096 { s.routes = [:] }
        s.routes[logger] = r
        return r
    }

    /// The lowest level any log takes from `logger`, or `nil` when no log takes it at all.
    public func minimumLevel(for logger: String) -> LogLevel? {
        state.withLock { s in route(logger, &s).minLevel }
    }

    /// Whether an entry at `level` from `logger` would be written anywhere.
    public func enabled(_ level: LogLevel, for logger: String) -> Bool {
        guard let min = minimumLevel(for: logger) else { return false }
        return level >= min
    }

    /// Encodes and writes an entry to every log that takes it.
    public func log(_ entry: LogEntry) {
        let targets: [LogSink] = state.withLock { s in
            let r = route(entry.logger, &s)
            return r.sinks.compactMap { i in entry.level >= s.sinks[i].level ? s.sinks[i] : nil }
        }
        for sink in targets {
            var out: [UInt8] = []
            out.reserveCapacity(256)
            sink.encoder.encode(entry, into: &out)
            sink.writer.write(out)
        }
    }

    /// A swift-log `Logger` that writes through this router under the dotted name `name`.
    public func logger(_ name: String) -> Logger {
        Logger(label: name) { label in UsherLogHandler(label: label, router: self) }
    }
}

/// A swift-log backend that writes through a ``LogRouter``. Metadata become fields, sorted by key.
public struct UsherLogHandler: LogHandler {
    public let label: String
    let router: LogRouter
    public var metadata: Logger.Metadata = [:]
    private var overrideLevel: Logger.Level?

    public init(label: String, router: LogRouter) {
        self.label = label
        self.router = router
    }

    public var logLevel: Logger.Level {
        get {
            if let overrideLevel { return overrideLevel }
            guard let min = router.minimumLevel(for: label) else { return .critical }
            switch min {
            case .debug: return .debug
            case .info: return .info
            case .warn: return .warning
            case .error: return .error
            case .panic, .fatal: return .critical
            }
        }
        set { overrideLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let level: LogLevel
        switch event.level {
        case .trace, .debug: level = .debug
        case .info, .notice: level = .info
        case .warning: level = .warn
        case .error: level = .error
        case .critical: level = .error
        }
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let fields = merged.sorted { $0.key < $1.key }.map { LogField($0.key, Self.value($0.value)) }
        router.log(LogEntry(level: level, logger: label, message: event.message.description, fields: fields))
    }

    static func value(_ v: Logger.MetadataValue) -> LogValue {
        switch v {
        case .string(let s): return .string(s)
        case .stringConvertible(let c):
            if let i = c as? Int { return .int(i) }
            if let d = c as? Double { return .double(d) }
            if let b = c as? Bool { return .bool(b) }
            return .string(c.description)
        case .array(let a): return .array(a.map(value))
        case .dictionary(let d): return .object(d.sorted { $0.key < $1.key }.map { LogField($0.key, value($0.value)) })
        }
    }
}
