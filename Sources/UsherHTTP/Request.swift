public import NIOCore
public import NIOHTTP1
public import UsherCore
public import UsherTLS

/// An HTTP request as handlers see it, whatever the protocol (HTTP/1.1 now; HTTP/2 and HTTP/3 map onto it).
///
/// Like Go's `*http.Request` in Caddy, it is shared by the handlers of one chain: a rewrite changes what later
/// handlers see. It also carries the request's context: variables, the placeholder replacer, the error being
/// handled. A request belongs to the task that serves it and is not `Sendable`.
public final class Request {
    // MARK: Request line and header

    public var method: HTTPMethod
    /// The request target as it should be forwarded (`/path?query`); rewrites change it.
    public var uri: String {
        rawQuery.isEmpty ? escapedPath : escapedPath + "?" + rawQuery
    }
    /// The decoded path (`/a b`).
    public var path: String {
        didSet { if path != oldValue { rawPathValue = nil } }
    }
    /// The query string without `?`, as received (still escaped).
    public var rawQuery: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    /// The `Host` header (or HTTP/2 `:authority`), possibly with a port.
    public var host: String
    /// `http` or `https`.
    public var scheme: String
    /// What the TLS handshake settled, for requests over TLS.
    public var tls: TLSConnectionInfo?
    /// The body; empty for requests without one.
    public var body: RequestBody
    /// The `:protocol` of an HTTP/2 extended CONNECT (RFC 8441), e.g. `websocket`; `nil` otherwise.
    public var connectProtocol: String?
    /// Trailer fields that followed the body (HTTP/2, HTTP/3); complete once the body has been read to its end.
    public internal(set) var trailers = HTTPHeaders()
    /// Objects handlers leave for handlers further down the chain, by type (Go's context values).
    private var attachments: [ObjectIdentifier: AnyObject] = [:]

    /// Leaves `value` for later handlers of this request (replacing one of the same type).
    public func attach<T: AnyObject>(_ value: T?, as type: T.Type = T.self) {
        attachments[ObjectIdentifier(type)] = value
    }

    /// What an earlier handler left with ``attach(_:as:)``.
    public func attached<T: AnyObject>(_ type: T.Type) -> T? {
        attachments[ObjectIdentifier(type)] as? T
    }

    /// The request line's target and method, to put back after a temporary rewrite.
    public struct TargetSnapshot {
        let method: HTTPMethod
        let path: String
        let rawQuery: String
        let rawPath: String?
    }

    public func saveTarget() -> TargetSnapshot {
        TargetSnapshot(method: method, path: path, rawQuery: rawQuery, rawPath: rawPathValue)
    }

    public func restoreTarget(_ t: TargetSnapshot) {
        method = t.method
        path = t.path
        rawQuery = t.rawQuery
        rawPathValue = t.rawPath
    }

    /// The path in escaped form when it differs from the canonical escaping of ``path`` (e.g. `%2F` kept).
    var rawPathValue: String?

    // MARK: Connection

    public let remoteAddress: SocketAddress?
    public let localAddress: SocketAddress?
    /// The server this request arrived on.
    public let server: ServerInfo

    // MARK: Context

    /// Variables (`http.vars.*`): set by the `vars` handler and matchers, read by placeholders and matchers.
    public var vars: [String: JSONValue] = [:]
    /// The error being handled, in a server's or subroute's `errors` routes.
    public var handlerError: HandlerError?
    private var resolvedClientIP: (ip: String, trusted: Bool)?
    /// The client's IP as determined from trusted proxies' headers, or the remote address (computed on first use).
    public var clientIP: String { resolveClientIP().ip }
    /// Whether the client address came through a trusted proxy (`trusted_proxies`).
    public var isFromTrustedProxy: Bool { resolveClientIP().trusted }

    private func resolveClientIP() -> (ip: String, trusted: Bool) {
        if let r = resolvedClientIP { return r }
        let r = server.clientIP.resolve(self)
        resolvedClientIP = r
        return r
    }
    /// Extra fields for this request's access log entry.
    public var extraLogFields: [LogField] = []
    /// When the request arrived (monotonic).
    public let startTime: NIODeadline
    /// When the request arrived (wall clock).
    public let startWallTime: WallTime
    /// The request as received, before any rewrite: for `{http.request.orig_*}` and access logs.
    public let original: OriginalRequest

