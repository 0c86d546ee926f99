public import UsherCore

/// A set of matchers that must all match (AND); a route's `match` list is an OR of such sets.
public typealias MatcherSet = LoadedMap<HTTPMatchers>

extension LoadedMap where N == HTTPMatchers {
    /// Whether every matcher in the set matches.
    public func matches(_ request: Request) throws -> Bool {
        for entry in entries where try !entry.module.matches(request) { return false }
        return true
    }
}

extension Array where Element == MatcherSet {
    /// Whether any set matches; an empty list matches everything.
    public func anyMatches(_ request: Request) throws -> Bool {
        if isEmpty { return true }
        for set in self where try set.matches(request) { return true }
        return false
    }
}

/// A route: when its matchers match, its handlers run in order (Caddy's `Route`).
public struct Route: Decodable, Sendable {
    /// `group`: of the routes sharing a group name, only the first that matches runs.
    public var group: String?
    /// `match`: matcher sets, any of which selects the route. Default: all requests.
    public var match: [MatcherSet]
    /// `handle`: the handlers, in order.
    public var handle: [Loaded<HTTPHandlers>]
    /// `terminal`: stop after this route rather than continuing to the next. Default: false.
    public var terminal: Bool
    /// Its series when the `http` app has `metrics` (labelled by its first handler's name, as in Caddy).
    var instrument: RouteInstrument?

    typealias CodingKeys = RouteKeys

    public init(
        group: String? = nil, match: [MatcherSet] = [], handle: [Loaded<HTTPHandlers>] = [], terminal: Bool = false
    ) {
        self.group = group
        self.match = match
        self.handle = handle
        self.terminal = terminal
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        group = try c.decodeIfPresent(String.self, forKey: .group)
        if group?.isEmpty == true { group = nil }
        match = try c.decodeIfPresent([MatcherSet].self, forKey: .match) ?? []
        handle = try c.decodeIfPresent([Loaded<HTTPHandlers>].self, forKey: .handle) ?? []
        terminal = try c.decodeIfPresent(Bool.self, forKey: .terminal) ?? false
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        for i in match.indices { try await match[i].provision(context) }
        try await handle.provision(context)
        if let metrics = context.loadValue(HTTPMetrics.self), let first = handle.first {
            instrument = RouteInstrument(handler: first.moduleID.name, metrics: metrics)
        }
    }
}

/// A list of routes, compiled into a handler chain (Caddy's `RouteList`).
public struct RouteList: Decodable, Sendable {
    public var routes: [Route]

    public init(_ routes: [Route] = []) { self.routes = routes }

    public init(from decoder: any Decoder) throws {
        routes = try [Route](from: decoder)
    }

    public var isEmpty: Bool { routes.isEmpty }

    public mutating func provision(_ context: ProvisionContext) async throws {
        for i in routes.indices { try await routes[i].provision(context) }
    }

    /// Builds the chain: each route checks its matchers per request; a matching route runs its handlers, then the
    /// following routes (unless terminal), then `next`.
    public func compile(next: any HTTPHandler) -> any HTTPHandler {
        var chain = next
        for route in routes.reversed() {
            chain = RouteNode(route: route, next: chain)
        }
        return chain
    }
}

/// One compiled route, linked to what follows it.
final class RouteNode: HTTPHandler {
    let matchers: [MatcherSet]
    let group: String?
    let next: any HTTPHandler
    /// The route's handlers, ending in `next` (or, for a terminal route, in the end of the chain).
    let matched: any HTTPHandler

    init(route: Route, next: any HTTPHandler) {
        self.matchers = route.match
        self.group = route.group
        self.next = next
        var chain: any HTTPHandler = route.terminal ? TerminalEnd() : next
        for h in route.handle.reversed() {
            chain = MiddlewareLink(middleware: h.module, next: chain)
        }
        if let instrument = route.instrument {
            chain = InstrumentedRoute(instrument: instrument, next: chain)
        }
        self.matched = chain
    }

