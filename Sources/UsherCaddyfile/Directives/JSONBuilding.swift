
public import UsherCore

/// Building JSON the way Go's `encoding/json` writes Caddy's structs: `omitempty` fields left out when zero, map
/// keys sorted, module objects carrying their inline key.
extension JSONObject {
    /// Sets `key` unless `value` is empty (`omitempty`).
    public mutating func put(_ key: String, _ value: String) {
        if !value.isEmpty { self[key] = .string(value) }
    }

    /// Sets `key` unless `value` is zero.
    public mutating func put(_ key: String, _ value: Int) {
        if value != 0 { self[key] = .number(JSONNumber(value)) }
    }

    /// Sets `key` unless `value` is zero.
    public mutating func put(_ key: String, _ value: Double) {
        if value != 0 { self[key] = .number(JSONNumber(value)) }
    }

    /// Sets `key` to `true`; `false` is left out.
    public mutating func put(_ key: String, _ value: Bool) {
        if value { self[key] = .bool(true) }
    }

    /// Sets `key` unless the array is empty.
    public mutating func put(_ key: String, _ value: [String]) {
        if !value.isEmpty { self[key] = .array(value.map { .string($0) }) }
    }

    /// Sets `key` unless the array is empty.
    public mutating func put(_ key: String, _ value: [JSONValue]) {
        if !value.isEmpty { self[key] = .array(value) }
    }

    /// Sets `key` unless the array is empty.
    public mutating func put(_ key: String, _ value: [JSONObject]) {
        if !value.isEmpty { self[key] = .array(value.map { .object($0) }) }
    }

    /// Sets `key` when `value` is present (a Go pointer: an empty object is still written).
    public mutating func put(_ key: String, _ value: JSONObject?) {
        if let value { self[key] = .object(value) }
    }

    /// Sets `key` when `value` is present.
    public mutating func put(_ key: String, _ value: JSONValue?) {
        if let value { self[key] = value }
    }

    /// Sets a map-valued `key` unless the map is empty.
    public mutating func putMap(_ key: String, _ value: JSONObject) {
        if !value.isEmpty { self[key] = .object(value) }
    }

    /// Sets a duration (Go `caddy.Duration`, written as integer nanoseconds) unless zero.
    public mutating func putDuration(_ key: String, _ nanoseconds: Int64) {
        if nanoseconds != 0 { self[key] = .number(JSONNumber(literal: String(nanoseconds))) }
    }

    /// The object with its keys in Go's map order (sorted by bytes).
    public func sortedByKey() -> JSONObject {
        JSONObject(members.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) })
    }

    /// Whether two objects hold the same members, in any order.
    public func sameMembers(as other: JSONObject) -> Bool {
        guard count == other.count else { return false }
        for m in members {
            guard let o = other[m.key], o.sameValue(as: m.value) else { return false }
        }
        return true
    }
}

extension JSONValue {
    /// Deep equality that ignores object key order.
    public func sameValue(as other: JSONValue) -> Bool {
        switch (self, other) {
        case (.object(let a), .object(let b)): return a.sameMembers(as: b)
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.sameValue(as: $1) }
        default: return self == other
        }
    }

    /// A string array as JSON.
    public static func strings(_ items: [String]) -> JSONValue { .array(items.map { .string($0) }) }

    /// The elements of a JSON array of strings, or nil.
    public var stringArray: [String]? {
        guard let a = arrayValue else { return nil }
        var out: [String] = []
        for v in a {
            guard let s = v.stringValue else { return nil }
            out.append(s)
        }
        return out
    }
}

/// Caddy's `JSONModuleObject`: the module's fields plus its inline key (`"handler": "file_server"`), keys sorted as
/// Go writes them after the round trip through a map.
public func moduleObject(_ fields: JSONObject, key: String, name: String) -> JSONObject {
    var o = fields
    o[key] = .string(name)
    return o.sortedByKey()
}

/// A handler module object (`"handler": name`).
public func handlerObject(_ name: String, _ fields: JSONObject = JSONObject()) -> JSONObject {
    moduleObject(fields, key: "handler", name: name)
}

/// A Caddyfile scalar (`ScalarVal`) as JSON.
public func scalarJSON(_ s: CaddyfileScalar) -> JSONValue {
    switch s {
    case .string(let t): return .string(t)
    case .int(let i): return .number(JSONNumber(i))
    case .double(let d, _): return .number(JSONNumber(literal: Go.jsonFloat(d)))
    case .bool(let b): return .bool(b)
    }
}

/// Caddy's `WeakString` as JSON: numbers and booleans unquoted, anything else a string.
public func weakStringJSON(_ s: String) -> JSONValue {
    if s == "true" { return .bool(true) }
    if s == "false" { return .bool(false) }
    if let n = try? Go.atoi(s) { return .number(JSONNumber(n)) }
    return .string(s)
}

/// A float as Go writes it.
public func floatJSON(_ d: Double) -> JSONValue { .number(JSONNumber(literal: Go.jsonFloat(d))) }

/// An `http.Header`-style map (field → values), keys sorted.
public func headerMapJSON(_ fields: [(String, [String])]) -> JSONObject {
    var o = JSONObject()
    for (k, v) in fields {
        let existing = o[k]?.stringArray ?? []
        o[k] = .strings(existing + v)
    }
    return o.sortedByKey()
}
