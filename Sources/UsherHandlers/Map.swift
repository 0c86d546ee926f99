public import UsherCore
public import UsherHTTP

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
                throw decoder.configError(
                    "mapping \(i) has both input and input_regexp fields specified, which is confusing")
            }
            let key = m.inputRegexp ?? m.input ?? ""
            if let prev = seen[key] {
                throw decoder.configError(
                    "mapping \(i) has a duplicate input '\(key)' previously used with mapping \(prev)")
            }
            seen[key] = i
            if m.outputs.count != destinations.count {
                throw decoder.configError(
                    "mapping \(i) has \(m.outputs.count) outputs but there are \(destinations.count) destinations defined"
                )
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