    func serve(_ request: Request, _ writer: any ResponseWriter) async throws {
        if !matchers.isEmpty, try !matchers.anyMatches(request) {
            return try await next.serve(request, writer)
        }
        if let group, !request.enterGroup(group) {
            return try await next.serve(request, writer)
        }
        try await matched.serve(request, writer)
    }
}

/// Where a terminal route's chain ends: nothing more runs, except that an error being handled is rethrown so the
/// client still gets its status.
struct TerminalEnd: HTTPHandler {
    func serve(_ request: Request, _ writer: any ResponseWriter) async throws {
        if let e = request.handlerError { throw e }
    }
}

/// `errors` config of a server or subroute: routes that run when the main routes fail.
public struct HTTPErrorConfig: Decodable, Sendable {
    public var routes: RouteList

    // Only `routes`: a subroute's keys (`RouteListKeys`) would let an `errors` inside `errors` through unrefused.
    package enum CodingKeys: String, CodingKey { case routes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        routes = try c.decodeIfPresent(RouteList.self, forKey: .routes) ?? RouteList()
    }

    /// Records `error` on the request for the error routes: `{http.error.*}` placeholders and the error itself.
    public static func prepare(_ request: Request, for error: any Error) {
        let he = HandlerError.from(error)
        request.handlerError = he
        let r = request.replacer
        r.set("http.error", he.description)
        // Caddy sets the rest only for its HandlerError; an error it passes along as it is leaves them unset.
        if error is any UnclassifiedRequestError { return }
        r.set("http.error.status_code", String(he.status))
        r.set("http.error.status_text", HTTPResponseStatusText.text(he.status))
        r.set("http.error.id", he.id)
        r.set("http.error.trace", he.trace)
        r.set("http.error.message", he.underlying.map { "\($0)" } ?? HTTPResponseStatusText.text(he.status))
    }
}

/// `http.handlers.subroute`: runs a nested route list, then continues with the rest of the chain.
public struct SubrouteHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.subroute"

    /// `routes`: the nested routes.
    public var routes: RouteList
    /// `errors`: routes for errors in the nested routes.
    public var errors: HTTPErrorConfig?

    typealias CodingKeys = RouteListKeys

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        routes = try c.decodeIfPresent(RouteList.self, forKey: .routes) ?? RouteList()
        errors = try c.decodeIfPresent(HTTPErrorConfig.self, forKey: .errors)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await routes.provision(context)
        try await errors?.routes.provision(context)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        do {
            try await routes.compile(next: next).serve(request, writer)
        } catch {
            guard let errors, !errors.routes.isEmpty else { throw error }
            HTTPErrorConfig.prepare(request, for: error)
            try await errors.routes.compile(next: next).serve(request, writer)
        }
    }
}

/// Status texts as Go's `http.StatusText` gives them.
public enum HTTPResponseStatusText {
    public static func text(_ code: Int) -> String {
        switch code {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 102: "Processing"
        case 103: "Early Hints"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 203: "Non-Authoritative Information"
        case 204: "No Content"
        case 205: "Reset Content"
        case 206: "Partial Content"
        case 207: "Multi-Status"
        case 208: "Already Reported"
        case 226: "IM Used"
        case 300: "Multiple Choices"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 303: "See Other"
        case 304: "Not Modified"
        case 305: "Use Proxy"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 402: "Payment Required"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 407: "Proxy Authentication Required"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 410: "Gone"
        case 411: "Length Required"
        case 412: "Precondition Failed"
        case 413: "Request Entity Too Large"
        case 414: "Request URI Too Long"
        case 415: "Unsupported Media Type"
        case 416: "Requested Range Not Satisfiable"
        case 417: "Expectation Failed"
        case 418: "I'm a teapot"
        case 421: "Misdirected Request"
        case 422: "Unprocessable Entity"
        case 423: "Locked"
        case 424: "Failed Dependency"
        case 425: "Too Early"
        case 426: "Upgrade Required"
        case 428: "Precondition Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 451: "Unavailable For Legal Reasons"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        case 506: "Variant Also Negotiates"
        case 507: "Insufficient Storage"
        case 508: "Loop Detected"
        case 510: "Not Extended"
        case 511: "Network Authentication Required"
        default: ""
        }
    }
}
