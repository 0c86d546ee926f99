import Foundation
import Testing

/// The entries of `GET /reverse_proxy/upstreams`, by address.
func upstreamStatus(_ s: UsherProcess) throws -> [String: [String: Any]] {
    let r = try admin(s, "GET", "/reverse_proxy/upstreams")
    let list = try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [[String: Any]] ?? []
    var byAddress: [String: [String: Any]] = [:]
    for e in list { if let a = e["address"] as? String { byAddress[a] = e } }
    return byAddress
}

/// Polls `condition` every 50ms for up to `seconds`.
func eventually(_ seconds: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return try condition()
}

@Suite("reverse_proxy health checks and retries", .serialized)
struct ReverseProxyHealthTests {
    @Test(
        "passive checks: a killed upstream costs one client error, then traffic fails over; it is forgiven after fail_duration"
    )
    func passive() throws {
        let a = try Backend.pythonServer("python A")
        let b = try Backend.nginx("nginx B")
        defer { b.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(a.port)"}, {"dial": "127.0.0.1:\(b.port)"}],
                    "load_balancing": {"selection_policy": {"policy": "round_robin"}},
                    "health_checks": {"passive": {"fail_duration": "2s", "max_fails": 1}}}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        var bodies = Set<String>()
        for _ in 0..<4 { bodies.insert(try curl(["http://127.0.0.1:\(port)/"]).body) }
        #expect(bodies == ["python A", "nginx B"])
        a.stop()
        var statuses: [Int] = []
        for _ in 0..<10 {
            let r = try curl(["http://127.0.0.1:\(port)/"])
            statuses.append(r.status)
            if r.status == 200 { #expect(r.body == "nginx B") }
        }
        // With no retries configured, the one request that met the dead upstream fails; none after it.
        #expect(statuses.filter { $0 != 200 } == [502], "\(statuses)")
        #expect(statuses.dropFirst(2).allSatisfy { $0 == 200 }, "\(statuses)")
        let down = try upstreamStatus(s)["127.0.0.1:\(a.port)"]
        #expect(down?["healthy"] as? Bool == false, "\(String(describing: down))")
        #expect(down?["fails"] as? Int == 1)
        #expect(try upstreamStatus(s)["127.0.0.1:\(b.port)"]?["healthy"] as? Bool == true)
        // The failure is forgotten after fail_duration.
        #expect(try eventually(5) { try upstreamStatus(s)["127.0.0.1:\(a.port)"]?["fails"] as? Int == 0 })
        #expect(try upstreamStatus(s)["127.0.0.1:\(a.port)"]?["healthy"] as? Bool == true)
    }

    @Test(
        "active checks: a killed upstream is marked down with the reason, gets no traffic, and comes back when it returns"
    )
    func active() throws {
        let aPort = freePort()
        var a = try Backend.pythonServer("python A", port: aPort)
        let b = try Backend.nginx("nginx B")
        defer { a.stop(); b.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(aPort)"}, {"dial": "127.0.0.1:\(b.port)"}],
                    "load_balancing": {"selection_policy": {"policy": "round_robin"}},
                    "health_checks": {"active": {"uri": "/", "interval": "150ms", "timeout": "1s", "expect_status": 2,
                                                 "expect_body": "^(python|nginx) [AB]$", "passes": 2, "fails": 1}}}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        #expect(
            try eventually(5) {
                (try upstreamStatus(s)["127.0.0.1:\(aPort)"]?["last_check"] as? [String: Any])?["passed"] as? Bool
                    == true
            })
        a.stop()
        #expect(try eventually(5) { try upstreamStatus(s)["127.0.0.1:\(aPort)"]?["healthy"] as? Bool == false })
        let check = try upstreamStatus(s)["127.0.0.1:\(aPort)"]?["last_check"] as? [String: Any]
        #expect(check?["passed"] as? Bool == false)
        let reason = check?["error"] as? String ?? ""
        #expect(reason.contains("dialing 127.0.0.1:\(aPort)"), "\(reason)")
        for _ in 0..<6 {
            let r = try curl(["http://127.0.0.1:\(port)/"])
            #expect(r.status == 200 && r.body == "nginx B", "\(r.status) \(r.body)")
        }
        a = try Backend.pythonServer("python A", port: aPort)
        #expect(try eventually(5) { try upstreamStatus(s)["127.0.0.1:\(aPort)"]?["healthy"] as? Bool == true })
        var bodies = Set<String>()
        for _ in 0..<4 { bodies.insert(try curl(["http://127.0.0.1:\(port)/"]).body) }
        #expect(bodies == ["python A", "nginx B"])
    }

