import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.metrics`: serves the process's metrics (the same exposition as the admin endpoint's `/metrics`)
/// in the Prometheus text format, so a scraper can reach them on a site rather than on the admin address.
public struct MetricsHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.metrics"

    /// `disable_openmetrics`: never negotiate the OpenMetrics format. Accepted for Caddy configs; the handler only
    /// writes the Prometheus text format. Default: false.
    public var disableOpenMetrics: Bool

    enum CodingKeys: String, CodingKey { case disableOpenMetrics = "disable_openmetrics" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        disableOpenMetrics = try c.decodeIfPresent(Bool.self, forKey: .disableOpenMetrics) ?? false
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let body = UsherMetrics.exposition()
        writer.headers.replaceOrAdd(name: "Content-Type", value: UsherMetrics.contentType)
        writer.headers.replaceOrAdd(name: "Content-Length", value: String(body.count))
        try await writer.writeHead(.ok)
        if request.method != .HEAD {
            var buf = ByteBufferAllocator().buffer(capacity: body.count)
            buf.writeBytes(body)
            try await writer.write(buf)
        }
    }
}
