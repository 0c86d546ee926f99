public import UsherCore

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
