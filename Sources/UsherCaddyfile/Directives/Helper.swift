public import UsherCore

/// One value a directive produced, sorted into a "pile" by its class (`route`, `bind`, `tls.connection_policy`, ...).
public struct ConfigValue {
    /// The kind of value; the server type looks values up by it.
    public var className: String
    /// The value itself: a ``HTTPRoute`` or ``HTTPSubroute`` for class `route`, other types for other classes.
    public var value: Any
    /// The directive that produced the value, set by the server type (for ordering).
    public package(set) var directive = ""
    /// The directive's first token, for errors that arise later.
    public package(set) var token: CaddyfileToken?

    public init(_ className: String, _ value: Any) {
        self.className = className
        self.value = value
    }
}

/// A mutable map shared by reference, like a Go map held by several helpers.
public final class StateMap {
    public var values: [String: Any]
    public init(_ values: [String: Any] = [:]) { self.values = values }
    public subscript(key: String) -> Any? {
        get { values[key] }
        set { values[key] = newValue }
    }
    package func copy() -> StateMap { StateMap(values) }
}

/// What one adaptation shares among all parsers: options, warnings, the group counter, the directive order.
package final class AdaptContext {
    package let registry: CaddyfileRegistry
    package var options: [String: Any] = [:]
    package var warnings: [AdapterWarning] = []
    package var groupCounter = 0
    package var directiveOrder: [String]
    /// Where each named route was first invoked, for the error when it is not defined.
    package var invokeTokens: [String: CaddyfileToken] = [:]

    package init(registry: CaddyfileRegistry) {
        self.registry = registry
        self.directiveOrder = registry.directiveOrder
    }

    /// A global option's value; nil when unset or set to nothing (`acme_dns` with no provider).
    package func option(_ name: String) -> Any? {
        guard let v = options[name], !(v is NilOptionValue) else { return nil }
        return v
    }

    package func nextGroup() -> String {
        defer { groupCounter += 1 }
        return "group\(groupCounter)"
    }
}

/// What a directive's parser gets (Caddy's `httpcaddyfile.Helper`): the dispenser over its tokens plus access to
/// options, named matchers, shared state and the registry.
public struct Helper {
    /// The directive's tokens.
    public private(set) var d: Dispenser
    /// State shared by the whole adaptation.
    public let state: StateMap
    /// State shared by the current block and copied into nested blocks.
    public package(set) var blockState: StateMap
    package let context: AdaptContext
    package var matcherDefs: [String: JSONObject]
    package let parentBlock: ServerBlock

    package init(
        d: Dispenser, context: AdaptContext, state: StateMap, blockState: StateMap,
        matcherDefs: [String: JSONObject], parentBlock: ServerBlock
    ) {
        self.d = d
        self.context = context
        self.state = state
        self.blockState = blockState
        self.matcherDefs = matcherDefs
        self.parentBlock = parentBlock
    }

    /// The parsers available.
    public var registry: CaddyfileRegistry { context.registry }

    /// A global option's parsed value.
    public func option(_ name: String) -> Any? { context.option(name) }

    /// Whether a global option was set (even to nothing).
    public func hasOption(_ name: String) -> Bool { context.options.keys.contains(name) }

    /// The same helper over other tokens.
    public func with(_ dispenser: Dispenser) -> Helper {
        var h = self
        h.d = dispenser
        return h
    }

    /// Records a warning at the current token.
    public func warn(_ message: String) {
        context.warnings.append(AdapterWarning(file: d.file, line: d.line, message: message))
    }

    /// The files that the enclosing block's tokens came from, sorted.
    public func caddyfiles() -> [String] {
        var files = Set<String>()
        for seg in parentBlock.segments { for t in seg { files.insert(t.file) } }
        return files.sorted()
    }

    /// Reads the next argument as a matcher token (`*`, `/path`, `@name`). Returns whether it was one.
    public func matcherToken() throws -> (set: JSONObject?, isMatcher: Bool) {
        guard d.nextArg() else { return (nil, false) }
        return try matcherSetFromMatcherToken(d.token, matcherDefs)
    }

    /// Takes a matcher token off the front of the directive, if there is one, and rewinds to the directive name.
    public func extractMatcherSet() throws -> JSONObject? {
        let (set, isMatcher) = try matcherToken()
        if isMatcher { _ = d.delete() }
        d.reset()
        return set
    }

    /// A route holding `handler` under an optional matcher set.
    public func newRoute(_ matcherSet: JSONObject?, _ handler: JSONObject) -> [ConfigValue] {
        var route = HTTPRoute()
        if let matcherSet { route.matcherSets = [matcherSet] }
        route.handlers = [handler]
        return [ConfigValue("route", route)]
    }

    /// Puts the routes among `values` into one new group, when there are at least two.
    public func groupRoutes(_ values: inout [ConfigValue]) {
        let count = values.filter { $0.value is HTTPRoute }.count
        guard count >= 2 else { return }
        let name = context.nextGroup()
        for i in values.indices {
            if var r = values[i].value as? HTTPRoute {
                r.group = name
                values[i].value = r
            }
        }
    }

    /// Caddy's `caddyfile.UnmarshalModule` through this adaptation's registry.
    public func unmarshalModule(_ moduleID: String) throws -> JSONValue {
        try registry.unmarshalModule(d, moduleID)
    }

    /// Parses the rest of the block (directives and matcher definitions) as a subroute, sorted by directive order.
    public func parseSegmentAsSubroute() throws -> HTTPSubroute {
        let results = try parseSegmentAsConfig()
        return try buildSubroute(results, context: context, needsSorting: true)
    }

    /// Parses the rest of the block's directives as config values.
    public func parseSegmentAsConfig() throws -> [ConfigValue] {
        var all: [ConfigValue] = []
        while d.next() {
            if d.nextArg() { throw d.argErr() }
            var segments: [[CaddyfileToken]] = []
            let nesting = d.nesting
            while d.nextBlock(nesting) { segments.append(d.nextSegment()) }

            var defs = matcherDefs
            var remaining: [[CaddyfileToken]] = []
            for seg in segments {
                if let first = seg.first, first.text.hasPrefix("@") {
                    try parseMatcherDefinitions(Dispenser(seg), &defs, registry: registry)
                } else {
                    remaining.append(seg)
                }
            }
            let subBlockState = blockState.copy()
            for seg in remaining {
                let dir = seg.first?.text ?? ""
                guard let parser = registry.directives[dir] else {
                    throw d.err(
                        "unrecognized directive: \(dir) - are you sure your Caddyfile structure (nesting and braces) is correct?"
                    )
                }
                var sub = self
                sub.d = Dispenser(seg)
                sub.matcherDefs = defs
                sub.blockState = subBlockState
                let results: [ConfigValue]
                do {
                    results = try parser(sub)
                } catch {
                    throw d.err("parsing caddyfile tokens for '\(dir)': \(error)")
                }
                let name = normalizeDirectiveName(dir)
                for var r in results {
                    r.directive = name
                    r.token = seg.first
                    all.append(r)
                }
            }
        }
        return all
    }
}

/// `handle_path` sorts with `handle`.
package func normalizeDirectiveName(_ directive: String) -> String {
    directive == "handle_path" ? "handle" : directive
}

/// Stands for a global option set to nothing, so that "set" and "has a value" stay distinguishable.
package struct NilOptionValue {
    package init() {}
}
