import Foundation
import Testing

@Suite("reverse_proxy dynamic upstreams from DNS (dnsmasq)", .serialized)
struct ReverseProxyDynamicTests {
    @Test(
        "srv, a (with a resolver and with the system's), multi, falling back to static upstreams when lookups fail, and the transport's resolver"
    )
    func dynamicUpstreams() throws {
        let a = try Backend.pythonServer("python A")
        let b = try Backend.pythonServer("python B")
        defer { a.stop(); b.stop() }
        let dnsPort = freePort()
        // dnsmasq closes every descriptor it inherits, which confuses Foundation's child tracking if it stays our
        // child; it runs as a daemon instead, known by its pid file.
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent(
            "usher-dnsmasq-\(UUID().uuidString).pid")
        let started = try runCommand(
            "/usr/sbin/dnsmasq",
            [
                "--no-resolv", "--no-hosts", "--port=\(dnsPort)", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--user=root", "--pid-file=\(pidFile.path)",
                "--srv-host=_http._tcp.svc.test,localhost,\(a.port),0,10",
                "--srv-host=_http._tcp.svc.test,localhost,\(b.port),0,10",
                "--host-record=api.test,127.0.0.1",
            ])
        #expect(started.status == 0, "\(started.stderr)")
        let dnsPID =
            Int32(
                (try? String(contentsOf: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                    ?? "") ?? 0
        defer {
            if dnsPID > 0 { kill(dnsPID, SIGKILL) }
            try? FileManager.default.removeItem(at: pidFile)
        }
        let resolver = #""resolver": {"addresses": ["127.0.0.1:\#(dnsPort)"]}"#
        let ports = (0..<5).map { _ in freePort() }
        func site(_ i: Int, _ handler: String) -> String {
            """
            "s\(i)": {"listen": ["127.0.0.1:\(ports[i])"], "routes": [{"handle": [{"handler": "reverse_proxy", \(handler)}]}]}
            """
        }
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {
                  \(site(0, #""dynamic_upstreams": {"source": "srv", "service": "http", "proto": "tcp", "name": "svc.test", \#(resolver)}, "load_balancing": {"selection_policy": {"policy": "round_robin"}}"#)),
                  \(site(1, #""dynamic_upstreams": {"source": "multi", "sources": [{"source": "a", "name": "api.test", "port": \#(a.port), \#(resolver)}, {"source": "a", "name": "nothing.test", "port": 1, \#(resolver)}]}"#)),
                  \(site(2, #""dynamic_upstreams": {"source": "a", "name": "localhost", "port": "\#(b.port)", "versions": {"ipv4": true}}"#)),
                  \(site(3, #""dynamic_upstreams": {"source": "a", "name": "missing.test", "port": 80, \#(resolver)}, "upstreams": [{"dial": "127.0.0.1:\#(a.port)"}]"#)),
                  \(site(4, #""upstreams": [{"dial": "api.test:\#(b.port)"}], "transport": {"protocol": "http", \#(resolver)}"#))}}}}
                """, waitPort: ports[4])
        defer { s.stop() }
        var srv = Set<String>()
        for _ in 0..<6 { srv.insert(try curl(["http://127.0.0.1:\(ports[0])/"]).body) }
        #expect(srv == ["python A", "python B"])
        let hosts = try upstreamStatus(s)
        #expect(hosts["localhost:\(a.port)"] != nil && hosts["localhost:\(b.port)"] != nil, "\(hosts.keys.sorted())")
        #expect(try curl(["http://127.0.0.1:\(ports[1])/"]).body == "python A")
        #expect(try curl(["http://127.0.0.1:\(ports[2])/"]).body == "python B")
        #expect(try curl(["http://127.0.0.1:\(ports[3])/"]).body == "python A")
        // The transport's own resolver finds static upstreams' names the system cannot.
        #expect(try curl(["http://127.0.0.1:\(ports[4])/"]).body == "python B")
    }
}
