import CUsherSystem
import UsherCore

/// Markdown to HTML as Caddy's `markdown` template function renders it: goldmark with GitHub's extensions,
/// footnotes, automatic heading IDs and raw HTML kept. cmark-gfm parses (the same CommonMark and GFM grammar);
/// the HTML is written here in goldmark's style (`<hr>`, `<br>`, footnotes as `fn:N`, `id` on headings).
///
/// Fenced code is not syntax-highlighted: a block whose language chroma treats as plain text gets chroma's markup
/// (as Caddy's, escaped as Go's `html.EscapeString`), any other language a plain `<pre><code class="language-…">`.
enum Markdown {
    struct TooDeep: Error, CustomStringConvertible {
        var description: String { "markdown: nested more than \(MarkdownRenderer.maxDepth) levels deep" }
    }

    static func html(_ text: String) throws -> String {
        var bytes = Array(text.utf8)
        bytes.append(0)
        guard
            let document = bytes.withUnsafeBufferPointer({ p in
                p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) {
                    c_usher_markdown_parse($0, p.count - 1)
                }
            })
        else { return "" }
        defer { cmark_node_free(document) }
        var renderer = MarkdownRenderer()
        renderer.render(document)
        if renderer.tooDeep { throw TooDeep() }
        return renderer.out
    }

    /// Chroma's names for its plain-text lexer, which wraps lines in spans and colours nothing.
    static let plainTextLanguages: Set<String> = ["text", "plaintext", "plain", "txt", "no-highlight"]
}

struct MarkdownRenderer {
    var out = ""
    /// Nesting of the node being written; deeper content is dropped and the render fails (the writer recurses,
    /// and `>>>>…` or `*a **b *c…` can nest as deep as the text is long).
    var depth = 0
    var tooDeep = false
    static let maxDepth = 500
    /// Heading IDs handed out so far (goldmark's `-1`, `-2` suffixes on repeats).
    var usedIDs: Set<String> = []
    /// Footnote definitions in the order of their first reference, and their numbers.
    var footnotes: [OpaquePointer] = []
    var footnoteNumbers: [OpaquePointer: Int] = [:]
    /// References made to each footnote so far: the second is `fnref1:N`, the third `fnref2:N`…
    var footnoteReferences: [OpaquePointer: Int] = [:]

    mutating func render(_ document: OpaquePointer) {
        children(document, tight: false)
        guard !footnotes.isEmpty else { return }
        out += "<div class=\"footnotes\" role=\"doc-endnotes\">\n<hr>\n<ol>\n"
        for (i, def) in footnotes.enumerated() {
            let n = i + 1
            out += "<li id=\"fn:\(n)\">\n"
            // One link back to each reference, as goldmark writes them.
            let backlink = (0..<max(footnoteReferences[def] ?? 1, 1)).map { k in
                "&#160;<a href=\"#\(Self.referenceID(k, n))\" class=\"footnote-backref\" role=\"doc-backlink\">&#x21a9;&#xfe0e;</a>"
            }.joined()
            var child = cmark_node_first_child(def)
            var placed = false
            while let c = child {
                let next = cmark_node_next(c)
                if next == nil, cmark_node_get_type(c) == CMARK_NODE_PARAGRAPH {
                    out += "<p>"
                    inlines(c)
                    out += backlink + "</p>\n"
                    placed = true
                } else {
                    block(c, tight: false)
                }
                child = next
            }
            if !placed { out += backlink }
            out += "</li>\n"
        }
        out += "</ol>\n</div>\n"
    }

    mutating func children(_ node: OpaquePointer, tight: Bool) {
        var child = cmark_node_first_child(node)
        while let c = child {
            block(c, tight: tight)
            child = cmark_node_next(c)
        }
    }

    static func typeName(_ node: OpaquePointer) -> String {
        cmark_node_get_type_string(node).map { String(cString: $0) } ?? ""
    }

    static func literal(_ node: OpaquePointer) -> String {
        cmark_node_get_literal(node).map { String(cString: $0) } ?? ""
    }

    mutating func block(_ node: OpaquePointer, tight: Bool) {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else {
            tooDeep = true
            return
        }
        switch cmark_node_get_type(node) {
        case CMARK_NODE_PARAGRAPH:
            if tight {
                inlines(node)
                if cmark_node_next(node) != nil { out += "\n" }
            } else {
                out += "<p>"
                inlines(node)
                out += "</p>\n"
            }
        case CMARK_NODE_HEADING:
            let level = cmark_node_get_heading_level(node)
            out += "<h\(level) id=\"\(escape(headingID(node)))\">"
            inlines(node)
            out += "</h\(level)>\n"
        case CMARK_NODE_BLOCK_QUOTE:
            out += "<blockquote>\n"
            children(node, tight: false)
            out += "</blockquote>\n"
        case CMARK_NODE_THEMATIC_BREAK:
            out += "<hr>\n"
        case CMARK_NODE_HTML_BLOCK:
            out += Self.literal(node)
        case CMARK_NODE_CODE_BLOCK:
            codeBlock(node)
        case CMARK_NODE_LIST:
            let ordered = cmark_node_get_list_type(node) == CMARK_ORDERED_LIST
            let start = cmark_node_get_list_start(node)
            out += ordered ? (start != 1 ? "<ol start=\"\(start)\">\n" : "<ol>\n") : "<ul>\n"
            let listTight = cmark_node_get_list_tight(node) != 0
            var item = cmark_node_first_child(node)
            while let i = item {
                listItem(i, tight: listTight)
                item = cmark_node_next(i)
            }
            out += ordered ? "</ol>\n" : "</ul>\n"
        case CMARK_NODE_FOOTNOTE_DEFINITION:
            break  // written at the end, in reference order
        default:
            switch Self.typeName(node) {
            case "table": table(node)
            default: children(node, tight: tight)
            }
        }
    }

