import Foundation
import Testing

@testable import UsherHandlers

/// `markdown`, `splitFrontMatter`, `humanize` and `stripHTML` as Caddy 2.11.7's templates run them: every expected
/// output below was recorded from Caddy (`{{markdown "…"}}` and friends served by its `templates` handler).
@Suite("templates: markdown, front matter, humanize and stripHTML against outputs recorded from Caddy")
struct MarkdownTests {
    static let markdown: [(String, String)] = [
        (
            "# Title\n## Title\n### Other *em* `code`\n",
            "<h1 id=\"title\">Title</h1>\n<h2 id=\"title-1\">Title</h2>\n<h3 id=\"other-em-code\">Other <em>em</em> <code>code</code></h3>\n"
        ),
        (
            "Some *em*, **strong**, ~~del~~, `code` and https://example.com or www.example.org.\n",
            "<p>Some <em>em</em>, <strong>strong</strong>, <del>del</del>, <code>code</code> and <a href=\"https://example.com\">https://example.com</a> or <a href=\"http://www.example.org\">www.example.org</a>.</p>\n"
        ),
        (
            "| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n| x |\n",
            "<table>\n<thead>\n<tr>\n<th style=\"text-align:left\">a</th>\n<th style=\"text-align:center\">b</th>\n<th style=\"text-align:right\">c</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td style=\"text-align:left\">1</td>\n<td style=\"text-align:center\">2</td>\n<td style=\"text-align:right\">3</td>\n</tr>\n<tr>\n<td style=\"text-align:left\">x</td>\n<td></td>\n<td></td>\n</tr>\n</tbody>\n</table>\n"
        ),
        (
            "| only | head |\n|---|---|\n",
            "<table>\n<thead>\n<tr>\n<th>only</th>\n<th>head</th>\n</tr>\n</thead>\n</table>\n"
        ),
        (
            "- [x] done\n- [ ] todo\n\n1. one\n2. two\n\n7. seven\n8. eight\n",
            "<ul>\n<li><input checked=\"\" disabled=\"\" type=\"checkbox\"> done</li>\n<li><input disabled=\"\" type=\"checkbox\"> todo</li>\n</ul>\n<ol>\n<li>\n<p>one</p>\n</li>\n<li>\n<p>two</p>\n</li>\n<li>\n<p>seven</p>\n</li>\n<li>\n<p>eight</p>\n</li>\n</ol>\n"
        ),
        (
            "- a\n  - b\n    - c\n- d\n\n* loose\n\n* list\n",
            "<ul>\n<li>a\n<ul>\n<li>b\n<ul>\n<li>c</li>\n</ul>\n</li>\n</ul>\n</li>\n<li>d</li>\n</ul>\n<ul>\n<li>\n<p>loose</p>\n</li>\n<li>\n<p>list</p>\n</li>\n</ul>\n"
        ),
        (
            "> quote\n> > nested\n\n---\n\n***\n",
            "<blockquote>\n<p>quote</p>\n<blockquote>\n<p>nested</p>\n</blockquote>\n</blockquote>\n<hr>\n<hr>\n"
        ),
        (
            "    indented <code>\n\n```\nfenced & \"q\"\n```\n\n```text\nplain 'it' \"q\" <x>\n```\n\n```unknownlang x y\nz\n```\n",
            "<pre><code>indented &lt;code&gt;\n</code></pre>\n<pre><code>fenced &amp; &quot;q&quot;\n</code></pre>\n<pre class=\"chroma\"><code><span class=\"line\"><span class=\"cl\">plain &#39;it&#39; &#34;q&#34; &lt;x&gt;\n</span></span></code></pre><pre><code class=\"language-unknownlang\">z\n</code></pre>\n"
        ),
        (
            "<div>\n*raw* block\n</div>\n\nInline <span class=\"x\">html</span> &amp; &copy; &#42; &lt;\n",
            "<div>\n*raw* block\n</div>\n<p>Inline <span class=\"x\">html</span> &amp; © * &lt;</p>\n"
        ),
        (
            "Note[^a] and again[^b] and first again[^a].\n\n[^b]: Second.\n[^a]: First\n    with more.\n",
            "<p>Note<sup id=\"fnref:1\"><a href=\"#fn:1\" class=\"footnote-ref\" role=\"doc-noteref\">1</a></sup> and again<sup id=\"fnref:2\"><a href=\"#fn:2\" class=\"footnote-ref\" role=\"doc-noteref\">2</a></sup> and first again<sup id=\"fnref1:1\"><a href=\"#fn:1\" class=\"footnote-ref\" role=\"doc-noteref\">1</a></sup>.</p>\n<div class=\"footnotes\" role=\"doc-endnotes\">\n<hr>\n<ol>\n<li id=\"fn:1\">\n<p>First\nwith more.&#160;<a href=\"#fnref:1\" class=\"footnote-backref\" role=\"doc-backlink\">&#x21a9;&#xfe0e;</a>&#160;<a href=\"#fnref1:1\" class=\"footnote-backref\" role=\"doc-backlink\">&#x21a9;&#xfe0e;</a></p>\n</li>\n<li id=\"fn:2\">\n<p>Second.&#160;<a href=\"#fnref:2\" class=\"footnote-backref\" role=\"doc-backlink\">&#x21a9;&#xfe0e;</a></p>\n</li>\n</ol>\n</div>\n"
        ),
        (
            "[link](/path%20x \"T & t\") [ref][r] ![alt *em*](/img.png) <https://auto.link/x?y=1&z=2> <me@example.com>\n\n[r]: https://example.com/?q=a b\n",
            "<p><a href=\"/path%20x\" title=\"T &amp; t\">link</a> [ref][r] <img src=\"/img.png\" alt=\"alt em\"> <a href=\"https://auto.link/x?y=1&amp;z=2\">https://auto.link/x?y=1&amp;z=2</a> <a href=\"mailto:me@example.com\">me@example.com</a></p>\n<p>[r]: <a href=\"https://example.com/?q=a\">https://example.com/?q=a</a> b</p>\n"
        ),
        ("line  \nbreak\\\nagain\nsoft\n", "<p>line<br>\nbreak<br>\nagain\nsoft</p>\n"),
        (
            "Setext\n======\n\nSub\n---\n\n#  Spaces  #\n\n# Ünïcødé & Sym_bols-1!\n\n#\n",
            "<h1 id=\"setext\">Setext</h1>\n<h2 id=\"sub\">Sub</h2>\n<h1 id=\"spaces\">Spaces</h1>\n<h1 id=\"ncd--sym-bols-1\">Ünïcødé &amp; Sym_bols-1!</h1>\n<h1 id=\"heading\"></h1>\n"
        ),
        (
            "1) paren\n2) list\n\n- [ ] loose task\n\n- [x] second\n",
            "<ol>\n<li>paren</li>\n<li>list</li>\n</ol>\n<ul>\n<li>\n<p><input disabled=\"\" type=\"checkbox\"> loose task</p>\n</li>\n<li>\n<p><input checked=\"\" disabled=\"\" type=\"checkbox\"> second</p>\n</li>\n</ul>\n"
        ),
    ]

