/// A request to the admin API, with its body read in full.
public struct AdminRequest: Sendable {
    public var method: String
    /// The path, without the query.
    public var path: String
    public var query: String
    /// Header fields as received (names as sent).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(
        method: String, path: String, query: String = "", headers: [(name: String, value: String)] = [],
        body: [UInt8] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    /// The first value of a header field, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// An admin API response.
public struct AdminResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int = 200, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON response (`Content-Type: application/json`), newline-terminated as Go's encoder writes it.
    public static func json(_ value: JSONValue, status: Int = 200, headers: [(name: String, value: String)] = [])
        -> AdminResponse
    {
        AdminResponse(
            status: status,
            headers: [("Content-Type", "application/json")] + headers,
            body: value.serializedBytes(.init(trailingNewline: true))
        )
    }
}

/// An admin API route contributed by a bundle (Caddy's `admin.api.*` modules), e.g. `/reverse_proxy/upstreams`.
public protocol AdminEndpoint: BundleExtension {
    /// The path this endpoint serves; requests for it and for paths below it (`prefix/...`) come here.
    var path: String { get }
    func handle(_ request: AdminRequest, runtime: ServerRuntime) async throws -> AdminResponse
}

/// Turns a config in another format into JSON config (Caddy's config adapters), e.g. the Caddyfile adapter.
public protocol ConfigAdapter: BundleExtension {
    /// The adapter's name as `--adapter` takes it (`caddyfile`).
    var name: String { get }
    /// Adapts `body`; `filename` is used in error messages and to resolve relative imports. `registry` holds the
    /// bundles of the running binary, whose extensions the adapter may consult (directive parsers, ...).
    func adapt(_ body: [UInt8], filename: String, registry: ModuleRegistry) throws -> ConfigAdaptation
}

/// The result of adapting a config: the JSON and any warnings.
public struct ConfigAdaptation: Sendable {
    public var config: JSONValue
    public var warnings: [AdapterWarning]

    public init(config: JSONValue, warnings: [AdapterWarning] = []) {
        self.config = config
        self.warnings = warnings
    }
}

/// A problem an adapter reports without failing, such as an unformatted Caddyfile.
public struct AdapterWarning: Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var directive: String
    public var message: String

    public init(file: String = "", line: Int = 0, directive: String = "", message: String) {
        self.file = file
        self.line = line
        self.directive = directive
        self.message = message
    }

    public var description: String {
        var s = ""
        if !file.isEmpty { s += line > 0 ? "\(file):\(line): " : "\(file): " }
        if !directive.isEmpty { s += "\(directive): " }
        return s + message
    }

    public var json: JSONValue {
        var o = JSONObject()
        if !file.isEmpty { o["file"] = .string(file) }
        if line > 0 { o["line"] = .number(JSONNumber(line)) }
        if !directive.isEmpty { o["directive"] = .string(directive) }
        o["message"] = .string(message)
        return .object(o)
    }
}

extension ModuleRegistry {
    /// The config adapter named `name`, if the binary has one.
    public func adapter(named name: String) -> (any ConfigAdapter)? {
        extensions(of: (any ConfigAdapter).self).first { $0.name == name }
    }

    /// The adapter a `Content-Type` selects, by its subtype as Caddy does (`text/caddyfile` → `caddyfile`); `nil` for
    /// JSON or no type. Throws for a type naming no adapter.
    public func adapter(forContentType contentType: String) throws -> (any ConfigAdapter)? {
        let mediaType = contentType.split(separator: ";").first.map { $0.trimmingCharacters() }?.lowercased() ?? ""
        if mediaType.isEmpty || mediaType.hasSuffix("/json") { return nil }
        guard let slash = mediaType.firstIndex(of: "/") else { throw AdminError(400, "malformed Content-Type") }
        let name = String(mediaType[mediaType.index(after: slash)...])
        guard let a = adapter(named: name) else { throw AdminError(400, "unrecognized config adapter '\(name)'") }
        return a
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
