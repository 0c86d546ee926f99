import Logging
import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.intercept`: `handle_response` for any handler's response. The first entry whose `match` fits
/// the response's status and headers takes it: `status_code` replaces the status, `routes` run instead (with
/// `{http.intercept.status_code}` and `{http.intercept.header.*}` set; when they write nothing, the original
/// response is sent).
public struct InterceptHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.intercept"
    /// `handle_response`: the response handlers, tried in order.
    public var handleResponse: [ResponseHandlerConfig]
    private var logger = Logger(label: "http.handlers.intercept")

    /// An intercepted body held for replay beyond this is dropped, and replaying it fails with 502.
    static let maxBufferedBody = 4 << 20

    enum CodingKeys: String, CodingKey { case handleResponse = "handle_response" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        handleResponse = try c.decodeIfPresent([ResponseHandlerConfig].self, forKey: .handleResponse) ?? []
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
        for i in handleResponse.indices { try await handleResponse[i].routes.provision(context) }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let repl = request.replacer
        final class Choice {
            var index = -1
            var status: Int?
        }
        let choice = Choice()
        let handlers = handleResponse
        let recorder = ResponseRecorder(writer, limit: Self.maxBufferedBody) { status, headers in
            for (i, rh) in handlers.enumerated() {
                if let m = rh.match, !m.matches(status: Int(status.code), headers: headers) { continue }
                choice.index = i
                if let code = rh.statusCode {
                    choice.status = Int(repl.replaceAll(code.value)) ?? 500
                    return true
                }
                return choice.status == nil
            }
            return false
        }
        try await next.serve(request, recorder)
        guard recorder.buffering, choice.index >= 0, let recorded = recorder.recordedStatus else { return }
        var seen: [String: [String]] = [:]
        var order: [String] = []
        for (name, value) in writer.headers {
            let key = canonicalHeaderName(name)
            if seen[key] == nil { order.append(key) }
            seen[key, default: []].append(value)
        }
        for key in order { repl.set("http.intercept.header." + key, seen[key]!.joined(separator: ",")) }
        repl.set("http.intercept.status_code", String(recorded.code))
        logger.debug("handling response", metadata: ["handler": "\(choice.index)"])
        let handler = handlers[choice.index]
        if handler.routes.routes.isEmpty {
            try await writer.writeHead(choice.status.map { HTTPResponseStatus(statusCode: $0) } ?? recorded)
            try await replay(recorder, to: writer)
            return
        }
        let counting = CountingResponseWriter(writer)
        try await handler.routes.compile(next: NothingHandler()).serve(request, counting)
        if writer.status == nil { try await writer.writeHead(recorded) }
        if counting.bodyBytesWritten == 0 { try await replay(recorder, to: writer) }
    }

    private func replay(_ recorder: ResponseRecorder, to writer: any ResponseWriter) async throws {
        guard recorder.size > 0 else { return }
        guard !recorder.overflowed else {
            throw HandlerError(
                status: 502,
                HTTPErrorMessage(
                    "intercept: the response body is over \(Self.maxBufferedBody) bytes, too large to replay"))
        }
        try await writer.write(recorder.body)
    }
}

/// The end of intercepted routes: nothing more.
struct NothingHandler: HTTPHandler {
    func serve(_ request: Request, _ writer: any ResponseWriter) async throws {}
}
