/// Path helpers with Go's `path` package semantics.
public enum PathUtil {
    /// Splits after the last slash: `/a/b.txt` → (`/a/`, `b.txt`).
    public static func split(_ p: String) -> (dir: String, file: String) {
        guard let slash = p.lastIndex(of: "/") else { return ("", p) }
        return (String(p[...slash]), String(p[p.index(after: slash)...]))
    }

    /// The extension including the dot, as Go's `path.Ext`.
    public static func ext(_ p: String) -> String {
        var i = p.endIndex
        while i > p.startIndex {
            let prev = p.index(before: i)
            if p[prev] == "/" { return "" }
            if p[prev] == "." { return String(p[prev...]) }
            i = prev
        }
        return ""
    }

    /// The last element, as Go's `path.Base`.
    public static func base(_ p: String) -> String {
        if p.isEmpty { return "." }
        var s = Substring(p)
        while s.count > 1 && s.hasSuffix("/") { s = s.dropLast() }
        if s == "/" { return "/" }
        if let slash = s.lastIndex(of: "/") { s = s[s.index(after: slash)...] }
        return s.isEmpty ? "/" : String(s)
    }

    /// Lexical cleaning, as Go's `path.Clean`.
    public static func clean(_ p: String) -> String {
        if p.isEmpty { return "." }
        let rooted = p.hasPrefix("/")
        var out: [Substring] = []
        for part in p.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
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
        let joined = out.joined(separator: "/")
        if rooted { return "/" + joined }
        return joined.isEmpty ? "." : joined
    }
}
