/// A family of modules that a config field can hold, such as HTTP handlers: the ID prefix, how the JSON names the
/// member, and the Swift type every member must have.
///
/// ```swift
/// enum HTTPHandlers: ModuleNamespace {
///     static let prefix = "http.handlers"
///     static let inlineKey: String? = "handler"
///     typealias Instance = any MiddlewareHandler
/// }
/// ```
public protocol ModuleNamespace: Sendable {
    /// What members are used as once loaded, typically an existential of the namespace's protocol.
    associatedtype Instance: Sendable
    /// The namespace, e.g. `http.handlers`; empty for apps.
    static var prefix: String { get }
    /// The member that names the module in an object (`"handler": "static_response"`); `nil` where the module
    /// name is the key of a map (`"match": [{"path": [...]}]`).
    static var inlineKey: String? { get }
    /// Converts a decoded module to `Instance`, or `nil` when the module is not one.
    static func instance(_ module: any Module) -> Instance?
}

extension ModuleNamespace {
    public static func instance(_ module: any Module) -> Instance? { module as? Instance }
}

/// A module loaded from config by its namespace's inline key, e.g. one entry of a route's `handle` list.
///
/// Decoding finds the module type in the registry and decodes the same JSON object into it (the inline key
/// excepted). ``provision(_:)`` then provisions and validates it; errors name the JSON path and the module ID.
public struct Loaded<N: ModuleNamespace>: Decodable, Sendable {
    /// The module, provisioned once ``provision(_:)`` has run.
    public private(set) var module: N.Instance
    public let moduleID: ModuleID
    /// Where the module's config sits in the whole document.
    public let configPath: String
    /// The module's config as written, which identifies it across config reloads.
    public let rawConfig: JSONValue

    public init(from decoder: any Decoder) throws {
        guard let strict = decoder as? StrictJSONDecoder else {
            throw ConfigError(path: jsonPathString(decoder.codingPath), "modules can only be decoded from config")
        }
        guard let inlineKey = N.inlineKey else {
            throw ConfigError(path: strict.pathString, "namespace \(N.prefix) is keyed by name; use LoadedMap")
        }
        guard case .object(let object) = strict.value else {
            throw strict.typeError(expected: "an object")
        }
        guard let nameValue = object[inlineKey] else {
            throw ConfigError(path: strict.pathString, "module name missing: expected a \"\(inlineKey)\" field")
        }
        guard case .string(let name) = nameValue, !name.isEmpty else {
            throw ConfigError(
                path: jsonPathString(strict.codingPath + [AnyCodingKey(inlineKey)]),
                "module name must be a non-empty string"
            )
        }
        let id = ModuleID(namespace: N.prefix, name: name)
        try self.init(id: id, decoder: strict.withIgnoredKey(inlineKey))
    }

    init(id: ModuleID, decoder: StrictJSONDecoder) throws {
        guard let registry = decoder.registry else {
            throw ConfigError(path: decoder.pathString, "no module registry to load \(id) from")
        }
        guard let registered = registry.module(id) else {
            throw registry.unavailableError(id, path: decoder.pathString)
        }
        let module: any Module
        do {
            module = try registered.type.init(from: decoder)
            // A module whose decoding never asked for the object's members (one with no fields, say) still
            // must not accept members it does not know.
            if !decoder.requestedKeyedContainer, case .object(let object) = decoder.value {
                for m in object where m.key != decoder.ignoredKey && m.key != "@id" {
                    throw ConfigError(path: jsonPathString(decoder.codingPath + [AnyCodingKey(m.key)]), "unknown field")
                }
            }
        } catch var e as ConfigError {
            if e.moduleID == nil && !e.sealed { e.moduleID = id }
            e.sealed = true
            throw e
        } catch {
            throw ConfigError(path: decoder.pathString, moduleID: id, error.usherDescription)
        }
        guard let instance = N.instance(module) else {
            throw ConfigError(path: decoder.pathString, moduleID: id, "module is not a member of namespace \(N.prefix)")
        }
        self.module = instance
        self.moduleID = id
        self.configPath = decoder.pathString
        self.rawConfig = decoder.value
    }

    /// Wraps an already-built module, e.g. one made by code rather than config.
    public init(_ module: N.Instance, id: ModuleID, configPath: String = "", rawConfig: JSONValue = .null) {
        self.module = module
        self.moduleID = id
        self.configPath = configPath
        self.rawConfig = rawConfig
    }

    /// Provisions and validates the module, and registers it for clean-up with the context.
    public mutating func provision(_ context: ProvisionContext) async throws {
        do {
            if var p = module as? any Provisioner {
                try await p.provision(context)
                guard let again = (p as Any) as? N.Instance else {
                    throw ConfigError("module changed type while provisioning")
                }
                module = again
            }
            if let v = module as? any Validator { try v.validate() }
        } catch var e as ConfigError {
            if e.path.isEmpty { e.path = configPath }
            if e.moduleID == nil { e.moduleID = moduleID }
            throw e
        } catch {
            throw ConfigError(path: configPath, moduleID: moduleID, error.usherDescription)
        }
        if let c = module as? any CleanerUpper { context.registerCleanup(c) }
    }
}

extension Array {
    /// Provisions every loaded module in order.
    public mutating func provision<N>(_ context: ProvisionContext) async throws where Element == Loaded<N> {
        for i in indices { try await self[i].provision(context) }
    }
}

/// Modules loaded from a JSON object whose keys are module names, e.g. a matcher set `{"path": [...]}`.
public struct LoadedMap<N: ModuleNamespace>: Decodable, Sendable {
    public private(set) var entries: [Loaded<N>]

    public init(from decoder: any Decoder) throws {
        guard let strict = decoder as? StrictJSONDecoder else {
            throw ConfigError(path: jsonPathString(decoder.codingPath), "modules can only be decoded from config")
        }
        guard case .object(let object) = strict.value else {
            throw strict.typeError(expected: "an object")
        }
        var entries: [Loaded<N>] = []
        for member in object {
            let id = ModuleID(namespace: N.prefix, name: member.key)
            let child = strict.child(member.value, key: AnyCodingKey(member.key))
            entries.append(try Loaded<N>(id: id, decoder: child))
        }
        self.entries = entries
    }

    public init(entries: [Loaded<N>]) { self.entries = entries }

    public var isEmpty: Bool { entries.isEmpty }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await entries.provision(context)
    }
}
