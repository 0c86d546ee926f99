/// A module's identifier: lowercase dotted labels in snake_case, the last label being the module's name and the
/// rest its namespace (`http.handlers.static_response`: namespace `http.handlers`, name `static_response`).
public struct ModuleID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }

    /// Everything before the last dot; empty for top-level IDs such as apps (`http`).
    public var namespace: String {
        guard let dot = rawValue.lastIndex(of: ".") else { return "" }
        return String(rawValue[..<dot])
    }

    /// The last label.
    public var name: String {
        guard let dot = rawValue.lastIndex(of: ".") else { return rawValue }
        return String(rawValue[rawValue.index(after: dot)...])
    }

    /// Joins a namespace and a name.
    public init(namespace: String, name: String) {
        self.rawValue = namespace.isEmpty ? name : namespace + "." + name
    }

    /// Whether the ID is well formed: non-empty labels of `a-z`, `0-9` and `_`.
    public var isWellFormed: Bool {
        guard !rawValue.isEmpty else { return false }
        for label in rawValue.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { return false }
            for c in label.utf8 {
                guard
                    (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
                        || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                        || c == UInt8(ascii: "_")
                else { return false }
            }
        }
        return true
    }

    public var description: String { rawValue }
    public static func < (a: ModuleID, b: ModuleID) -> Bool { a.rawValue < b.rawValue }
}

/// A module: a type with an ID, decoded strictly from its JSON config.
///
/// Life of a module: decode → ``Provisioner/provision(_:)`` → ``Validator/validate()`` → use →
/// ``CleanerUpper/cleanup()``. After provisioning a module is an immutable value; runtime state (pools, counters)
/// lives in objects it owns and releases in `cleanup`.
public protocol Module: Decodable, Sendable {
    /// The module's ID, e.g. `http.handlers.static_response`.
    static var moduleID: ModuleID { get }
}

/// A module that sets itself up after decoding: loads children, compiles templates, opens resources.
public protocol Provisioner {
    mutating func provision(_ context: ProvisionContext) async throws
}

/// A module that checks its provisioned config for consistency.
public protocol Validator {
    func validate() throws
}

/// A module that holds resources to release when its config is unloaded.
public protocol CleanerUpper: Sendable {
    func cleanup() async
}

/// A set of modules shipped together, as one package; a binary is the core plus a list of bundles.
public protocol ModuleBundle {
    /// The bundle's name as `list-modules --packages` shows it, e.g. `usher/standard`.
    static var name: String { get }
    /// The bundle's version as `list-modules --versions` shows it.
    static var version: String { get }
    /// Every module type the bundle registers.
    static var modules: [any Module.Type] { get }
    /// Extensions the bundle contributes beyond modules (Caddyfile directives, CLI commands, ...).
    static var extensions: [any BundleExtension] { get }
}

extension ModuleBundle {
    public static var extensions: [any BundleExtension] { [] }
}

/// Something a bundle adds besides modules; subsystems define their own kinds (a Caddyfile directive, say)
/// and find them with ``ModuleRegistry/extensions(of:)``.
public protocol BundleExtension: Sendable {}
