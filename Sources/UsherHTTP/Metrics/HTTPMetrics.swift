public import NIOCore
public import NIOHTTP1
import Prometheus
import Synchronization
public import UsherCore

/// `metrics` of the `http` app (Caddy's `caddyhttp.Metrics`): when present, every route is instrumented with
/// Caddy's `caddy_http_*` series. Absent, routes run without any instrumentation at all.
public struct HTTPMetricsConfig: Decodable, Sendable {
    /// `per_host`: add a `host` label. Hosts named in the servers' host matchers get their own value; others count
    /// as `_other` unless `observe_catchall_hosts` is set. Default: false.
    public var perHost: Bool
    /// `observe_catchall_hosts`: with `per_host`, give every host its own label value (unbounded series: only
    /// where clients cannot choose arbitrary hosts). Default: false.
    public var observeCatchallHosts: Bool

    package enum CodingKeys: String, CodingKey {
        case perHost = "per_host", observeCatchallHosts = "observe_catchall_hosts", otlp
    }

    public init(perHost: Bool = false, observeCatchallHosts: Bool = false) {
        self.perHost = perHost
        self.observeCatchallHosts = observeCatchallHosts
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        perHost = try c.decodeIfPresent(Bool.self, forKey: .perHost) ?? false
        observeCatchallHosts = try c.decodeIfPresent(Bool.self, forKey: .observeCatchallHosts) ?? false
        if try c.decodeIfPresent(Bool.self, forKey: .otlp) == true {
            throw ConfigError(
                path: jsonPathString(c.codingPath + [CodingKeys.otlp]),
                "not supported yet: OTLP push (scrape /metrics on the admin endpoint or a metrics handler)")
        }
    }
}

/// The `http` app's metrics for one config load: which hosts get their own label, and the instruments of its
/// routes. Handed to route lists through ``ProvisionContext/setLoadValue(_:as:)``.
public final class HTTPMetrics: Sendable {
    let perHost: Bool
    let observeCatchallHosts: Bool
    let allowedHosts: Set<String>

    init(config: HTTPMetricsConfig, allowedHosts: Set<String>) {
        self.perHost = config.perHost
        self.observeCatchallHosts = config.observeCatchallHosts
        self.allowedHosts = allowedHosts
    }

    /// The `host` label for a request, or `nil` without `per_host`.
    func hostLabel(_ request: Request) -> String? {
        guard perHost else { return nil }
        let host = splitHostPort(request.host).host.lowercased()
        if observeCatchallHosts || allowedHosts.contains(host) { return host }
        return "_other"
    }

    /// Hosts of the servers' top-level host matchers, without wildcards or placeholders: the hosts `per_host`
    /// labels by name.
    static func configuredHosts(_ servers: [String: ServerConfig]) -> Set<String> {
        var hosts: Set<String> = []
        for server in servers.values {
            for route in server.routes.routes {
                for set in route.match {
                    for entry in set.entries {
                        guard let m = entry.module as? HostMatcher else { continue }
                        for h in m.hosts where !h.contains("*") && !h.contains("{") { hosts.insert(h.lowercased()) }
                    }
                }
            }
        }
        return hosts
    }
}

/// The series of one route, keyed by the name of its first handler (Caddy's `handler` label).
final class RouteInstrument: Sendable {
    let handler: String
    let metrics: HTTPMetrics

    /// Series without status: in flight, requests, errors.
    final class Basic: Sendable {
        let inFlight: Gauge
        let requests: Counter
        let errors: Counter

        init(_ labels: [(String, String)]) {
            let r = UsherMetrics.registry
            inFlight = r.makeGauge(descriptor: HTTPMetricNames.inFlight, labels: labels)
            requests = r.makeCounter(descriptor: HTTPMetricNames.requests, labels: labels)
            errors = r.makeCounter(descriptor: HTTPMetricNames.errors, labels: labels)
        }
    }

    /// Series by status and method: durations and sizes.
    final class ByStatus: Sendable {
        let labels: [(String, String)]
        let duration: DurationHistogram
        let requestSize: ValueHistogram
        let responseSize: ValueHistogram
        // Made at the first response head, so responses that never had one (errors) leave no empty series.
        private let firstByteHistogram = Mutex<DurationHistogram?>(nil)

        var firstByte: DurationHistogram {
            firstByteHistogram.withLock { h in
                if let h { return h }
                let new = UsherMetrics.registry.makeDurationHistogram(
                    descriptor: HTTPMetricNames.firstByte, labels: labels, buckets: UsherMetrics.durationBuckets)
                h = new
                return new
            }
        }

        init(_ labels: [(String, String)]) {
            let r = UsherMetrics.registry
            self.labels = labels
            duration = r.makeDurationHistogram(
                descriptor: HTTPMetricNames.duration, labels: labels, buckets: UsherMetrics.durationBuckets)
            requestSize = r.makeValueHistogram(
                descriptor: HTTPMetricNames.requestSize, labels: labels, buckets: UsherMetrics.sizeBuckets)
            responseSize = r.makeValueHistogram(
                descriptor: HTTPMetricNames.responseSize, labels: labels, buckets: UsherMetrics.sizeBuckets)
        }
    }

    struct BasicKey: Hashable { var server: String; var host: String? }
    struct StatusKey: Hashable { var server: String; var host: String?; var code: Int; var method: String }

    private let basic = SeriesCache<BasicKey, Basic>()
    private let byStatus = SeriesCache<StatusKey, ByStatus>()

