import Testing
import UsherCaddyfileHTTP
import UsherCore
import UsherHTTP
import UsherStandard

@testable import UsherHandlers

let standardRegistry = try! ModuleRegistry(bundles: [CoreModules.self, StandardModules.self])

/// Adapts `caddyfile` and decodes its `http` app strictly, as a config load does before provisioning.
func adaptAndDecodeHTTPApp(_ caddyfile: String) throws -> (json: JSONObject, app: HTTPApp) {
    let adapted = try CaddyfileAdapter().adapt(Array(caddyfile.utf8), filename: "Caddyfile", registry: standardRegistry)
    guard let http = adapted.config.objectValue?["apps"]?.objectValue?["http"] else {
        throw ConfigError("no http app in \(adapted.config)")
    }
    let app = try ConfigDecoder(registry: standardRegistry).decode(
        HTTPApp.self, from: http, path: [AnyCodingKey("apps"), AnyCodingKey("http")])
    return (http.objectValue!, app)
}

/// The handlers' Caddyfile syntax lives beside them; what it writes must be what their decoders take.
@Suite("Handler directives: the Caddyfile forms decode into the handlers")
struct CaddyfileSyntaxTests {
    @Test("every handler directive of this target, with its subdirectives, decodes strictly")
    func everyDirectiveDecodes() throws {
        let (json, app) = try adaptAndDecodeHTTPApp(
            """
            :8080 {
            \tvars answer 42
            \tmap {path} {section} {
            \t\t/docs/* docs
            \t\tdefault other
            \t}
            \theader X-Frame-Options DENY
            \trequest_header -Cookie
            \trewrite /old /new
            \turi strip_prefix /api
            \tmethod POST
            \trequest_body {
            \t\tmax_size 1MB
            \t}
            \tencode zstd gzip
            \thandle /files/* {
            \t\tfile_server browse
            \t}
            \terror /forbidden "nope" 403
            \tredir /moved /new-place permanent
            \trespond "hello" 201 {
            \t\tclose
            \t}
            }
            """)
        #expect(app.servers.count == 1)
        let text = JSONValue.object(json).serialized(.init(escapeHTML: false))
        for handler in [
            "vars", "map", "headers", "rewrite", "request_body", "encode", "file_server", "error", "static_response",
        ] {
            #expect(text.contains("\"handler\":\"\(handler)\""), "no \(handler) handler in \(text)")
        }
    }

    @Test("respond writes Caddy's static_response JSON: a numeric status, the body, close")
    func respondJSON() throws {
        let (json, _) = try adaptAndDecodeHTTPApp(":8080 {\n\trespond \"hi\" 201 {\n\t\tclose\n\t}\n}\n")
        let text = JSONValue.object(json).serialized(.init(escapeHTML: false))
        #expect(text.contains(#"{"body":"hi","close":true,"handler":"static_response","status_code":201}"#), "\(text)")
    }
}
