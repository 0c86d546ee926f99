/// An error from the admin API, with the HTTP status to answer it with.
public struct AdminError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let message: String

    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }
}

/// Reads and edits a JSON document by admin API path (`/config/apps/http/servers/srv0/routes/0`), with Caddy's
/// semantics: POST sets a key or appends to an array (`.../...` appends each element of an array body), PUT creates
/// a key or inserts at an index and refuses to overwrite, PATCH replaces what exists, DELETE removes.
public enum ConfigTraversal {
    public enum Method: String, Sendable {
        case get = "GET", post = "POST", put = "PUT", patch = "PATCH", delete = "DELETE"
    }

    /// Applies `method` at `path` in `root`; returns the value found for GET.
    public static func access(
        _ root: inout JSONValue,
        method: Method,
        path: String,
        body: JSONValue?
    ) throws(AdminError) -> JSONValue? {
        let clean = path.split(separator: "/", omittingEmptySubsequences: false)
            .drop(while: { $0.isEmpty }).reversed().drop(while: { $0.isEmpty }).reversed()
        guard !clean.isEmpty else { throw AdminError(400, "no traversable path") }
        var parts = clean.map(String.init)
        let ellipses = parts.last == "..."
        if ellipses { parts.removeLast() }
        if method != .get && body == nil && method != .delete {
            throw AdminError(400, "missing request body")
        }
        var result: JSONValue?
        var walker = Walker(parts: parts, method: method, body: body, ellipses: ellipses, path: path)
        try walker.walk(&root, 0)
        result = walker.result
        return result
    }

    private struct Walker {
        let parts: [String]
        let method: Method
        let body: JSONValue?
        let ellipses: Bool
        let path: String
        var result: JSONValue?

        func prefix(_ i: Int) -> String { parts[0...min(i, parts.count - 1)].joined(separator: "/") }

        mutating func walk(_ node: inout JSONValue, _ i: Int) throws(AdminError) {
            guard i < parts.count else { return }
            let part = parts[i]
            switch node {
            case .object(var object):
                if case .array(var array) = object[part] ?? .null, i == parts.count - 2 {
                    var idx = 0
                    if method != .post {
                        let idxText = parts[parts.count - 1]
                        guard let parsed = ConfigTraversal.canonicalIndex(idxText) else {
                            throw AdminError(400, "[\(path)] invalid array index '\(idxText)'")
                        }
                        idx = parsed
                        if (method != .put && idx >= array.count) || idx > array.count {
                            throw AdminError(400, "[\(path)] array index out of bounds: \(idxText)")
                        }
                    }
                    switch method {
                    case .get: result = array[idx]
                    case .post: ConfigTraversal.append(&array, body, ellipses: ellipses)
                    case .put: array.insert(body ?? .null, at: idx)
                    case .patch: array[idx] = body ?? .null
                    case .delete: array.remove(at: idx)
                    }
                    if method != .get {
                        object[part] = .array(array)
                        node = .object(object)
                    }
                    return
                }
                if i == parts.count - 1 {
                    switch method {
                    case .get:
                        result = object[part] ?? .null
                        return
                    case .post:
                        if ellipses, body?.arrayValue == nil { throw AdminError(400, "final element is not an array") }
                        if case .array(var array) = object[part] ?? .null {
                            ConfigTraversal.append(&array, body, ellipses: ellipses)
                            object[part] = .array(array)
                        } else {
                            object[part] = body ?? .null
                        }
                    case .put:
                        if object[part] != nil { throw AdminError(409, "[\(path)] key already exists: \(part)") }
                        object[part] = body ?? .null
                    case .patch:
                        if object[part] == nil { throw AdminError(404, "[\(path)] key does not exist: \(part)") }
                        object[part] = body ?? .null
                    case .delete:
                        if object[part] == nil { throw AdminError(404, "[\(path)] key does not exist: \(part)") }
                        object[part] = nil
                    }
                    node = .object(object)
                    return
                }
                var child = object[part] ?? .null
                if child.isNull {
                    guard method == .put else { throw AdminError(400, "invalid traversal path at: \(prefix(i + 1))") }
                    child = .object(JSONObject())
                }
                try walk(&child, i + 1)
                if method != .get {
                    object[part] = child
                    node = .object(object)
                }
            case .array(var array):
                guard let idx = ConfigTraversal.canonicalIndex(part) else {
                    throw AdminError(400, "[/\(prefix(i))] invalid array index '\(part)'")
                }
                guard idx < array.count else {
                    throw AdminError(400, "[/\(prefix(i))] array index out of bounds: \(part)")
                }
                var child = array[idx]
                try walk(&child, i + 1)
                if method != .get {
                    array[idx] = child
                    node = .array(array)
                }
            default:
                throw AdminError(400, "invalid traversal path at: \(prefix(i))")
            }
        }
    }

    static func append(_ array: inout [JSONValue], _ body: JSONValue?, ellipses: Bool) {
        if ellipses, case .array(let items) = body ?? .null {
            array.append(contentsOf: items)
        } else {
            array.append(body ?? .null)
        }
    }

    /// A non-negative decimal index without sign or leading zeros.
    static func canonicalIndex(_ s: String) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        if s.count > 1 && s.hasPrefix("0") { return nil }
        return Int(s)
    }

    /// Maps every `"@id"` in `value` to its admin path (`/config/apps/...`). Duplicate IDs are an error.
    public static func indexIDs(_ value: JSONValue, path: String = "/config") throws(AdminError) -> [String: String] {
        var index: [String: String] = [:]
        try indexIDs(value, path: path, into: &index)
        return index
    }

    private static func indexIDs(_ value: JSONValue, path: String, into index: inout [String: String])
        throws(AdminError)
    {
        switch value {
        case .object(let object):
            for m in object {
                if m.key == "@id" {
                    let id: String
                    switch m.value {
                    case .string(let s): id = s
                    case .number(let n): id = n.text
                    default: throw AdminError(400, "\(path): @id must be a string or number")
                    }
                    if index[id] != nil {
                        throw AdminError(400, "duplicate ID '\(id)' found at \(index[id]!) and \(path)")
                    }
                    index[id] = path
                } else {
                    try indexIDs(m.value, path: path + "/" + m.key, into: &index)
                }
            }
        case .array(let array):
            for (i, v) in array.enumerated() { try indexIDs(v, path: path + "/\(i)", into: &index) }
        default:
            break
        }
    }

    /// A stable hash of a JSON value, for the admin API's ETags.
    public static func hash(_ value: JSONValue) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in value.serializedBytes() {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
