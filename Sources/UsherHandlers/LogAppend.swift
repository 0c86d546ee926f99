import Foundation
import NIOCore
public import UsherCore
public import UsherHTTP

/// `http.handlers.log_append`: adds a field to the request's access log entry, after the rest of the chain ran
/// (or before, with `early`). The value is a placeholder (`{...}`), a variable's name, `{http.response.body}` /
/// `{http.response.body_base64}` (the body as it was sent, its first MiB), or a literal.
public struct LogAppendHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.log_append"
    /// `key`: the field's name.
    public var key: String
    /// `value`: what to log.
    public var value: String
    /// `early`: take the value before the next handlers run (`<key` in the Caddyfile).
    public var early: Bool

    /// The most response body bytes kept for the log field.
    static let maxLoggedBody = 1 << 20

    enum CodingKeys: String, CodingKey { case key, value, early }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
        value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
        early = try c.decodeIfPresent(Bool.self, forKey: .early) ?? false
        if value == "{http.request.body}" || value == "{http.request.body_base64}" {
            throw c.error(.value, "\(value) is not supported in this build: request bodies stream and are not kept")
        }
    }

    var logsResponseBody: Bool { value == "{http.response.body}" || value == "{http.response.body_base64}" }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        if logsResponseBody {
            let tee = TeeResponseWriter(writer, keep: Self.maxLoggedBody)
            defer { append(request, body: tee.kept) }
            try await next.serve(request, tee)
            return
        }
        if early { append(request, body: nil) }
        defer { if !early { append(request, body: nil) } }
        try await next.serve(request, writer)
    }

    private func append(_ request: Request, body: ByteBuffer?) {
        let logged: LogValue
        if logsResponseBody {
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            logged =
                value == "{http.response.body}"
                ? .string(String(decoding: bytes, as: UTF8.self)) : .string(Data(bytes).base64EncodedString())
        } else if value.hasPrefix("{") && value.hasSuffix("}") && value.filter({ $0 == "{" }).count == 1 {
            logged = request.replacer.get(String(value.dropFirst().dropLast())).map(LogValue.string) ?? .null
        } else if let v = request.vars[value] {
            logged = Self.logValue(v)
        } else {
            logged = .string(value)
        }
        request.extraLogFields.append(LogField(key, logged))
    }

    static func logValue(_ v: JSONValue) -> LogValue {
        switch v {
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .number(let n): return n.text.contains(".") ? .double(Double(n.text) ?? 0) : .int(Int(n.text) ?? 0)
        case .null: return .null
        default: return .string(v.serialized())
        }
    }
}

/// Passes a response on while keeping a copy of its first `keep` body bytes.
final class TeeResponseWriter: WrappingResponseWriter {
    let wrappedWriter: any ResponseWriter
    private let keep: Int
    private(set) var kept = ByteBuffer()

    init(_ wrapped: any ResponseWriter, keep: Int) {
        self.wrappedWriter = wrapped
        self.keep = keep
    }

    func write(_ buffer: ByteBuffer) async throws {
        let room = keep - kept.readableBytes
        if room > 0 {
            var part = buffer.getSlice(at: buffer.readerIndex, length: min(room, buffer.readableBytes))!
            kept.writeBuffer(&part)
        }
        try await wrappedWriter.write(buffer)
    }
}