    var routeGroups: Set<String> = []
    /// How many named routes are being invoked for this request, one inside another.
    public var invokeDepth = 0
    var hasBufferedBody = false
    /// The server's named routes, for `http.handlers.invoke`.
    public var namedRoutes: [String: any HTTPHandler] { server.namedRoutes }
    var uuid: String?
    /// The response writer at the top of the chain, for `{http.response.header.*}`.
    var topWriter: (any ResponseWriter)?

    private var replacerStorage: Replacer?

    /// The placeholder replacer for this request, with Caddy's `http.*` placeholders.
    public var replacer: Replacer {
        if let r = replacerStorage { return r }
        let r = Replacer()
        r.add(HTTPPlaceholderProvider(request: self))
        replacerStorage = r
        return r
    }

    /// Whether a replacer has been created (and so may hold explicit values).
    var hasReplacer: Bool { replacerStorage != nil }

    public init(
        method: HTTPMethod,
        target: RequestTarget,
        version: HTTPVersion,
        headers: HTTPHeaders,
        host: String,
        scheme: String,
        body: RequestBody,
        remoteAddress: SocketAddress?,
        localAddress: SocketAddress?,
        server: ServerInfo,
        startTime: NIODeadline = .now()
    ) {
        self.method = method
        self.path = target.path
        self.rawPathValue = target.rawPath
        self.rawQuery = target.rawQuery
        self.version = version
        self.headers = headers
        self.host = host
        self.scheme = scheme
        self.body = body
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.server = server
        self.startTime = startTime
        self.startWallTime = .now()
        self.original = OriginalRequest(
            method: method, uri: target.requestURI, path: target.path, rawQuery: target.rawQuery)
    }

    /// The path in escaped form.
    public var escapedPath: String {
        get { rawPathValue ?? URLEscaping.escapePath(path) }
        set {
            if let decoded = URLEscaping.unescape(newValue, mode: .path) {
                path = decoded
                rawPathValue = URLEscaping.escapePath(decoded) == newValue ? nil : newValue
            } else {
                path = newValue
                rawPathValue = nil
            }
        }
    }

    /// The query parsed into names and values, in order.
    public var queryItems: [(name: String, value: String)] { URLEscaping.parseQuery(rawQuery) }

    /// The first value of a query parameter.
    public func queryValue(_ name: String) -> String? { queryItems.first { $0.name == name }?.value }

    /// `HTTP/1.1`, `HTTP/2.0` or `HTTP/3.0`, as Go writes `r.Proto`.
    public var protocolString: String {
        switch version.major {
        case 2: return "HTTP/2.0"
        case 3: return "HTTP/3.0"
        default: return "HTTP/\(version.major).\(version.minor)"
        }
    }

    /// The host without a port.
    public var hostWithoutPort: String { splitHostPort(host).host }

    /// The remote IP as a string (no port).
    public var remoteHost: String {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; Go (and so Caddy) reports a.b.c.d.
        guard let ip = remoteAddress?.ipAddress else { return "" }
        return ip.hasPrefix("::ffff:") && ip.contains(".") ? String(ip.dropFirst(7)) : ip
    }
    public var remotePort: Int? { remoteAddress?.port }

    /// Sets a variable (`http.vars.<name>`).
    public func setVar(_ name: String, _ value: JSONValue) { vars[name] = value }

    /// Marks the request as belonging to a route group; returns false if the group already ran.
    func enterGroup(_ group: String) -> Bool { routeGroups.insert(group).inserted }
}

/// What a request was before handlers changed it.
public struct OriginalRequest: Sendable {
    public let method: HTTPMethod
    /// The request target as received.
    public let uri: String
    public let path: String
    public let rawQuery: String
}

