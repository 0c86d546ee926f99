/// An error in a config, naming where it is: the JSON path (`apps.http.servers.srv0.routes[1].handle[0]`) and,
/// when the error is inside a module, that module's ID.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    /// The JSON path of the offending value; empty for the document root.
    public var path: String
    /// The innermost module whose config holds the offending value.
    public var moduleID: ModuleID?
    public var message: String
    /// Set when the error is about a module slot itself (e.g. an unknown module), so enclosing modules do not
    /// claim it.
    var sealed = false

    public init(path: String = "", moduleID: ModuleID? = nil, _ message: String) {
        self.path = path
        self.moduleID = moduleID
        self.message = message
    }

    public var description: String {
        var s = path.isEmpty ? "config" : path
        if let moduleID { s += " (\(moduleID))" }
        return s + ": " + message
    }
}

/// Renders a coding path as a JSON path: `apps.http.servers.srv0.routes[1]`.
public func jsonPathString(_ codingPath: [any CodingKey]) -> String {
    var s = ""
    for key in codingPath {
        if let i = key.intValue, key.stringValue == String(i) || key.stringValue.hasPrefix("Index ") {
            s += "[\(i)]"
        } else {
            if !s.isEmpty { s += "." }
            s += key.stringValue
        }
    }
    return s
}

/// A coding key for any member name or index.
public struct AnyCodingKey: CodingKey, Hashable, Sendable {
    public var stringValue: String
    public var intValue: Int?

    public init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    public init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }

    public init(_ string: String) { self.init(stringValue: string) }
}

extension Error {
    /// The error's message for humans: a config error's full text, or the error's own description.
    public var usherDescription: String {
        if let c = self as? ConfigError { return c.description }
        if let d = self as? DecodingError {
            switch d {
            case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .keyNotFound(_, let ctx),
                .dataCorrupted(let ctx):
                return "\(jsonPathString(ctx.codingPath)): \(ctx.debugDescription)"
            @unknown default:
                return String(describing: d)
            }
        }
        return String(describing: self)
    }
}
