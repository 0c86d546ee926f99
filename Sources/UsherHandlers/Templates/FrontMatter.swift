import Foundation
import UsherCore

/// Caddy's `splitFrontMatter`: metadata fenced at the top of a document — YAML (`---` … `---` or `...`), TOML
/// (`+++` … `+++`) or JSON (`{` … `}`, each on its own line) — and the body after the closing fence.
enum FrontMatter {
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// Deepest nesting of collections a document may have (the parsers recurse).
    static let maxNesting = 1000

    static func split(_ input: String) throws -> (meta: [String: TemplateValue], body: String) {
        // The first non-blank line, found as Caddy finds it (byte offsets of Go's loop over runes).
        let bytes = Array(input.utf8)
        var firstLineStart = 0
        var firstLineEnd = 0
        var lineEmpty = true
        var i = 0
        let scalars = input.unicodeScalars
        var index = scalars.startIndex
        while index < scalars.endIndex {
            let c = scalars[index]
            if c == "\n" {
                firstLineStart = firstLineEnd
                if firstLineStart > 0 { firstLineStart += 1 }
                firstLineEnd = i
                if !lineEmpty { break }
            } else {
                lineEmpty = lineEmpty && c.properties.isWhitespace
            }
            i += String(c).utf8.count
            index = scalars.index(after: index)
        }
        let firstLine = String(decoding: bytes[firstLineStart..<firstLineEnd], as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let kinds: [(open: String, close: [String], parse: (String) throws -> [String: TemplateValue])] = [
            ("---", ["---", "..."], YAMLSubset.parseDocument),
            ("+++", ["+++"], TOMLSubset.parseDocument),
            ("{", ["}"], parseJSON),
        ]
        guard let kind = kinds.first(where: { $0.open == firstLine }) else { return ([:], input) }
        let rest = bytes[firstLineEnd...]
        for fence in kind.close {
            let needle = Array(("\n" + fence).utf8)
            guard let found = rest.firstRange(of: needle) else { continue }
            let fmEnd = found.lowerBound + 1
            let text = String(decoding: bytes[firstLineEnd..<fmEnd], as: UTF8.self)
            let meta = try kind.parse(text)
            let body = String(decoding: bytes[(fmEnd + fence.utf8.count)...], as: UTF8.self)
            return (meta, body)
        }
        throw Failure("unterminated front matter")
    }

    static func parseJSON(_ text: String) throws -> [String: TemplateValue] {
        let value: JSONValue
        do {
            value = try JSONValue.parse("{" + text + "}")
        } catch {
            throw Failure("\(error)")
        }
        guard case .map(let m) = templateValue(value) else { return [:] }
        return m
    }

    /// JSON as Go's `encoding/json` gives it to `any`: numbers are float64.
    static func templateValue(_ v: JSONValue) -> TemplateValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let n): return .float(n.double ?? 0)
        case .string(let s): return .string(s)
        case .array(let a): return .list(a.map(templateValue))
        case .object(let o):
            var m: [String: TemplateValue] = [:]
            for member in o.members { m[member.key] = templateValue(member.value) }
            return .map(m)
        }
    }
}