/// Facts about the server a request came in on.
public final class ServerInfo: Sendable {
    /// The server's name in config (`srv0`).
    public let name: String
    let namedRoutes: [String: any HTTPHandler]
    let clientIP: ClientIPResolver
    /// The server's routes, for requests made inside the server (`httpInclude`).
    let primary: any HTTPHandler
    /// Whether the server trusts any proxies (`trusted_proxies`); when not, no request comes from one.
    public var hasTrustedProxies: Bool { clientIP.trustedProxies != nil }

    init(
        name: String, namedRoutes: [String: any HTTPHandler], clientIP: ClientIPResolver,
        primary: any HTTPHandler = EmptyHandler()
    ) {
        self.name = name
        self.namedRoutes = namedRoutes
        self.clientIP = clientIP
        self.primary = primary
    }

    /// Serves a request made inside the server (no connection, no access log) through its routes; a handler's
    /// error is thrown to the caller.
    public func serveVirtual(_ request: Request, _ writer: any ResponseWriter) async throws {
        try await primary.serve(request, writer)
    }
}

/// A parsed request target.
public struct RequestTarget: Sendable {
    public var requestURI: String
    public var path: String
    public var rawPath: String?
    public var rawQuery: String
    /// The authority of an absolute-form target (`http://host/...`).
    public var authority: String?

    /// Parses origin-form (`/p?q`), absolute-form (`http://h/p`), authority-form (CONNECT) and `*`.
    public init(parsing uri: String, method: HTTPMethod = .GET) throws {
        requestURI = uri
        authority = nil
        if method == .CONNECT && !uri.hasPrefix("/") {
            path = ""
            rawPath = nil
            rawQuery = ""
            authority = uri
            return
        }
        // The common case, a plain origin-form path with nothing to decode.
        if uri.utf8.first == UInt8(ascii: "/") {
            let bytes = uri.utf8
            if let q = bytes.firstIndex(of: UInt8(ascii: "?")) {
                let p = bytes[..<q]
                if !p.contains(UInt8(ascii: "#")) && URLEscaping.isCanonicalPath(p)
                    && !bytes[q...].contains(UInt8(ascii: "#"))
                {
                    path = String(Substring(p))
                    rawPath = nil
                    rawQuery = String(Substring(bytes[bytes.index(after: q)...]))
                    return
                }
            } else if URLEscaping.isCanonicalPath(bytes) {
                path = uri
                rawPath = nil
                rawQuery = ""
                return
            }
        }
        if uri == "*" {
            path = "*"
            rawPath = nil
            rawQuery = ""
            return
        }
        var rest = Substring(uri)
        if !rest.hasPrefix("/") {
            guard let schemeEnd = rest.firstRange(of: "://") else { throw RequestTargetError() }
            let scheme = rest[..<schemeEnd.lowerBound].lowercased()
            guard scheme == "http" || scheme == "https" else { throw RequestTargetError() }
            rest = rest[schemeEnd.upperBound...]
            let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
            authority = String(rest[..<slash])
            rest = rest[slash...]
        }
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let pathPart: Substring
        if let q = rest.firstIndex(of: "?") {
            pathPart = rest[..<q]
            rawQuery = String(rest[rest.index(after: q)...])
        } else {
            pathPart = rest
            rawQuery = ""
        }
        let rawPathString = String(pathPart)
        guard let decoded = URLEscaping.unescape(rawPathString, mode: .path) else { throw RequestTargetError() }
        path = decoded.isEmpty && authority != nil ? "/" : decoded
        rawPath = URLEscaping.escapePath(decoded) == rawPathString ? nil : rawPathString
    }
}

struct RequestTargetError: Error, CustomStringConvertible {
    var description: String { "malformed request target" }
}

extension SocketAddress {
    /// `ip:port` (`[v6]:port`) as Go's `RemoteAddr` reads, or the path of a unix socket.
    public var hostPortString: String {
        switch self {
        case .v4: return "\(ipAddress ?? ""):\(port ?? 0)"
        case .v6: return "[\(ipAddress ?? "")]:\(port ?? 0)"
        case .unixDomainSocket: return pathname ?? "@"
        }
    }
}
