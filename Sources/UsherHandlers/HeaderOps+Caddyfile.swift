public import UsherCaddyfile
public import UsherCore
import UsherHTTP

/// Header manipulations as Caddy's `headers.HeaderOps` holds them, built from Caddyfile header fields
/// (`+Field`, `-Field`, `?Field`, `>Field`, `Field value [replacement]`).
public struct HeaderOpsJSON: Equatable {
    public var add: [(String, [String])] = []
    public var set: [(String, [String])] = []
    public var delete: [String] = []
    public var replace: [(String, [JSONObject])] = []

    public init() {}

    public var isEmpty: Bool { add.isEmpty && set.isEmpty && delete.isEmpty && replace.isEmpty }

    public static func == (a: HeaderOpsJSON, b: HeaderOpsJSON) -> Bool {
        a.json == b.json
    }

    /// `http.Header.Add`.
    package mutating func headerAdd(_ field: String, _ value: String) {
        let k = Go.canonicalHeaderKey(field)
        if let i = add.firstIndex(where: { $0.0 == k }) { add[i].1.append(value) } else { add.append((k, [value])) }
    }

    /// `http.Header.Set`.
    package mutating func headerSet(_ field: String, _ value: String) {
        let k = Go.canonicalHeaderKey(field)
        if let i = set.firstIndex(where: { $0.0 == k }) { set[i].1 = [value] } else { set.append((k, [value])) }
    }

    public var json: JSONObject {
        var o = JSONObject()
        o.putMap(HeaderOps.CodingKeys.add, headerMapJSON(add))
        o.putMap(HeaderOps.CodingKeys.set, headerMapJSON(set))
        o.put(HeaderOps.CodingKeys.delete, delete)
        var r = JSONObject()
        for (k, v) in replace { r[k] = .array(v.map { .object($0) }) }
        o.putMap(HeaderOps.CodingKeys.replace, r.sortedByKey())
        return o
    }
}

/// Response header operations (`headers.RespHeaderOps`): operations plus `require` and `deferred`.
public struct ResponseHeaderOpsJSON: Equatable {
    public var ops = HeaderOpsJSON()
    /// `require`: a response matcher (status codes, headers).
    public var require: JSONObject?
    public var deferred = false

    public init() {}

    public var isEmpty: Bool { ops.isEmpty && require == nil && !deferred }

    public var json: JSONObject {
        var o = ops.json
        o.put(ResponseHeaderOps.CodingKeys.require, require)
        o.put(ResponseHeaderOps.CodingKeys.deferred, deferred)
        return o
    }

    /// Adds `field` with value `nil` to the `require` matcher's headers (`?Field`: only when absent).
    package mutating func requireAbsent(_ field: String) {
        var r = require ?? JSONObject()
        var headers = r[ResponseMatcher.CodingKeys.headers]?.objectValue ?? JSONObject()
        headers[field] = .null
        r[ResponseMatcher.CodingKeys.headers] = .object(headers.sortedByKey())
        require = r
    }
}

/// Applies one Caddyfile header field to response operations (Caddy's `applyHeaderOp` with `RespHeaderOps`):
/// `-` and `>` defer the operation until the response is written, `?` sets only when absent.
public func applyResponseHeaderOp(
    _ resp: inout ResponseHeaderOpsJSON, field: String, value: String, replacement: String?
) throws {
    let (deferred, absent) = try applyHeaderOp(
        &resp.ops, isResponse: true, field: field, value: value, replacement: replacement)
    if deferred { resp.deferred = true }
    if let absent { resp.requireAbsent(absent) }
}

/// Applies one Caddyfile header field to request operations (Caddy's `CaddyfileHeaderOp`).
public func caddyfileHeaderOp(_ ops: inout HeaderOpsJSON, field: String, value: String, replacement: String?) throws {
    _ = try applyHeaderOp(&ops, isResponse: false, field: field, value: value, replacement: replacement)
}

private func applyHeaderOp(
    _ ops: inout HeaderOpsJSON, isResponse: Bool, field fieldIn: String, value: String,
    replacement: String?
) throws -> (deferred: Bool, requireAbsent: String?) {
    var field = fieldIn
    if field.hasPrefix("+") {
        ops.headerAdd(String(field.dropFirst()), value)
    } else if field.hasPrefix("-") {
        ops.delete.append(String(field.dropFirst()))
        return (isResponse, nil)
    } else if field.hasPrefix("?") {
        guard isResponse else {
            throw CaddyfileError(
                "\(field): the default header modifier ('?') can only be used on response headers; for conditional manipulation of request headers, use matchers"
            )
        }
        field.removeFirst()
        ops.headerSet(field, value)
        return (false, field)
    } else if let replacement {
        let deferred = field.hasPrefix(">") && isResponse
        while let f = field.first, "+-?>".contains(f) { field.removeFirst() }
        var r = JSONObject()
        r[HeaderReplacement.CodingKeys.searchRegexp] = .string(value)
        r.put(HeaderReplacement.CodingKeys.replace, replacement)
        if let i = ops.replace.firstIndex(where: { $0.0 == field }) {
            ops.replace[i].1.append(r)
        } else {
            ops.replace.append((field, [r]))
        }
        return (deferred, nil)
    } else if field.hasPrefix(">") {
        ops.headerSet(String(field.dropFirst()), value)
        return (isResponse, nil)
    } else {
        ops.headerSet(field, value)
    }
    return (false, nil)
}

/// A header operation written as arguments (`<field> [<value> [<replacement>]]`), as `header_up`, `header_down`
/// and `push`'s `headers` take it; errors are placed at the current token.
public func applyHeaderArgs(_ ops: inout HeaderOpsJSON, _ args: [String], _ d: Dispenser) throws {
    guard (1...3).contains(args.count) else { throw d.argErr() }
    do {
        try caddyfileHeaderOp(
            &ops, field: args[0], value: args.count > 1 ? args[1] : "",
            replacement: args.count > 2 ? args[2] : nil)
    } catch {
        throw d.err("\(error)")
    }
}
