import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.templates`: runs responses as Go templates, as Caddy's `templates` does. A response whose
/// `Content-Type` contains one of `mime_types` is buffered, executed with the request as context (named by the
/// request path), and sent with a fresh `Content-Length` and without `Accept-Ranges`, `Last-Modified` and `ETag`.
/// Other responses pass through untouched. A template that fails to parse or run answers 500 and logs
/// `template: <name>:<line>: …`; `httpError` answers the status it names.
public struct TemplatesHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.templates"
    /// `file_root`: the directory `include`, `readFile`, `listFiles`… read from; placeholders allowed.
    /// Default `{http.vars.root}`, else the working directory.
    public var fileRoot: String
    /// `mime_types`: Content-Types (substrings) whose responses are executed. Default `text/html`, `text/plain`,
    /// `text/markdown`.
    public var mimeTypes: [String]
    /// `delimiters`: the action delimiters, opening and closing. Default `{{` and `}}`.
    public var delimiters: (String, String)
    var logger = Logger(label: "http.handlers.templates")
    /// Parsed templates by name and text, so a page served again is not parsed again.
    let parsed = ParsedTemplateCache()

    /// Most bytes of a response held for execution; a larger one fails with 500.
    static let maxBody = 16 << 20
    /// Most distinct `httpInclude` targets one response may fetch.
    static let maxVirtualRequests = 32

    enum CodingKeys: String, CodingKey {
        case fileRoot = "file_root", mimeTypes = "mime_types", delimiters, match
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fileRoot = try c.decodeIfPresent(String.self, forKey: .fileRoot) ?? ""
        if fileRoot.isEmpty { fileRoot = "{http.vars.root}" }
        mimeTypes =
            try c.decodeIfPresent([String].self, forKey: .mimeTypes) ?? ["text/html", "text/plain", "text/markdown"]
        let d = try c.decodeIfPresent([String].self, forKey: .delimiters) ?? []
        guard d.isEmpty || d.count == 2 else {
            throw c.error(.delimiters, "delimiters must consist of exactly two elements: opening and closing")
        }
        delimiters = d.isEmpty ? ("{{", "}}") : (d[0], d[1])
        if let extensions = try c.decodeIfPresent([String: JSONValue].self, forKey: .match),
            let name = extensions.keys.sorted().first
        {
            throw c.error(
                .match,
                "module not registered: http.handlers.templates.functions.\(name) (this build has no template function modules)"
            )
        }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let types = mimeTypes
        let recorder = ResponseRecorder(writer, limit: Self.maxBody) { _, headers in
            let ct = headers.first(name: "Content-Type") ?? ""
            return types.contains { ct.contains($0) }
        }
        try await next.serve(request, recorder)
        guard recorder.buffering, let status = recorder.recordedStatus else { return }
        guard !recorder.overflowed else {
            throw HandlerError(
                status: 500, HTTPErrorMessage("templates: response body over \(Self.maxBody) bytes"),
                trace: Self.moduleID.rawValue)
        }
        let source = String(decoding: recorder.body.readableBytesView, as: UTF8.self)
        let output = try await render(source, name: request.path, request: request, writer: writer)
        writer.headers.replaceOrAdd(name: "Content-Length", value: String(output.utf8.count))
        writer.headers.remove(name: "Accept-Ranges")
        writer.headers.remove(name: "Last-Modified")
        writer.headers.remove(name: "ETag")
        try await writer.writeHead(status)
        if !output.isEmpty, request.method != .HEAD { try await writer.write(output) }
    }

    /// Executes `source`; when it asks for `httpInclude` targets not fetched yet, fetches them and runs again
    /// (with the response headers as they were), so the template itself stays synchronous.
    func render(_ source: String, name: String, request: Request, writer: any ResponseWriter) async throws -> String {
        let headersBefore = writer.headers
        let run = TemplateRun(handler: self, request: request, writer: writer)
        while true {
            do {
                return try run.execute(source, name: name, args: [])
            } catch let need as VirtualRequestNeeded {
                guard run.virtualResponses.count < Self.maxVirtualRequests else {
                    throw HandlerError(
                        status: 500,
                        HTTPErrorMessage("templates: more than \(Self.maxVirtualRequests) httpInclude targets"),
                        trace: Self.moduleID.rawValue)
                }
                run.virtualResponses[need.uri] = await Self.fetch(need.uri, for: request)
                writer.headers = headersBefore
            } catch let e as HandlerError {
                throw e
            } catch {
                throw HandlerError(status: 500, HTTPErrorMessage("\(error)"), trace: Self.moduleID.rawValue)
            }
        }
    }

    /// Caddy's virtual request for `httpInclude`: GET `uri` through this server with the request's headers.
    static func fetch(_ uri: String, for request: Request) async -> Result<String, TemplateRun.Failure> {
        var depth = 1
        if let n = request.headers.first(name: TemplateRun.recursionHeader) {
            guard let v = Int(n) else {
                return .failure(
                    .init("parsing \(TemplateRun.recursionHeader): strconv.Atoi: parsing \"\(n)\": invalid syntax"))
            }
            if v >= 3 { return .failure(.init("virtual request cycle")) }
            depth = v + 1
        }
        let target: RequestTarget
        do {
            target = try RequestTarget(parsing: uri)
        } catch {
            return .failure(.init("parse \"\(uri)\": invalid URI for request"))
        }
        var headers = request.headers
        headers.replaceOrAdd(name: "Accept-Encoding", value: "identity")
        headers.replaceOrAdd(name: TemplateRun.recursionHeader, value: String(depth))
        let virtual = Request(
            method: .GET, target: target, version: request.version, headers: headers, host: request.host,
            scheme: request.scheme, body: .empty,
            remoteAddress: try? SocketAddress(ipAddress: "127.0.0.1", port: 10000),
            localAddress: request.localAddress, server: request.server)
        let sink = BufferingResponseWriter()
        let status: Int
        do {
            try await request.server.serveVirtual(virtual, sink)
            status = Int(sink.status?.code ?? 200)
        } catch {
            status = sink.status.map { Int($0.code) } ?? HandlerError.from(error).status
        }
        if status >= 400 { return .failure(.init("http \(status)")) }
        return .success(String(decoding: sink.body.readableBytesView, as: UTF8.self))
    }
}

/// Thrown out of a template run when `httpInclude` names a target not fetched yet.
struct VirtualRequestNeeded: TemplatePassthroughError {
    var uri: String
}

extension HandlerError: TemplatePassthroughError {}

/// A response kept in memory: the target of a virtual request.
final class BufferingResponseWriter: ResponseWriter {
    var headers = HTTPHeaders()
    private(set) var status: HTTPResponseStatus?
    private(set) var body = ByteBuffer()
    var wrapped: (any ResponseWriter)? { nil }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        if self.status == nil && status.code >= 200 { self.status = status }
    }

    func write(_ buffer: ByteBuffer) async throws {
        if status == nil { status = .ok }
        var b = buffer
        body.writeBuffer(&b)
    }
}

/// Templates parsed from the same name and text before. A page's text comes from the response each time (a file
/// may change), so the text itself is the key; parsing is what is saved. At most 256 entries or 8 MiB of text,
/// emptied when full.
final class ParsedTemplateCache: @unchecked Sendable {
    private struct Key: Hashable {
        var name: String
        var text: String
    }
    private let lock = NIOLock()
    private var entries: [Key: GoTemplate] = [:]
    private var textBytes = 0
    static let maxEntries = 256
    static let maxTextBytes = 8 << 20

    func template(name: String, text: String, parse: () throws -> GoTemplate) rethrows -> GoTemplate {
        let key = Key(name: name, text: text)
        if let hit = lock.withLock({ entries[key] }) { return hit }
        let t = try parse()
        guard text.utf8.count <= Self.maxTextBytes / 8 else { return t }
        lock.withLock {
            if entries.count >= Self.maxEntries || textBytes + text.utf8.count > Self.maxTextBytes {
                entries.removeAll(keepingCapacity: true)
                textBytes = 0
            }
            if entries.updateValue(t, forKey: key) == nil { textBytes += text.utf8.count }
        }
        return t
    }
}
