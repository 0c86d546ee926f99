import NIOCore
import UsherCore

/// Runs a connection's listener wrappers on its first bytes — a PROXY protocol header read, plain HTTP on a TLS
/// port answered — then has the rest of the pipeline built and steps aside; the bytes it held flow on to it.
final class ConnectionPrelude: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var steps: ArraySlice<PreludeStep>
    /// Builds what comes after, given the client address a PROXY header gave (if any).
    private let finish: (ChannelHandlerContext, SocketAddress?) throws -> Void
    /// The longest the whole prelude may take, whatever a step's own timeout.
    private let limit: TimeAmount
    private var buffered: ByteBuffer?
    private var peer: SocketAddress?
    private var stepTimer: Scheduled<Void>?
    private var limitTimer: Scheduled<Void>?
    private var finished = false

    init(
        steps: [PreludeStep], limit: TimeAmount,
        finish: @escaping (ChannelHandlerContext, SocketAddress?) throws -> Void
    ) {
        self.steps = steps[...]
        self.limit = limit
        self.finish = finish
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        limitTimer = context.eventLoop.scheduleTask(in: limit) { bound.value.1.close(promise: nil) }
        startStep(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stepTimer?.cancel()
        limitTimer?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stepTimer?.cancel()
        limitTimer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if finished {
            context.fireChannelRead(data)
            return
        }
        if buffered == nil { buffered = incoming } else { buffered!.writeBuffer(&incoming) }
        advance(context, timedOut: false)
    }

    /// Arms the current step's own timeout (the PROXY header's).
    private func startStep(_ context: ChannelHandlerContext) {
        stepTimer?.cancel()
        stepTimer = nil
        guard case .proxyProtocol(let w) = steps.first, let t = w.headerTimeout else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        stepTimer = context.eventLoop.scheduleTask(in: t) {
            let (me, ctx) = bound.value
            me.advance(ctx, timedOut: true)
        }
    }

    private func advance(_ context: ChannelHandlerContext, timedOut: Bool) {
        var timedOut = timedOut
        while let step = steps.first {
            var bytes = buffered ?? context.channel.allocator.buffer(capacity: 0)
            switch step {
            case .proxyProtocol(let w):
                let policy = w.policy(for: context.channel.remoteAddress)
                if policy == .skip { break }
                switch ProxyHeader.parse(bytes.readableBytesView) {
                case .needMore:
                    if !timedOut { return }
                    // go-proxyproto: a header that does not come in time is no header.
                    if policy == .require { return refuse(context) }
                case .none:
                    if policy == .require { return refuse(context) }
                case .invalid:
                    return refuse(context)
                case .header(let source, let length):
                    if policy == .reject { return refuse(context) }
                    bytes.moveReaderIndex(forwardBy: length)
                    buffered = bytes
                    if policy == .use || policy == .require, let source { peer = source }
                }
            case .httpRedirect(let max):
                switch Self.plainRequest(bytes.readableBytesView, max: max) {
                case .needMore: return
                case .notHTTP: break
                case .tooLarge: return refuse(context)
                case .request(let location):
                    return redirect(context, to: location)
                }
            }
            steps.removeFirst()
            timedOut = false
            startStep(context)
        }
        complete(context)
    }

    private func complete(_ context: ChannelHandlerContext) {
        finished = true
        stepTimer?.cancel()
        limitTimer?.cancel()
        do {
            try finish(context, peer)
        } catch {
            context.close(promise: nil)
            return
        }
        if let data = buffered, data.readableBytes > 0 {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(data))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func refuse(_ context: ChannelHandlerContext) {
        finished = true
        buffered = nil
        context.close(promise: nil)
    }

    /// Caddy's answer to plain HTTP on a TLS port: `308` to the `https://` URL, then the connection closes.
    private func redirect(_ context: ChannelHandlerContext, to location: String) {
        finished = true
        buffered = nil
        var out = context.channel.allocator.buffer(capacity: 128)
        out.writeString("HTTP/1.0 308 Permanent Redirect\r\nLocation: \(location)\r\nContent-Length: 0\r\n\r\n")
        context.writeAndFlush(wrapInboundOut(out)).whenComplete { _ in context.close(promise: nil) }
    }

    enum PlainRequest {
        case needMore, notHTTP, tooLarge
        /// The `Location` to send.
        case request(String)
    }

    /// Whether the bytes start a plain HTTP request (Caddy looks at the first five), and if so its target.
    static func plainRequest(_ b: ByteBufferView, max: Int) -> PlainRequest {
        if b.count < 5 { return .needMore }
        let first = String(decoding: b.prefix(5), as: UTF8.self)
        guard ["GET /", "HEAD ", "POST ", "PUT /", "OPTIO"].contains(first) else { return .notHTTP }
        let bytes = Array(b.prefix(max))
        guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else {
            return b.count >= max ? .tooLarge : .needMore
        }
        let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count == 3 else { return .tooLarge }
        var host = ""
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].lowercased() == "host" {
                host = String(line[line.index(after: colon)...]).trimmingWhitespace()
                break
            }
        }
        return .request("https://" + host + String(parts[1]))
    }
}

