import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.rewrite`: changes the request's method and URI before later handlers see it.
public struct RewriteHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.rewrite"

    /// `method`: the new method.
    public var method: String?
    /// `uri`: the new URI (path, query and fragment; placeholders allowed). A query given here replaces the old
    /// one; `{http.request.uri.query}` keeps it.
    public var uri: String?
    /// `strip_path_prefix`: removes a prefix from the path.
    public var stripPathPrefix: String?
    /// `strip_path_suffix`: removes a suffix from the path.
    public var stripPathSuffix: String?
    /// `uri_substring`: substring replacements in the path and query.
    public var uriSubstring: [SubstringReplacer]
    /// `path_regexp`: regular expression replacements in the path.
    public var pathRegexp: [RegexReplacer]
    /// `query`: query parameter operations.
    public var query: QueryOps?

    enum CodingKeys: String, CodingKey {
        case method, uri
        case stripPathPrefix = "strip_path_prefix", stripPathSuffix = "strip_path_suffix"
        case uriSubstring = "uri_substring", pathRegexp = "path_regexp", query
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        method = try c.decodeIfPresent(String.self, forKey: .method)
        uri = try c.decodeIfPresent(String.self, forKey: .uri)
        stripPathPrefix = try c.decodeIfPresent(String.self, forKey: .stripPathPrefix)
        stripPathSuffix = try c.decodeIfPresent(String.self, forKey: .stripPathSuffix)
        uriSubstring = try c.decodeIfPresent([SubstringReplacer].self, forKey: .uriSubstring) ?? []
        pathRegexp = try c.decodeIfPresent([RegexReplacer].self, forKey: .pathRegexp) ?? []
        query = try c.decodeIfPresent(QueryOps.self, forKey: .query)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        rewrite(request)
        try await next.serve(request, writer)
    }

    /// Applies the rewrite; returns whether the method or URI changed.
    @discardableResult
    public func rewrite(_ r: Request) -> Bool {
        let repl = r.replacer
        let oldMethod = r.method
        let oldURI = r.uri
        if let method, !method.isEmpty {
            r.method = HTTPMethod(rawValue: repl.replaceAll(method).uppercased())
        }
        if let uri, !uri.isEmpty { rewriteURI(uri, r) }
        if let prefix0 = stripPathPrefix, !prefix0.isEmpty {
            var prefix = repl.replaceAll(prefix0)
            if !prefix.hasPrefix("/") { prefix = "/" + prefix }
            let merge = !prefix.contains("//")
            changePath(r) { trimPathPrefix(PathMatching.cleanPath($0, collapseSlashes: merge), prefix) }
        }
        if let suffix0 = stripPathSuffix, !suffix0.isEmpty {
            let suffix = repl.replaceAll(suffix0)
            let merge = !suffix.contains("//")
            changePath(r) {
                String(
                    trimPathPrefix(
                        String(PathMatching.cleanPath($0, collapseSlashes: merge).reversed()), String(suffix.reversed())
                    ).reversed())
            }
        }
        for rep in uriSubstring { rep.apply(r) }
        for rep in pathRegexp { rep.apply(r) }
        query?.apply(r)
        return r.method != oldMethod || r.uri != oldURI
    }

    private func rewriteURI(_ uri: String, _ r: Request) {
        let repl = r.replacer
        let chars = Array(uri)
        var pathStart = -1, qsStart = -1, fragStart = -1, pathEnd = -1, qsEnd = -1
        loop: for (i, ch) in chars.enumerated() {
            if ch == "?" && qsStart < 0 {
                pathEnd = i
                qsStart = i + 1
            } else if ch == "#" && fragStart < 0 {
                if qsStart < 0 { pathEnd = i } else { qsEnd = i }
                fragStart = i + 1
                break loop
            } else if pathStart < 0 && qsStart < 0 {
                pathStart = i
            }
        }
        if pathStart >= 0 && pathEnd < 0 { pathEnd = chars.count }
        if qsStart >= 0 && qsEnd < 0 { qsEnd = chars.count }
        var path = pathStart > -1 ? String(chars[pathStart..<pathEnd]) : ""
        var query = qsStart > -1 ? String(chars[qsStart..<qsEnd]) : ""
        var newPath = ""
        if !path.isEmpty {
            path = path.replacingAll("{http.request.uri.path}", with: r.escapedPath)
            newPath = repl.replaceAll(path)
        }
        if let q = newPath.firstIndex(of: "?") {
            var injected = String(newPath[newPath.index(after: q)...])
            newPath = String(newPath[..<q])
            if query.isEmpty {
                injected = injected.replacingAll("{", with: "%7B").replacingAll("}", with: "%7D")
                query = injected
            }
        }
        let newQuery = query.isEmpty ? "" : buildQueryString(query, repl)
        if pathStart >= 0 {
            r.escapedPath = newPath
        }
        if qsStart >= 0 {
            r.rawQuery = newQuery
        }
    }

    /// Replaces placeholders in a query template, escaping their values (Caddy's `buildQueryString`).
    func buildQueryString(_ qs0: String, _ repl: Replacer) -> String {
        var qs = Substring(qs0)
        var out = ""
        var wroteVal = true
        while !qs.isEmpty {
            let nextEq = qs.firstIndex(of: "=")
            let nextAmp = qs.firstIndex(of: "&")
            let ampIsNext = nextAmp != nil && (nextEq == nil || nextAmp! < nextEq!)
            var end = qs.endIndex
            if ampIsNext {
                end = nextAmp!
            } else if let e = nextEq {
                end = e
            }
            let component = String(qs[..<end])
            let wasValue = wroteVal
            let replaced =
                (try? repl.replace(
                    component, empty: "", unknownAsEmpty: true, errorOnEmpty: false, errorOnUnknown: false
                ) { key, value in
                    if key == "http.request.uri.query" && wasValue { return value }
                    return URLEscaping.queryEscape(value ?? "")
                }) ?? component
            qs = end < qs.endIndex ? qs[qs.index(after: end)...] : qs[qs.endIndex...]
            if wroteVal {
                if !out.isEmpty && !replaced.isEmpty { out += "&" }
            } else {
                out += "="
            }
            out += replaced
            wroteVal = ampIsNext
        }
        return out
    }
}

/// Rewrites the escaped path with `transform`, then derives the decoded path (Caddy's `changePath`).
func changePath(_ r: Request, _ transform: (String) -> String) {
    r.escapedPath = transform(r.escapedPath)
}

/// Removes `prefix` from an escaped path, comparing case-insensitively and decoding `%xx` as it goes.
func trimPathPrefix(_ escapedPath: String, _ prefix: String) -> String {
    let p = Array(escapedPath.utf8)
    let x = Array(prefix.utf8)
    var iPath = 0, iPrefix = 0
    while iPath < p.count && iPrefix < x.count {
        var ch = [p[iPath]]
        if p[iPath] == UInt8(ascii: "%") && x[iPrefix] != UInt8(ascii: "%") && p.count >= iPath + 3 {
            guard let d = URLEscaping.unescape(String(decoding: p[iPath..<(iPath + 3)], as: UTF8.self), mode: .path)
            else {
                return escapedPath
            }
            ch = Array(d.utf8)
            iPath += 2
        }
        guard ch.count == 1, lower(ch[0]) == lower(x[iPrefix]) else { return escapedPath }
        iPath += 1
        iPrefix += 1
    }
    if iPrefix >= x.count { return String(decoding: p[iPath...], as: UTF8.self) }
    return escapedPath
}

private func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b + 32 : b }

/// `uri_substring`: replace `find` with `replace` in the path and query, at most `limit` times (0: all).
public struct SubstringReplacer: Decodable, Sendable {
    public var find: String
    public var replace: String
    public var limit: Int

    enum CodingKeys: String, CodingKey { case find, replace, limit }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        find = try c.decodeIfPresent(String.self, forKey: .find) ?? ""
        replace = try c.decodeIfPresent(String.self, forKey: .replace) ?? ""
        limit = try c.decodeIfPresent(Int.self, forKey: .limit) ?? 0
    }

    func apply(_ r: Request) {
        guard !find.isEmpty else { return }
        let repl = r.replacer
        let f = repl.replaceAll(find)
        let to = repl.replaceAll(replace)
        let lim = limit == 0 ? -1 : limit
        let merge = !find.contains("//")
        changePath(r) { PathMatching.cleanPath($0, collapseSlashes: merge).replacingAll(f, with: to, limit: lim) }
        r.rawQuery = r.rawQuery.replacingAll(f, with: to, limit: lim)
    }
}

/// `path_regexp`: replace matches of `find` in the path with `replace` (`$1` inserts groups).
public struct RegexReplacer: Decodable, Sendable {
    public var find: String
    public var replace: String
    let regex: CompiledRegex

    enum CodingKeys: String, CodingKey { case find, replace }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        find = try c.decodeIfPresent(String.self, forKey: .find) ?? ""
        replace = try c.decodeIfPresent(String.self, forKey: .replace) ?? ""
        guard !find.isEmpty else { throw c.error(.find, "path_regexp find cannot be empty") }
        do {
            regex = try CompiledRegex(find)
        } catch {
            throw c.error(.find, "compiling regular expression: \(error)")
        }
    }

    func apply(_ r: Request) {
        let to = r.replacer.replaceAll(replace)
        changePath(r) { regex.replaceAll(in: $0, with: to) }
    }
}

/// `query`: operations on query parameters, applied in the order rename, set, add, replace, delete.
public struct QueryOps: Decodable, Sendable {
    public struct KeyValue: Decodable, Sendable {
        public var key: String
        public var val: String
        enum CodingKeys: String, CodingKey { case key, val }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
            val = try c.decodeIfPresent(String.self, forKey: .val) ?? ""
        }
    }

    public struct Replacement: Decodable, Sendable {
        public var key: String
        public var search: String
        public var searchRegexp: String?
        public var replace: String
        let regex: CompiledRegex?
        enum CodingKeys: String, CodingKey { case key, search, searchRegexp = "search_regexp", replace }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            key = try c.decodeIfPresent(String.self, forKey: .key) ?? ""
            search = try c.decodeIfPresent(String.self, forKey: .search) ?? ""
            searchRegexp = try c.decodeIfPresent(String.self, forKey: .searchRegexp)
            replace = try c.decodeIfPresent(String.self, forKey: .replace) ?? ""
            if let r = searchRegexp, !r.isEmpty {
                do {
                    regex = try CompiledRegex(r)
                } catch {
                    throw c.error(
                        .searchRegexp, "compiling regular expression \(r) in query rewrite replace operation: \(error)")
                }
            } else {
                regex = nil
            }
        }
    }

    public var rename: [KeyValue]
    public var set: [KeyValue]
    public var add: [KeyValue]
    public var replace: [Replacement]
    public var delete: [String]

    enum CodingKeys: String, CodingKey { case rename, set, add, replace, delete }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rename = try c.decodeIfPresent([KeyValue].self, forKey: .rename) ?? []
        set = try c.decodeIfPresent([KeyValue].self, forKey: .set) ?? []
        add = try c.decodeIfPresent([KeyValue].self, forKey: .add) ?? []
        replace = try c.decodeIfPresent([Replacement].self, forKey: .replace) ?? []
        delete = try c.decodeIfPresent([String].self, forKey: .delete) ?? []
    }

    func apply(_ r: Request) {
        let repl = r.replacer
        var items = r.queryItems
        for op in rename {
            let key = repl.replaceAll(op.key), val = repl.replaceAll(op.val)
            guard !key.isEmpty, !val.isEmpty, key != val, items.contains(where: { $0.name == key }) else { continue }
            let moved = items.filter { $0.name == key }.map { (name: val, value: $0.value) }
            items.removeAll { $0.name == key || $0.name == val }
            items += moved
        }
        for op in set {
            let key = repl.replaceAll(op.key)
            guard !key.isEmpty else { continue }
            items.removeAll { $0.name == key }
            items.append((key, repl.replaceAll(op.val)))
        }
        for op in add {
            let key = repl.replaceAll(op.key)
            guard !key.isEmpty else { continue }
            items.append((key, repl.replaceAll(op.val)))
        }
        for op in replace {
            let key = repl.replaceAll(op.key)
            let search = repl.replaceKnown(op.search)
            let to = repl.replaceKnown(op.replace)
            for i in items.indices where key == "*" || items[i].name == key {
                if let re = op.regex {
                    items[i].value = re.replaceAll(in: items[i].value, with: to)
                } else if !search.isEmpty {
                    items[i].value = items[i].value.replacingAll(search, with: to)
                }
            }
        }
        for d in delete {
            let key = repl.replaceAll(d)
            if !key.isEmpty { items.removeAll { $0.name == key } }
        }
        r.rawQuery = URLEscaping.encodeQuery(items)
    }
}
