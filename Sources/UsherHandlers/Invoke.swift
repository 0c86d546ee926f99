public import UsherCore
public import UsherHTTP

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
            throw HandlerError(
                status: 500,
                HTTPErrorMessage(
                    "invoke: named routes nested more than \(Self.maxDepth) deep at '\(name)' (do they invoke each other?)"
                ))
        }
        request.invokeDepth += 1
        defer { request.invokeDepth -= 1 }
        try await route.serve(request, writer)
        try await next.serve(request, writer)
    }
}
