public import NIOHTTP1
public import UsherCore

/// Something that serves a request: the end of a middleware chain, or the chain from some point on.
public protocol HTTPHandler: Sendable {
    func serve(_ request: Request, _ writer: any ResponseWriter) async throws
}

/// An HTTP handler module (`http.handlers.*`): middleware that serves the request, calls `next`, or both.
///
/// Errors travel back up the chain; throw ``HandlerError`` to choose the status code the client gets (or that the
/// server's `errors` routes see).
public protocol MiddlewareHandler: Module {
    func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws
}

/// The `http.handlers` namespace (inline key `handler`).
public enum HTTPHandlers: ModuleNamespace {
    public static let prefix = "http.handlers"
    public static let inlineKey: String? = "handler"
    public typealias Instance = any MiddlewareHandler
}

/// A request matcher module (`http.matchers.*`). Matchers that can fail (a bad placeholder, say) throw.
public protocol RequestMatcher: Module {
    func matches(_ request: Request) throws -> Bool
}

/// The `http.matchers` namespace: matcher sets are objects keyed by matcher name.
public enum HTTPMatchers: ModuleNamespace {
    public static let prefix = "http.matchers"
    public static let inlineKey: String? = nil
    public typealias Instance = any RequestMatcher
}

/// An error that Caddy returns as it is rather than as a `HandlerError` (a matcher's evaluation error, say): it
/// answers 500, and error routes see `{http.error}` but no `{http.error.status_code}` or the other fields.
public protocol UnclassifiedRequestError: Error {}

/// An error from a handler with the HTTP status it calls for (Caddy's `HandlerError`).
public struct HandlerError: Error, CustomStringConvertible, Sendable {
    /// The status for the response; 500 if unset.
    public var status: Int
    public var underlying: (any Error)?
    /// A short random ID for correlating logs with responses (`{http.error.id}`).
    public var id: String
    /// Where the error came from (`{http.error.trace}`), e.g. the handler's module ID.
    public var trace: String

    public init(status: Int = 500, _ underlying: (any Error)? = nil, trace: String = "") {
        self.status = status == 0 ? 500 : status
        self.underlying = underlying
        self.id = HandlerError.randomID()
        self.trace = trace
    }

    /// Wraps any error as a handler error, keeping a handler error as it is.
    public static func from(_ error: any Error) -> HandlerError {
        if let h = error as? HandlerError { return h }
        return HandlerError(status: 500, error)
    }

    public var message: String {
        if let u = underlying { return "\(u)" }
        return ""
    }

    public var description: String {
        var s = "{id=\(id)}"
        if !trace.isEmpty { s += " \(trace)" }
        if let u = underlying { s += ": \(u)" }
        if status != 0 { s += " (\(status))" }
        return s
    }

    static func randomID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<9).map { _ in alphabet.randomElement()! })
    }
}

/// A message-only error for handler errors.
public struct HTTPErrorMessage: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The end of a chain: does nothing, so the server answers with whatever was written (or `200` and no body).
public struct EmptyHandler: HTTPHandler {
    public init() {}
    public func serve(_ request: Request, _ writer: any ResponseWriter) async throws {}
}

/// The end of an error-route chain: rethrows the error being handled so its status reaches the client.
public struct ErrorEmptyHandler: HTTPHandler {
    public init() {}
    public func serve(_ request: Request, _ writer: any ResponseWriter) async throws {
        if let e = request.handlerError { throw e }
    }
}

/// Calls a middleware with a fixed `next`: one link of a compiled chain.
struct MiddlewareLink: HTTPHandler {
    let middleware: any MiddlewareHandler
    let next: any HTTPHandler

    func serve(_ request: Request, _ writer: any ResponseWriter) async throws {
        try await middleware.serve(request, writer, next: next)
    }
}
