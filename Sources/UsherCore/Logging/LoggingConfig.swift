/// The top-level `logging` config: named logs, each with a writer, an encoder, a level and the loggers it takes.
public struct LoggingConfig: Decodable, Sendable {
    /// `logs`: logs by name; `default` configures the default log (stderr, INFO, all loggers).
    public var logs: [String: CustomLogConfig]

    package enum CodingKeys: String, CodingKey { case logs, sink }

    public init(logs: [String: CustomLogConfig] = [:]) { self.logs = logs }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.sink], note: "there is no standard library log to capture")
        logs = try c.decodeIfPresent([String: CustomLogConfig].self, forKey: .logs) ?? [:]
    }

    /// Builds the sinks for these logs, reusing `router`'s open writers for unchanged destinations.
    public func makeSinks(router: LogRouter) throws -> [LogSink] {
        var sinks: [LogSink] = []
        var opened: [String: any LogWriter] = [:]
        func writer(for module: any LogWriterModule) throws -> any LogWriter {
            if let w = opened[module.writerKey] ?? router.existingWriter(key: module.writerKey) {
                opened[module.writerKey] = w
                return w
            }
            let w = try module.openWriter()
            opened[module.writerKey] = w
            return w
        }
        if logs["default"] == nil {
            let w = try writer(for: StderrWriterModule())
            sinks.append(
                LogSink(
                    name: "default", level: .info, include: [], exclude: [], encoder: Self.defaultEncoder(for: w),
                    writer: w, writerKey: StderrWriterModule().writerKey)
            )
        }
        for name in logs.keys.sorted(by: { ($0 == "default" ? "" : $0) < ($1 == "default" ? "" : $1) }) {
            let log = logs[name]!
            let writerModule: any LogWriterModule = log.writer?.module ?? StderrWriterModule()
            let w: any LogWriter
            do {
                w = try writer(for: writerModule)
            } catch {
                throw ConfigError(path: "logging.logs.\(name).writer", error.usherDescription)
            }
            let encoder = log.encoder?.module.makeEncoder(for: w) ?? Self.defaultEncoder(for: w)
            sinks.append(
                LogSink(
                    name: name, level: log.level, include: log.include, exclude: log.exclude, encoder: encoder,
                    writer: w, writerKey: writerModule.writerKey)
            )
        }
        return sinks
    }

    /// Console on a terminal, JSON otherwise, as Caddy chooses.
    public static func defaultEncoder(for writer: any LogWriter) -> any LogEncoder {
        writer.isTerminal ? ConsoleLogEncoderModule().makeEncoder() : JSONLogEncoderModule().makeEncoder()
    }
}

/// One named log (Caddy's `CustomLog`).
public struct CustomLogConfig: Decodable, Sendable {
    /// `writer`: where entries go. Default: stderr.
    public var writer: Loaded<LogWriters>?
    /// `encoder`: how entries are rendered. Default: console on a terminal, otherwise JSON.
    public var encoder: Loaded<LogEncoders>?
    /// `level`: the lowest level written. Default: `INFO`.
    public var level: LogLevel
    /// `include`: logger names (namespaces) this log takes; empty means all.
    public var include: [String]
    /// `exclude`: logger names this log leaves out.
    public var exclude: [String]

    package enum CodingKeys: String, CodingKey { case writer, encoder, level, include, exclude, sampling, core }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.sampling, .core])
        writer = try c.decodeIfPresent(Loaded<LogWriters>.self, forKey: .writer)
        encoder = try c.decodeIfPresent(Loaded<LogEncoders>.self, forKey: .encoder)
        let levelName = try c.decodeIfPresent(String.self, forKey: .level) ?? ""
        guard let level = LogLevel(name: levelName) else {
            throw c.error(.level, "unrecognized log level \"\(levelName)\"")
        }
        self.level = level
        include = try c.decodeIfPresent([String].self, forKey: .include) ?? []
        exclude = try c.decodeIfPresent([String].self, forKey: .exclude) ?? []
        for allow in include where exclude.contains(allow) {
            throw c.error(.include, "include and exclude must not intersect, but found \(allow) in both lists")
        }
        if !include.isEmpty && !exclude.isEmpty {
            for allow in include {
                let related = exclude.contains { deny in
                    (allow + ".").hasPrefix(deny + ".") || (deny + ".").hasPrefix(allow + ".")
                }
                if !related {
                    throw c.error(
                        .include,
                        "when both include and exclude are populated, each element must be a superspace or subspace of one in the other list; check '\(allow)' in include"
                    )
                }
            }
        }
    }
}
