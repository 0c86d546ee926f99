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

/// `http.handlers.map`: defines placeholders (`destinations`) whose values are looked up from `source` in a
/// table of `mappings` (exact `input` or `input_regexp` with `$1`-style expansion), lazily, when first used.
public struct MapHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.map"

    public struct Mapping: Decodable, Sendable {
        public var input: String?
        public var inputRegexp: String?
        /// One output per destination; `null` skips to the next mapping.
        public var outputs: [JSONValue]
        let regex: CompiledRegex?

        enum CodingKeys: String, CodingKey { case input, inputRegexp = "input_regexp", outputs }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            input = try c.decodeIfPresent(String.self, forKey: .input)
            inputRegexp = try c.decodeIfPresent(String.self, forKey: .inputRegexp)
            outputs = try c.decodeIfPresent([JSONValue].self, forKey: .outputs) ?? []
            if let r = inputRegexp, !r.isEmpty {
                do {
                    regex = try CompiledRegex(r)
                } catch {
                    throw c.error(.inputRegexp, "compiling regexp: \(error)")
                }
            } else {
                regex = nil
            }
        }
    }

    /// `source`: the placeholder (or template) to look up.
    public var source: String
    /// `destinations`: the placeholders to define, e.g. `{backend}`.
    public var destinations: [String]
    public var mappings: [Mapping]
    /// `defaults`: values when no mapping matches, one per destination.
    public var defaults: [String]

    enum CodingKeys: String, CodingKey { case source, destinations, mappings, defaults }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        source = try c.decodeIfPresent(String.self, forKey: .source) ?? ""
        let dests = try c.decodeIfPresent([String].self, forKey: .destinations) ?? []
        destinations = try dests.map { d in
            guard d.hasPrefix("{"), d.filter({ $0 == "{" }).count == 1 else {
                throw c.error(.destinations, "destination must be a placeholder and only a placeholder")
            }
            return String(d.dropFirst().dropLast(d.hasSuffix("}") ? 1 : 0))
        }
        mappings = try c.decodeIfPresent([Mapping].self, forKey: .mappings) ?? []
        defaults = try c.decodeIfPresent([String].self, forKey: .defaults) ?? []
        if !defaults.isEmpty && defaults.count != destinations.count {
            throw decoder.configError("\(destinations.count) destinations != \(defaults.count) defaults")
        }
        var seen: [String: Int] = [:]
        for (i, m) in mappings.enumerated() {
            if m.input != nil && m.inputRegexp != nil && !(m.input!.isEmpty || m.inputRegexp!.isEmpty) {
                throw decoder.configError("mapping \(i) has both input and input_regexp fields specified, which is confusing")
            }
            let key = m.inputRegexp ?? m.input ?? ""
            if let prev = seen[key] {
                throw decoder.configError("mapping \(i) has a duplicate input '\(key)' previously used with mapping \(prev)")
            }
            seen[key] = i
            if m.outputs.count != destinations.count {
                throw decoder.configError("mapping \(i) has \(m.outputs.count) outputs but there are \(destinations.count) destinations defined")
            }
        }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        request.replacer.add(MapProvider(handler: self, request: request))
        try await next.serve(request, writer)
    }

    struct MapProvider: PlaceholderProvider {
        let handler: MapHandler
        unowned let request: Request

        func placeholderValue(_ key: String) -> String? {
            guard let idx = handler.destinations.firstIndex(of: key) else { return nil }
            let repl = request.replacer
            let input = repl.replaceAll(handler.source)
            for m in handler.mappings {
                let output = m.outputs[idx]
                if output.isNull { continue }
                let text = varStringValue(output)
                if let re = m.regex {
                    guard re.firstMatch(in: input) != nil else { continue }
                    return re.expandFirst(in: input, with: text)
                }
                if input == (m.input ?? "") { return repl.replaceAll(text) }
            }
            if idx < handler.defaults.count { return repl.replaceAll(handler.defaults[idx]) }
            return ""
        }
    }
}

/// `http.handlers.error`: fails the request with a status and message, for the `errors` routes to handle.
public struct ErrorHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.error"
    /// `error`: the message (`{http.error.message}`); known placeholders are replaced.
    public var error: String
    /// `status_code`: the status. Default: 500.
    public var statusCode: WeakString?

    enum CodingKeys: String, CodingKey { case error, statusCode = "status_code" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        error = try c.decodeIfPresent(String.self, forKey: .error) ?? ""
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        var status = 500
        if let code = statusCode?.value, !code.isEmpty {
            guard let n = Int(request.replacer.replaceAll(code)) else {
                throw HandlerError(status: 500, HTTPErrorMessage("invalid status code \"\(code)\""))
            }
            status = n
        }
        throw HandlerError(status: status, HTTPErrorMessage(request.replacer.replaceKnown(error)))
    }
}

/// `http.handlers.invoke`: runs a named route of the server (`named_routes`), then continues.
public struct InvokeHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.invoke"
    /// `name`: the named route.
    public var name: String

    enum CodingKeys: String, CodingKey { case name }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
    }

    /// Named routes may invoke one another; a chain deeper than this is taken to be a loop.
    static let maxDepth = 64

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let route = request.namedRoutes[name] else {
            throw HandlerError(status: 500, HTTPErrorMessage("invoke: route '\(name)' not found"))
        }
        // Caddy recurses until its stack overflows and the process dies; a loop here is a 500 for the request.
        guard request.invokeDepth < Self.maxDepth else {
            throw HandlerError(status: 500, HTTPErrorMessage("invoke: named routes nested more than \(Self.maxDepth) deep at '\(name)' (do they invoke each other?)"))
        }
        request.invokeDepth += 1
        defer { request.invokeDepth -= 1 }
        try await route.serve(request, writer)
        try await next.serve(request, writer)
    }
}
