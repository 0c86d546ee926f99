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
        if isClean(p) { return p }
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

    /// Whether a rooted path is already what ``clean(_:)`` would make it: no empty, `.` or `..` segment and no
    /// trailing slash (the common case, checked without allocating).
    static func isClean(_ p: String) -> Bool {
        var segmentLength = 0
        var dots = 0
        var first = true
        for b in p.utf8 {
            if first {
                guard b == UInt8(ascii: "/") else { return false }
                first = false
                continue
            }
            if b == UInt8(ascii: "/") {
                if segmentLength == 0 || segmentLength == dots && dots <= 2 { return false }
                segmentLength = 0
                dots = 0
            } else {
                segmentLength += 1
                if b == UInt8(ascii: ".") { dots += 1 }
            }
        }
        if p.utf8.count == 1 { return true }
        return segmentLength > 0 && !(segmentLength == dots && dots <= 2)
    }
}