    mutating func listItem(_ item: OpaquePointer, tight: Bool) {
        out += "<li>"
        let first = cmark_node_first_child(item)
        let task = Self.typeName(item) == "tasklist"
        if let first, !(tight && cmark_node_get_type(first) == CMARK_NODE_PARAGRAPH) { out += "\n" }
        var child = first
        while let c = child {
            if task, c == first, cmark_node_get_type(c) == CMARK_NODE_PARAGRAPH {
                let box =
                    cmark_gfm_extensions_get_tasklist_item_checked(item)
                    ? "<input checked=\"\" disabled=\"\" type=\"checkbox\"> "
                    : "<input disabled=\"\" type=\"checkbox\"> "
                if !tight { out += "<p>" }
                out += box
                inlines(c)
                if !tight {
                    out += "</p>\n"
                } else if cmark_node_next(c) != nil {
                    out += "\n"
                }
            } else {
                block(c, tight: tight)
            }
            child = cmark_node_next(c)
        }
        out += "</li>\n"
    }

    mutating func codeBlock(_ node: OpaquePointer) {
        let code = Self.literal(node)
        var length: Int32 = 0
        var offset: Int32 = 0
        var character: CChar = 0
        let fenced = cmark_node_get_fenced(node, &length, &offset, &character) != 0
        let info = fenced ? (cmark_node_get_fence_info(node).map { String(cString: $0) } ?? "") : ""
        let language = info.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) ?? ""
        if !language.isEmpty, Markdown.plainTextLanguages.contains(language.lowercased()) {
            out += "<pre class=\"chroma\"><code>"
            var lineStart = code.startIndex
            while lineStart < code.endIndex {
                let end = code[lineStart...].firstIndex(of: "\n").map { code.index(after: $0) } ?? code.endIndex
                out +=
                    "<span class=\"line\"><span class=\"cl\">" + Go.htmlEscape(String(code[lineStart..<end]))
                    + "</span></span>"
                lineStart = end
            }
            out += "</code></pre>"
            return
        }
        out += language.isEmpty ? "<pre><code>" : "<pre><code class=\"language-\(escape(language))\">"
        out += escape(code)
        out += "</code></pre>\n"
    }

    mutating func table(_ node: OpaquePointer) {
        let columns = Int(cmark_gfm_extensions_get_table_columns(node))
        var alignments: [UInt8] = []
        if let a = cmark_gfm_extensions_get_table_alignments(node) {
            alignments = (0..<columns).map { a[$0] }
        }
        out += "<table>\n"
        var row = cmark_node_first_child(node)
        var inBody = false
        while let r = row {
            let header = cmark_gfm_extensions_get_table_row_is_header(r) != 0
            if header {
                out += "<thead>\n<tr>\n"
            } else {
                if !inBody { out += "<tbody>\n" }
                inBody = true
                out += "<tr>\n"
            }
            var cell = cmark_node_first_child(r)
            var column = 0
            while let c = cell {
                let tag = header ? "th" : "td"
                let align: String
                // Cells cmark-gfm adds to fill a short row have no source position; goldmark leaves them unaligned.
                let padded = cmark_node_get_start_column(c) == 0
                switch column < alignments.count && !padded ? alignments[column] : 0 {
                case UInt8(ascii: "l"): align = " style=\"text-align:left\""
                case UInt8(ascii: "c"): align = " style=\"text-align:center\""
                case UInt8(ascii: "r"): align = " style=\"text-align:right\""
                default: align = ""
                }
                out += "<\(tag)\(align)>"
                inlines(c)
                out += "</\(tag)>\n"
                column += 1
                cell = cmark_node_next(c)
            }
            out += header ? "</tr>\n</thead>\n" : "</tr>\n"
            row = cmark_node_next(r)
        }
        if inBody { out += "</tbody>\n" }
        out += "</table>\n"
    }

    mutating func inlines(_ node: OpaquePointer) {
        var child = cmark_node_first_child(node)
        while let c = child {
            inline(c)
            child = cmark_node_next(c)
        }
    }

    mutating func inline(_ node: OpaquePointer) {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else {
            tooDeep = true
            return
        }
        switch cmark_node_get_type(node) {
        case CMARK_NODE_TEXT: out += escape(Self.literal(node))
        case CMARK_NODE_SOFTBREAK: out += "\n"
        case CMARK_NODE_LINEBREAK: out += "<br>\n"
        case CMARK_NODE_CODE: out += "<code>" + escape(Self.literal(node)) + "</code>"
        case CMARK_NODE_HTML_INLINE: out += Self.literal(node)
        case CMARK_NODE_EMPH:
            out += "<em>"
            inlines(node)
            out += "</em>"
        case CMARK_NODE_STRONG:
            out += "<strong>"
            inlines(node)
            out += "</strong>"
        case CMARK_NODE_LINK:
            let url = cmark_node_get_url(node).map { String(cString: $0) } ?? ""
            let title = cmark_node_get_title(node).map { String(cString: $0) } ?? ""
            out += "<a href=\"" + escape(Self.urlEscape(url)) + "\""
            if !title.isEmpty { out += " title=\"" + escape(title) + "\"" }
            out += ">"
            inlines(node)
            out += "</a>"
        case CMARK_NODE_IMAGE:
            let url = cmark_node_get_url(node).map { String(cString: $0) } ?? ""
            let title = cmark_node_get_title(node).map { String(cString: $0) } ?? ""
            out += "<img src=\"" + escape(Self.urlEscape(url)) + "\" alt=\"" + escape(Self.plainText(node)) + "\""
            if !title.isEmpty { out += " title=\"" + escape(title) + "\"" }
            out += ">"
        case CMARK_NODE_FOOTNOTE_REFERENCE:
            guard let def = c_usher_markdown_footnote_definition(node) else {
                out += escape(Self.literal(node))
                return
            }
            let n: Int
            if let known = footnoteNumbers[def] {
                n = known
            } else {
                footnotes.append(def)
                n = footnotes.count
                footnoteNumbers[def] = n
            }
            let k = footnoteReferences[def, default: 0]
            footnoteReferences[def] = k + 1
            out +=
                "<sup id=\"\(Self.referenceID(k, n))\"><a href=\"#fn:\(n)\" class=\"footnote-ref\" role=\"doc-noteref\">\(n)</a></sup>"
        default:
            if Self.typeName(node) == "strikethrough" {
                out += "<del>"
                inlines(node)
                out += "</del>"
            } else {
                inlines(node)
            }
        }
    }

    /// The ID of footnote `n`'s `k`th reference (from 0).
    static func referenceID(_ k: Int, _ n: Int) -> String { k == 0 ? "fnref:\(n)" : "fnref\(k):\(n)" }

    /// The text of a node's inlines, markup dropped (image alt text, heading IDs).
    static func plainText(_ node: OpaquePointer, depth: Int = 0) -> String {
        guard depth <= maxDepth else { return "" }
        var s = ""
        var child = cmark_node_first_child(node)
        while let c = child {
            switch cmark_node_get_type(c) {
            case CMARK_NODE_TEXT, CMARK_NODE_CODE: s += literal(c)
            case CMARK_NODE_SOFTBREAK, CMARK_NODE_LINEBREAK: s += "\n"
            default: s += plainText(c, depth: depth + 1)
            }
            child = cmark_node_next(c)
        }
        return s
    }

    /// goldmark's automatic heading ID: ASCII letters and digits lowercased, spaces, `-` and `_` as `-`, the rest
    /// dropped; `heading` when nothing is left; `-1`, `-2`… on repeats.
    mutating func headingID(_ node: OpaquePointer) -> String {
        var id = ""
        for b in Self.plainText(node).trimmingASCIISpaces.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): id.unicodeScalars.append(Unicode.Scalar(b + 32))
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                id.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"), 0x0B, 0x0C,
                UInt8(ascii: "-"), UInt8(ascii: "_"):
                id += "-"
            default: break
            }
        }
        if id.isEmpty { id = "heading" }
        if usedIDs.insert(id).inserted { return id }
        var n = 1
        while !usedIDs.insert("\(id)-\(n)").inserted { n += 1 }
        return "\(id)-\(n)"
    }

    /// goldmark's `util.URLEscape`: characters a URL may hold stay (and `%` before two hex digits), others are
    /// percent-encoded byte by byte.
    static func urlEscape(_ url: String) -> String {
        let bytes = Array(url.utf8)
        var out = ""
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "%"), i + 2 < bytes.count, isHex(bytes[i + 1]),
                isHex(bytes[i + 2])
            {
                out += "%"
            } else if isURLSafe(c) {
                out.unicodeScalars.append(Unicode.Scalar(c))
            } else {
                out += "%" + String(c, radix: 16, uppercase: true).leftPadded(2)
            }
            i += 1
        }
        return out
    }

    static func isHex(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)
    }

    static func isURLSafe(_ c: UInt8) -> Bool {
        if (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) { return true }
        return "-._~:/?#[]@!$&'()*+,;=".utf8.contains(c)
    }

    /// goldmark's escaping of text and attributes: `&`, `<`, `>` and `"`.
    func escape(_ s: some StringProtocol) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    fileprivate var trimmingASCIISpaces: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) })!
        return self[start...end]
    }
}