    @Test("health is per handler: a check that fails in one site does not take the upstream from another")
    func perHandler() throws {
        let a = try Backend.pythonServer("python A")
        defer { a.stop() }
        let (strict, lax) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "strict": {"listen": ["127.0.0.1:\(strict)"], "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(a.port)"}],
                    "health_checks": {"active": {"uri": "/missing", "interval": "100ms"}}}]}]},
                  "lax": {"listen": ["127.0.0.1:\(lax)"], "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(a.port)"}]}]}]}}}}}
                """, waitPort: lax)
        defer { s.stop() }
        #expect(try eventually(5) { try upstreamStatus(s)["127.0.0.1:\(a.port)"]?["healthy"] as? Bool == false })
        let check = try upstreamStatus(s)["127.0.0.1:\(a.port)"]?["last_check"] as? [String: Any]
        #expect(check?["status"] as? Int == 404)
        let r = try curl(["http://127.0.0.1:\(strict)/"])
        #expect(r.status == 503)
        #expect(try curl(["http://127.0.0.1:\(lax)/"]).body == "python A")
    }

    @Test("retries: try_duration bounds the wait; a sent GET is retried elsewhere, a sent POST body never is")
    func retries() throws {
        let hang = try Backend.hangUp()
        let good = try Backend.caddyEcho()
        defer { hang.stop(); good.stop() }
        let dead = freePort()
        let ports = (0..<5).map { _ in freePort() }
        // Each case has its own handler: "first" picks the hanging upstream until passive checks mark it down.
        func site(_ i: Int, retryMatch: String) -> String {
            """
            "s\(i)": {"listen": ["127.0.0.1:\(ports[i])"], "routes": [{"handle": [{"handler": "reverse_proxy",
              "upstreams": [{"dial": "127.0.0.1:\(hang.port)"}, {"dial": "127.0.0.1:\(good.port)"}],
              "health_checks": {"passive": {"fail_duration": "1m"}},
              "load_balancing": {"selection_policy": {"policy": "first"}, "retries": 1\(retryMatch)}}]}]}
            """
        }
        let post = #", "retry_match": [{"method": ["POST"]}]"#
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  \(site(0, retryMatch: "")), \(site(1, retryMatch: "")), \(site(2, retryMatch: post)), \(site(3, retryMatch: post)),
                  "t": {"listen": ["127.0.0.1:\(ports[4])"], "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(dead)"}],
                    "load_balancing": {"try_duration": "1s", "try_interval": "100ms"}}]}]}}}}}
                """, waitPort: ports[4])
        defer { s.stop() }
        // The first upstream hangs up on every request: a GET goes on to the second.
        let get = try curl(["http://127.0.0.1:\(ports[0])/x"])
        #expect(get.status == 200 && get.body.contains("uri=/x"), "\(get.status) \(get.body)")
        // A POST is not retried without retry_match.
        #expect(try curl(["-X", "POST", "http://127.0.0.1:\(ports[1])/x"]).status == 502)
        // With retry_match it is, unless its body already went up.
        #expect(try curl(["-X", "POST", "http://127.0.0.1:\(ports[2])/y"]).status == 200)
        #expect(try curl(["--data-binary", "payload", "http://127.0.0.1:\(ports[3])/y"]).status == 502)
        let lonely = ports[4]
        // Only dead upstreams: tries for try_duration, then 502.
        let started = Date()
        #expect(try curl(["http://127.0.0.1:\(lonely)/"]).status == 502)
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 0.9 && waited < 3, "\(waited)")
    }

    @Test("trusted_proxies: X-Forwarded-* from a trusted peer are kept and extended, from others replaced")
    func trustedProxies() throws {
        let caddy = try Backend.caddyEcho()
        defer { caddy.stop() }
        let (trusting, wary) = (freePort(), freePort())
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  "t": {"listen": ["127.0.0.1:\(trusting)"], "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(caddy.port)"}], "trusted_proxies": ["127.0.0.0/8"]}]}]},
                  "w": {"listen": ["127.0.0.1:\(wary)"], "routes": [{"handle": [{"handler": "reverse_proxy",
                    "upstreams": [{"dial": "127.0.0.1:\(caddy.port)"}], "trusted_proxies": ["10.0.0.0/8"]}]}]}}}}}
                """, waitPort: wary)
        defer { s.stop() }
        let forwarded = [
            "-H", "X-Forwarded-For: 203.0.113.9", "-H", "X-Forwarded-Proto: https", "-H",
            "X-Forwarded-Host: public.test",
        ]
        let t = try curl(forwarded + ["-H", "Host: inner.test", "http://127.0.0.1:\(trusting)/"])
        #expect(t.body.contains("xff=203.0.113.9, 127.0.0.1 xfp=https xfh=public.test "), "\(t.body)")
        let w = try curl(forwarded + ["-H", "Host: inner.test", "http://127.0.0.1:\(wary)/"])
        #expect(w.body.contains("xff=127.0.0.1 xfp=http xfh=inner.test "), "\(w.body)")
    }
}
