import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// The client side of TLS-ALPN-01: one handshake offering only `acme-tls/1`, returning what was negotiated and the
/// leaf certificate the server presented (not verified: the challenge certificate is self-signed by design).
enum TLSALPNProbe {
    static func handshake(address: String, port: Int, serverName: String?, group: any EventLoopGroup) async throws
        -> (alpn: String?, leaf: [UInt8])
    {
        var config = TLSConfiguration.makeClientConfiguration()
        config.applicationProtocols = ["acme-tls/1"]
        config.certificateVerification = .none
        let context = try NIOSSLContext(configuration: config)
        let loop = group.next()
        let done = loop.makePromise(of: (String?, [UInt8]).self)
        let leaf = LeafBox()
        let timeout = loop.scheduleTask(in: .seconds(10)) {
            done.fail(ChannelError.connectTimeout(.seconds(10)))
        }
        defer { timeout.cancel() }
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try NIOSSLClientHandler(
                        context: context, serverHostname: serverName,
                        customVerificationCallback: { certs, promise in
                            leaf.value.withLock { $0 = try? certs.first?.toDERBytes() }
                            promise.succeed(.certificateVerified)
                        })
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: done, leaf: leaf))
                }
            }
            .connect(host: address, port: port).get()
        defer { channel.close(promise: nil) }
        let (alpn, der) = try await done.futureResult.get()
        return (alpn, der)
    }
}

private final class HandshakeWatcher: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<(String?, [UInt8])>
    let leaf: LeafBox

    init(done: EventLoopPromise<(String?, [UInt8])>, leaf: LeafBox) {
        self.done = done
        self.leaf = leaf
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted(let proto) = e {
            done.succeed((proto, leaf.value.withLock { $0 } ?? []))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.eof)
    }
}

/// The certificate the verification callback saw, for the handler that reports the handshake.
private final class LeafBox: Sendable {
    let value = Mutex<[UInt8]?>(nil)
}
