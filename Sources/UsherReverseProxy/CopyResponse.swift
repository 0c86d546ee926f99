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

/// `http.handlers.copy_response`: in `handle_response` routes, sends the upstream's response to the client.
public struct CopyResponseHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.copy_response"
    /// `status_code`: a different status to send (placeholders allowed).
    public var statusCode: WeakString?

    enum CodingKeys: String, CodingKey { case statusCode = "status_code" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let pending = request.attached(PendingResponse.self), !pending.copied else {
            throw HandlerError(
                status: 500,
                HTTPErrorMessage("cannot use 'copy_response' outside of reverse_proxy's handle_response routes"))
        }
        var status = pending.head.status
        if let code = statusCode, !code.value.isEmpty {
            guard let n = Int(request.replacer.replaceAll(code.value)) else {
                throw HandlerError(status: 500, HTTPErrorMessage("copy_response: invalid status_code \(code.value)"))
            }
            status = HTTPResponseStatus(statusCode: n)
        }
        pending.copied = true
        try await pending.handler.copyResponse(
            request, writer, head: pending.head, status: status, headers: pending.headers,
            connection: pending.connection, reusable: pending.reusable,
            connections: pending.connections, loop: pending.loop)
    }
}

/// `http.handlers.copy_response_headers`: in `handle_response` routes, copies the upstream's header fields to
/// the response (`include` only these, or all but `exclude`).
public struct CopyResponseHeadersHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.copy_response_headers"
    /// `include`: the fields to copy; empty copies all.
    public var include: [String]
    /// `exclude`: fields not to copy.
    public var exclude: [String]

    enum CodingKeys: String, CodingKey { case include, exclude }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        include = try c.decodeIfPresent([String].self, forKey: .include) ?? []
        exclude = try c.decodeIfPresent([String].self, forKey: .exclude) ?? []
        if !include.isEmpty && !exclude.isEmpty {
            throw c.error(.include, "cannot define both 'exclude' and 'include'")
        }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let pending = request.attached(PendingResponse.self) else {
            throw HandlerError(
                status: 500,
                HTTPErrorMessage("cannot use 'copy_response_headers' outside of reverse_proxy's handle_response routes")
            )
        }
        let inc = Set(include.map { $0.lowercased() })
        let exc = Set(exclude.map { $0.lowercased() })
        for (name, value) in pending.headers {
            let lower = name.lowercased()
            if !inc.isEmpty && !inc.contains(lower) { continue }
            if exc.contains(lower) { continue }
            writer.headers.add(name: name, value: value)
        }
        try await next.serve(request, writer)
    }
}
