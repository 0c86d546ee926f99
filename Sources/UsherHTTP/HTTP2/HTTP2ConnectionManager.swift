import NIOCore
import NIOHTTP2

/// Manages an HTTP/2 connection as a whole, after `NIOHTTP2Handler`: counts its streams (opened in the stream
/// initializer, closed as the protocol state closes them, through the handler's stream delegate — a client may open a
/// new stream in the same packet that ends an old one), refuses streams past the advertised limit one by one, closes it after `idle_timeout` with no stream,
/// and on a listener's shutdown sends GOAWAY and closes once the open streams have finished.
///
/// Idle and shutdown send GOAWAY naming the last stream seen, in one step as Go does; an idle connection then closes
/// after the guard's short grace rather than waiting for the client to acknowledge anything.
///
/// Everything here runs on the channel's event loop.
final class HTTP2ConnectionManager: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Streams the client may have open at once; more are refused with REFUSED_STREAM.
    let maxStreams: Int
    private let idleTimeout: TimeAmount?
    private let connectionGuard: ConnectionGuard?
    private var context: ChannelHandlerContext?
    private(set) var openStreams = 0
    private var lastStreamID = HTTP2StreamID(0)
    /// Since when no stream has been open (nil while one is).
    private var idleSince: NIODeadline?
    /// Checks `idleSince` when it fires; armed at most once per idle period, never cancelled as streams come and
    /// go (a timer cancel searches the loop's whole timer heap).
    private var idleTimer: Scheduled<Void>?
    private var goingAway = false

    init(maxStreams: Int, idleTimeout: TimeAmount?, connectionGuard: ConnectionGuard?) {
        self.maxStreams = maxStreams
        self.idleTimeout = idleTimeout
        self.connectionGuard = connectionGuard
    }

    /// A client stream was opened: counts it until it closes, and says whether it is within the limit.
    func streamOpened() -> Bool {
        let accepted = openStreams < maxStreams
        openStreams += 1
        idleSince = nil
        connectionGuard?.requestStarted()
        // The protocol may have closed the stream already (its delegate call came first).
        if openStreams == 0 { streamsDrained() }
        return accepted
    }

    /// The stream delegate to hand `NIOHTTP2Handler`: it reports closed streams as the protocol state closes them.
    func streamDelegate(on loop: any EventLoop) -> any NIOHTTP2StreamDelegate {
        Delegate(manager: NIOLoopBound(self, eventLoop: loop))
    }

    private struct Delegate: NIOHTTP2StreamDelegate {
        let manager: NIOLoopBound<HTTP2ConnectionManager>
        func streamCreated(_ id: HTTP2StreamID, channel: any Channel) { manager.value.noteStreamID(id) }
        func streamClosed(_ id: HTTP2StreamID, channel: any Channel) { manager.value.streamClosed() }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        idleSince = .now()
        armIdleTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            goAway()
            if openStreams == 0 { closeAfterFlush() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func noteStreamID(_ id: HTTP2StreamID) {
        if id > lastStreamID { lastStreamID = id }
    }

    private func streamClosed() {
        openStreams -= 1
        if openStreams == 0 { streamsDrained() }
    }

    private func streamsDrained() {
        if goingAway {
            closeAfterFlush()
        } else {
            idleSince = .now()
            armIdleTimer()
        }
    }

    private func armIdleTimer() {
        guard let idleTimeout, let idleSince, idleTimer == nil, !goingAway, let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: idleSince + idleTimeout) { bound.value.idleTimerFired() }
    }

    private func idleTimerFired() {
        idleTimer = nil
        guard let idleTimeout, let idleSince, !goingAway, let context else { return }
        if NIODeadline.now() - idleSince < idleTimeout {
            // Streams came and went since the timer was set: wait for the rest of this idle period.
            armIdleTimer()
            return
        }
        goAway()
        if let connectionGuard {
            connectionGuard.lingerClose()
        } else {
            context.close(promise: nil)
        }
    }

    /// GOAWAY with NO_ERROR naming the last stream this connection will serve.
    private func goAway() {
        guard !goingAway, let context else { return }
        goingAway = true
        idleTimer?.cancel()
        idleTimer = nil
        let frame = HTTP2Frame(
            streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    private func closeAfterFlush() {
        guard let context else { return }
        context.flush()
        if let connectionGuard {
            connectionGuard.closeWhenWritten()
        } else {
            context.close(promise: nil)
        }
    }
}

/// A stream past the connection's limit: answered with RST_STREAM REFUSED_STREAM (RFC 9113 §5.1.2), so the client
/// may retry it, while the connection and its other streams go on.
final class RefusedStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    func handlerAdded(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.rstStream(.refusedStream)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// Between the socket (or TLS) and `NIOHTTP2Handler`, follows the server's outbound frames by their headers: it
/// advertises ``advertisedMaxStreams`` in the server's first SETTINGS (NIOHTTP2 enforces the value it was
/// configured with as a connection error, so it is configured higher and this connection refuses the streams
/// between, per stream), and when NIOHTTP2 sends a GOAWAY with an error code — a connection error — it hands the
/// connection to the guard to be closed.
final class HTTP2FrameWatch: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    let advertisedMaxStreams: Int
    private let connectionGuard: ConnectionGuard?
    private var settingsSent = false
    /// Payload bytes of the current frame still to pass.
    private var payloadLeft = 0
    /// A frame header split across writes (NIOHTTP2 does not split them, but nothing promises it).
    private var partialHeader: [UInt8] = []

    init(advertisedMaxStreams: Int, connectionGuard: ConnectionGuard?) {
        self.advertisedMaxStreams = advertisedMaxStreams
        self.connectionGuard = connectionGuard
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .fileRegion(let region):
            payloadLeft = max(0, payloadLeft - region.readableBytes)
            context.write(data, promise: promise)
        case .byteBuffer(var buffer):
            var connectionError = false
            let changed = scan(&buffer, connectionError: &connectionError)
            context.write(changed ? wrapOutboundOut(.byteBuffer(buffer)) : data, promise: promise)
            if connectionError { connectionGuard?.lingerClose() }
        }
    }

    /// Walks the frame headers in `buffer`; returns whether it changed a byte.
    private func scan(_ buffer: inout ByteBuffer, connectionError: inout Bool) -> Bool {
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        var changed = false
        while index < end {
            if payloadLeft > 0 {
                let n = min(payloadLeft, end - index)
                payloadLeft -= n
                index += n
                continue
            }
            // The 9-byte header: length (24 bits), type, flags, stream ID (31 bits). Read in place when whole.
            let lengthAndType: UInt32, flags: UInt8, stream: UInt32
            let payloadStart: Int
            if partialHeader.isEmpty && end - index >= 9 {
                lengthAndType = buffer.getInteger(at: index, as: UInt32.self)!
                flags = buffer.getInteger(at: index + 4, as: UInt8.self)!
                stream = buffer.getInteger(at: index + 5, as: UInt32.self)!
                payloadStart = index + 9
            } else {
                let n = min(9 - partialHeader.count, end - index)
                partialHeader += buffer.getBytes(at: index, length: n)!
                index += n
                guard partialHeader.count == 9 else { return changed }
                let h = partialHeader
                partialHeader = []
                lengthAndType = UInt32(h[0]) << 24 | UInt32(h[1]) << 16 | UInt32(h[2]) << 8 | UInt32(h[3])
                flags = h[4]
                stream = UInt32(h[5]) << 24 | UInt32(h[6]) << 16 | UInt32(h[7]) << 8 | UInt32(h[8])
                payloadStart = index
            }
            let length = Int(lengthAndType >> 8)
            let type = UInt8(truncatingIfNeeded: lengthAndType)
            let streamZero = stream & 0x7fff_ffff == 0
            let available = min(length, end - payloadStart)
            if type == 0x4, streamZero, flags & 0x1 == 0, !settingsSent {
                settingsSent = true
                var entry = payloadStart
                while entry + 6 <= payloadStart + available {
                    if buffer.getInteger(at: entry, as: UInt16.self) == 0x3 {
                        buffer.setInteger(UInt32(advertisedMaxStreams), at: entry + 2)
                        changed = true
                    }
                    entry += 6
                }
            } else if type == 0x7, streamZero, available >= 8,
                let code = buffer.getInteger(at: payloadStart + 4, as: UInt32.self), code != 0
            {
                connectionError = true
            }
            index = payloadStart
            payloadLeft = length
        }
        return changed
    }
}
