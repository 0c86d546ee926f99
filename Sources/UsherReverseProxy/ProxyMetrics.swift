import Prometheus
import Synchronization
import UsherCore

/// The reverse proxy's series, with Caddy's names: upstream health (every upstream any config uses, refreshed at
/// each scrape), and, when the `http` app has `metrics`, requests and latency per upstream.
final class ProxyMetrics: Sendable {
    static let shared = ProxyMetrics()

    private struct RequestKey: Hashable { var upstream: String; var code: Int; var method: String }

    private let healthGauges = Mutex<[String: Gauge]>([:])
    private let requestCounters = SeriesCache<RequestKey, Counter>()
    private let durations = SeriesCache<String, DurationHistogram>()

    private static var healthyName: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_reverse_proxy_upstreams_healthy", "Health status of reverse proxy upstreams.")
    }
    private static var requestsName: MetricNameDescriptor {
        UsherMetrics.descriptor("caddy_reverse_proxy_upstream_requests_total", "Counter of requests made to upstreams.")
    }
    private static var durationName: MetricNameDescriptor {
        UsherMetrics.descriptor(
            "caddy_reverse_proxy_upstream_request_duration_seconds", "Histogram of request durations to upstreams.")
    }

    /// Sets `caddy_reverse_proxy_upstreams_healthy` for the upstreams in use and drops the series of upstreams no
    /// config uses any more.
    func refreshHealth(_ hosts: [UpstreamHost]) {
        let registry = UsherMetrics.registry
        healthGauges.withLock { gauges in
            var seen: Set<String> = []
            for host in hosts {
                seen.insert(host.address)
                let gauge =
                    gauges[host.address]
                    ?? {
                        let g = registry.makeGauge(descriptor: Self.healthyName, labels: [("upstream", host.address)])
                        gauges[host.address] = g
                        return g
                    }()
                gauge.set(host.healthy ? 1.0 : 0.0)
            }
            for (address, gauge) in gauges where !seen.contains(address) {
                registry.unregisterGauge(gauge)
                gauges[address] = nil
            }
        }
    }

    /// Counts a response from `upstream` (`caddy_reverse_proxy_upstream_requests_total`) and the time until its
    /// head arrived (`…_upstream_request_duration_seconds`).
    func recordRequest(upstream: String, method: String, status: Int, latency: Duration) {
        let key = RequestKey(upstream: upstream, code: status, method: UsherMetrics.methodLabel(method))
        requestCounters.get(key) {
            UsherMetrics.registry.makeCounter(
                descriptor: Self.requestsName,
                labels: [("code", UsherMetrics.codeLabel(status)), ("method", key.method), ("upstream", upstream)]
            )
        }.increment()
        let histogram = durations.get(upstream) {
            UsherMetrics.registry.makeDurationHistogram(
                descriptor: Self.durationName, labels: [("upstream", upstream)], buckets: UsherMetrics.durationBuckets
            )
        }
        histogram.record(latency)
    }

    // MARK: - WebTransport sessions (Usher's own series: Caddy has no WebTransport)

    /// The series of sessions bridged to one upstream.
    final class WebTransportSeries: Sendable {
        let active: Gauge
        let sessions: Counter
        let streams: Counter
        let bytesUp: Counter
        let bytesDown: Counter
        let datagramsUp: Counter
        let datagramsDown: Counter
        let datagramsDropped: Counter

        init(upstream: String) {
            let r = UsherMetrics.registry
            let u = ("upstream", upstream)
            active = r.makeGauge(
                descriptor: UsherMetrics.descriptor(
                    "usher_reverse_proxy_webtransport_sessions_active",
                    "WebTransport sessions being bridged to upstreams."), labels: [u])
            sessions = r.makeCounter(
                descriptor: UsherMetrics.descriptor(
                    "usher_reverse_proxy_webtransport_sessions_total", "WebTransport sessions bridged to upstreams."),
                labels: [u])
            streams = r.makeCounter(
                descriptor: UsherMetrics.descriptor(
                    "usher_reverse_proxy_webtransport_streams_total",
                    "WebTransport streams bridged, counted when their session ends."), labels: [u])
            let bytes = UsherMetrics.descriptor(
                "usher_reverse_proxy_webtransport_bytes_total",
                "WebTransport stream bytes bridged, counted when their session ends.")
            bytesUp = r.makeCounter(descriptor: bytes, labels: [("direction", "up"), u])
            bytesDown = r.makeCounter(descriptor: bytes, labels: [("direction", "down"), u])
            let datagrams = UsherMetrics.descriptor(
                "usher_reverse_proxy_webtransport_datagrams_total",
                "WebTransport datagrams passed on (up, down) or dropped, counted when their session ends.")
            datagramsUp = r.makeCounter(descriptor: datagrams, labels: [("direction", "up"), u])
            datagramsDown = r.makeCounter(descriptor: datagrams, labels: [("direction", "down"), u])
            datagramsDropped = r.makeCounter(descriptor: datagrams, labels: [("direction", "dropped"), u])
        }
    }

    private let webTransport = SeriesCache<String, WebTransportSeries>()

    /// The WebTransport series of `upstream`; a session holds on to them from start to end.
    func webTransportSeries(upstream: String) -> WebTransportSeries {
        webTransport.get(upstream) { WebTransportSeries(upstream: upstream) }
    }
}
