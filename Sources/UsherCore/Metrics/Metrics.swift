import CoreMetrics
public import Prometheus
import Synchronization

/// The process's metrics: one Prometheus registry that the admin endpoint's `/metrics` and the `metrics` handler
/// expose, with Caddy's metric names.
///
/// Modules record into ``registry`` directly (for `# HELP` text and exact buckets), or through swift-metrics once
/// ``bootstrapSwiftMetrics()`` has run (the `usher` command does it at start): a module's
/// `Counter(label: "my_module_hits_total")` then shows up on `/metrics` too. Series live for the process, across
/// config reloads, so counters never go backwards.
public enum UsherMetrics {
    /// The registry every series is in.
    public static let registry = PrometheusCollectorRegistry()

    /// The Prometheus text exposition format's media type.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Duration buckets, in seconds (Prometheus's `DefBuckets`, as Caddy uses).
    public static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Size buckets, in bytes: 256 × 4ⁿ for n in 0..<8, as Caddy uses.
    public static let sizeBuckets: [Double] = (0..<8).map { 256 * Double(1 << (2 * $0)) }

    private static let refreshers = Mutex<[Int: @Sendable () -> Void]>([:])
    private static let nextRefresher = Atomic<Int>(0)

    /// Registers `refresh` to run before each exposition (gauges computed from state, such as upstream health).
    /// Returns a token for ``removeRefresher(_:)``.
    public static func addRefresher(_ refresh: @escaping @Sendable () -> Void) -> Int {
        let token = nextRefresher.add(1, ordering: .relaxed).newValue
        refreshers.withLock { $0[token] = refresh }
        return token
    }

    /// Stops running the refresher `token` returned.
    public static func removeRefresher(_ token: Int) {
        _ = refreshers.withLock { $0.removeValue(forKey: token) }
    }

    /// The exposition: refreshers run, then every series in the text format.
    public static func exposition() -> [UInt8] {
        let pending = refreshers.withLock { Array($0.sorted { $0.key < $1.key }.map(\.value)) }
        for refresh in pending { refresh() }
        var out: [UInt8] = []
        out.reserveCapacity(16 * 1024)
        registry.emit(into: &out)
        return out
    }

    private static let bootstrapped = Atomic<Bool>(false)

    /// Routes swift-metrics (`Counter`, `Gauge`, `Timer`, `Recorder` from CoreMetrics) into ``registry``. Only the
    /// first call has an effect; swift-metrics allows one bootstrap per process.
    public static func bootstrapSwiftMetrics() {
        guard bootstrapped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// A metric's full name and `# HELP` text, in the form the registry takes.
    public static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// A method as a label value, as Caddy sanitizes it: the standard methods in upper case, anything else `OTHER`
    /// (clients cannot grow the series count by inventing methods).
    public static func methodLabel(_ method: String) -> String {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE": method
        case "get", "head", "post", "put", "delete", "patch", "options", "connect", "trace": method.uppercased()
        default: "OTHER"
        }
    }

    /// A status code as a label value; 0 (nothing written) counts as `200`, as in Caddy.
    public static func codeLabel(_ code: Int) -> String {
        code == 0 ? "200" : String(code)
    }

    // MARK: - Config reloads

    private static let reloadSuccessful = registry.makeGauge(
        descriptor: descriptor(
            "caddy_config_last_reload_successful", "Whether the last configuration reload attempt was successful."
        ))
    private static let reloadTimestamp = registry.makeGauge(
        descriptor: descriptor(
            "caddy_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload."
        ))

    /// Records the outcome of a config load.
    static func recordConfigLoad(succeeded: Bool, at unixSeconds: Double) {
        reloadSuccessful.set(succeeded ? 1.0 : 0.0)
        if succeeded { reloadTimestamp.set(unixSeconds) }
    }

    // MARK: - Admin API

    /// One (handler, path) pair of the admin API: a route label set, as Caddy registers them.
    struct AdminSeries: Hashable {
        var handler: String
        var path: String
        var method: String
    }

    private struct AdminRequestKey: Hashable { var series: AdminSeries; var status: Int }
    private static let adminRequests = SeriesCache<AdminRequestKey, Prometheus.Counter>()
    private static let adminErrors = SeriesCache<AdminSeries, Prometheus.Counter>()

    /// Counts an admin API request (`caddy_admin_http_requests_total`, and `…_request_errors_total` for errors).
    static func recordAdminRequest(handler: String, path: String, method: String, status: Int) {
        let key = AdminSeries(handler: handler, path: path, method: methodLabel(method))
        adminRequests.get(AdminRequestKey(series: key, status: status)) {
            registry.makeCounter(
                descriptor: descriptor(
                    "caddy_admin_http_requests_total", "Counter of requests made to the Admin API's HTTP endpoints."),
                labels: [
                    ("code", codeLabel(status)), ("handler", key.handler), ("method", key.method), ("path", key.path),
                ]
            )
        }.increment()
        // Made with the route's first request, so the series reads 0 until an error.
        let errors = adminErrors.get(key) { makeAdminErrors(key) }
        if status >= 400 { errors.increment() }
    }

    private static func makeAdminErrors(_ key: AdminSeries) -> Prometheus.Counter {
        registry.makeCounter(
            descriptor: descriptor(
                "caddy_admin_http_request_errors_total", "Number of requests resulting in middleware errors."),
            labels: [("handler", key.handler), ("method", key.method), ("path", key.path)]
        )
    }
}

/// Metric handles by label values, each made once. The registry finds an existing series too, but it takes a
/// lock and builds a key from label strings on every call; this is a single dictionary lookup.
public final class SeriesCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let entries = Mutex<[Key: Value]>([:])

    public init() {}

    /// The value for `key`, made by `make` the first time.
    public func get(_ key: Key, make: () -> Value) -> Value {
        entries.withLock { e in
            if let v = e[key] { return v }
            let v = make()
            e[key] = v
            return v
        }
    }
}
