import Foundation

/// Something that happened, as Caddy's `caddy.Event`: a name (`cert_obtained`, `started`, ...), a unique ID, when,
/// the module that emitted it, and data.
public struct Event: Sendable {
    /// A random UUID.
    public let id: String
    public let name: String
    public let time: WallTime
    /// The emitting module; `nil` for the core's own events (`started`, `stopping`).
    public let origin: ModuleID?
    public let data: JSONObject
    /// Set when a handler aborted the event (see ``EventAborted``).
    public internal(set) var aborted: (any Error)?
}

/// Thrown by an event handler to abort an event. Emitters of events that can be stopped (`cert_obtaining`,
/// `tls_get_certificate`) then give up what they were about to do.
public struct EventAborted: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "event aborted" }
}

/// An `events.handlers.*` module: runs for the events its subscription names.
public protocol EventHandler: Module {
    /// Handles `event`. Throwing ``EventAborted`` aborts it; any other error is logged and the next handler runs.
    func handle(_ event: Event) async throws
}

/// The `events.handlers` namespace (inline key `handler`).
public enum EventHandlers: ModuleNamespace {
    public static let prefix = "events.handlers"
    public static let inlineKey: String? = "handler"
    public typealias Instance = any EventHandler
}

/// Whatever emits events: the `events` app of the running config.
public protocol EventEmitter: Sendable {
    /// Emits an event and runs its subscribers; the returned event says whether one of them aborted it.
    @discardableResult
    func emit(_ name: String, origin: ModuleID?, data: JSONObject?) async -> Event
}

/// The `events` app: subscriptions bind handlers to event names and to the modules that emit them. Every event is
/// logged at debug level by the `events` logger (`event`, with `name`, `id`, `origin` and `data`), as Caddy does.
public final class EventsApp: App, Provisioner, EventEmitter, @unchecked Sendable {
    // @unchecked: `subscriptions` and `logger` are set while provisioning, before any event is emitted, and then
    // only read.
    public static let moduleID: ModuleID = "events"

    /// One subscription: `events` (names; none or `""` means all), `modules` (origins, matched by ID prefix at
    /// dot boundaries; none means any) and `handlers`.
    public struct Subscription: Decodable, Sendable {
        public var events: [String]?
        public var modules: [String]?
        public var handlers: [Loaded<EventHandlers>]?
    }

    /// `subscriptions`: which handlers run for which events.
    public var subscriptions: [Subscription]
    /// event name → origin module ID prefix → handlers.
    private var table: [String: [String: [any EventHandler]]] = [:]
    private var router: LogRouter?

    enum CodingKeys: String, CodingKey { case subscriptions }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        subscriptions = try c.decodeIfPresent([Subscription].self, forKey: .subscriptions) ?? []
    }

    public func provision(_ context: ProvisionContext) async throws {
        router = context.environment.logRouter
        for i in subscriptions.indices {
            guard subscriptions[i].handlers != nil else { continue }
            try await subscriptions[i].handlers!.provision(context)
            if subscriptions[i].handlers!.isEmpty {
                throw ConfigError(path: "apps.events.subscriptions[\(i)]", "no handlers defined")
            }
        }
        for s in subscriptions {
            let handlers = (s.handlers ?? []).map(\.module)
            for event in (s.events?.isEmpty == false ? s.events! : [""]) {
                for module in (s.modules?.isEmpty == false ? s.modules! : [""]) {
                    table[event, default: [:]][module, default: []] += handlers
                }
            }
        }
    }

    public func start() async throws {}
    public func stop() async {}

    @discardableResult
    public func emit(_ name: String, origin: ModuleID?, data: JSONObject? = nil) async -> Event {
        var event = Event(
            id: UUID().uuidString.lowercased(), name: name, time: .now(), origin: origin, data: data ?? [:],
            aborted: nil)
        if let router, router.enabled(.debug, for: "events") {
            router.log(
                LogEntry(
                    level: .debug, logger: "events", message: "event",
                    fields: [
                        LogField("name", .string(name)), LogField("id", .string(event.id)),
                        LogField("origin", .string(origin?.rawValue ?? "")),
                        LogField("data", data.map { Self.logValue(.object($0)) } ?? .null),
                    ]))
        }
        // Handlers for this event name, then for all events; for each, from the exact origin up through its
        // namespaces to subscriptions that name no module.
        for eventName in name.isEmpty ? [""] : [name, ""] {
            guard let byModule = table[eventName] else { continue }
            var module = origin?.rawValue ?? ""
            while true {
                for handler in byModule[module] ?? [] {
                    do {
                        try await handler.handle(event)
                    } catch {
                        let aborted = error is EventAborted
                        router?.log(
                            LogEntry(
                                level: .error, logger: "events", message: "handler error",
                                fields: [
                                    LogField("name", .string(name)), LogField("error", .string("\(error)")),
                                    LogField("aborted", .bool(aborted)),
                                ]))
                        if aborted {
                            event.aborted = error
                            return event
                        }
                    }
                }
                if module.isEmpty { break }
                module = module.lastIndex(of: ".").map { String(module[..<$0]) } ?? ""
            }
        }
        return event
    }

    /// Event data as Go's encoder writes a `map[string]any`: keys sorted.
    static func logValue(_ v: JSONValue) -> LogValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .number(let n): return Int(n.text).map { .int($0) } ?? .double(n.double ?? 0)
        case .array(let items): return .array(items.map(logValue))
        case .object(let o): return .object(o.sortedByKey().map { LogField($0.key, logValue($0.value)) })
        }
    }
}
