import Testing
import UsherCaddyfileHTTP
import UsherCore
import UsherHTTP
import UsherReverseProxy
import UsherStandard

let standardRegistry = try! ModuleRegistry(bundles: [CoreModules.self, StandardModules.self])

/// reverse_proxy's Caddyfile syntax lives beside it; what it writes must be what its decoder takes.
@Suite("reverse_proxy: the Caddyfile forms decode into the handler")
struct ReverseProxyCaddyfileTests {
    func decodedHandlers(_ caddyfile: String) throws -> String {
        let adapted = try CaddyfileAdapter().adapt(
            Array(caddyfile.utf8), filename: "Caddyfile", registry: standardRegistry)
        let http = try #require(adapted.config.objectValue?["apps"]?.objectValue?["http"])
        _ = try ConfigDecoder(registry: standardRegistry).decode(
            HTTPApp.self, from: http, path: [AnyCodingKey("apps"), AnyCodingKey("http")])
        return http.serialized(.init(escapeHTML: false))
    }

    @Test("upstreams, load balancing, health checks, headers, transport and handle_response decode strictly")
    func fullForm() throws {
        let text = try decodedHandlers(
            """
            :8080 {
            \treverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {
            \t\tlb_policy round_robin
            \t\tlb_retries 2
            \t\thealth_uri /healthz
            \t\thealth_interval 5s
            \t\tfail_duration 30s
            \t\theader_up X-Real-IP {remote_host}
            \t\theader_down -Server
            \t\tflush_interval -1
            \t\ttransport http {
            \t\t\tdial_timeout 2s
            \t\t\tkeepalive 30s
            \t\t\tversions 1.1 2
            \t\t}
            \t\t@err status 5xx
            \t\thandle_response @err {
            \t\t\trespond "upstream trouble" 503
            \t\t}
            \t}
            }
            """)
        #expect(text.contains(#""handler":"reverse_proxy""#))
        #expect(text.contains(#""selection_policy":{"policy":"round_robin"}"#), "\(text)")
        #expect(text.contains(#""uri":"/healthz""#))
        #expect(text.contains(#""dial_timeout":2000000000"#))
    }

    @Test("dynamic upstreams and the cookie policy decode strictly")
    func dynamicAndCookie() throws {
        let text = try decodedHandlers(
            """
            :8080 {
            \treverse_proxy {
            \t\tdynamic a backend.internal 8080 {
            \t\t\trefresh 10s
            \t\t}
            \t\tlb_policy cookie lb_id
            \t}
            }
            """)
        #expect(text.contains(#""dynamic_upstreams":{"#))
        #expect(text.contains(#""source":"a""#))
    }
}