    init(handler: String, metrics: HTTPMetrics) {
        self.handler = handler
        self.metrics = metrics
    }

    func basic(server: String, host: String?) -> Basic {
        basic.get(BasicKey(server: server, host: host)) {
            var labels = [("handler", handler), ("server", server)]
            if let host { labels.append(("host", host)) }
            return Basic(labels)
        }
    }

    func byStatus(server: String, host: String?, code: Int, method: String) -> ByStatus {
        byStatus.get(StatusKey(server: server, host: host, code: code, method: method)) {
            var labels = [
                ("code", UsherMetrics.codeLabel(code)), ("handler", handler), ("method", method), ("server", server),
            ]
            if let host { labels.append(("host", host)) }
            return ByStatus(labels)
        }
    }
}

/// Caddy's names and help texts for the HTTP series.
enum HTTPMetricNames {
    static var inFlight: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_requests_in_flight", "Number of requests currently handled by this server.")
    }
    static var requests: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_requests_total", "Counter of HTTP(S) requests made.")
    }
    static var errors: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_request_errors_total", "Number of requests resulting in middleware errors.")
    }
    static var duration: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_request_duration_seconds", "Histogram of round-trip request durations.")
    }
    static var firstByte: MetricNameDescriptor {
        UsherMetrics.descriptor(
            "caddy_http_response_duration_seconds", "Histogram of times to first byte in response bodies.")
    }
    static var requestSize: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_request_size_bytes", "Total size of the request. Includes body")
    }
    static var responseSize: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_http_response_size_bytes", "Size of the returned response.")
    }
}

/// A route's handlers, measured: what follows the route's matchers when metrics are on.
struct InstrumentedRoute: HTTPHandler {
    let instrument: RouteInstrument
    let next: any HTTPHandler

    func serve(_ request: Request, _ writer: any ResponseWriter) async throws {
        let server = request.server.name
        let host = instrument.metrics.hostLabel(request)
        let basic = instrument.basic(server: server, host: host)
        let method = UsherMetrics.methodLabel(request.method.rawValue)
        let requestSize = approximateSize(request)
        basic.inFlight.increment()
        defer { basic.inFlight.decrement() }
        let start = ContinuousClock.now
        let measured = MeasuringResponseWriter(writer, start: start)
        do {
            try await next.serve(request, measured)
        } catch {
            let elapsed = ContinuousClock.now - start
            basic.requests.increment()
            basic.errors.increment()
            if let he = error as? HandlerError {
                observe(measured, code: measured.code ?? he.status, elapsed, requestSize, server, host, method)
            }
            throw error
        }
        let elapsed = ContinuousClock.now - start
        basic.requests.increment()
        observe(measured, code: measured.code ?? 200, elapsed, requestSize, server, host, method)
    }

    private func observe(
        _ w: MeasuringResponseWriter, code: Int, _ elapsed: Duration, _ requestSize: Int,
        _ server: String, _ host: String?, _ method: String
    ) {
        let s = instrument.byStatus(server: server, host: host, code: code, method: method)
        s.duration.record(elapsed)
        if let ttfb = w.firstByte { s.firstByte.record(ttfb) }
        s.requestSize.record(Double(requestSize))
        s.responseSize.record(Double(w.bodyBytes))
    }

    /// The request's size as Prometheus's Go client estimates it: target, method, protocol, header fields, host
    /// and declared body length.
    private func approximateSize(_ request: Request) -> Int {
        var n = request.uri.utf8.count + request.method.rawValue.utf8.count + 8 + request.host.utf8.count
        // Go keeps Host out of the header map; it is counted once, above.
        for (name, value) in request.headers where !(name.utf8.count == 4 && name.lowercased() == "host") {
            n += name.utf8.count + value.utf8.count
        }
        if let cl = request.headers.first(name: "content-length").flatMap(Int.init) { n += cl }
        return n
    }
}

/// Notes the final status, when the head went out, and the body bytes, passing everything on.
final class MeasuringResponseWriter: WrappingResponseWriter {
    let wrappedWriter: any ResponseWriter
    let start: ContinuousClock.Instant
    fileprivate(set) var code: Int?
    private(set) var firstByte: Duration?
    fileprivate(set) var bodyBytes = 0

    init(_ wrapped: any ResponseWriter, start: ContinuousClock.Instant) {
        self.wrappedWriter = wrapped
        self.start = start
    }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        noteHead(status)
        try await wrappedWriter.writeHead(status)
    }

    func write(_ buffer: ByteBuffer) async throws {
        if code == nil { noteHead(.ok) }
        bodyBytes += buffer.readableBytes
        try await wrappedWriter.write(buffer)
    }

    fileprivate func noteHead(_ status: HTTPResponseStatus) {
        guard code == nil, status.code >= 200 || status == .switchingProtocols else { return }
        code = Int(status.code)
        firstByte = ContinuousClock.now - start
    }
}

// Passes file bodies through to a writer that can send them itself (sendfile), so measuring does not cost the
// zero-copy path.
extension MeasuringResponseWriter: FileBodyWriting {
    func writeFileRegion(descriptor: CInt, offset: Int, length: Int) async throws -> Bool {
        guard let direct = wrappedWriter as? any FileBodyWriting,
            try await direct.writeFileRegion(descriptor: descriptor, offset: offset, length: length)
        else { return false }
        if code == nil { noteHead(wrappedWriter.status ?? .ok) }
        bodyBytes += length
        return true
    }
}
