import Foundation
import Testing

/// One scrape of a Prometheus endpoint, parsed by Python's `prometheus_client` (not by us).
struct Scrape {
    let contentType: String
    /// Family name → type (`counter`, `gauge`, `histogram`), as the parser read the `# TYPE` lines.
    let families: [String: String]
    let samples: [(name: String, labels: [String: String], value: Double)]

    init(_ url: String) throws {
        let script = packageRoot.appendingPathComponent("IntegrationTests/interop/metrics_scrape.py").path
        let r = try runCommand(venvPython, [script, url], timeout: 30)
        guard r.status == 0 else {
            throw TestFailure("metrics_scrape.py \(url) failed (\(r.status)): \(r.stderr.suffix(1500))")
        }
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        contentType = json["content_type"] as? String ?? ""
        families = json["families"] as? [String: String] ?? [:]
        samples = (json["samples"] as? [[Any]] ?? []).map { s in
            (s[0] as? String ?? "", s[1] as? [String: String] ?? [:], (s[2] as? NSNumber)?.doubleValue ?? .nan)
        }
    }

    /// The value of the sample `name` whose labels include `labels`; `nil` if there is none, and a failure if
    /// several match (the labels given must pick one series).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { s in s.name == name && labels.allSatisfy { s.labels[$0.key] == $0.value } }
        #expect(matching.count <= 1, "\(name) \(labels) matches \(matching.count) series")
        return matching.first?.value
    }

    func has(_ name: String) -> Bool { samples.contains { $0.name == name } }
}