/// A PROXY protocol header (v1 text or v2 binary, haproxy's spec) at the start of a connection's bytes.
enum ProxyHeader {
    enum Result: Equatable {
        case needMore
        /// The bytes do not start with a header.
        case none
        case invalid
        /// The client address (`nil` for LOCAL, UNKNOWN and families without one) and the header's length.
        case header(SocketAddress?, length: Int)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix = Array("PROXY ".utf8)

    static func parse(_ b: ByteBufferView) -> Result {
        guard let first = b.first else { return .needMore }
        if first == v1Prefix[0] {
            let n = min(b.count, v1Prefix.count)
            guard b.prefix(n).elementsEqual(v1Prefix.prefix(n)) else { return .none }
            return n < v1Prefix.count ? .needMore : parseV1(b)
        }
        if first == v2Signature[0] {
            let n = min(b.count, v2Signature.count)
            guard b.prefix(n).elementsEqual(v2Signature.prefix(n)) else { return .none }
            return n < v2Signature.count ? .needMore : parseV2(b)
        }
        return .none
    }

    /// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, at most 107 bytes.
    static func parseV1(_ b: ByteBufferView) -> Result {
        let window = Array(b.prefix(107))
        guard let cr = window.firstRange(of: [0x0D, 0x0A]) else { return window.count >= 107 ? .invalid : .needMore }
        let line = String(decoding: window[..<cr.lowerBound], as: UTF8.self)
        let length = cr.upperBound
        let f = line.split(separator: " ", omittingEmptySubsequences: false)
        guard f.count >= 2, f[0] == "PROXY" else { return .invalid }
        switch f[1] {
        case "UNKNOWN": return .header(nil, length: length)
        case "TCP4", "TCP6":
            guard f.count == 6, let src = IPAddress(String(f[2])), let dst = IPAddress(String(f[3])),
                src.isIPv4 == (f[1] == "TCP4"), dst.isIPv4 == src.isIPv4,
                let sport = port(f[4]), port(f[5]) != nil,
                let address = try? SocketAddress(ipAddress: String(f[2]), port: sport)
            else { return .invalid }
            return .header(address, length: length)
        default: return .invalid
        }
    }

    private static func port(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.count <= 5, s.allSatisfy(\.isASCII), let v = Int(s), v <= 65535,
            !(s.count > 1 && s.hasPrefix("0"))
        else { return nil }
        return v
    }

    /// The 16-byte binary header and its addresses; TLVs after them are skipped.
    static func parseV2(_ b: ByteBufferView) -> Result {
        guard b.count >= 16 else { return .needMore }
        let head = Array(b.prefix(16))
        let verCmd = head[12]
        guard verCmd >> 4 == 2 else { return .invalid }
        let command = verCmd & 0x0F
        guard command <= 1 else { return .invalid }
        let family = head[13]
        let length = Int(head[14]) << 8 | Int(head[15])
        guard b.count >= 16 + length else { return .needMore }
        let body = Array(b.dropFirst(16).prefix(length))
        let total = 16 + length
        // LOCAL: the proxy's own connection (a health check); the peer stays as it is.
        if command == 0 { return .header(nil, length: total) }
        switch family >> 4 {
        case 0x1:
            guard family & 0x0F == 1 || family & 0x0F == 2, body.count >= 12 else { return .invalid }
            let ip = IPAddress(bytes: Array(body[0..<4]))!
            let sport = Int(body[8]) << 8 | Int(body[9])
            return .header(try? SocketAddress(ipAddress: ip.description, port: sport), length: total)
        case 0x2:
            guard family & 0x0F == 1 || family & 0x0F == 2, body.count >= 36 else { return .invalid }
            let ip = IPAddress(bytes: Array(body[0..<16]))!
            let sport = Int(body[32]) << 8 | Int(body[33])
            return .header(try? SocketAddress(ipAddress: ip.description, port: sport), length: total)
        case 0x0, 0x3:
            return .header(nil, length: total)
        default:
            return .invalid
        }
    }
}

/// Stays in a connection's pipeline when a PROXY header named its client, so HTTP takes the client's address
/// rather than the proxy's.
final class PeerAddressOverride: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let address: SocketAddress

    init(_ address: SocketAddress) { self.address = address }

    /// The client address of a connection's channel (not a stream's: its pipeline is the stream's own).
    static func remoteAddress(of connection: any Channel) -> SocketAddress? {
        if let o = try? connection.pipeline.syncOperations.handler(type: PeerAddressOverride.self) {
            return o.address
        }
        return connection.remoteAddress
    }
}
