public import NIOCore
public import NIOHTTP1
import UsherHTTP3

/// A request stream of a framed protocol (HTTP/2, HTTP/3) that a ``FramedResponseWriter`` sends on. Calls come
/// from the request's task; implementations hop to their event loop when needed.
protocol FramedStream: AnyObject {
    /// Sends a header block (`:status` first). `interim`: a 1xx head, with the final one still to come.
    func sendHead(_ fields: [(String, String)], interim: Bool, endStream: Bool, flush: Bool) async throws
    /// Sends body bytes, waiting while the stream's flow control (or the connection) is full.
    func sendData(_ buffer: ByteBuffer, endStream: Bool, flush: Bool) async throws
    /// Ends the stream with trailer fields.
    func sendTrailers(_ fields: [(String, String)]) async throws
    /// Ends the stream with no more bytes.
    func endStream() async throws
    /// Pushes out whatever is buffered.
    func flushStream() async throws
    /// Abandons the stream: the client must not take what it got for a complete response.
    func reset()
    func dateHeader() -> String
    /// An extended CONNECT was answered: the request body becomes the tunnel's inbound side.
    func beganTunnel() -> BodyStream?
    /// Takes the stream as a WebTransport session (HTTP/3 only), once its 2xx head is out.
    func beganWebTransport() throws -> WebTransportSession
    /// Ends a tunnel: `last` (if any) goes out with the end of the stream; the client's side is read no more.
    func closeTunnel(sending last: ByteBuffer?)
}

/// The request head of an HTTP/2 or HTTP/3 header block: pseudo-header fields give method, path, authority and
/// `:protocol`; the rest are header fields (`cookie` fields, which both protocols may split, joined again as Go's
/// server does). `nil` without `:method` or `:path`.
struct FramedRequestHead {
    var method: HTTPMethod
    var path: String
    var authority: String?
    var `protocol`: String?
    var headers = HTTPHeaders()

    init?(_ fields: some Sequence<(String, String)>) {
        var method: String?
        var path: String?
        var cookies: [String] = []
        for (name, value) in fields {
            if name.utf8.first == UInt8(ascii: ":") {
                switch name {
                case ":method": method = value
                case ":path": path = value
                case ":authority": authority = value
                case ":protocol": `protocol` = value
                default: break
                }
            } else if name == "cookie" {
                cookies.append(value)
            } else {
                headers.add(name: name, value: value)
            }
        }
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        guard let method, let path else { return nil }
        self.method = HTTPMethod(rawValue: method)
        self.path = path
    }
}

/// Response trailer fields, sent after the body on protocols that frame them (HTTP/2, HTTP/3). Found through
/// ``ResponseWriter/capability(_:)``; set them any time before the handler chain returns.
public protocol ResponseTrailing: AnyObject {
    var trailers: HTTPHeaders { get set }
}

/// The root response writer of an HTTP/2 or HTTP/3 request stream. Holds back the head and the first few KiB of
/// body, so a small response goes out as one header block and one data frame that ends the stream, with a
/// `content-length`, as Go's server does.
final class FramedResponseWriter: ResponseWriter, Flushing, ResponseAccounting, RootResponseWriter, ResponseTrailing {
    let stream: any FramedStream
    let isHEAD: Bool
    var headers = HTTPHeaders()
    var trailers = HTTPHeaders()
    private(set) var status: HTTPResponseStatus?
    private var pending: ByteBuffer?
    private var headSent = false
    private(set) var finished = false
    private(set) var bodyBytesWritten = 0
    private var declaredRemaining: Int?
    /// The request is an extended CONNECT (`:protocol`).
    var upgradeRequested = false
    /// The request is a WebTransport CONNECT on a connection that offers WebTransport.
    var webTransportRequested = false

    init(stream: any FramedStream, isHEAD: Bool) {
        self.stream = stream
        self.isHEAD = isHEAD
    }