@Suite("Prometheus metrics", .serialized)
struct MetricsTests {
    @Test(
        "admin /metrics: Caddy's HTTP, upstream and admin series parse with prometheus_client and move by exactly what was served"
    )
    func countersMove() throws {
        let backend = try Backend.nginxServer(
            """
            server { listen 127.0.0.1:{{PORT}}; location / { return 200 "from nginx"; } location = /proxy/y { return 418; } }
            """
        ).0
        defer { backend.stop() }
        let port = freePort()
        let upstream = "127.0.0.1:\(backend.port)"
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"metrics": {},
                  "servers": {"web": {"listen": ["127.0.0.1:\(port)"], "routes": [
                    {"match": [{"path": ["/hello"]}], "handle": [{"handler": "static_response", "status_code": 201, "body": "hello!"}], "terminal": true},
                    {"match": [{"path": ["/fail"]}], "handle": [{"handler": "error", "status_code": 503}], "terminal": true},
                    {"match": [{"path": ["/proxy/*"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "\(upstream)"}]}]}
                  ]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let url = "http://\(s.adminAddress)/metrics"
        let before = try Scrape(url)
        #expect(before.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(before.value("caddy_config_last_reload_successful") == 1)
        #expect(
            (before.value("caddy_config_last_reload_success_timestamp_seconds") ?? 0) > Date().timeIntervalSince1970
                - 120)
        #expect(before.families["caddy_reverse_proxy_upstreams_healthy"] == "gauge")
        #expect(before.value("caddy_reverse_proxy_upstreams_healthy", ["upstream": upstream]) == 1)

        for _ in 0..<5 { #expect(try curl(["http://127.0.0.1:\(port)/hello"]).status == 201) }
        #expect(try curl(["-X", "PROPFIND", "http://127.0.0.1:\(port)/hello"]).status == 201)
        for _ in 0..<3 { #expect(try curl(["http://127.0.0.1:\(port)/proxy/x"]).status == 200) }
        #expect(try curl(["-X", "POST", "-d", "abcd", "http://127.0.0.1:\(port)/proxy/y"]).status == 418)
        #expect(try curl(["http://127.0.0.1:\(port)/fail"]).status == 503)
        _ = try admin(s, "GET", "/config/")

        let after = try Scrape(url)
        func delta(_ name: String, _ labels: [String: String]) -> Double {
            (after.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0)
        }
        let hello = ["server": "web", "handler": "static_response"]
        let proxy = ["server": "web", "handler": "reverse_proxy"]
        #expect(after.families["caddy_http_requests"] == "counter")
        #expect(after.families["caddy_http_request_duration_seconds"] == "histogram")
        #expect(after.families["caddy_http_requests_in_flight"] == "gauge")
        #expect(delta("caddy_http_requests_total", hello) == 6)
        // Methods outside the standard set count as OTHER, so clients cannot invent series.
        #expect(
            delta(
                "caddy_http_request_duration_seconds_count",
                hello.merging(["code": "201", "method": "OTHER"]) { a, _ in a }) == 1)
        #expect(!after.samples.contains { $0.labels["method"] == "PROPFIND" })
        #expect(delta("caddy_http_requests_total", proxy) == 4)
        #expect(delta("caddy_http_requests_total", ["server": "web", "handler": "error"]) == 1)
        #expect(delta("caddy_http_request_errors_total", ["server": "web", "handler": "error"]) == 1)
        #expect(delta("caddy_http_request_errors_total", hello) == 0)
        #expect(after.value("caddy_http_requests_in_flight", hello) == 0)
        // By status and method: durations, time to first byte, sizes.
        let hello201 = hello.merging(["code": "201", "method": "GET"]) { a, _ in a }
        #expect(delta("caddy_http_request_duration_seconds_count", hello201) == 5)
        #expect(delta("caddy_http_response_duration_seconds_count", hello201) == 5)
        #expect(delta("caddy_http_response_size_bytes_sum", hello201) == 30)
        #expect(
            delta("caddy_http_request_duration_seconds_bucket", hello201.merging(["le": "+Inf"]) { a, _ in a }) == 5)
        #expect(
            delta(
                "caddy_http_request_duration_seconds_count",
                proxy.merging(["code": "200", "method": "GET"]) { a, _ in a }) == 3)
        #expect(
            delta(
                "caddy_http_request_duration_seconds_count",
                proxy.merging(["code": "418", "method": "POST"]) { a, _ in a }) == 1)
        #expect(
            delta("caddy_http_request_duration_seconds_count", ["handler": "error", "code": "503", "method": "GET"])
                == 1)
        // Per upstream: responses by status and method, and their latency.
        #expect(
            delta(
                "caddy_reverse_proxy_upstream_requests_total", ["upstream": upstream, "code": "200", "method": "GET"])
                == 3)
        #expect(
            delta(
                "caddy_reverse_proxy_upstream_requests_total", ["upstream": upstream, "code": "418", "method": "POST"])
                == 1)
        #expect(delta("caddy_reverse_proxy_upstream_request_duration_seconds_count", ["upstream": upstream]) == 4)
        // The admin API counts itself.
        #expect(
            delta(
                "caddy_admin_http_requests_total",
                ["handler": "admin", "path": "/config/", "code": "200", "method": "GET"]) == 1)

        // An upstream that goes down is reported unhealthy at the next scrape (passive health is off, so take it
        // out by config: a reload to an unreachable upstream with passive checks).
        backend.stop()
        let load = try admin(
            s, "POST", "/load",
            body: """
                {"admin": {"listen": "\(s.adminAddress)"}, "apps": {"http": {"metrics": {},
                  "servers": {"web": {"listen": ["127.0.0.1:\(port)"], "routes": [
                    {"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "\(upstream)"}],
                                 "health_checks": {"passive": {"fail_duration": "1m", "max_fails": 1}}}]}
                  ]}}}}}
                """)
        #expect(load.status == 200, "\(load.body)")
        #expect(try curl(["http://127.0.0.1:\(port)/"]).status == 502)
        let down = try Scrape(url)
        #expect(down.value("caddy_reverse_proxy_upstreams_healthy", ["upstream": upstream]) == 0)
        #expect(
            down.value("caddy_http_requests_total", proxy) == (after.value("caddy_http_requests_total", proxy) ?? 0)
                + 1,
            "counters carry across a reload")
    }

    @Test(
        "a bad config sets caddy_config_last_reload_successful to 0 and keeps serving; without `metrics` no route is instrumented; the metrics handler serves the exposition"
    )
    func reloadGaugeHandlerAndOff() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"web": {"listen": ["127.0.0.1:\(port)"], "routes": [
                    {"match": [{"path": ["/metrics"]}], "handle": [{"handler": "metrics"}], "terminal": true},
                    {"handle": [{"handler": "static_response", "body": "ok"}]}
                ]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        for _ in 0..<3 { #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "ok") }
        let site = try Scrape("http://127.0.0.1:\(port)/metrics")
        #expect(site.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(site.value("caddy_config_last_reload_successful") == 1)
        #expect(!site.has("caddy_http_requests_total"), "no `metrics` in the http app: routes run uninstrumented")

        let bad = try admin(
            s, "POST", "/load",
            body: """
                {"apps": {"http": {"metrics": {"otlp": true}, "servers": {"web": {"listen": ["127.0.0.1:\(port)"]}}}}}
                """)
        #expect(bad.status == 400)
        #expect(bad.body.contains("apps.http.metrics.otlp") && bad.body.contains("not supported yet"), "\(bad.body)")
        let afterBad = try Scrape("http://\(s.adminAddress)/metrics")
        #expect(afterBad.value("caddy_config_last_reload_successful") == 0)
        #expect(try curl(["http://127.0.0.1:\(port)/"]).body == "ok", "the running config still serves")
        #expect(
            afterBad.value(
                "caddy_admin_http_requests_total",
                ["handler": "admin", "path": "/load", "code": "400", "method": "POST"]) == 1)
        #expect(
            afterBad.value(
                "caddy_admin_http_request_errors_total", ["handler": "admin", "path": "/load", "method": "POST"]) == 1)
    }

    @Test("per_host labels hosts named in host matchers and folds the rest into _other")
    func perHost() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"metrics": {"per_host": true},
                  "servers": {"web": {"listen": ["127.0.0.1:\(port)"], "automatic_https": {"disable": true}, "routes": [
                    {"match": [{"host": ["a.example"]}], "handle": [{"handler": "static_response", "body": "a"}], "terminal": true},
                    {"handle": [{"handler": "static_response", "body": "other"}]}
                  ]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        _ = try curl(["-H", "Host: a.example", "http://127.0.0.1:\(port)/"])
        _ = try curl(["-H", "Host: A.Example:\(port)", "http://127.0.0.1:\(port)/"])
        _ = try curl(["-H", "Host: attacker.example", "http://127.0.0.1:\(port)/"])
        _ = try curl(["-H", "Host: another.example", "http://127.0.0.1:\(port)/"])
        let m = try Scrape("http://\(s.adminAddress)/metrics")
        #expect(m.value("caddy_http_requests_total", ["server": "web", "host": "a.example"]) == 2)
        #expect(m.value("caddy_http_requests_total", ["server": "web", "host": "_other"]) == 2)
        #expect(!m.samples.contains { $0.labels["host"] == "attacker.example" })
    }

    @Test("a server's own `metrics` (deprecated) instruments it as Caddy 2.11's does, with Caddy's warning")
    func perServerMetrics() throws {
        func config(_ port: Int) -> String {
            """
            {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"web": {"listen": ["127.0.0.1:\(port)"],
              "metrics": {"per_host": true}, "automatic_https": {"disable": true}, "routes": [
                {"match": [{"host": ["a.example"]}], "handle": [{"handler": "static_response", "body": "a"}], "terminal": true},
                {"handle": [{"handler": "static_response", "body": "other"}]}
              ]}}}}}
            """
        }
        var servers = [("usher", usherBinary)]
        if let caddy = caddyOracle { servers.append(("caddy", caddy)) }
        var counts: [String: [String: Double]] = [:]
        for (name, binary) in servers {
            let port = freePort()
            let s = try UsherProcess(
                config: config(port), waitPort: port, environment: ["HOME": NSTemporaryDirectory()], binary: binary)
            defer { s.stop() }
            for host in ["a.example", "a.example", "b.example"] {
                _ = try curl(["-H", "Host: \(host)", "http://127.0.0.1:\(port)/"])
            }
            let m = try Scrape("http://\(s.adminAddress)/metrics")
            for sample in m.samples where sample.name == "caddy_http_requests_total" {
                counts[name, default: [:]][sample.labels["host"] ?? "-"] = sample.value
            }
            #expect(
                s.log.contains(
                    #""logger":"http.log","msg":"per-server 'metrics' is deprecated; use 'metrics' in the root 'http' app instead""#
                ), "\(name)")
        }
        // Turned on by a server alone, Caddy never learns the site's hosts: everything is `_other`.
        #expect(counts["usher"] == ["_other": 3])
        if caddyOracle != nil { #expect(counts["usher"] == counts["caddy"]) }
    }

    @Test(
        "Caddyfile: the `metrics` global option instruments the site's routes and the `metrics` directive serves them on the site, in the shipped binary"
    )
    func caddyfile() throws {
        let port = freePort()
        let caddyfile = """
            {
            \tadmin {{ADMIN}}
            \tmetrics
            }
            http://127.0.0.1:\(port) {
            \tmetrics /metrics
            \trespond /hi "hi there" 202
            }
            """
        let s = try UsherProcess(
            config: caddyfile, args: ["--adapter", "caddyfile"], configName: "Caddyfile", waitPort: port)
        defer { s.stop() }
        for _ in 0..<4 { #expect(try curl(["http://127.0.0.1:\(port)/hi"]).status == 202) }
        let m = try Scrape("http://127.0.0.1:\(port)/metrics")
        let labels = ["handler": "static_response", "code": "202", "method": "GET"]
        #expect(m.value("caddy_http_request_duration_seconds_count", labels) == 4)
        #expect(m.value("caddy_http_response_size_bytes_sum", labels) == 32)
        #expect(m.samples.contains { $0.name == "caddy_http_requests_total" && $0.labels["handler"] == "metrics" })
    }
}
