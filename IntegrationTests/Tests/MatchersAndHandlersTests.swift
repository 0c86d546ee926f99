import Foundation
import Testing

/// One server whose routes exercise every matcher and handler; each case below is a curl request against it.
let routingPort = freePort()

func routingConfig(port routingPort: Int) -> String {
    """
    {
      "admin": {"listen": "{{ADMIN}}"},
      "apps": {"http": {"servers": {"srv0": {
        "listen": ["127.0.0.1:\(routingPort)"],
        "automatic_https": {"disable": true},
        "trusted_proxies": {"source": "static", "ranges": ["127.0.0.0/8"]},
        "named_routes": {"shared": {"handle": [{"handler": "headers", "response": {"set": {"X-Named": ["yes"]}}}]}},
        "errors": {"routes": [
          {"match": [{"path": ["/err/custom"]}],
           "handle": [{"handler": "static_response", "body": "handled {http.error.status_code} {http.error.status_text}: {http.error.message}"}]}
        ]},
        "routes": [
          {"match": [{"path": ["/host"], "host": ["example.com"]}], "handle": [{"handler": "static_response", "body": "host exact"}]},
          {"match": [{"path": ["/host"], "host": ["*.example.org"]}], "handle": [{"handler": "static_response", "body": "host wildcard"}]},
          {"match": [{"path": ["/host"], "host": ["{env.USHER_IT_HOST}"]}], "handle": [{"handler": "static_response", "body": "host placeholder"}]},
          {"match": [{"path": ["/host"]}], "handle": [{"handler": "static_response", "status_code": 404, "body": "no host"}]},

          {"match": [{"path": ["/p/exact"]}], "handle": [{"handler": "static_response", "body": "path exact"}]},
          {"match": [{"path": ["/p/prefix/*"]}], "handle": [{"handler": "static_response", "body": "path prefix"}]},
          {"match": [{"path": ["*.txt"]}], "handle": [{"handler": "static_response", "body": "path suffix"}]},
          {"match": [{"path": ["*/mid/*"]}], "handle": [{"handler": "static_response", "body": "path substring"}]},
          {"match": [{"path": ["/p/g?ob/[ab]"]}], "handle": [{"handler": "static_response", "body": "path glob"}]},
          {"match": [{"path": ["/p/enc%2Fslash"]}], "handle": [{"handler": "static_response", "body": "path escaped"}]},

          {"match": [{"path_regexp": {"name": "num", "pattern": "^/re/(?P<id>[0-9]+)$"}}],
           "handle": [{"handler": "static_response", "body": "re {http.regexp.num.id} {http.regexp.num.1} {http.regexp.id}"}]},

          {"match": [{"path": ["/m"], "method": ["POST", "PUT"]}], "handle": [{"handler": "static_response", "body": "method {http.request.method}"}]},
          {"match": [{"path": ["/m"]}], "handle": [{"handler": "static_response", "status_code": 405}]},

          {"match": [{"path": ["/h"], "header": {"X-Mode": ["on"], "User-Agent": ["*curl*"]}}], "handle": [{"handler": "static_response", "body": "header match"}]},
          {"match": [{"path": ["/h"], "header": {"X-Mode": null}}], "handle": [{"handler": "static_response", "body": "header absent"}]},
          {"match": [{"path": ["/h"], "header": {"X-Mode": []}}], "handle": [{"handler": "static_response", "body": "header present"}]},
          {"match": [{"path": ["/hr"], "header_regexp": {"X-Version": {"name": "ver", "pattern": "^v([0-9]+)$"}}}],
           "handle": [{"handler": "static_response", "body": "version {http.regexp.ver.1}"}]},
          {"match": [{"path": ["/hr"]}], "handle": [{"handler": "static_response", "status_code": 400}]},

          {"match": [{"path": ["/q"], "query": {"a": ["1"], "b": ["*"]}}], "handle": [{"handler": "static_response", "body": "query {http.request.uri.query.b}"}]},
          {"match": [{"path": ["/q"], "query": {}}], "handle": [{"handler": "static_response", "body": "no query"}]},
          {"match": [{"path": ["/q"]}], "handle": [{"handler": "static_response", "body": "other query"}]},

          {"match": [{"path": ["/proto"], "protocol": "https"}], "handle": [{"handler": "static_response", "body": "secure"}]},
          {"match": [{"path": ["/proto"], "protocol": "http/1.1"}], "handle": [{"handler": "static_response", "body": "plain h1.1"}]},
          {"match": [{"path": ["/proto"], "protocol": "http/1.0"}], "handle": [{"handler": "static_response", "body": "plain h1.0"}]},

          {"match": [{"path": ["/ip/remote"], "remote_ip": {"ranges": ["127.0.0.1/32"]}}], "handle": [{"handler": "static_response", "body": "remote local"}]},
          {"match": [{"path": ["/ip/client"], "client_ip": {"ranges": ["203.0.113.0/24"]}}], "handle": [{"handler": "static_response", "body": "client {http.vars.client_ip_seen}"}]},
          {"match": [{"path": ["/ip/*"]}], "handle": [{"handler": "static_response", "status_code": 403, "body": "denied"}]},

          {"match": [{"path": ["/not/*"], "not": [{"path": ["/not/private"]}]}], "handle": [{"handler": "static_response", "body": "public"}]},
          {"match": [{"path": ["/not/*"]}], "handle": [{"handler": "static_response", "status_code": 403}]},

          {"match": [{"path": ["/vars"]}], "handle": [
            {"handler": "vars", "role": "{http.request.header.X-Role}", "level": 3},
            {"handler": "subroute", "routes": [
              {"match": [{"vars": {"role": ["admin"]}}], "handle": [{"handler": "static_response", "body": "vars admin {http.vars.level}"}]},
              {"match": [{"vars_regexp": {"role": {"name": "r", "pattern": "^gu(e)st$"}}}], "handle": [{"handler": "static_response", "body": "vars_regexp {http.regexp.r.1}"}]},
              {"handle": [{"handler": "static_response", "body": "vars none"}]}
            ]}
          ]},

          {"match": [{"path": ["/sr/status"]}], "handle": [{"handler": "static_response", "status_code": "{http.request.uri.query.code}", "body": "coded"}]},
          {"match": [{"path": ["/sr/json"]}], "handle": [{"handler": "static_response", "body": "{\\"ok\\": true}", "headers": {"X-Path": ["{http.request.uri.path}"], "Cache-Control": ["no-store"]}}]},
          {"match": [{"path": ["/sr/close"]}], "handle": [{"handler": "static_response", "body": "bye", "close": true}]},
          {"match": [{"path": ["/sr/abort"]}], "handle": [{"handler": "static_response", "abort": true}]},
          {"match": [{"path": ["/sr/empty"]}], "handle": [{"handler": "static_response", "status_code": 204}]},

          {"match": [{"path": ["/hdr/*"]}], "handle": [
            {"handler": "headers",
             "request": {"set": {"X-Injected": ["in-{http.request.method}"]}, "delete": ["X-Remove-Me"]},
             "response": {"add": {"X-Multi": ["a", "b"]}, "set": {"X-Set": ["s"]}}},
            {"handler": "headers", "response": {"deferred": true, "set": {"X-Deferred": ["late {http.response.header.X-Set}"]},
              "delete": ["X-Drop-*"], "replace": {"X-Rewrite": [{"search_regexp": "([a-z]+)-([0-9]+)", "replace": "$2-$1"}]}}},
            {"handler": "headers", "response": {"require": {"status_code": [4]}, "set": {"X-Client-Error": ["yes"]}}},
            {"handler": "static_response", "status_code": "{http.request.uri.query.code}",
             "headers": {"X-Drop-One": ["1"], "X-Keep": ["1"], "X-Rewrite": ["abc-123"]},
             "body": "injected={http.request.header.X-Injected} removed={http.request.header.X-Remove-Me}"}
          ]},

          {"match": [{"path": ["/rw/uri/*"]}], "handle": [
            {"handler": "rewrite", "uri": "/target{http.request.uri.path}?x=1&orig={http.request.uri.query}"},
            {"handler": "static_response", "body": "{http.request.uri} orig={http.request.orig_uri}"}]},
          {"match": [{"path": ["/rw/strip/*"]}], "handle": [
            {"handler": "rewrite", "strip_path_prefix": "/rw/strip", "strip_path_suffix": ".html"},
            {"handler": "static_response", "body": "{http.request.uri.path}"}]},
          {"match": [{"path": ["/rw/sub/*"]}], "handle": [
            {"handler": "rewrite", "uri_substring": [{"find": "old", "replace": "new"}], "path_regexp": [{"find": "/([0-9]+)$", "replace": "/n$1"}]},
            {"handler": "static_response", "body": "{http.request.uri}"}]},
          {"match": [{"path": ["/rw/query"]}], "handle": [
            {"handler": "rewrite", "query": {"rename": [{"key": "a", "val": "b"}], "set": [{"key": "c", "val": "3"}], "add": [{"key": "d", "val": "4"}], "delete": ["e"]}},
            {"handler": "static_response", "body": "{http.request.uri.query}"}]},
          {"match": [{"path": ["/rw/method"]}], "handle": [
            {"handler": "rewrite", "method": "PATCH"},
            {"handler": "static_response", "body": "{http.request.method} orig {http.request.orig_method}"}]},

          {"match": [{"path": ["/map/*"]}], "handle": [
            {"handler": "map", "source": "{http.request.uri.path}", "destinations": ["{color}", "{size}"],
             "mappings": [{"input": "/map/sky", "outputs": ["blue", "big"]}, {"input_regexp": "^/map/(.+)-ish$", "outputs": ["${1}ish", null]}],
             "defaults": ["grey", "medium"]},
            {"handler": "static_response", "body": "{color} {size}"}]},

          {"match": [{"path": ["/err/custom"]}], "handle": [{"handler": "error", "status_code": 418, "error": "short and stout"}]},
          {"match": [{"path": ["/err/plain"]}], "handle": [{"handler": "error", "status_code": 409, "error": "conflict"}]},

          {"match": [{"path": ["/body/limited"]}], "handle": [{"handler": "request_body", "max_size": 8}, {"handler": "static_response", "body": "got {http.request.body}"}]},
          {"match": [{"path": ["/body/echo"]}], "handle": [{"handler": "static_response", "body": "echo {http.request.body}"}]},

          {"match": [{"path": ["/chain/*"]}], "handle": [{"handler": "headers", "response": {"set": {"X-Step-1": ["yes"]}}}]},
          {"match": [{"path": ["/chain/*"]}], "group": "g", "handle": [{"handler": "headers", "response": {"set": {"X-Group": ["first"]}}}]},
          {"match": [{"path": ["/chain/*"]}], "group": "g", "handle": [{"handler": "headers", "response": {"set": {"X-Group": ["second"]}}}]},
          {"match": [{"path": ["/chain/stop"]}], "handle": [{"handler": "static_response", "body": "stopped"}], "terminal": true},
          {"match": [{"path": ["/chain/*"]}], "handle": [
            {"handler": "subroute", "routes": [{"handle": [{"handler": "headers", "response": {"set": {"X-Sub": ["ran"]}}}]}]},
            {"handler": "invoke", "name": "shared"},
            {"handler": "static_response", "body": "end of chain"}]},

          {"match": [{"path": ["/ph"]}], "handle": [{"handler": "static_response",
            "body": "host={http.request.host} port={http.request.port} path={http.request.uri.path} q={http.request.uri.query} ua={http.request.header.User-Agent} remote={http.request.remote.host} scheme={http.request.scheme} proto={http.request.proto} env={env.USHER_IT_HOST} os={system.os} year={time.now.year} label1={http.request.host.labels.1} seg0={http.request.uri.path.0} file={http.request.uri.path.file} unknown={nope}"}]},

          {"handle": [{"handler": "static_response", "status_code": 404, "body": "fell through"}]}
        ]
      }}}}
    }
    """
}

