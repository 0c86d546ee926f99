import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import UsherCore
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// Builds an accepted connection's pipeline: TLS (policy and certificate chosen from the ClientHello's SNI), then
/// HTTP/1.1 or HTTP/2 by ALPN; on cleartext, HTTP/1.1, or HTTP/2 with prior knowledge when the server allows h2c.
enum ConnectionPipeline {
    static func configure(
        _ channel: any Channel, slot: ListenerSlot, server: HTTPServerInstance,
        connectionGuard: ConnectionGuard?
    ) throws {
        let plan = server.settings.listenerPlan
        let raw = plan.raw(tls: server.tls != nil)
        guard raw.isEmpty else {
            // Listener wrappers before TLS (all of them, on a cleartext server) see the connection's first bytes;
            // the rest of the pipeline is built once they are done, behind the prelude.
            try addPrelude(raw, to: channel, settings: server.settings) { channel, peer in
                try configureConnection(
                    channel, slot: slot, server: server, connectionGuard: connectionGuard, peer: peer)
            }
            return
        }
        try configureConnection(channel, slot: slot, server: server, connectionGuard: connectionGuard, peer: nil)
    }

    /// Puts `steps` in front of what `build` adds once they are done; a client address from a PROXY header stays
    /// in the pipeline for HTTP to find. The prelude waits at most as long as the server waits for a request head.
    private static func addPrelude(
        _ steps: [PreludeStep], to channel: any Channel, settings: ConnectionSettings,
        build: @escaping (any Channel, SocketAddress?) throws -> Void
    ) throws {
        let prelude = ConnectionPrelude(steps: steps, limit: settings.readHeaderTimeout ?? .minutes(1)) {
            context, peer in
            if let peer { try context.pipeline.syncOperations.addHandler(PeerAddressOverride(peer)) }
            try build(context.channel, peer)
        }
        try channel.pipeline.syncOperations.addHandler(prelude)
    }

