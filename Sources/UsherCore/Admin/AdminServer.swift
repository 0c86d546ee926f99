import CUsherSystem
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The admin API's HTTP server: `/load`, `/adapt`, `/config/`, `/id/`, `/stop` and bundle endpoints, guarded by
/// Caddy's Host and Origin checks against DNS rebinding.
final class AdminServer: Sendable {
    private let settings: Mutex<(config: AdminConfig, policy: AdminPolicy)>
    let channel: any Channel
    let boundAddress: String
    let unixPath: String?

    private init(
        config: AdminConfig, policy: AdminPolicy, channel: any Channel, boundAddress: String, unixPath: String?
    ) {
        self.settings = Mutex((config: config, policy: policy))
        self.channel = channel
        self.boundAddress = boundAddress
        self.unixPath = unixPath
    }

    var config: AdminConfig { settings.withLock { $0.config } }
    var policy: AdminPolicy { settings.withLock { $0.policy } }

    /// Applies a new config that keeps the listen address (origins, enforcement).
    func update(_ config: AdminConfig) {
        guard let address = try? NetworkAddress(parsing: config.listen, defaultPort: 2019) else { return }
        settings.withLock { $0 = (config, AdminPolicy(config: config, address: address)) }
    }

    /// Binds the admin endpoint for `config`.
    static func start(
        config: AdminConfig,
        runtime: ServerRuntime,
        environment: RuntimeEnvironment,
        endpoints: [any AdminEndpoint]
    ) async throws -> AdminServer {
        let address = try NetworkAddress(parsing: config.listen, defaultPort: 2019)
        let logger = environment.logRouter.logger("admin.api")
        let router = AdminRouter(runtime: runtime, endpoints: endpoints, registry: environment.registry, logger: logger)
        let box = AdminServerBox()
        let bootstrap = ServerBootstrap(group: environment.eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(router: router, server: box))
                }
            }
        let channel: any Channel
        var unixPath: String?
        if address.isUnixNetwork {
            let (path, mode) = try NetworkAddress.splitUnixPermissions(address.host)
            unlink(path)
            channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            chmod(path, mode_t(mode))
            unixPath = path
        } else {
            let host = address.host.isEmpty ? "0.0.0.0" : address.host
            channel = try await bootstrap.bind(host: host, port: address.startPort).get()
        }
        let bound = channel.localAddress.map { "\($0)" } ?? config.listen
        logger.info(
            "admin endpoint started",
            metadata: ["address": "\(config.listen)", "enforce_origin": "\(config.enforceOrigin)"])
        let server = AdminServer(
            config: config, policy: AdminPolicy(config: config, address: address), channel: channel,
            boundAddress: bound, unixPath: unixPath)
        box.server.withLock { $0 = server }
        return server
    }

    func stop() async {
        try? await channel.close()
        if let unixPath { unlink(unixPath) }
    }
}

/// Lets connection handlers reach their server, which exists only once the listener is bound.
final class AdminServerBox: Sendable {
    let server = Mutex<AdminServer?>(nil)
    var policy: AdminPolicy? { server.withLock { $0?.policy } }
}

/// The Host/Origin rules of one admin config.
struct AdminPolicy: Sendable {
    let enforceHost: Bool
    let enforceOrigin: Bool
    /// Allowed origins as (scheme or empty, host[:port]).
    let allowed: [(scheme: String, host: String)]

    init(config: AdminConfig, address: NetworkAddress) {
        enforceHost = !address.isWildcardInterface && !address.isUnixNetwork && !address.isFDNetwork
        enforceOrigin = config.enforceOrigin
        var origins = Set(config.origins ?? [])
        if config.origins == nil && !address.isUnixNetwork && !address.isFDNetwork {
            if address.isLoopback {
                origins.insert("localhost:\(address.startPort)")
                origins.insert("[::1]:\(address.startPort)")
                origins.insert("127.0.0.1:\(address.startPort)")
            } else {
                origins.insert(address.joinHostPort())
            }
        }
        allowed = origins.map { o in
            if let r = o.firstRange(of: "://") {
                let scheme = String(o[..<r.lowerBound])
                var host = String(o[r.upperBound...])
                if let slash = host.firstIndex(of: "/") { host = String(host[..<slash]) }
                return (scheme, host)
            }
            return ("", o)
        }
    }

