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

/// The same setters keyed by a decoder's `CodingKeys`, so that a module's JSON keys are spelled once: where its
/// runtime decodes them.
extension JSONObject {
    public mutating func put(_ key: some CodingKey, _ value: String) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: Int) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: Double) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: Bool) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: [String]) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: [JSONValue]) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: [JSONObject]) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: JSONObject?) { put(key.stringValue, value) }
    public mutating func put(_ key: some CodingKey, _ value: JSONValue?) { put(key.stringValue, value) }
    public mutating func putMap(_ key: some CodingKey, _ value: JSONObject) { putMap(key.stringValue, value) }
    public mutating func putDuration(_ key: some CodingKey, _ nanoseconds: Int64) {
        putDuration(key.stringValue, nanoseconds)
    }

    /// Sets `key` whenever `value` is present, `false` included (a Go `*bool`).
    public mutating func putPresent(_ key: some CodingKey, _ value: Bool?) {
        if let value { self[key.stringValue] = .bool(value) }
    }

    public subscript(key: some CodingKey) -> JSONValue? {
        get { self[key.stringValue] }
        set { self[key.stringValue] = newValue }
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
