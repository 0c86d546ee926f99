import Testing
import UsherCore

@testable import UsherHTTP

@Suite("Access log selection by host, as Caddy's server logs choose")
struct ServerLogConfigTests {
    func logs(_ json: String) throws -> ServerLogConfig {
        try ConfigDecoder(registry: nil).decode(ServerLogConfig.self, from: try JSONValue.parse(json))
    }

    @Test("logger_names: the exact host first, then one label at a time replaced by *, else the default")
    func loggerNames() throws {
        let l = try logs(
            #"{"default_logger_name": "main", "logger_names": {"api.example.com": "api", "*.example.com": ["site", "audit"]}}"#
        )
        #expect(l.loggerNames(forHost: "api.example.com") == ["api"])
        #expect(l.loggerNames(forHost: "www.example.com") == ["site", "audit"])
        #expect(l.loggerNames(forHost: "a.b.example.com") == ["main"])
        #expect(l.loggerNames(forHost: "other.org") == ["main"])
    }

    @Test("skip_hosts and skip_unmapped_hosts match as certmagic's MatchWildcard, not label by label")
    func skipping() throws {
        let l = try logs(#"{"logger_names": {"*.example.com": "site"}, "skip_hosts": ["*.internal", "a.*.com"]}"#)
        #expect(l.shouldLog(host: "www.example.com"))
        #expect(!l.shouldLog(host: "db.internal"))
        // certmagic replaces labels left to right and never produces `a.*.com` from `a.b.com`: Caddy logs it.
        #expect(l.shouldLog(host: "a.b.com"))
        let unmapped = try logs(#"{"logger_names": {"*.example.com": "site"}, "skip_unmapped_hosts": true}"#)
        #expect(unmapped.shouldLog(host: "WWW.Example.com"))
        #expect(!unmapped.shouldLog(host: "example.org"))
    }
}
