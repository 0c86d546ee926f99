import UsherCore

/// Path cleaning and glob matching with the semantics of Go's `path` package and Caddy's path matcher.
public enum PathMatching {
    /// `path.Clean`, keeping a trailing slash; without `collapseSlashes`, runs of slashes are kept.
    public static func cleanPath(_ p: String, collapseSlashes: Bool) -> String {
        if collapseSlashes { return cleanKeepingTrailingSlash(p) }
        // Like Clean, but an empty segment (from "//") counts as a segment, so doubled slashes survive.
        let rooted = p.hasPrefix("/")
        var parts = p.split(separator: "/", omittingEmptySubsequences: false)
        if rooted { parts.removeFirst() }
        var out: [Substring] = []
        for (i, part) in parts.enumerated() {
            if part == "." { continue }
            if part.isEmpty {
                if i == parts.count - 1 { continue }
                out.append(part)
                continue
            }
            if part == ".." {
                if let last = out.last, last != ".." {
                    out.removeLast()
                } else if !rooted {
                    out.append(part)
                }
                continue
            }
            out.append(part)
        }
        var cleaned = out.joined(separator: "/")
        if rooted { cleaned = "/" + cleaned } else if cleaned.isEmpty { cleaned = "." }
        if cleaned != "/" && p.hasSuffix("/") && !cleaned.hasSuffix("/") { cleaned += "/" }
        return cleaned
    }

    static func cleanKeepingTrailingSlash(_ p: String) -> String {
        let cleaned = PathUtil.clean(p)
        if cleaned != "/" && p.hasSuffix("/") { return cleaned + "/" }
        return cleaned
    }

    /// Go's `path.Match`: `*` matches any run of non-`/` bytes, `?` one non-`/` byte, `[...]` a class, `\` escapes.
    public static func globMatch(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern.utf8)
        let n = Array(name.utf8)
        return glob(p, 0, n, 0)
    }

    private static func glob(_ p: [UInt8], _ pi0: Int, _ n: [UInt8], _ ni0: Int) -> Bool {
        var pi = pi0
        var ni = ni0
        while pi < p.count {
            let c = p[pi]
            switch c {
            case UInt8(ascii: "*"):
                while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
                if pi == p.count { return !n[ni...].contains(UInt8(ascii: "/")) }
                var k = ni
                while k <= n.count {
                    if glob(p, pi, n, k) { return true }
                    if k < n.count && n[k] == UInt8(ascii: "/") { return false }
                    k += 1
                }
                return false
            case UInt8(ascii: "?"):
                guard ni < n.count, n[ni] != UInt8(ascii: "/") else { return false }
                pi += 1
                ni += 1
            case UInt8(ascii: "["):
                guard ni < n.count else { return false }
                let ch = n[ni]
                pi += 1
                var negated = false
                if pi < p.count && p[pi] == UInt8(ascii: "^") {
                    negated = true
                    pi += 1
                }
                var matched = false
                var first = true
                while pi < p.count && (first || p[pi] != UInt8(ascii: "]")) {
                    first = false
                    var lo = p[pi]
                    if lo == UInt8(ascii: "\\") && pi + 1 < p.count { pi += 1; lo = p[pi] }
                    pi += 1
                    var hi = lo
                    if pi + 1 < p.count && p[pi] == UInt8(ascii: "-") && p[pi + 1] != UInt8(ascii: "]") {
                        pi += 1
                        hi = p[pi]
                        if hi == UInt8(ascii: "\\") && pi + 1 < p.count { pi += 1; hi = p[pi] }
                        pi += 1
                    }
                    if lo <= ch && ch <= hi { matched = true }
                }
                guard pi < p.count else { return false }
                pi += 1
                if matched == negated || ch == UInt8(ascii: "/") { return false }
                ni += 1
            case UInt8(ascii: "\\"):
                pi += 1
                guard pi < p.count, ni < n.count, p[pi] == n[ni] else { return false }
                pi += 1
                ni += 1
            default:
                guard ni < n.count, n[ni] == c else { return false }
                pi += 1
                ni += 1
            }
        }
        return ni == n.count
    }

    /// Caddy's `matchPatternWithEscapeSequence`: a pattern with `%xx` is compared against the escaped path, so
    /// `%2F` in a pattern matches only an encoded slash.
    public static func matchWithEscapes(_ escapedPathIn: String, _ matchPath: String) -> Bool {
        let escapedPath = Array(escapedPathIn.lowercased().utf8)
        let mp = Array(matchPath.utf8)
        var sb: [UInt8] = []
        var iPattern = 0
        var iPath = 0
        while iPattern < mp.count && iPath < escapedPath.count {
            var pathCh: [UInt8] = [escapedPath[iPath]]
            var escapedPathCh: [UInt8] = []
            if escapedPath[iPath] == UInt8(ascii: "%") && escapedPath.count >= iPath + 3 {
                escapedPathCh = Array(escapedPath[iPath..<(iPath + 3)])
                guard let u = URLEscaping.unescape(String(decoding: escapedPathCh, as: UTF8.self), mode: .path) else {
                    return false
                }
                pathCh = Array(u.utf8)
                iPath += 2
            }
            var normalize = true
            var handled = false
            if mp[iPattern] == UInt8(ascii: "%") {
                if mp.count >= iPattern + 3 && mp[iPattern + 1] != UInt8(ascii: "*") {
                    sb += escapedPathCh
                    iPath += 1
                    iPattern += 2
                    handled = true
                } else {
                    iPattern += 1
                    normalize = false
                }
            }
            if !handled {
                if iPattern < mp.count && (mp[iPattern] == UInt8(ascii: "*") || !normalize) {
                    let remaining = Array(escapedPath[iPath...])
                    var until = escapedPath.count - iPath
                    if iPattern < mp.count - 1 {
                        let nextCh = mp[iPattern + 1]
                        guard let idx = remaining.firstIndex(of: nextCh) else { return false }
                        until = idx
                    }
                    if until != 0 {
                        var next = Array(remaining[0..<until])
                        if normalize {
                            guard let u = URLEscaping.unescape(String(decoding: next, as: UTF8.self), mode: .path)
                            else { return false }
                            next = Array(u.utf8)
                        }
                        sb += next
                        iPath += until
                    }
                } else {
                    sb += pathCh
                    iPath += 1
                }
            }
            iPattern += 1
        }
        if iPath < escapedPath.count {
            let remaining = String(decoding: escapedPath[iPath...], as: UTF8.self)
            sb += Array((URLEscaping.unescape(remaining, mode: .path) ?? remaining).utf8)
        }
        let pattern = matchPath.replacingBytes(of: "%*", with: "*")
        return globMatch(pattern, String(decoding: sb, as: UTF8.self).lowercased())
    }
}