    private static func configureConnection(
        _ channel: any Channel, slot: ListenerSlot, server: HTTPServerInstance,
        connectionGuard: ConnectionGuard?, peer: SocketAddress?
    ) throws {
        if let ka = server.settings.tcpKeepAlive {
            _ = channel.setOption(.socketOption(.so_keepalive), value: 1)
            _ = channel.setOption(
                .tcpOption(.init(rawValue: CInt(TCP_KEEPINTVL))), value: SocketOptionValue(ka.interval))
            _ = channel.setOption(.tcpOption(.init(rawValue: CInt(TCP_KEEPIDLE))), value: SocketOptionValue(ka.idle))
            _ = channel.setOption(.tcpOption(.init(rawValue: CInt(TCP_KEEPCNT))), value: SocketOptionValue(ka.count))
        }
        let sync = channel.pipeline.syncOperations
        guard let tls = server.tls else {
            if server.protocols.contains("h2c") {
                try sync.addHandler(
                    PriorKnowledgeSniffer(
                        slot: slot, server: server, allowHTTP1: server.protocols.contains("h1"),
                        connectionGuard: connectionGuard
                    ))
            } else {
                try HTTP1Pipeline.configure(
                    channel, slot: slot, settings: server.settings, connectionGuard: connectionGuard)
            }
            return
        }
        let remote = peer ?? channel.remoteAddress
        let local = channel.localAddress
        let logger = server.errorLogger
        let boundGuard = connectionGuard.map { NIOLoopBound($0, eventLoop: channel.eventLoop) }
        /// Adds the TLS handler for the chosen policy and certificate, then protocol negotiation.
        func build(_ hello: HandshakeInfo, challenge: TLSCertificate? = nil, external: TLSCertificate? = nil) throws {
            let choice = try tls.choose(for: hello, challenge: challenge, external: external)
            let ssl: NIOSSLServerHandler
            if let verify = choice.verification {
                ssl = NIOSSLServerHandler(context: choice.context, customVerificationCallback: verify)
            } else {
                ssl = NIOSSLServerHandler(context: choice.context)
            }
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(ssl)
            let leafCheck = choice.leafCheck
            try sync.addHandler(
                ApplicationProtocolNegotiationHandler { alpn in
                    if let leafCheck, !leafCheck(try? ssl.peerCertificate?.toDERBytes()) {
                        channel.close(promise: nil)
                        return channel.eventLoop.makeSucceededVoidFuture()
                    }
                    var proto: String?
                    if case .negotiated(let p) = alpn { proto = p }
                    let info = TLSConnectionInfo(
                        serverName: hello.serverName, version: ssl.tlsVersion?.codePoint ?? 0,
                        negotiatedProtocol: proto,
                        clientCertificate: ssl.peerCertificate.flatMap(ClientCertificate.init)
                    )
                    return negotiated(
                        alpn, channel: channel, slot: slot, server: server, tls: info,
                        connectionGuard: boundGuard?.value)
                })
        }
        /// Ends a handshake that cannot proceed, saying why in the log and, unless the policy drops, to the client.
        func refuse(_ error: any Error, _ name: String?) -> EventLoopFuture<Void> {
            logger.debug(
                "tls handshake refused",
                metadata: [
                    "remote": "\(remote?.description ?? "")", "server_name": "\(name ?? "")", "error": "\(error)",
                ])
            // A fatal alert tells the client why (RFC 6066 unrecognized_name) instead of a bare close; a policy
            // that drops connections says nothing.
            if (error as? ServerTLS.Refusal)?.dropped != true {
                var alert = channel.allocator.buffer(capacity: 7)
                alert.writeBytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112])
                channel.writeAndFlush(alert).whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
            return channel.eventLoop.makeFailedFuture(error)
        }
        let sni = ByteToMessageHandler(
            ClientHelloSniffer { info in
                let name = info?.serverName
                var hello = HandshakeInfo(
                    serverName: name, remoteAddress: remote, localAddress: local, alpn: info?.alpn ?? [])
                hello.cipherSuites = info?.cipherSuites ?? []
                hello.signatureSchemes = info?.signatureSchemes ?? []
                if let board = tls.challenges, let name,
                    board.mayAnswerTLSALPNFromStorage(serverName: name, alpn: hello.alpn)
                {
                    // Distributed TLS-ALPN-01: the validation is for a challenge another instance sharing the
                    // storage started; its key authorization is read from storage while the handshake waits.
                    let loopBuild = NIOLoopBound(build, eventLoop: channel.eventLoop)
                    let loopRefuse = NIOLoopBound(refuse, eventLoop: channel.eventLoop)
                    let found = channel.eventLoop.makePromise(of: TLSCertificate?.self)
                    found.completeWithTask { await board.distributedTLSALPNCertificate(serverName: name) }
                    return found.futureResult.flatMapThrowing { cert in
                        if cert != nil {
                            logger.info(
                                "serving distributed tls-alpn-01 challenge",
                                metadata: ["identifier": "\(name)", "distributed": "true"])
                        }
                        try loopBuild.value(hello, cert, nil)
                    }.flatMapError { loopRefuse.value($0, name) }
                }
                do {
                    try build(hello)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch let refusal as ServerTLS.Refusal {
                    // On-demand TLS: the handshake waits while a certificate is obtained (one order per name,
                    // however many handshakes wait for it), then goes on with it.
                    // Without SNI the name is the address the client dialled, as certmagic does.
                    var ip = local?.ipAddress
                    if let i = ip, i.hasPrefix("::ffff:") && i.contains(".") { ip = String(i.dropFirst(7)) }
                    guard refusal.noCertificate, let wanted = name ?? ip, let onDemand = tls.onDemand,
                        onDemand.eligible(wanted)
                    else {
                        return refuse(refusal, name)
                    }
                    // The promise is the channel's, so its callbacks run on the loop these closures belong to.
                    let loopBuild = NIOLoopBound(build, eventLoop: channel.eventLoop)
                    let loopRefuse = NIOLoopBound(refuse, eventLoop: channel.eventLoop)
                    // A certificate from a `get_certificate` manager serves this handshake only; otherwise one is
                    // obtained into the store.
                    let obtained = channel.eventLoop.makePromise(of: TLSCertificate?.self)
                    obtained.completeWithTask { try await onDemand.certificate(for: wanted, hello) }
                    return obtained.futureResult.flatMapThrowing { try loopBuild.value(hello, nil, $0) }
                        .flatMapError { loopRefuse.value($0, name) }
                } catch {
                    return refuse(error, name)
                }
            })
        try sync.addHandler(sni)
    }