    @Test("Markdown renders as goldmark does in Caddy: GFM, footnotes, heading IDs, raw HTML kept")
    func markdownAsGoldmark() {
        for (input, expected) in Self.markdown {
            #expect((try? Markdown.html(input)) == expected, "\(input)")
        }
    }

    /// Input, and `{{$d.Meta}}|{{$d.Body}}` as Caddy printed it (nil: Caddy answered 500).
    static let frontMatter: [(String, String?)] = [
        (
            "---\ntitle: Hello\ncount: 3\nratio: 0.5\non: true\nnothing: null\ntags: [a, b]\n---\nBody\n",
            "map[count:3 nothing:<nil> on:true ratio:0.5 tags:[a b] title:Hello]|\nBody\n"
        ),
        (
            "---\nlist:\n- x\n- y\nmap:\n  k: v\n  n: 1\nquoted: \"a\\tb\"\nsingle: 'it''s'\n---\n\nBody after blank\n",
            "map[list:[x y] map:map[k:v n:1] quoted:a\tb single:it's]|\n\nBody after blank\n"
        ),
        (
            "+++\ntitle = \"T\"\nn = 1_000\nf = 1.5\nb = false\narr = [1, 2]\n[sec]\nkey = 'lit'\n+++\nbody\n",
            "map[arr:[1 2] b:false f:1.5 n:1000 sec:map[key:lit] title:T]|\nbody\n"
        ),
        (
            "{\n\"a\": 1,\n\"b\": [true, null],\n\"c\": {\"d\": \"e\"}\n}\nbody\n",
            "map[a:1 b:[true <nil>] c:map[d:e]]|\nbody\n"
        ),
        ("\n\n---\ntitle: after blank lines\n---\nbody\n", "map[title:after blank lines]|\nbody\n"),
        ("no front matter\n---\nx\n", "map[]|no front matter\n---\nx\n"),
        ("---\ntitle: unterminated\n", nil),
    ]

    func printed(_ input: String) throws -> String {
        let t = try GoTemplate(
            name: "t", text: "{{$d := splitFrontMatter .}}{{$d.Meta}}|{{$d.Body}}", functions: TemplateRun.functions)
        return try t.execute(.string(input))
    }

    @Test("splitFrontMatter: YAML, TOML and JSON metadata and the body after the fence")
    func frontMatterAsCaddy() {
        for (input, expected) in Self.frontMatter {
            if let expected {
                #expect((try? printed(input)) == expected, "\(input)")
            } else {
                #expect(throws: (any Error).self, "\(input)") { try printed(input) }
            }
        }
    }

    @Test("humanize size: SI units as go-humanize's Bytes; stripHTML as Caddy's")
    func humanizeAndStrip() throws {
        let sizes: [(String, String)] = [
            ("0", "0 B"), ("9", "9 B"), ("10", "10 B"), ("999", "999 B"), ("1000", "1.0 kB"), ("1234", "1.2 kB"),
            ("12345", "12 kB"), ("999999", "1000 kB"), ("1000000", "1.0 MB"), ("83000000", "83 MB"),
            ("1500000000000", "1.5 TB"),
        ]
        for (n, expected) in sizes { #expect(try Humanize.format("size", n) == expected, "\(n)") }
        #expect(throws: (any Error).self) { try Humanize.format("size", "-1") }
        #expect(
            Humanize.relative(Date(timeIntervalSince1970: 0), now: Date(timeIntervalSince1970: 90)) == "1 minute ago")
        #expect(
            Humanize.relative(Date(timeIntervalSince1970: 3 * 86400), now: Date(timeIntervalSince1970: 0))
                == "3 days from now")
        let strip: [(String, String)] = [
            ("<p>a</p>", "a"), ("a > b", "a > b"), ("<a href='x>y'>t</a>", "t"), ("x <b \"q>\">y</b> z", "x y z"),
            ("<<nested>>text", "text"),
        ]
        for (input, expected) in strip { #expect(TemplateRun.stripHTML(input) == expected, "\(input)") }
    }
}