extension String {
    /// Replaces every occurrence of `target` (no Foundation).
    func replacingBytes(of target: String, with replacement: String) -> String {
        guard !target.isEmpty, contains(target) else { return self }
        var out = ""
        var rest = self[...]
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

/// A compiled regular expression (Go RE2 syntax, including `(?P<name>...)` groups), safe to share.
public final class CompiledRegex: @unchecked Sendable {
    // @unchecked: a Regex is immutable once compiled; matching creates no shared state.
    public let pattern: String
    let regex: Regex<AnyRegexOutput>
    public let groupNames: [String?]

    public init(_ pattern: String) throws {
        self.pattern = pattern
        // Go's named group syntax (?P<name>) is also Swift's; (?<name>) too.
        self.regex = try Regex(pattern)
        var names: [String?] = []
        if let m = try? regex.wholeMatch(in: "") {
            names = m.output.map(\.name)
        }
        self.groupNames = names
    }

    /// The leftmost match: every group's value (`nil` if it did not take part) and name; index 0 is the whole match.
    public func firstMatch(in input: String) -> [(value: String?, name: String?)]? {
        guard let m = try? regex.firstMatch(in: input) else { return nil }
        return m.output.map { (value: $0.substring.map(String.init), name: $0.name) }
    }

    /// Replaces every match with `template`, where `$1`, `${1}` and `${name}` insert groups (Go's `Expand`).
    public func replaceAll(in input: String, with template: String) -> String {
        var out = ""
        var last = input.startIndex
        for m in input.matches(of: regex) {
            out += input[last..<m.range.lowerBound]
            out += Self.expand(template, m.output)
            last = m.range.upperBound
        }
        out += input[last...]
        return out
    }

    /// Expands `template` with the groups of the first match in `input` (Go's `Regexp.ExpandString`).
    public func expandFirst(in input: String, with template: String) -> String {
        guard let m = try? regex.firstMatch(in: input) else { return "" }
        return Self.expand(template, m.output)
    }

    static func expand(_ template: String, _ output: AnyRegexOutput) -> String {
        var out = ""
        var chars = Array(template)
        var i = 0
        func group(_ name: String) -> String {
            if let idx = Int(name) {
                return idx < output.count ? output[idx].substring.map(String.init) ?? "" : ""
            }
            for g in output where g.name == name { return g.substring.map(String.init) ?? "" }
            return ""
        }
        while i < chars.count {
            let c = chars[i]
            if c == "$" && i + 1 < chars.count {
                if chars[i + 1] == "$" {
                    out.append("$")
                    i += 2
                    continue
                }
                if chars[i + 1] == "{", let close = chars[(i + 2)...].firstIndex(of: "}") {
                    out += group(String(chars[(i + 2)..<close]))
                    i = close + 1
                    continue
                }
                var j = i + 1
                while j < chars.count && (chars[j].isLetter || chars[j].isNumber || chars[j] == "_") { j += 1 }
                if j > i + 1 {
                    out += group(String(chars[(i + 1)..<j]))
                    i = j
                    continue
                }
            }
            out.append(c)
            i += 1
        }
        chars.removeAll()
        return out
    }
}