    var wrapped: (any ResponseWriter)? { nil }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        guard self.status == nil, !finished else { return }
        if status.code >= 100 && status.code < 200 {
            // 101 has no meaning in HTTP/2 and HTTP/3; other 1xx go out as interim heads.
            if status == .switchingProtocols { return }
            try await stream.sendHead(headerBlock(status, headers), interim: true, endStream: false, flush: true)
            return
        }
        self.status = status
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard !finished else { throw ResponseFinishedError() }
        if status == nil { status = .ok }
        bodyBytesWritten += buffer.readableBytes
        if !headSent {
            if pending == nil {
                pending = buffer
            } else {
                var b = buffer
                pending!.writeBuffer(&b)
            }
            if pending!.readableBytes > HTTP1ResponseWriter.holdBackLimit {
                try await sendHead(complete: false, flush: false)
            }
            return
        }
        try await sendBody(buffer, endStream: false, flush: false)
    }

    func flush() async throws {
        guard !finished else { return }
        if !headSent {
            if status == nil { status = .ok }
            try await sendHead(complete: false, flush: true)
        } else {
            try await stream.flushStream()
        }
    }

    func finish() async throws {
        guard !finished else { return }
        if status == nil { status = .ok }
        let trailerFields = trailerBlock()
        if !headSent {
            finished = true
            try await sendHead(complete: trailerFields.isEmpty, flush: true)
            if trailerFields.isEmpty { return }
        }
        finished = true
        if let remaining = declaredRemaining, remaining > 0 {
            // Fewer bytes than declared: the client must not take this for a complete response.
            stream.reset()
            return
        }
        if !trailerFields.isEmpty && !isHEAD && bodyAllowed(status ?? .ok) {
            try await stream.sendTrailers(trailerFields)
        } else {
            try await stream.endStream()
        }
    }

    func abandon() {
        finished = true
        stream.reset()
    }

    /// Marks the writer finished when the stream is already gone.
    func abandonQuietly() { finished = true }

    private func bodyAllowed(_ status: HTTPResponseStatus) -> Bool {
        !(status.code < 200 || status.code == 204 || status.code == 304)
    }

    /// `:status` and the header fields, names lowercased and connection-specific fields dropped (RFC 9113 8.2.2,
    /// RFC 9114 4.2).
    private func headerBlock(_ status: HTTPResponseStatus, _ h: HTTPHeaders) -> [(String, String)] {
        var block: [(String, String)] = []
        block.reserveCapacity(h.count + 1)
        block.append((":status", String(status.code)))
        for (name, value) in h {
            switch name.lowercased() {
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer": continue
            case let lower: block.append((lower, value))
            }
        }
        return block
    }

    private func trailerBlock() -> [(String, String)] {
        trailers.map { ($0.name.lowercased(), $0.value) }
    }

    /// Sends the head, with what is held back. `complete`: the handler is done, so the held-back bytes are the
    /// whole body and the stream ends with them.
    private func sendHead(complete: Bool, flush: Bool) async throws {
        let status = self.status ?? .ok
        var h = headers
        let pendingBytes = pending?.readableBytes ?? 0
        var declared = h.first(name: "Content-Length").flatMap { Int($0.trimmingASCIISpaces) }
        if h.contains(name: "Content-Length") && declared == nil { h.remove(name: "Content-Length") }
        if !bodyAllowed(status) {
            if status.code == 204 { h.remove(name: "Content-Length") }
            declared = nil
        } else if declared == nil && complete && !isHEAD {
            h.add(name: "Content-Length", value: String(pendingBytes))
        }
        if !isHEAD, bodyAllowed(status) { declaredRemaining = declared }
        if !h.contains(name: "Date") { h.add(name: "Date", value: stream.dateHeader()) }
        let suppressSniffing = h.first(name: "Content-Type")?.isEmpty == true
        if suppressSniffing { h.remove(name: "Content-Type") }
        if !suppressSniffing, !h.contains(name: "Content-Type"), bodyAllowed(status), pendingBytes > 0, let p = pending
        {
            h.add(name: "Content-Type", value: sniffContentType(p))
        }
        headSent = true
        let body = pending
        pending = nil
        let hasBody = !isHEAD && bodyAllowed(status) && (body?.readableBytes ?? 0) > 0
        if complete && !hasBody {
            try await stream.sendHead(headerBlock(status, h), interim: false, endStream: true, flush: flush)
            return
        }
        try await stream.sendHead(headerBlock(status, h), interim: false, endStream: false, flush: false)
        if hasBody, let body {
            try await sendBody(body, endStream: complete, flush: flush)
        } else if flush {
            try await stream.flushStream()
        }
    }

    private func sendBody(_ buffer: ByteBuffer, endStream: Bool, flush: Bool) async throws {
        guard !isHEAD, let status, bodyAllowed(status), buffer.readableBytes > 0 else {
            if flush { try await stream.flushStream() }
            return
        }
        if let remaining = declaredRemaining {
            let allowed = min(remaining, buffer.readableBytes)
            declaredRemaining = remaining - allowed
            if allowed < buffer.readableBytes {
                if allowed > 0 {
                    let slice = buffer.getSlice(at: buffer.readerIndex, length: allowed)!
                    try await stream.sendData(slice, endStream: false, flush: true)
                }
                throw ContentLengthExceededError()
            }
        }
        try await stream.sendData(buffer, endStream: endStream, flush: flush || endStream)
    }
}

extension FramedResponseWriter: ConnectionUpgrading {
    func upgrade(_ status: HTTPResponseStatus) async throws -> any UpgradedStream {
        guard upgradeRequested, !finished, !headSent, (200..<300).contains(status.code) else {
            throw ResponseFinishedError()
        }
        self.status = status
        try await flush()
        let inbound = stream.beganTunnel()
        return FramedTunnel(
            writer: self, inbound: RequestBody(stream: inbound, expectedLength: inbound == nil ? 0 : nil))
    }
}

extension FramedResponseWriter: WebTransportAccepting {
    func acceptWebTransport(_ status: HTTPResponseStatus) async throws -> WebTransportSession {
        guard webTransportRequested, !finished, !headSent, (200..<300).contains(status.code) else {
            throw ResponseFinishedError()
        }
        self.status = status
        try await flush()
        let session = try stream.beganWebTransport()
        // The session owns the stream now; the server must not end it when the handler returns.
        abandonQuietly()
        return session
    }
}

/// A stream after an extended CONNECT was accepted: data frames both ways, without framing or length checks.
final class FramedTunnel: UpgradedStream {
    let writer: FramedResponseWriter
    let inbound: RequestBody

    init(writer: FramedResponseWriter, inbound: RequestBody) {
        self.writer = writer
        self.inbound = inbound
    }

    func write(_ buffer: ByteBuffer) async throws {
        try await writer.stream.sendData(buffer, endStream: false, flush: true)
    }

    func close(sending last: ByteBuffer?) {
        writer.abandonQuietly()
        writer.stream.closeTunnel(sending: last)
    }
}
