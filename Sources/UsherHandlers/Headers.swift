import NIOCore
public import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// A header value replacement: a substring or a regular expression, and its replacement.
public struct HeaderReplacement: Decodable, Sendable {
    /// `search`: a substring to replace.
    public var search: String?
    /// `search_regexp`: a regular expression to replace (`$1` etc. in `replace`).
    public var searchRegexp: String?
    /// `replace`: the replacement.
    public var replace: String
    let compiled: CompiledRegex?

    package enum CodingKeys: String, CodingKey { case search, searchRegexp = "search_regexp", replace }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        search = try c.decodeIfPresent(String.self, forKey: .search)
        searchRegexp = try c.decodeIfPresent(String.self, forKey: .searchRegexp)
        replace = try c.decodeIfPresent(String.self, forKey: .replace) ?? ""
        if let s = search, !s.isEmpty, let r = searchRegexp, !r.isEmpty {
            throw decoder.configError("cannot specify both a substring search and a regular expression search")
        }
        if let r = searchRegexp, !r.isEmpty, !Self.hasPlaceholder(r) {
            do {
                compiled = try CompiledRegex(r)
            } catch {
                throw c.error(.searchRegexp, "\(error)")
            }
        } else {
            compiled = nil
        }
    }

    static func hasPlaceholder(_ s: String) -> Bool {
        guard let open = s.firstIndex(of: "{") else { return false }
        guard let close = s[open...].firstIndex(of: "}") else { return false }
        return s.index(after: open) < close
    }

    func apply(_ value: String, _ repl: Replacer) -> String {
        let replacement = repl.replaceKnown(replace)
        if let compiled { return compiled.replaceAll(in: value, with: replacement) }
        if let r = searchRegexp, !r.isEmpty {
            guard let re = try? CompiledRegex(repl.replaceKnown(r)) else { return value }
            return re.replaceAll(in: value, with: replacement)
        }
        let s = repl.replaceKnown(search ?? "")
        guard !s.isEmpty else { return value }
        return value.replacingAll(s, with: replacement)
    }
}

/// Header manipulations (Caddy's `HeaderOps`): `add`, `set`, `delete` (with `*` wildcards), `replace`.
public struct HeaderOps: Decodable, Sendable {
    public var add: [(name: String, values: [String])]
    public var set: [(name: String, values: [String])]
    public var delete: [String]
    public var replace: [(name: String, replacements: [HeaderReplacement])]

    package enum CodingKeys: String, CodingKey { case add, set, delete, replace }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(c, add: .add, set: .set, delete: .delete, replace: .replace)
    }

    /// Decodes the operations from a container that has other members too (response ops).
    init<K: CodingKey>(
        _ c: KeyedDecodingContainer<K>, add addKey: K, set setKey: K, delete deleteKey: K, replace replaceKey: K
    ) throws {
        func fields(_ key: K) throws -> [(name: String, values: [String])] {
            let d = try c.decodeIfPresent([String: [String]].self, forKey: key) ?? [:]
            return d.keys.sorted().map { (name: $0, values: d[$0]!) }
        }
        add = try fields(addKey)
        set = try fields(setKey)
        delete = try c.decodeIfPresent([String].self, forKey: deleteKey) ?? []
        let rep = try c.decodeIfPresent([String: [HeaderReplacement]].self, forKey: replaceKey) ?? [:]
        replace = rep.keys.sorted().map { (name: $0, replacements: rep[$0]!) }
    }

    public var isEmpty: Bool { add.isEmpty && set.isEmpty && delete.isEmpty && replace.isEmpty }

    /// Applies the operations to `headers` in Caddy's order: delete-all, add, set, delete, replace.
    public func apply(to headers: inout HTTPHeaders, _ repl: Replacer) {
        for name in delete where repl.replaceKnown(name) == "*" { headers = HTTPHeaders() }
        for (name, values) in add {
            let field = canonicalHeaderName(repl.replaceKnown(name))
            for v in values { headers.add(name: field, value: repl.replaceKnown(v)) }
        }
        for (name, values) in set {
            let field = canonicalHeaderName(repl.replaceKnown(name))
            headers.remove(name: field)
            headers.add(name: field, value: values.map { repl.replaceKnown($0) }.joined(separator: ","))
        }
        for name in delete {
            let field = repl.replaceKnown(name).lowercased()
            if field == "*" { continue }
            let names = Set(headers.map { $0.name })
            if field.count >= 2 && field.hasPrefix("*") && field.hasSuffix("*") {
                let mid = String(field.dropFirst().dropLast())
                for n in names where n.lowercased().contains(mid) { headers.remove(name: n) }
            } else if field.hasPrefix("*") {
                let suffix = String(field.dropFirst())
                for n in names where n.lowercased().hasSuffix(suffix) { headers.remove(name: n) }
            } else if field.hasSuffix("*") {
                let prefix = String(field.dropLast())
                for n in names where n.lowercased().hasPrefix(prefix) { headers.remove(name: n) }
            } else {
                headers.remove(name: field)
            }
        }
        for (name, replacements) in replace {
            let field = repl.replaceKnown(name)
            var updated = HTTPHeaders()
            for (n, v) in headers {
                var value = v
                if field == "*" || n.lowercased() == field.lowercased() {
                    for r in replacements { value = r.apply(value, repl) }
                }
                updated.add(name: n, value: value)
            }
            headers = updated
        }
    }

    /// Applies the operations to a request's headers, where `Host` means the request's host.
    public func apply(to request: Request) {
        var h = request.headers
        let hadHost = h.contains(name: "Host")
        let original = h["Host"]
        h.add(name: "Host", value: request.host)
        apply(to: &h, request.replacer)
        request.host = h["Host"].last ?? ""
        h.remove(name: "Host")
        if hadHost { for v in original { h.add(name: "Host", value: v) } }
        request.headers = h
    }
}

