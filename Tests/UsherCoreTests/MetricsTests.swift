import CoreMetrics
import Prometheus
import Synchronization
import Testing

@testable import UsherCore

@Suite("UsherMetrics registry", .serialized)
struct UsherMetricsTests {
    private func exposition() -> String { String(decoding: UsherMetrics.exposition(), as: UTF8.self) }

    @Test("swift-metrics, once bootstrapped, records into the registry /metrics shows")
    func swiftMetricsBridge() {
        UsherMetrics.bootstrapSwiftMetrics()
        UsherMetrics.bootstrapSwiftMetrics()  // a second call must not trap (swift-metrics allows one bootstrap)
        let counter = CoreMetrics.Counter(label: "usher_core_test_hits_total", dimensions: [("kind", "unit")])
        counter.increment(by: 3)
        let text = exposition()
        #expect(text.contains("# TYPE usher_core_test_hits_total counter"), "\(text)")
        #expect(text.contains(#"usher_core_test_hits_total{kind="unit"} 3"#), "\(text)")
    }

    @Test("refreshers run before each exposition until removed")
    func refreshers() {
        let gauge = UsherMetrics.registry.makeGauge(
            descriptor: UsherMetrics.descriptor("usher_core_test_refreshed", "Test gauge."))
        let runs = Atomic<Int>(0)
        let token = UsherMetrics.addRefresher {
            let n = runs.add(1, ordering: .relaxed).newValue
            gauge.set(Double(n * 10))
        }
        #expect(exposition().contains("usher_core_test_refreshed 10.0"))
        #expect(exposition().contains("usher_core_test_refreshed 20.0"))
        UsherMetrics.removeRefresher(token)
        #expect(exposition().contains("usher_core_test_refreshed 20.0"))
        #expect(runs.load(ordering: .relaxed) == 2)
    }

    @Test("label values: standard methods upper case and the rest OTHER, no status counts as 200")
    func labels() {
        #expect(UsherMetrics.methodLabel("get") == "GET")
        #expect(UsherMetrics.methodLabel("PROPFIND") == "OTHER")
        #expect(UsherMetrics.methodLabel("Get") == "OTHER")
        #expect(UsherMetrics.codeLabel(0) == "200")
        #expect(UsherMetrics.codeLabel(404) == "404")
        #expect(UsherMetrics.sizeBuckets == [256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304])
    }
}
