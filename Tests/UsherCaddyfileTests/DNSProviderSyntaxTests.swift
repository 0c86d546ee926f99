import Foundation
import Testing
import UsherCaddyfile
import UsherCore

/// `dns.providers.rfc2136` in a Caddyfile: the caddy-dns module's block, in `tls { dns … }` and `acme_dns`.
@Suite("rfc2136 DNS provider syntax")
struct DNSProviderSyntaxTests {
    @Test("tls dns rfc2136 and acme_dns adapt to challenges.dns.provider with the caddy-dns JSON keys")
    func adapts() throws {
        let text = """
            {
            \tacme_dns rfc2136 {
            \t\tkey_name usher-key.
            \t\tkey_alg hmac-sha256
            \t\tkey c2VjcmV0
            \t\tserver 127.0.0.1:5353
            \t}
            }
            *.example.com {
            \ttls {
            \t\tdns rfc2136 {
            \t\t\tkey_name k
            \t\t\tkey_alg hmac-sha512
            \t\t\tkey c2VjcmV0
            \t\t\tserver ns.example.com
            \t\t}
            \t\tpropagation_timeout -1
            \t\tresolvers 127.0.0.1
            \t}
            \trespond hi
            }

            """
        let json = try adapt(text).config.serialized(.compact)
        #expect(
            json.contains(
                #""dns":{"provider":{"key":"c2VjcmV0","key_alg":"hmac-sha512","key_name":"k","name":"rfc2136","server":"ns.example.com"},"propagation_timeout":-1,"resolvers":["127.0.0.1"]}"#
            ), "\(json)")
        #expect(
            json.contains(
                #""provider":{"key":"c2VjcmV0","key_alg":"hmac-sha256","key_name":"usher-key.","name":"rfc2136","server":"127.0.0.1:5353"}"#
            ), "\(json)")
    }

    @Test("a missing setting or an unknown one is an error at its line")
    func errors() {
        func error(_ block: String) -> String {
            do {
                _ = try adapt("example.com {\n\ttls {\n\t\tdns rfc2136 {\n\(block)\t\t}\n\t}\n}\n")
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(
            error("\t\t\tkey_name k\n\t\t\tkey_alg hmac-sha256\n\t\t\tserver ns\n").contains("rfc2136: missing key"))
        #expect(error("\t\t\tkey x\n\t\t\tkey_alg hmac-sha256\n\t\t\tserver ns\n").contains("missing key_name"))
        let unknown = error("\t\t\tsecret x\n")
        #expect(unknown.contains("unrecognized subdirective 'secret'") && unknown.contains("Caddyfile:4"), "\(unknown)")
    }
}