    /// `nil` when allowed; otherwise the error to answer with.
    func check(_ req: AdminRequest) -> (AdminError?, allowOrigin: String?) {
        if (req.header("Upgrade") ?? "").contains("websocket") {
            return (AdminError(400, "websocket connections aren't allowed"), nil)
        }
        if (req.header("Sec-Fetch-Mode") ?? "").contains("no-cors") {
            return (
                AdminError(400, "client attempted to make request by disabling same-origin policy using no-cors mode"),
                nil
            )
        }
        if req.header("Origin") == "null" { return (AdminError(400, "invalid origin 'null'"), nil) }
        if enforceHost {
            let host = req.header("Host") ?? ""
            guard allowed.contains(where: { $0.host == host }) else {
                return (AdminError(403, "host not allowed: \(host)"), nil)
            }
        }
        let hasOrigin = req.header("Origin") != nil
        let hasSec = req.header("Sec-Fetch-Mode") != nil
        guard enforceOrigin || hasOrigin || hasSec else { return (nil, nil) }
        let originText = req.header("Origin") ?? req.header("Referer") ?? ""
        guard let r = originText.firstRange(of: "://") else {
            return (AdminError(403, "required Origin header is missing or invalid"), nil)
        }
        let scheme = String(originText[..<r.lowerBound])
        var host = String(originText[r.upperBound...])
        if let slash = host.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { host = String(host[..<slash]) }
        let ok = allowed.contains { a in (a.scheme.isEmpty || a.scheme == scheme) && a.host == host }
        guard ok else { return (AdminError(403, "client is not allowed to access from origin '\(originText)'"), nil) }
        return (nil, "\(scheme)://\(host)")
    }
}

/// Dispatches admin requests to the config API and bundle endpoints.
struct AdminRouter: Sendable {
    let runtime: ServerRuntime
    let endpoints: [any AdminEndpoint]
    let registry: ModuleRegistry
    let logger: Logger

    func handle(_ req: AdminRequest) async -> (AdminResponse, stopAfter: Bool) {
        let result: (AdminResponse, stopAfter: Bool)
        do {
            result = try await route(req)
        } catch let e as AdminError {
            result = (errorResponse(e.status, e.message), false)
        } catch {
            result = (errorResponse(400, error.usherDescription), false)
        }
        if let (handler, pattern) = metricsLabels(req.path) {
            UsherMetrics.recordAdminRequest(
                handler: handler, path: pattern, method: req.method, status: result.0.status)
        }
        return result
    }

    /// The route a path belongs to, as Caddy labels admin metrics: `admin` and the pattern for the config API,
    /// the endpoint's first path segment and its path for bundle endpoints. `nil` for paths no route serves, so
    /// arbitrary paths cannot grow the series count.
    func metricsLabels(_ path: String) -> (handler: String, pattern: String)? {
        if path == "/config" || path.hasPrefix("/config/") { return ("admin", "/config/") }
        if path.hasPrefix("/id/") { return ("admin", "/id/") }
        switch path {
        case "/load", "/adapt", "/stop": return ("admin", path)
        case "/metrics": return ("metrics", "/metrics")
        default:
            guard let e = endpoints.first(where: { path == $0.path || path.hasPrefix($0.path + "/") }) else {
                return nil
            }
            let handler = e.path.split(separator: "/").first.map(String.init) ?? "admin"
            return (handler, e.path)
        }
    }

    func errorResponse(_ status: Int, _ message: String) -> AdminResponse {
        logger.error("request error", metadata: ["error": "\(message)", "status_code": "\(status)"])
        return .json(["error": .string(message)], status: status)
    }

    func route(_ req: AdminRequest) async throws -> (AdminResponse, stopAfter: Bool) {
        let path = req.path
        if path == "/config" || path.hasPrefix("/config/") {
            return (try await config(req, path: path), false)
        }
        if path.hasPrefix("/id/") {
            let configPath = try await runtime.pathForID(String(path.dropFirst(4)))
            return (try await config(req, path: configPath), false)
        }
        switch path {
        case "/load":
            guard req.method == "POST" else { throw AdminError(405, "method not allowed") }
            var json = try adapt(req)
            if json.config.isNull && req.body.isEmpty { json.config = .null }
            let force = (req.header("Cache-Control") ?? "").contains("must-revalidate")
            try await runtime.load(json.config, force: force)
            logger.info("load complete")
            return (AdminResponse(status: 200), false)
        case "/adapt":
            guard req.method == "POST" else { throw AdminError(405, "method not allowed") }
            let result = try adapt(req)
            var out = JSONObject()
            if !result.warnings.isEmpty { out["warnings"] = .array(result.warnings.map(\.json)) }
            out["result"] = result.config
            return (.json(.object(out)), false)
        case "/metrics":
            guard req.method == "GET" || req.method == "HEAD" else { throw AdminError(405, "method not allowed") }
            return (
                AdminResponse(
                    status: 200, headers: [("Content-Type", UsherMetrics.contentType)],
                    body: UsherMetrics.exposition()), false
            )
        case "/stop":
            guard req.method == "POST" else { throw AdminError(405, "method not allowed") }
            logger.info("stopping now, bye!! 👋")
            return (AdminResponse(status: 200), true)
        default:
            for e in endpoints where path == e.path || path.hasPrefix(e.path + "/") {
                return (try await e.handle(req, runtime: runtime), false)
            }
            throw AdminError(404, "resource not found")
        }
    }

