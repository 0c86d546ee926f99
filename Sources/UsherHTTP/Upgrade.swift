public import NIOCore
public import NIOHTTP1
public import UsherHTTP3

/// A response writer whose exchange can leave HTTP semantics for a raw byte stream in both directions: an
/// HTTP/1.1 `101 Switching Protocols`, or an HTTP/2 extended CONNECT (RFC 8441) answered with 2xx. Found through
/// ``ResponseWriter/capability(_:)``; writers that cannot upgrade (or requests that did not ask) do not offer it.
public protocol ConnectionUpgrading: AnyObject {
    /// Whether the request asked for a new protocol (`Upgrade` on HTTP/1.1, `:protocol` on HTTP/2).
    var upgradeRequested: Bool { get }
    /// Sends `status` with the writer's header fields and hands over the stream. After this the writer takes no
    /// more body; the exchange ends when the handler returns.
    func upgrade(_ status: HTTPResponseStatus) async throws -> any UpgradedStream
}

/// Both directions of an upgraded exchange. Every call happens on the connection's event loop, where the handler
/// task runs.
public protocol UpgradedStream: AnyObject {
    /// Bytes from the client; ends when the client closes its side.
    var inbound: RequestBody { get }
    /// Sends bytes to the client, waiting while the connection (or HTTP/2 stream window) is full.
    func write(_ buffer: ByteBuffer) async throws
    /// Sends `last` (if any) and closes: the connection for HTTP/1.1, the stream for HTTP/2. Reading stops.
    func close(sending last: ByteBuffer?)
}

/// A response writer whose request is a WebTransport Extended CONNECT (`:protocol` `webtransport` or
/// `webtransport-h3`) on an HTTP/3 server with `enable_webtransport`. Found through
/// ``ResponseWriter/capability(_:)``; other writers do not offer it.
public protocol WebTransportAccepting: AnyObject {
    /// Whether the request asked for a WebTransport session.
    var webTransportRequested: Bool { get }
    /// Sends `status` (2xx) with the writer's header fields and hands over the CONNECT stream as a session. The
    /// writer takes no body after this; the session lives on after the handler returns until it is closed.
    func acceptWebTransport(_ status: HTTPResponseStatus) async throws -> WebTransportSession
}
