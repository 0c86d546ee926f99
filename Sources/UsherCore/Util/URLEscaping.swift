/// Percent-encoding as Go's `net/url` does it, so paths, queries and placeholders match Caddy byte for byte.
public enum URLEscaping {
    public enum Mode: Sendable {
        /// Path segments: `+` is a literal plus.
        case path
        /// Query components: `+` is a space.
        case query
    }

    private static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Decodes `%XX` sequences (and `+` in query mode); `nil` when an escape is malformed.
    public static func unescape(_ s: String, mode: Mode) -> String? {
        let bytes = Array(s.utf8)
        guard bytes.contains(UInt8(ascii: "%")) || (mode == .query && bytes.contains(UInt8(ascii: "+"))) else {
            return s
        }
        return unescape(bytes[...], mode: mode).map { String(decoding: $0, as: UTF8.self) }
    }

    /// ``unescape(_:mode:)`` on bytes.
    public static func unescape(_ bytes: ArraySlice<UInt8>, mode: Mode) -> [UInt8]? {
        if !bytes.contains(UInt8(ascii: "%")) && (mode == .path || !bytes.contains(UInt8(ascii: "+"))) {
            return Array(bytes)
        }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < bytes.endIndex, let h = hexValue(bytes[i + 1]), let l = hexValue(bytes[i + 2]) else {
                    return nil
                }
                out.append(h << 4 | l)
                i += 3
            } else if b == UInt8(ascii: "+") && mode == .query {
                out.append(UInt8(ascii: " "))
                i += 1
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    private static func isUnreserved(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
            || b == UInt8(ascii: ".") || b == UInt8(ascii: "~")
    }

    /// Escapes a decoded path as Go's `URL.EscapedPath` does (keeps `/ $ & + , : ; = @`).
    public static func escapePath(_ s: String) -> String {
        escape(s) { b in
            isUnreserved(b) || "$&+,/:;=@".utf8.contains(b)
        }
    }

    /// Escapes for a query component, as Go's `url.QueryEscape` (space becomes `+`).
    public static func queryEscape(_ s: String) -> String {
        var out: [UInt8] = []
        queryEscape(s.utf8, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// ``queryEscape(_:)`` on bytes, appended to `out`.
    public static func queryEscape(_ bytes: some Sequence<UInt8>, into out: inout [UInt8]) {
        for b in bytes {
            if isUnreserved(b) {
                out.append(b)
            } else if b == UInt8(ascii: " ") {
                out.append(UInt8(ascii: "+"))
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(b >> 4)])
                out.append(hexDigits[Int(b & 0xF)])
            }
        }
    }

    /// Escapes a path segment, as Go's `url.PathEscape`.
    public static func pathSegmentEscape(_ s: String) -> String {
        escape(s) { b in isUnreserved(b) || "$&+,:;=@".utf8.contains(b) }
    }

    private static func escape(_ s: String, keep: (UInt8) -> Bool) -> String {
        let bytes = Array(s.utf8)
        if bytes.allSatisfy(keep) { return s }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 8)
        for b in bytes {
            if keep(b) {
                out.append(b)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(b >> 4)])
                out.append(hexDigits[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses `a=1&b=2` as Go's `url.ParseQuery`: pairs in order, malformed pairs skipped.
    public static func parseQuery(_ raw: String) -> [(name: String, value: String)] {
        var items: [(name: String, value: String)] = []
        for part in raw.split(separator: "&", omittingEmptySubsequences: true) {
            if part.contains(";") { continue }
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = unescape(String(kv[0]), mode: .query) else { continue }
            let v = kv.count > 1 ? unescape(String(kv[1]), mode: .query) : ""
            guard let v else { continue }
            items.append((k, v))
        }
        return items
    }

    /// Encodes query items sorted by key, as Go's `url.Values.Encode`.
    public static func encodeQuery(_ items: [(name: String, value: String)]) -> String {
        let sorted = items.enumerated().sorted { a, b in
            a.element.name == b.element.name ? a.offset < b.offset : a.element.name < b.element.name
        }.map(\.element)
        return sorted.map { queryEscape($0.name) + "=" + queryEscape($0.value) }.joined(separator: "&")
    }
}

extension StringProtocol {
    /// Compares with an ASCII string, ignoring ASCII case.
    public func equalsASCIICaseInsensitive(_ other: StaticString) -> Bool {
        let a = utf8
        guard a.count == other.utf8CodeUnitCount else { return false }
        var i = 0
        for b in a {
            var x = b
            var y = other.utf8Start[i]
            if x >= 65 && x <= 90 { x += 32 }
            if y >= 65 && y <= 90 { y += 32 }
            if x != y { return false }
            i += 1
        }
        return true
    }
}

extension URLEscaping {
    /// Whether a path needs no escaping: every byte is one `escapePath` keeps.
    package static func isCanonicalPath<S: Sequence>(_ bytes: S) -> Bool where S.Element == UInt8 {
        for b in bytes {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "+"), UInt8(ascii: ","),
                UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "@"):
                continue
            default:
                return false
            }
        }
        return true
    }
}
