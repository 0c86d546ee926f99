import Foundation
public import NIOCore
public import NIOHTTP1
import NIOPosix
public import NIOSSL

/// An HTTP response as the ACME client needs it: status, headers and a bounded body.
public struct ACMEHTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// Every value of header `name`, in order.
    public func headers(_ name: String) -> [String] {
        headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
    }
}

/// A small HTTPS client for ACME: one connection per request (ACME exchanges a handful of requests per
/// certificate), every request bounded in time and in response size, trust from the system or from given roots.
public final class ACMEHTTPClient: Sendable {
    let group: any EventLoopGroup
    let tls: NIOSSLContext
    /// The most any one request may take, connect to last byte.
    public let timeout: TimeAmount
    /// Responses larger than this fail (certificate chains are a few KB).
    static let maxBody = 4 << 20
    static let userAgent = "Usher ACME client (+https://github.com/usher)"

    /// `trustedRoots`: the roots the CA's certificate must chain to; `nil` for the system's.
    public init(group: any EventLoopGroup, trustedRoots: [NIOSSLCertificate]?, timeout: TimeAmount = .seconds(30))
        throws
    {
        var config = TLSConfiguration.makeClientConfiguration()
        if let trustedRoots { config.trustRoots = .certificates(trustedRoots) }
        config.applicationProtocols = ["http/1.1"]
        self.tls = try NIOSSLContext(configuration: config)
        self.group = group
        self.timeout = timeout
    }

    /// A client with a TLS configuration of the caller's (client certificates, roots), e.g. for config loaders.
    public init(group: any EventLoopGroup, tlsConfiguration: TLSConfiguration, timeout: TimeAmount) throws {
        var config = tlsConfiguration
        config.applicationProtocols = ["http/1.1"]
        self.tls = try NIOSSLContext(configuration: config)
        self.group = group
        self.timeout = timeout
    }

    /// Sends one request and reads the whole response.
    /// `hostHeader` replaces the URL's host in `Host` (to ask an address for a name, as validators do); `headers`
    /// are added as given (a `User-Agent` or `Accept` among them replaces the default).
    public func request(
        _ method: HTTPMethod, _ urlString: String, body: [UInt8]? = nil, contentType: String? = nil,
        hostHeader: String? = nil, headers: [(name: String, value: String)] = []
    ) async throws -> ACMEHTTPResponse {
        guard let url = URLComponents(string: urlString), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty
        else { throw ACMEError.badURL(urlString) }
        let https = scheme == "https"
        let port = url.port ?? (https ? 443 : 80)
        var target = url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath
        if let q = url.percentEncodedQuery { target += "?" + q }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        let loop = group.next()
        let promise = loop.makePromise(of: ACMEHTTPResponse.self)
        let tls = self.tls
        let isIP = bareHost.contains(":") || bareHost.allSatisfy { $0.isNumber || $0 == "." }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if https {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: tls, serverHostname: isIP ? nil : bareHost))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    }
                }
                .connect(host: bareHost, port: port).get()
        } catch {
            promise.fail(error)
            throw ACMEError.transport("connecting to \(host):\(port): \(error)")
        }
        let deadline = loop.scheduleTask(in: timeout) {
            promise.fail(ACMEError.transport("\(method) \(urlString): no complete response within \(self.timeout)"))
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target)
        head.headers.add(name: "Host", value: hostHeader ?? url.port.map { "\(host):\($0)" } ?? host)
        if !headers.contains(where: { $0.name.lowercased() == "user-agent" }) {
            head.headers.add(name: "User-Agent", value: Self.userAgent)
        }
        if !headers.contains(where: { $0.name.lowercased() == "accept" }) {
            head.headers.add(name: "Accept", value: "*/*")
        }
        for h in headers { head.headers.add(name: h.name, value: h.value) }
        head.headers.add(name: "Connection", value: "close")
        if let body {
            head.headers.add(name: "Content-Length", value: String(body.count))
            if let contentType { head.headers.add(name: "Content-Type", value: contentType) }
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, !body.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        do {
            return try await promise.futureResult.get()
        } catch let e as ACMEError {
            throw e
        } catch {
            throw ACMEError.transport("\(method) \(urlString): \(error)")
        }
    }
}

/// Collects one response and completes the promise with it (or with why there is none). The deadline may have
/// failed the promise already; NIO ignores a second completion, and `done` stops reading after the first.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<ACMEHTTPResponse>
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var done = false

    init(promise: EventLoopPromise<ACMEHTTPResponse>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body(var b):
            if body.count + b.readableBytes > ACMEHTTPClient.maxBody {
                finish(.failure(ACMEError.transport("response larger than \(ACMEHTTPClient.maxBody) bytes")))
                context.close(promise: nil)
                return
            }
            body += b.readBytes(length: b.readableBytes) ?? []
        case .end:
            guard let head else { return }
            finish(
                .success(
                    ACMEHTTPResponse(
                        status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: body)))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ACMEError.transport("connection closed before a complete response")))
    }

    private func finish(_ result: Result<ACMEHTTPResponse, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }
}
