// The floor our HTTP/1.1 server is measured against: SwiftNIO's stock HTTP/1.1 server pipeline answering every
// request with the same 13-byte body, on one event loop, with no routing, middleware or config; with a TLS port,
// certificate and key, the same behind swift-nio-ssl's stock server handler.
// Usage: bare-nio-baseline [port] [tls-port cert.pem key.pem]
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

final class FixedResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var body: ByteBuffer
    private var keepAlive = true

    init() {
        body = ByteBufferAllocator().buffer(capacity: 13)
        body.writeString("Hello, world!")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "13")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil
            )
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let close = !keepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in
                if close { channel.close(promise: nil) }
            }
        }
    }
}

let args = CommandLine.arguments
let port = args.count > 1 ? Int(args[1]) ?? 18080 : 18080
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

func bootstrap(tls: NIOSSLContext?) -> ServerBootstrap {
    ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(FixedResponder())
            }
        }
}

let channel = try bootstrap(tls: nil).bind(host: "127.0.0.1", port: port).wait()
print("bare NIO baseline listening on \(channel.localAddress!)")
if args.count > 4, let tlsPort = Int(args[2]) {
    var config = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMFile(args[3]).map { .certificate($0) },
        privateKey: .file(args[4])
    )
    config.applicationProtocols = ["http/1.1"]
    let tlsChannel = try bootstrap(tls: try NIOSSLContext(configuration: config)).bind(host: "127.0.0.1", port: tlsPort)
        .wait()
    print("bare NIO baseline (TLS) listening on \(tlsChannel.localAddress!)")
}
try channel.closeFuture.wait()
