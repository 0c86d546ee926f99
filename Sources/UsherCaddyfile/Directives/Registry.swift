public import UsherCore

/// Parses one directive's segment into config values (Caddy's `UnmarshalFunc`).
public typealias DirectiveParser = @Sendable (Helper) throws -> [ConfigValue]

/// Parses a handler directive into a handler module object, `"handler"` key included (Caddy's
/// `UnmarshalHandlerFunc`); the matcher token has already been taken off.
public typealias HandlerDirectiveParser = @Sendable (Helper) throws -> JSONObject

/// Parses a module's Caddyfile tokens into its JSON (Caddy's `UnmarshalCaddyfile`), without the inline key. The
/// registry is there for modules that nest other modules.
public typealias ModuleParser = @Sendable (Dispenser, CaddyfileRegistry) throws -> JSONValue

/// Parses a global option (Caddy's `UnmarshalGlobalFunc`).
public typealias GlobalOptionParser = @Sendable (GlobalOptionInput) throws -> Any?

/// What a global option's parser sees: its tokens and the value an earlier instance of the option produced.
public struct GlobalOptionInput {
    public let d: Dispenser
    public let existing: Any?
    package let context: AdaptContext

    package init(d: Dispenser, existing: Any?, context: AdaptContext) {
        self.d = d
        self.existing = existing
        self.context = context
    }
}

/// Where `order` puts a directive relative to another.
public enum DirectivePosition: String, Sendable {
    case before, after, first, last
}

/// Caddyfile support a module bundle contributes: directives, global options, and parsers for module IDs that
/// other parsers look up (`tls.issuance.acme`, `http.matchers.path`, ...). List it in the bundle's `extensions`.
public struct CaddyfileSupport: BundleExtension {
    public var directives: [String: DirectiveParser]
    public var globalOptions: [String: GlobalOptionParser]
    public var modules: [String: ModuleParser]
    /// Where this bundle's handler directives sit in the default order: (directive, position, standard directive).
    public var order: [(directive: String, position: DirectivePosition, relativeTo: String)]

    public init(
        directives: [String: DirectiveParser] = [:],
        handlerDirectives: [String: HandlerDirectiveParser] = [:],
        globalOptions: [String: GlobalOptionParser] = [:],
        modules: [String: ModuleParser] = [:],
        order: [(directive: String, position: DirectivePosition, relativeTo: String)] = []
    ) {
        var all = directives
        for (name, parser) in handlerDirectives { all[name] = handlerDirective(parser) }
        self.directives = all
        self.globalOptions = globalOptions
        self.modules = modules
        self.order = order
    }
}

extension CaddyfileSupport {
    /// One support made of several, as a target whose modules each keep their syntax in their own file lists them.
    /// Two parts registering the same name is a programming error.
    public init(merging parts: [CaddyfileSupport]) {
        self.init()
        for part in parts {
            directives.merge(part.directives) { _, _ in preconditionFailure("a directive is registered twice") }
            globalOptions.merge(part.globalOptions) { _, _ in preconditionFailure("a global option is registered twice")
            }
            modules.merge(part.modules) { _, _ in preconditionFailure("a module parser is registered twice") }
            order += part.order
        }
    }
}

/// Wraps a handler parser as Caddy's `RegisterHandlerDirective` does: the optional matcher token after the
/// directive name becomes the route's matcher set.
public func handlerDirective(_ parser: @escaping HandlerDirectiveParser) -> DirectiveParser {
    return { h in
        guard h.d.next() else { throw h.d.argErr() }
        let matcherSet = try h.extractMatcherSet()
        let handler = try parser(h)
        return h.newRoute(matcherSet, handler)
    }
}

/// Caddy's default order of handler directives in a site block.
public let defaultDirectiveOrder = [
    "tracing",
    "map", "vars", "fs", "root", "log_append", "skip_log", "log_skip", "log_name",
    "header", "copy_response_headers", "request_body", "timeouts",
    "redir",
    "method", "rewrite", "uri", "try_files",
    "basicauth", "basic_auth", "forward_auth", "request_header", "encode", "push", "intercept", "templates",
    "invoke", "handle", "handle_path", "route",
    "abort", "error", "copy_response", "respond", "metrics", "reverse_proxy", "php_fastcgi", "file_server",
    "acme_server",
]

/// Every Caddyfile parser from a set of bundles, merged.
public struct CaddyfileRegistry: Sendable {
    public private(set) var directives: [String: DirectiveParser] = [:]
    public private(set) var globalOptions: [String: GlobalOptionParser] = [:]
    public private(set) var modules: [String: ModuleParser] = [:]
    /// The default order after bundles placed their directives.
    public private(set) var directiveOrder = defaultDirectiveOrder

    public init(_ supports: [CaddyfileSupport]) throws {
        for s in supports {
            for (k, v) in s.directives {
                guard directives[k] == nil else { throw CaddyfileError("directive \(k) already registered") }
                directives[k] = v
            }
            for (k, v) in s.globalOptions {
                guard globalOptions[k] == nil else { throw CaddyfileError("global option \(k) already registered") }
                globalOptions[k] = v
            }
            for (k, v) in s.modules {
                guard modules[k] == nil else {
                    throw CaddyfileError("Caddyfile parser for module \(k) already registered")
                }
                modules[k] = v
            }
        }
        for s in supports {
            for o in s.order {
                guard !directiveOrder.contains(o.directive) else {
                    throw CaddyfileError("directive '\(o.directive)' already ordered")
                }
                guard defaultDirectiveOrder.contains(o.relativeTo),
                    let i = directiveOrder.firstIndex(of: o.relativeTo)
                else {
                    throw CaddyfileError("'\(o.relativeTo)' must be a directive of the standard distribution")
                }
                switch o.position {
                case .before: directiveOrder.insert(o.directive, at: i)
                case .after: directiveOrder.insert(o.directive, at: i + 1)
                case .first, .last:
                    throw CaddyfileError("a bundle may order '\(o.directive)' only before or after another directive")
                }
            }
        }
    }

    /// The parsers registered by `registry`'s bundles.
    public init(registry: ModuleRegistry) throws {
        try self.init(registry.extensions(of: CaddyfileSupport.self))
    }

    /// Caddy's `caddyfile.UnmarshalModule`: the parser for `moduleID` over the next segment of `d`.
    public func unmarshalModule(_ d: Dispenser, _ moduleID: String) throws -> JSONValue {
        guard let parser = modules[moduleID] else {
            throw d.err("getting module named '\(moduleID)': module not registered: \(moduleID)")
        }
        return try parser(d.newFromNextSegment(), self)
    }

    /// Like ``unmarshalModule(_:_:)`` for modules whose JSON is an object.
    public func unmarshalModuleObject(_ d: Dispenser, _ moduleID: String) throws -> JSONObject {
        let v = try unmarshalModule(d, moduleID)
        guard case .object(let o) = v else { throw d.err("module \(moduleID) did not produce a JSON object") }
        return o
    }

    public func hasModule(_ id: String) -> Bool { modules[id] != nil }
}
