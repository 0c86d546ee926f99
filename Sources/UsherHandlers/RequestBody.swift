import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.request_body`: limits the request body (`413` beyond `max_size`) or replaces it (`set`).
public struct RequestBodyHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.request_body"
    /// `max_size`: the most body bytes accepted; a larger declared `Content-Length` is refused at once, a
    /// larger streamed body when it is read. Default: no limit.
    public var maxSize: Int
    /// `set`: a replacement body (placeholders allowed).
    public var set: String?

    enum CodingKeys: String, CodingKey {
        case maxSize = "max_size", set
        case readTimeout = "read_timeout", writeTimeout = "write_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.refuseUnsupported([.readTimeout, .writeTimeout])
        maxSize = try c.decodeIfPresent(Int.self, forKey: .maxSize) ?? 0
        set = try c.decodeIfPresent(String.self, forKey: .set)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        if let set, !set.isEmpty {
            let text = await request.replaceAllReadingBody(set)
            var buf = ByteBufferAllocator().buffer(capacity: text.utf8.count)
            buf.writeString(text)
            request.body.replace(with: BufferedBodySource(buffers: [buf]))
            request.headers.replaceOrAdd(name: "Content-Length", value: String(text.utf8.count))
        }
        if maxSize > 0 && !request.body.isEmpty {
            if let declared = request.body.expectedLength, declared > maxSize {
                throw HandlerError(status: 413, BodyTooLargeError(limit: maxSize))
            }
            request.body.replace(with: LimitedBodySource(inner: request.body.source, limit: maxSize))
        }
        try await next.serve(request, writer)
    }
}

/// Passes body bytes through until a limit, then fails with `413`.
final class LimitedBodySource: BodySource {
    let inner: any BodySource
    let limit: Int
    let read = NIOLockedValueBox(0)

    init(inner: any BodySource, limit: Int) {
        self.inner = inner
        self.limit = limit
    }

    func next() async throws -> ByteBuffer? {
        guard let chunk = try await inner.next() else { return nil }
        let total = read.withLockedValue { v -> Int in
            v += chunk.readableBytes
            return v
        }
        if total > limit { throw HandlerError(status: 413, BodyTooLargeError(limit: limit)) }
        return chunk
    }
}
