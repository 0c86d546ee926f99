import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP
import UsherHTTP3
public import UsherHandlers

/// One of `handle_response`: what to do with upstream responses that `match`.
public struct ResponseHandlerConfig: Decodable, Sendable {
    /// `match`: status codes and header fields; absent matches every response.
    public var match: ResponseMatcher?
    /// `status_code`: only replace the status (placeholders allowed); the response is copied as usual.
    public var statusCode: WeakString?
    /// `routes`: run instead of copying the response; `copy_response` and `copy_response_headers` reach it.
    public var routes: RouteList

    enum CodingKeys: String, CodingKey { case match, statusCode = "status_code", routes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        match = try c.decodeIfPresent(ResponseMatcher.self, forKey: .match)
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
        if statusCode?.value.isEmpty == true { statusCode = nil }
        routes = try c.decodeIfPresent(RouteList.self, forKey: .routes) ?? RouteList()
    }
}

/// An upstream response held while `handle_response` routes run, for `copy_response(_headers)` to use.
final class PendingResponse {
    let handler: ReverseProxyHandler
    let head: HTTPResponseHead
    let headers: HTTPHeaders
    let connection: any UpstreamExchange
    let reusable: Bool
    let connections: ConnectionPool
    let loop: any EventLoop
    /// The body went to the client (or the connection was otherwise finished with).
    var copied = false

    init(
        handler: ReverseProxyHandler, head: HTTPResponseHead, headers: HTTPHeaders, connection: any UpstreamExchange,
        reusable: Bool, connections: ConnectionPool, loop: any EventLoop
    ) {
        self.handler = handler
        self.head = head
        self.headers = headers
        self.connection = connection
        self.reusable = reusable
        self.connections = connections
        self.loop = loop
    }
}
