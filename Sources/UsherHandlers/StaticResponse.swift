import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.static_response`: answers with a fixed status, headers and body (placeholders allowed).
public struct StaticResponseHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.static_response"

    /// `status_code`: the status (a number or a placeholder). Default: 200, or the status of the error being
    /// handled.
    public var statusCode: WeakString?
    /// `headers`: header fields to set.
    public var headers: [(name: String, values: [String])]
    /// `body`: the body; known placeholders are replaced.
    public var body: String
    /// `close`: close the connection after responding. Default: false.
    public var close: Bool
    /// `abort`: close the connection without responding. Default: false.
    public var abort: Bool

    private let staticBody: ByteBuffer?
    private let staticContentType: String?

    enum CodingKeys: String, CodingKey {
        case statusCode = "status_code", headers, body, close, abort
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
        if let s = statusCode?.value, !Replacer.mayContainPlaceholders(s), Int(s) == nil {
            throw c.error(.statusCode, "invalid status code \"\(s)\"")
        }
        let rawHeaders = try c.decodeIfPresent([String: [String]].self, forKey: .headers) ?? [:]
        headers = rawHeaders.keys.sorted().map { (name: $0, values: rawHeaders[$0]!) }
        body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
        close = try c.decodeIfPresent(Bool.self, forKey: .close) ?? false
        abort = try c.decodeIfPresent(Bool.self, forKey: .abort) ?? false
        // A body without placeholders is encoded once, here.
        if !Replacer.mayContainPlaceholders(body) {
            var buf = ByteBufferAllocator().buffer(capacity: body.utf8.count)
            buf.writeString(body)
            staticBody = buf
            staticContentType = body.isEmpty ? nil : Self.contentType(for: body)
        } else {
            staticBody = nil
            staticContentType = nil
        }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        if abort { throw AbortConnectionError() }
        if close { writer.headers.replaceOrAdd(name: "Connection", value: "close") }
        for (name, values) in headers {
            let field = canonicalHeaderName(
                Replacer.mayContainPlaceholders(name) ? request.replacer.replaceAll(name) : name)
            writer.headers.remove(name: field)
            for v in values {
                writer.headers.add(
                    name: field, value: Replacer.mayContainPlaceholders(v) ? await request.replaceAllReadingBody(v) : v)
            }
        }
        let bodyBuffer: ByteBuffer
        let contentType: String?
        if let staticBody {
            bodyBuffer = staticBody
            contentType = staticContentType
        } else {
            let text = await request.replaceKnownReadingBody(body)
            var buf = ByteBufferAllocator().buffer(capacity: text.utf8.count)
            buf.writeString(text)
            bodyBuffer = buf
            contentType = text.isEmpty ? nil : Self.contentType(for: text)
        }
        if let contentType, !writer.headers.contains(name: "Content-Type") {
            writer.headers.add(name: "Content-Type", value: contentType)
        } else if !writer.headers.contains(name: "Content-Type") {
            // No body and no type: suppress content sniffing, as Caddy does.
            writer.headers.add(name: "Content-Type", value: "")
        }

        var status = request.handlerError?.status ?? 200
        if let code = statusCode?.value {
            let text = Replacer.mayContainPlaceholders(code) ? request.replacer.replaceAll(code) : code
            guard let n = Int(text), n >= 100, n <= 999 else {
                throw HandlerError(status: 500, HTTPErrorMessage("invalid status code \"\(text)\""))
            }
            status = n
        }
        try await writer.writeHead(HTTPResponseStatus(statusCode: status))
        if status != 103 && bodyBuffer.readableBytes > 0 {
            try await writer.write(bodyBuffer)
        }
        if status == 103 {
            try await next.serve(request, writer)
        }
    }

    /// `application/json` for a body that is a JSON object or array, else plain text.
    static func contentType(for body: String) -> String {
        let trimmed = body.trimmingASCIIWhitespace
        if trimmed.count > 2,
            (trimmed.hasPrefix("{") && trimmed.hasSuffix("}")) || (trimmed.hasPrefix("[") && trimmed.hasSuffix("]")),
            (try? JSONValue.parse(trimmed)) != nil
        {
            return "application/json"
        }
        return "text/plain; charset=utf-8"
    }
}

extension String {
    var trimmingASCIIWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}