/// `http.handlers.headers`: changes request headers now and response headers before they are written.
public struct HeadersHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.headers"

    /// `request`: operations on the request's headers.
    public var request: HeaderOps?
    /// `response`: operations on the response's headers, with `require` and `deferred`.
    public var response: ResponseHeaderOps?

    enum CodingKeys: String, CodingKey { case request, response }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        request = try c.decodeIfPresent(HeaderOps.self, forKey: .request)
        response = try c.decodeIfPresent(ResponseHeaderOps.self, forKey: .response)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        self.request?.apply(to: request)
        guard let response else { return try await next.serve(request, writer) }
        if response.deferred || response.require != nil {
            let wrapper = HeaderOpsWriter(
                writer, ops: response.ops, require: response.require, replacer: request.replacer)
            return try await next.serve(request, wrapper)
        }
        if let ops = response.ops {
            // Work on a copy: placeholders in the ops may read the response headers themselves.
            var h = writer.headers
            ops.apply(to: &h, request.replacer)
            writer.headers = h
        }
        try await next.serve(request, writer)
    }
}

/// Response header operations, with the conditions under which they apply.
public struct ResponseHeaderOps: Decodable, Sendable {
    public var ops: HeaderOps?
    /// `require`: apply only to responses that match.
    public var require: ResponseMatcher?
    /// `deferred`: apply when the response head is written rather than now.
    public var deferred: Bool

    package enum CodingKeys: String, CodingKey { case add, set, delete, replace, require, deferred }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let anyOps = c.contains(.add) || c.contains(.set) || c.contains(.delete) || c.contains(.replace)
        ops = anyOps ? try HeaderOps(c, add: .add, set: .set, delete: .delete, replace: .replace) : nil
        require = try c.decodeIfPresent(ResponseMatcher.self, forKey: .require)
        deferred = try c.decodeIfPresent(Bool.self, forKey: .deferred) ?? false
    }
}

/// Applies header operations when the head is written, if the response matches.
final class HeaderOpsWriter: WrappingResponseWriter {
    let wrappedWriter: any ResponseWriter
    let ops: HeaderOps?
    let require: ResponseMatcher?
    let replacer: Replacer
    var applied = false

    init(_ wrapped: any ResponseWriter, ops: HeaderOps?, require: ResponseMatcher?, replacer: Replacer) {
        self.wrappedWriter = wrapped
        self.ops = ops
        self.require = require
        self.replacer = replacer
    }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        if !applied {
            if status.code < 100 || status.code > 199 { applied = true }
            if require?.matches(status: Int(status.code), headers: wrappedWriter.headers) ?? true, let ops {
                var h = wrappedWriter.headers
                ops.apply(to: &h, replacer)
                wrappedWriter.headers = h
            }
        }
        try await wrappedWriter.writeHead(status)
    }

    func write(_ buffer: ByteBuffer) async throws {
        if !applied { try await writeHead(.ok) }
        try await wrappedWriter.write(buffer)
    }
}
