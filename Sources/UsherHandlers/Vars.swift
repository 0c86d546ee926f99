public import UsherCore
public import UsherHTTP

/// `http.handlers.vars`: sets request variables (`{http.vars.*}`); string values may hold placeholders, other
/// JSON values are kept as they are.
public struct VarsHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.vars"
    public var vars: [(key: String, value: JSONValue)]

    public init(from decoder: any Decoder) throws {
        guard case .object(let o) = decoder.rawJSON ?? .null else { throw decoder.configError("expected an object") }
        vars = o.members
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let repl = request.replacer
        for (k, v) in vars {
            let key = repl.replaceAll(k)
            var value = v
            if case .string(let s) = v { value = .string(repl.replaceAll(s)) }
            request.vars[key] = value
            if key == "http.auth.user.id" { repl.set(key, varStringValue(value)) }
        }
        try await next.serve(request, writer)
    }
}

func varStringValue(_ v: JSONValue) -> String {
    switch v {
    case .string(let s): return s
    case .number(let n): return n.text
    case .bool(let b): return b ? "true" : "false"
    case .null: return ""
    default: return v.serialized()
    }
}
