import Foundation
public import UsherCore

/// `caddy.filesystems`: named file systems for `file_server`'s and the file matcher's `fs` (the `filesystem`
/// global option). Each entry's `file_system` is a `caddy.fs.*` module; Caddy's standard build has none, and
/// neither does this one, so an entry naming a backend is a load error and only the local file system, named
/// `default` (or nothing), can be served.
public struct FileSystemsApp: App {
    public static let moduleID: ModuleID = "caddy.filesystems"

    /// One named file system.
    public struct Entry: Decodable, Sendable {
        /// `name`: what `fs` refers to.
        public var name: String

        enum CodingKeys: String, CodingKey { case name, fileSystem = "file_system" }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
            if let backend = try c.decodeIfPresent(JSONValue.self, forKey: .fileSystem), !backend.isNull {
                let id = backend.objectValue?["backend"]?.stringValue ?? ""
                throw c.error(
                    .fileSystem,
                    id.isEmpty
                        ? "module name not specified with key 'backend'"
                        : "loading file system module: module not registered: caddy.fs.\(id)")
            }
        }
    }

    /// `filesystems`: the named file systems.
    public var filesystems: [Entry]

    enum CodingKeys: String, CodingKey { case filesystems }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        filesystems = try c.decodeIfPresent([Entry].self, forKey: .filesystems) ?? []
    }

    public func start() async throws {}
    public func stop() async {}

    /// Whether `name` (placeholders replaced) is the local file system: `default`, or empty, as Caddy's map keys it.
    public static func isLocal(_ name: String) -> Bool {
        let n = name.trimmingCharacters(in: .whitespaces)
        return n.isEmpty || n == "default"
    }
}