/// A curl request and what its response must show.
struct RoutingCase: CustomTestStringConvertible, Sendable {
    var name: String
    var path: String
    var args: [String] = []
    var status: Int = 200
    var body: String? = nil
    var bodyContains: [String] = []
    var headers: [(String, String?)] = []

    var testDescription: String { name }
}

let routingCases: [RoutingCase] = [
    RoutingCase(name: "host exact", path: "/host", args: ["-H", "Host: example.com"], body: "host exact"),
    RoutingCase(
        name: "host is case-insensitive and ignores the port", path: "/host", args: ["-H", "Host: EXAMPLE.com:8080"],
        body: "host exact"),
    RoutingCase(
        name: "host wildcard label", path: "/host", args: ["-H", "Host: www.example.org"], body: "host wildcard"),
    RoutingCase(
        name: "host wildcard is one label only", path: "/host", args: ["-H", "Host: a.b.example.org"], status: 404,
        body: "no host"),
    RoutingCase(
        name: "host from placeholder", path: "/host", args: ["-H", "Host: placeholder.test"], body: "host placeholder"),
    RoutingCase(name: "path exact", path: "/p/exact", body: "path exact"),
    RoutingCase(name: "path is case-insensitive", path: "/P/EXACT", body: "path exact"),
    RoutingCase(
        name: "path is cleaned before matching", path: "/p/other/../exact", args: ["--path-as-is"], body: "path exact"),
    RoutingCase(name: "path prefix", path: "/p/prefix/a/b", body: "path prefix"),
    RoutingCase(name: "path suffix", path: "/files/readme.txt", body: "path suffix"),
    RoutingCase(name: "path substring", path: "/x/mid/y", body: "path substring"),
    RoutingCase(name: "path glob", path: "/p/glob/b", body: "path glob"),
    RoutingCase(name: "path glob rejects other classes", path: "/p/glob/c", status: 404),
    RoutingCase(name: "escaped pattern matches only the escaped form", path: "/p/enc%2Fslash", body: "path escaped"),
    RoutingCase(name: "escaped pattern does not match a real slash", path: "/p/enc/slash", status: 404),
    RoutingCase(name: "path_regexp captures by name and index", path: "/re/42", body: "re 42 42 42"),
    RoutingCase(name: "path_regexp no match", path: "/re/abc", status: 404),
    RoutingCase(name: "method POST", path: "/m", args: ["-X", "POST"], body: "method POST"),
    RoutingCase(name: "method GET refused", path: "/m", status: 405),
    RoutingCase(name: "header values with wildcards", path: "/h", args: ["-H", "X-Mode: on"], body: "header match"),
    RoutingCase(name: "header null means absent", path: "/h", body: "header absent"),
    RoutingCase(
        name: "header empty list means present", path: "/h", args: ["-H", "X-Mode: off"], body: "header present"),
    RoutingCase(name: "header_regexp capture", path: "/hr", args: ["-H", "X-Version: v12"], body: "version 12"),
    RoutingCase(name: "header_regexp mismatch", path: "/hr", args: ["-H", "X-Version: 12"], status: 400),
    RoutingCase(name: "query values and wildcard", path: "/q?a=1&b=zz", body: "query zz"),
    RoutingCase(name: "empty query matcher means no query", path: "/q", body: "no query"),
    RoutingCase(name: "query mismatch", path: "/q?a=2&b=1", body: "other query"),
    RoutingCase(name: "protocol http/1.1", path: "/proto", body: "plain h1.1"),
    RoutingCase(name: "protocol http/1.0", path: "/proto", args: ["--http1.0"], body: "plain h1.0"),
    RoutingCase(name: "remote_ip", path: "/ip/remote", body: "remote local"),
    RoutingCase(
        name: "client_ip from a trusted proxy's X-Forwarded-For", path: "/ip/client",
        args: ["-H", "X-Forwarded-For: 203.0.113.9, 10.0.0.1"], body: "client "),
    RoutingCase(name: "client_ip without forwarding is the peer", path: "/ip/client", status: 403, body: "denied"),
    RoutingCase(name: "not matcher allows", path: "/not/public", body: "public"),
    RoutingCase(name: "not matcher refuses", path: "/not/private", status: 403),
    RoutingCase(
        name: "vars set from placeholders, vars matcher", path: "/vars", args: ["-H", "X-Role: admin"],
        body: "vars admin 3"),
    RoutingCase(name: "vars_regexp", path: "/vars", args: ["-H", "X-Role: guest"], body: "vars_regexp e"),
    RoutingCase(name: "vars no match", path: "/vars", body: "vars none"),
    RoutingCase(
        name: "static_response status from placeholder", path: "/sr/status?code=202", status: 202, body: "coded"),
    RoutingCase(
        name: "static_response JSON body and header placeholders", path: "/sr/json", body: "{\"ok\": true}",
        headers: [("Content-Type", "application/json"), ("X-Path", "/sr/json"), ("Cache-Control", "no-store")]),
    RoutingCase(name: "static_response close", path: "/sr/close", body: "bye", headers: [("Connection", "close")]),
    RoutingCase(
        name: "static_response 204 has no body or type", path: "/sr/empty", status: 204, body: "",
        headers: [("Content-Type", nil), ("Content-Length", nil)]),
    RoutingCase(
        name: "headers: request and response operations", path: "/hdr/x?code=200", args: ["-H", "X-Remove-Me: 1"],
        body: "injected=in-GET removed=",
        headers: [
            ("X-Set", "s"), ("X-Drop-One", nil), ("X-Keep", "1"), ("X-Rewrite", "123-abc"),
            ("X-Deferred", "late s"), ("X-Client-Error", nil),
        ]),
    RoutingCase(name: "a status placeholder that is not a number is a 500", path: "/sr/status", status: 500),
    RoutingCase(
        name: "headers: require matches 4xx", path: "/hdr/x?code=404", status: 404, headers: [("X-Client-Error", "yes")]
    ),
    RoutingCase(
        name: "rewrite uri keeps the original for placeholders", path: "/rw/uri/a?y=2",
        body: "/target/rw/uri/a?x=1&orig=y%3D2 orig=/rw/uri/a?y=2"),
    RoutingCase(name: "rewrite strip prefix and suffix", path: "/rw/strip/page.html", body: "/page"),
    RoutingCase(name: "rewrite uri_substring and path_regexp", path: "/rw/sub/old/7", body: "/rw/sub/new/n7"),
    RoutingCase(name: "rewrite query operations", path: "/rw/query?a=1&e=5&z=9", body: "b=1&c=3&d=4&z=9"),
    RoutingCase(name: "rewrite method", path: "/rw/method", body: "PATCH orig GET"),
    RoutingCase(name: "map exact input", path: "/map/sky", body: "blue big"),
    RoutingCase(name: "map regexp with expansion and default for null", path: "/map/red-ish", body: "redish medium"),
    RoutingCase(name: "map defaults", path: "/map/none", body: "grey medium"),
    RoutingCase(
        name: "error handler with errors routes and placeholders", path: "/err/custom", status: 418,
        body: "handled 418 I'm a teapot: short and stout"),
    RoutingCase(
        name: "error handler without an error route gives its status", path: "/err/plain", status: 409, body: ""),
    RoutingCase(
        name: "request_body within the limit", path: "/body/limited", args: ["--data-binary", "12345678"],
        body: "got 12345678"),
    RoutingCase(
        name: "request_body over the limit is 413", path: "/body/limited", args: ["--data-binary", "123456789"],
        status: 413),
    RoutingCase(
        name: "chunked request body", path: "/body/echo",
        args: ["-H", "Transfer-Encoding: chunked", "--data-binary", "chunky"],
        body: "echo chunky"),
    RoutingCase(
        name: "Expect: 100-continue body", path: "/body/echo",
        args: ["-H", "Expect: 100-continue", "--data-binary", "expected"],
        body: "echo expected"),
    RoutingCase(
        name: "groups run the first matching route only; subroute continues; invoke runs a named route",
        path: "/chain/go", body: "end of chain",
        headers: [("X-Step-1", "yes"), ("X-Group", "first"), ("X-Sub", "ran"), ("X-Named", "yes")]),
    RoutingCase(
        name: "terminal route stops the chain", path: "/chain/stop", body: "stopped", headers: [("X-Sub", nil)]),
    RoutingCase(
        name: "placeholders", path: "/ph?k=v", args: ["-A", "test-agent", "-H", "Host: a.b.example:81"],
        bodyContains: [
            "host=a.b.example", "port=81", "path=/ph", "q=k=v", "ua=test-agent", "remote=127.0.0.1",
            "scheme=http", "proto=HTTP/1.1", "env=placeholder.test", "os=linux", "year=20", "label1=b",
            "seg0=ph", "file=ph", "unknown={nope}",
        ]),
    RoutingCase(name: "unmatched requests fall through", path: "/nothing/here", status: 404, body: "fell through"),
]

