import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import UsherCore

/// A listener that answers HTTP-01 and nothing else, opened while a challenge is presented on a port nothing
/// listens on (no server of this config, no other process): certmagic's solver does the same. When the port is
/// taken, whoever holds it is trusted to answer (this process's servers answer from the challenge board).
enum HTTPChallengeListener {
    /// The listener, or nil when the port is in use or cannot be bound (logged).
    static func open(port: Int, board: ACMEChallengeBoard, group: any EventLoopGroup, logger: Logger) async
        -> (any Channel)?
    {
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                            withPipeliningAssistance: false, withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(ChallengeResponder(board: board, logger: logger))
                    }
                }
                .bind(host: "0.0.0.0", port: port).get()
            logger.info("opened a listener for the HTTP challenge", metadata: ["port": "\(port)"])
            return channel
        } catch let e as IOError where e.errnoCode == EADDRINUSE {
            // A server of ours (which answers from the board) or another process has the port.
            return nil
        } catch {
            logger.warning(
                "could not listen for the HTTP challenge", metadata: ["port": "\(port)", "error": "\(error)"])
            return nil
        }
    }
}

/// Answers `GET /.well-known/acme-challenge/<token>` for the host being validated; 404 for anything else.
private final class ChallengeResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let board: ACMEChallengeBoard
    let logger: Logger
    private var head: HTTPRequestHead?

    init(board: ACMEChallengeBoard, logger: Logger) {
        self.board = board
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let host = splitHostPort(head.headers.first(name: "host") ?? "").host
            let answer = head.method == .GET ? board.localHTTPAnswer(host: host, path: head.uri) : nil
            if answer != nil {
                logger.info("served key authentication", metadata: ["identifier": "\(host)", "listener": "temporary"])
            }
            let body = ByteBuffer(string: answer ?? "")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain")
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            headers.add(name: "Connection", value: "close")
            let status: HTTPResponseStatus = answer == nil ? .notFound : .ok
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        }
    }
}
