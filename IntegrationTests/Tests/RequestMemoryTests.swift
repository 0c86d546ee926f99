import Foundation
import Testing

/// Memory a request leaves behind once it is done: nothing. Each HTTP/2 and HTTP/3 request used to leak ~5 KiB
/// (its task, stream handler, writer and body stream kept each other alive), so a busy server grew without bound.
@Suite("Served requests leave no memory behind (HTTP/1.1, HTTP/2, HTTP/3)", .serialized)
struct RequestMemoryTests {
    @Test(
        "30,000 requests after a warm-up grow the server's RSS by less than 24 MiB, on each protocol",
        arguments: ["h1", "h2", "h3"])
    func noGrowth(proto: String) throws {
        let pki = try TestPKI()
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "hello"}]}], "tls_connection_policies": [{}]}}},
                  "tls": {"certificates": {"load_files": [{"certificate": "\(pki.path("a.crt"))", "key": "\(pki.path("a.key"))"}]}}}}
                """, waitPort: port)
        defer { s.stop() }
        if proto == "h3" {
            for _ in 0..<100 where !(try udpBound(port)) { Thread.sleep(forTimeInterval: 0.05) }
        }
        /// Sends `n` GETs over `proto` and returns how many succeeded.
        func load(_ n: Int) throws -> Int {
            let url = "https://127.0.0.1:\(port)/"
            if proto == "h3" {
                let o = try h3load(["-k", "--sni", "a.test", "-n", String(n), "-c", "4", "-m", "10", url])
                return o["succeeded"] as? Int ?? 0
            }
            let r = try runCommand(
                "/usr/bin/h2load", (proto == "h1" ? ["--h1"] : ["-m", "10"]) + ["-n", String(n), "-c", "4", url],
                timeout: 120)
            return h2loadSucceeded(r.stdout)
        }
        #expect(try load(3000) == 3000)
        let before = residentKiB(pid: s.pid)
        #expect(try load(30000) == 30000)
        let after = residentKiB(pid: s.pid)
        // A leak of the old size would add ~150 MiB here.
        #expect(after - before < 24 * 1024, "\(proto): RSS \(before) KiB → \(after) KiB after 30,000 more requests")
    }
}