    private static func negotiated(
        _ result: ALPNResult, channel: any Channel, slot: ListenerSlot,
        server: HTTPServerInstance, tls: TLSConnectionInfo,
        connectionGuard: ConnectionGuard?
    ) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            if case .negotiated(ACMEChallengeBoard.acmeTLS1) = result {
                // A TLS-ALPN-01 validation ends with the handshake (RFC 8737 §3).
                channel.close(promise: nil)
            } else if server.protocols.contains("h1")
                || (result == .negotiated("h2") && server.protocols.contains("h2"))
            {
                let h2 = result == .negotiated("h2") && server.protocols.contains("h2")
                let build: (any Channel) throws -> Void = { channel in
                    if h2 {
                        try HTTP2Pipeline.configure(
                            channel, slot: slot, server: server, tls: tls, connectionGuard: connectionGuard)
                    } else {
                        try HTTP1Pipeline.configure(
                            channel, slot: slot, settings: server.settings, tls: tls,
                            connectionGuard: connectionGuard)
                    }
                }
                let after = server.settings.listenerPlan.afterTLS
                guard !after.isEmpty else { return try build(channel) }
                // Listener wrappers after TLS read the decrypted bytes first.
                try addPrelude(after, to: channel, settings: server.settings) { channel, _ in try build(channel) }
            } else {
                channel.close(promise: nil)
            }
        }
    }
}

/// Holds a connection's first bytes until its ClientHello is complete, hands its server name and ALPN offer (or
/// `nil`, for bytes that are not one, which the TLS stack then refuses) to `completion`, and steps aside once the
/// pipeline that completion builds is in place; the held bytes then flow to it.
final class ClientHelloSniffer: ByteToMessageDecoder {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let completion: (ClientHelloInfo?) -> EventLoopFuture<Void>
    private var waiting = false

    init(completion: @escaping (ClientHelloInfo?) -> EventLoopFuture<Void>) {
        self.completion = completion
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if waiting { return .needMoreData }
        let info: ClientHelloInfo?
        switch ClientHelloInfo.parse(buffer) {
        case .needMore: return .needMoreData
        case .invalid: info = nil
        case .hello(let hello): info = hello
        }
        waiting = true
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        completion(info).hop(to: context.eventLoop).whenSuccess {
            let context = bound.value
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        return .needMoreData
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        context.fireChannelRead(NIOAny(buffer))
        return .needMoreData
    }
}

/// On a cleartext listener that allows h2c: waits for enough bytes to tell the HTTP/2 connection preface from an
/// HTTP/1.x request line, then builds the matching pipeline and steps aside.
final class PriorKnowledgeSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    let slot: ListenerSlot
    let server: HTTPServerInstance
    let allowHTTP1: Bool
    let connectionGuard: ConnectionGuard?
    private var buffered: ByteBuffer?

    init(slot: ListenerSlot, server: HTTPServerInstance, allowHTTP1: Bool, connectionGuard: ConnectionGuard?) {
        self.slot = slot
        self.server = server
        self.allowHTTP1 = allowHTTP1
        self.connectionGuard = connectionGuard
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil { buffered = incoming } else { buffered!.writeBuffer(&incoming) }
        let bytes = buffered!.readableBytesView
        let n = min(bytes.count, Self.preface.count)
        let isPreface = bytes.prefix(n).elementsEqual(Self.preface.prefix(n))
        if isPreface && n < Self.preface.count { return }
        let channel = context.channel
        do {
            if isPreface {
                try HTTP2Pipeline.configure(channel, slot: slot, server: server, connectionGuard: connectionGuard)
            } else if allowHTTP1 {
                try HTTP1Pipeline.configure(
                    channel, slot: slot, settings: server.settings, connectionGuard: connectionGuard)
            } else {
                context.close(promise: nil)
                return
            }
        } catch {
            context.close(promise: nil)
            return
        }
        let data = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(data))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
