import NIOCore
import NIOHTTP1

@testable import UsherCore
@testable import UsherHTTP

/// A root writer that records the response in memory.
final class RecordingWriter: ResponseWriter, Flushing {
    var headers = HTTPHeaders()
    var status: HTTPResponseStatus?
    var interim: [HTTPResponseStatus] = []
    var body = ByteBuffer()
    var flushes = 0
    var wrapped: (any ResponseWriter)? { nil }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        if status.code < 200 { interim.append(status); return }
        if self.status == nil { self.status = status }
    }

    func write(_ buffer: ByteBuffer) async throws {
        if status == nil { status = .ok }
        var b = buffer
        body.writeBuffer(&b)
    }

    func flush() async throws { flushes += 1 }

    var bodyString: String { String(buffer: body) }
}

/// Builds a request as the HTTP/1 connection would.
func makeRequest(
    _ method: HTTPMethod = .GET, _ uri: String, host: String = "example.com", headers: [(String, String)] = [],
    body: [ByteBuffer]? = nil
) throws -> Request {
    var h = HTTPHeaders()
    h.add(name: "Host", value: host)
    for (n, v) in headers { h.add(name: n, value: v) }
    let server = ServerInfo(
        name: "test", namedRoutes: [:],
        clientIP: ClientIPResolver(trustedProxies: nil, headers: ["X-Forwarded-For"], strict: false, trustUnix: false))
    return Request(
        method: method, target: try RequestTarget(parsing: uri, method: method), version: .http1_1, headers: h,
        host: host, scheme: "http", body: body.map { RequestBody(buffers: $0) } ?? .empty,
        remoteAddress: try SocketAddress(ipAddress: "192.0.2.7", port: 4321), localAddress: nil, server: server)
}

/// Decodes and provisions a route list from JSON with the standard modules, ready to serve.
func compileRoutes(_ json: String) async throws -> any HTTPHandler {
    let registry = try ModuleRegistry(bundles: [CoreModules.self, TestStandard.self])
    var routes = try ConfigDecoder(registry: registry).decode(
        RouteList.self, from: try JSONValue.parse(json), path: [AnyCodingKey("routes")])
    let env = RuntimeEnvironment(registry: registry, eventLoopGroup: MultiThreadedEventLoopGroupHolder.group)
    let ctx = ProvisionContext(environment: env, mode: .validate, generation: 1, apps: [])
    try await routes.provision(ctx)
    return routes.compile(next: EmptyHandler())
}
