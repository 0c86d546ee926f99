import Foundation
import Testing

@Suite("reverse_proxy handle_response, copy_response and forward_auth", .serialized)
struct ReverseProxyResponseTests {
    @Test(
        "forward_auth from a Caddyfile: the auth upstream sees the rewritten request, denials go to the client, approvals continue with copied headers"
    )
    func forwardAuth() throws {
        let auth = try Backend.caddy(
            """
            \t@good header Authorization "Bearer good"
            \thandle @good {
            \t\theader Remote-User alice
            \t\trespond "ok" 200
            \t}
            \trespond "denied {method} {uri} {header.X-Forwarded-Method} {header.X-Forwarded-Uri}" 401
            """)
        let app = try Backend.caddy("\trespond \"app saw user={header.Remote-User} {method} {uri}{http.request.body}\"")
        defer { auth.stop(); app.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {
                \tadmin {{ADMIN}}
                }
                http://127.0.0.1:\(port) {
                \tforward_auth 127.0.0.1:\(auth.port) {
                \t\turi /verify
                \t\tcopy_headers Remote-User
                \t}
                \treverse_proxy 127.0.0.1:\(app.port)
                }

                """, configName: "Caddyfile", waitPort: port)
        defer { s.stop() }
        let denied = try curl(["-X", "POST", "http://127.0.0.1:\(port)/page?x=1"])
        #expect(denied.status == 401)
        // Caddy's rewrite keeps the query when the new URI has none.
        #expect(denied.body == "denied GET /verify?x=1 POST /page?x=1", "\(denied.body)")
        let allowed = try curl([
            "-H", "Authorization: Bearer good", "-H", "Remote-User: mallory", "http://127.0.0.1:\(port)/page?x=1",
        ])
        #expect(allowed.status == 200)
        #expect(allowed.body == "app saw user=alice GET /page?x=1", "\(allowed.body)")
        // The body is not sent to the auth upstream, so the application still gets it.
        let posted = try curl([
            "-H", "Authorization: Bearer good", "--data-binary", " with body", "http://127.0.0.1:\(port)/form",
        ])
        #expect(posted.body == "app saw user=alice POST /form with body", "\(posted.body)")
    }

    @Test(
        "handle_response: routes for matching statuses with the upstream's headers and placeholders; status_code and copy_response"
    )
    func handleResponse() throws {
        let upstream = try Backend.caddy(
            """
            \theader X-Upstream yes
            \theader X-Secret hidden
            \trespond /missing "not here" 404
            \trespond /teapot "short and stout" 418
            \trespond "fine"
            """)
        defer { upstream.stop() }
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:\(upstream.port)"}],
                    "handle_response": [
                      {"match": {"status_code": [404]}, "routes": [{"handle": [
                        {"handler": "copy_response_headers", "include": ["X-Upstream"]},
                        {"handler": "static_response", "status_code": 410,
                         "body": "gone ({http.reverse_proxy.status_code}, upstream said {http.reverse_proxy.header.X-Upstream})"}]}]},
                      {"match": {"status_code": [418]}, "routes": [{"handle": [
                        {"handler": "copy_response", "status_code": 200}]}]},
                      {"match": {"headers": {"X-Upstream": ["yes"]}}, "status_code": "203"}
                    ]}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let gone = try curl(["http://127.0.0.1:\(port)/missing"])
        #expect(gone.status == 410)
        #expect(gone.body == "gone (404, upstream said yes)", "\(gone.body)")
        #expect(gone.header("X-Upstream") == "yes")
        #expect(gone.header("X-Secret") == nil)
        let copied = try curl(["http://127.0.0.1:\(port)/teapot"])
        #expect(copied.status == 200)
        #expect(copied.body == "short and stout")
        #expect(copied.header("X-Secret") == "hidden")
        let restatused = try curl(["http://127.0.0.1:\(port)/"])
        #expect(restatused.status == 203)
        #expect(restatused.body == "fine")
    }
}