@Suite(
    "Matchers and handlers over HTTP (curl against the real binary)",
    SharedServer {
        try UsherProcess(
            config: routingConfig(port: routingPort), waitPort: routingPort,
            environment: ["USHER_IT_HOST": "placeholder.test"])
    })
struct MatchersAndHandlersTests {
    @Test(arguments: routingCases)
    func route(_ c: RoutingCase) throws {
        _ = try SharedServer.get()
        let r = try curl(c.args + ["http://127.0.0.1:\(routingPort)\(c.path)"])
        #expect(r.status == c.status, "\(c.name): status")
        if let body = c.body { #expect(r.body == body, "\(c.name): body") }
        for part in c.bodyContains { #expect(r.body.contains(part), "\(c.name): body \(r.body) lacks \(part)") }
        for (name, value) in c.headers {
            #expect(r.header(name) == value, "\(c.name): header \(name)")
        }
        #expect(r.header("Server") == "Usher")
    }

    @Test("repeated header values are kept in order")
    func multiValueHeader() throws {
        _ = try SharedServer.get()
        let r = try curl(["http://127.0.0.1:\(routingPort)/hdr/x?code=200"])
        #expect(r.headerValues("X-Multi") == ["a", "b"])
    }

    @Test("abort closes the connection without a response")
    func abort() throws {
        _ = try SharedServer.get()
        let (response, closed) = try rawExchange(
            port: routingPort, Array("GET /sr/abort HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(response.isEmpty)
        #expect(closed)
    }
}