    func adapt(_ req: AdminRequest) throws -> ConfigAdaptation {
        if let adapter = try registry.adapter(forContentType: req.header("Content-Type") ?? "") {
            do {
                return try adapter.adapt(req.body, filename: "", registry: registry)
            } catch {
                throw AdminError(400, "adapting config using \(adapter.name) adapter: \(error.usherDescription)")
            }
        }
        if req.body.isEmpty { return ConfigAdaptation(config: .null) }
        do {
            return ConfigAdaptation(config: try JSONValue.parse(req.body))
        } catch {
            throw AdminError(400, "decoding request body: \(error)")
        }
    }

    func config(_ req: AdminRequest, path: String) async throws -> AdminResponse {
        let method: ConfigTraversal.Method
        switch req.method {
        case "GET": method = .get
        case "POST": method = .post
        case "PUT": method = .put
        case "PATCH": method = .patch
        case "DELETE": method = .delete
        default: throw AdminError(405, "method not allowed")
        }
        var body: JSONValue?
        if method != .get && method != .delete {
            body = try adapt(req).config
        }
        if method == .get {
            let value = try await runtime.configAccess(method: .get, path: path, body: nil) ?? .null
            let etag = "\"\(path) \(ConfigTraversal.hash(value))\""
            return .json(value, headers: [("Etag", etag)])
        }
        let force = (req.header("Cache-Control") ?? "").contains("must-revalidate")
        _ = try await runtime.configAccess(
            method: method, path: path, body: body, ifMatch: req.header("If-Match"), force: force)
        return AdminResponse(status: 200)
    }
}

/// Reads one admin request at a time, answers it, and stops the process after `/stop`.
final class AdminHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let router: AdminRouter
    let server: AdminServerBox
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    /// The largest request body the admin API reads (a config for `/load`, `/adapt` or `/config/`): 16 MiB, room
    /// for tens of thousands of sites; larger bodies get 413 before they are read.
    static let maxBody = 16 * 1024 * 1024
    /// Bodies past this size are followed by `malloc_trim`, so the memory their parse took goes back to the system.
    static let trimAfter = 1024 * 1024
    private var refused = false

    init(router: AdminRouter, server: AdminServerBox) {
        self.router = router
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            if let length = h.headers.first(name: "Content-Length").flatMap({ Int($0) }) {
                if length > Self.maxBody {
                    refuseTooLarge(context: context)
                    return
                }
                body.reserveCapacity(length)
            }
        case .body(let buf):
            guard !refused else { return }
            if body.count + buf.readableBytes > Self.maxBody {
                refuseTooLarge(context: context)
                return
            }
            buf.withUnsafeReadableBytes { body.append(contentsOf: $0) }
        case .end:
            guard let h = head, !refused else { return }
            head = nil
            let (path, query) = splitTarget(h.uri)
            let req = AdminRequest(
                method: h.method.rawValue, path: path, query: query,
                headers: h.headers.map { (name: $0.name, value: $0.value) }, body: body
            )
            body = []
            let keepAlive = h.isKeepAlive
            let trim = req.body.count >= Self.trimAfter
            guard let policy = server.policy else {
                respond(context: context, AdminResponse(status: 503), keepAlive: false)
                return
            }
            let (denied, allowOrigin) = policy.check(req)
            if let denied {
                respond(context: context, router.errorResponse(denied.status, denied.message), keepAlive: keepAlive)
                return
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let router = self.router
            let isOptions = h.method == .OPTIONS
            Task {
                let (handled, stopAfter) = await router.handle(req)
                var response = handled
                if let allowOrigin {
                    if isOptions {
                        response.headers.append(
                            ("Access-Control-Allow-Methods", "OPTIONS, GET, POST, PUT, PATCH, DELETE"))
                        response.headers.append(
                            ("Access-Control-Allow-Headers", "Content-Type, Content-Length, Cache-Control"))
                        response.headers.append(("Access-Control-Allow-Credentials", "true"))
                    }
                    response.headers.append(("Access-Control-Allow-Origin", allowOrigin))
                }
                let finalResponse = response
                // A large config's parse leaves the heap grown by many times the body; give it back.
                if trim { c_usher_release_free_memory() }
                let done = loopBound.eventLoop.submit {
                    let (handler, ctx) = loopBound.value
                    handler.respond(context: ctx, finalResponse, keepAlive: keepAlive && !stopAfter)
                }
                if stopAfter {
                    _ = try? await done.get()
                    await router.runtime.stop()
                }
            }
        }
    }

    private func refuseTooLarge(context: ChannelHandlerContext) {
        head = nil
        body = []
        refused = true
        respond(
            context: context, router.errorResponse(413, "request body larger than \(Self.maxBody) bytes"),
            keepAlive: false)
    }

    func respond(context: ChannelHandlerContext, _ response: AdminResponse, keepAlive: Bool) {
        var headers = HTTPHeaders()
        for (n, v) in response.headers { headers.add(name: n, value: v) }
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !response.body.isEmpty {
            var buf = context.channel.allocator.buffer(capacity: response.body.count)
            buf.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        }
        let f = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            f.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

func splitTarget(_ uri: String) -> (String, String) {
    guard let q = uri.firstIndex(of: "?") else { return (uri, "") }
    return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
}
