import NIOCore
import NIOHTTP1
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// The root response writer of an HTTP/1.1 exchange: encodes the head and body straight into the connection.
///
/// Like Go's server it holds back the head and the first few KiB of body, so a response that completes within them
/// goes out as one write with a `Content-Length`; larger or flushed responses are chunked (or, for HTTP/1.0,
/// delimited by closing the connection).
final class HTTP1ResponseWriter: ResponseWriter, Flushing, ResponseAccounting {
    enum Framing {
        case undecided
        case contentLength(remaining: Int)
        case chunked
        case closeDelimited
        case noBody
    }

    let connection: HTTP1Connection
    let requestVersion: HTTPVersion
    let isHEAD: Bool
    /// The request asked for the connection to close, or is HTTP/1.0 without keep-alive.
    let requestCloses: Bool

    var headers = HTTPHeaders()
    private(set) var status: HTTPResponseStatus?
    private var pending: ByteBuffer?
    private var headSent = false
    private var framing: Framing = .undecided
    private(set) var finished = false
    /// The connection must close after this response.
    private(set) var closeAfter = false
    private(set) var bodyBytesWritten = 0
    /// Bytes put on the wire (head and body), for access logs.
    private(set) var wireBytes = 0

    /// Body bytes held back before choosing the framing.
    static let holdBackLimit = 4096

    init(connection: HTTP1Connection, requestVersion: HTTPVersion, isHEAD: Bool, requestCloses: Bool) {
        self.connection = connection
        self.requestVersion = requestVersion
        self.isHEAD = isHEAD
        self.requestCloses = requestCloses
    }

    var wrapped: (any ResponseWriter)? { nil }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        guard self.status == nil, !finished else { return }
        if status.code >= 100 && status.code < 200 && status != .switchingProtocols {
            var buf = connection.allocator.buffer(capacity: 256)
            encodeHead(status, headers: headers, into: &buf)
            try await connection.send(buf, flush: true)
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
            if pending!.readableBytes > Self.holdBackLimit {
                try await sendHeadAndPending(final: false, flush: false)
            }
            return
        }
        try await sendBody(buffer, flush: false)
    }

    func flush() async throws {
        guard !finished else { return }
        if !headSent {
            if status == nil { status = .ok }
            try await sendHeadAndPending(final: false, flush: true)
        } else {
            try await connection.send(nil, flush: true)
        }
    }

    /// Completes the response: sends what is held back, the last chunk, and flushes.
    func finish() async throws {
        guard !finished else { return }
        if status == nil { status = .ok }
        if !headSent {
            try await sendHeadAndPending(final: true, flush: true)
        } else {
            switch framing {
            case .chunked:
                var buf = connection.allocator.buffer(capacity: 5)
                buf.writeStaticString("0\r\n\r\n")
                wireBytes += 5
                try await connection.send(buf, flush: true)
            case .contentLength(let remaining) where remaining > 0:
                // The handler wrote less than it declared: the client cannot tell where this response ends.
                closeAfter = true
                try await connection.send(nil, flush: true)
            default:
                try await connection.send(nil, flush: true)
            }
        }
        finished = true
    }

    /// Marks the response finished without sending anything more (the connection is closing).
    func abandon() {
        finished = true
        closeAfter = true
    }

    private func bodyAllowed(_ status: HTTPResponseStatus) -> Bool {
        !(status.code < 200 || status.code == 204 || status.code == 304)
    }

    private func sendHeadAndPending(final: Bool, flush: Bool) async throws {
        let status = self.status ?? .ok
        var h = headers
        h.remove(name: "Transfer-Encoding")
        let declaredLength = h.first(name: "Content-Length").flatMap { Int($0.trimmingASCIISpaces) }
        if h.contains(name: "Content-Length") && declaredLength == nil { h.remove(name: "Content-Length") }
        let pendingBytes = pending?.readableBytes ?? 0

        if !bodyAllowed(status) {
            framing = .noBody
            if status.code == 204 || status.code < 200 { h.remove(name: "Content-Length") }
        } else if let declaredLength {
            framing = isHEAD ? .noBody : .contentLength(remaining: declaredLength)
        } else if final {
            h.add(name: "Content-Length", value: String(pendingBytes))
            framing = isHEAD ? .noBody : .contentLength(remaining: pendingBytes)
        } else if isHEAD {
            framing = .noBody
        } else if requestVersion.major == 1 && requestVersion.minor >= 1 {
            h.add(name: "Transfer-Encoding", value: "chunked")
            framing = .chunked
        } else {
            framing = .closeDelimited
            closeAfter = true
        }

        if let c = h.first(name: "Connection"), c.lowercased().contains("close") { closeAfter = true }
        if requestCloses { closeAfter = true }
        let isHTTP10 = requestVersion.major == 1 && requestVersion.minor == 0
        if closeAfter {
            // HTTP/1.0 closes by default, so Go (and Caddy) say nothing there.
            if !isHTTP10 && !h.contains(name: "Connection") { h.add(name: "Connection", value: "close") }
        } else if isHTTP10 {
            h.replaceOrAdd(name: "Connection", value: "keep-alive")
        }
        if !h.contains(name: "Date") { h.add(name: "Date", value: connection.dateHeader()) }
        // An empty Content-Type means "send none and do not sniff" (Go's nil header value).
        let suppressSniffing = h.first(name: "Content-Type")?.isEmpty == true
        if suppressSniffing { h.remove(name: "Content-Type") }
        if !suppressSniffing, !h.contains(name: "Content-Type"), bodyAllowed(status), pendingBytes > 0, let p = pending
        {
            h.add(name: "Content-Type", value: sniffContentType(p))
        }

        var buf = connection.allocator.buffer(capacity: 256 + (pending?.readableBytes ?? 0))
        encodeHead(status, headers: h, into: &buf)
        headSent = true
        if var body = pending, !isHEAD, bodyAllowed(status) {
            pending = nil
            let framed = frameBody(&body, into: &buf)
            if case .chunked = framing {} else { wireBytes += framed }
        } else {
            pending = nil
        }
        if final, case .chunked = framing {
            buf.writeStaticString("0\r\n\r\n")
            wireBytes += 5
        }
        try await connection.send(buf, flush: flush)
    }

    private func sendBody(_ buffer: ByteBuffer, flush: Bool) async throws {
        let n = buffer.readableBytes
        guard n > 0 else {
            if flush { try await connection.send(nil, flush: true) }
            return
        }
        switch framing {
        case .noBody, .undecided:
            return
        case .contentLength(let remaining):
            let allowed = min(n, remaining)
            framing = .contentLength(remaining: remaining - allowed)
            if allowed > 0 {
                wireBytes += allowed
                try await connection.send(buffer.getSlice(at: buffer.readerIndex, length: allowed)!, flush: flush)
            }
            if allowed < n {
                closeAfter = true
                throw ContentLengthExceededError()
            }
        case .closeDelimited:
            wireBytes += n
            try await connection.send(buffer, flush: flush)
        case .chunked:
            var body = buffer
            var out = connection.allocator.buffer(capacity: n + 16)
            appendChunk(&body, into: &out)
            try await connection.send(out, flush: flush)
        }
    }

    /// Appends held-back body bytes after the head, framed.
    private func frameBody(_ body: inout ByteBuffer, into out: inout ByteBuffer) -> Int {
        let n = body.readableBytes
        switch framing {
        case .contentLength(let remaining):
            let allowed = min(n, remaining)
            framing = .contentLength(remaining: remaining - allowed)
            if allowed > 0, var slice = body.readSlice(length: allowed) { out.writeBuffer(&slice) }
            if allowed < n { closeAfter = true }
            return allowed
        case .closeDelimited:
            out.writeBuffer(&body)
            return n
        case .chunked:
            appendChunk(&body, into: &out)
            return n
        case .noBody, .undecided:
            return 0
        }
    }

    private func appendChunk(_ body: inout ByteBuffer, into out: inout ByteBuffer) {
        let n = body.readableBytes
        guard n > 0 else { return }
        let start = out.writerIndex
        out.writeString(String(n, radix: 16))
        out.writeStaticString("\r\n")
        out.writeBuffer(&body)
        out.writeStaticString("\r\n")
        wireBytes += out.writerIndex - start
    }

    private func encodeHead(_ status: HTTPResponseStatus, headers: HTTPHeaders, into buf: inout ByteBuffer) {
        let start = buf.writerIndex
        if requestVersion.major == 1 && requestVersion.minor == 0 {
            buf.writeStaticString("HTTP/1.0")
            buf.writeString(String(Self.statusLine(status).dropFirst(8)))
        } else {
            buf.writeString(Self.statusLine(status))
        }
        for (name, value) in headers {
            buf.writeString(name)
            buf.writeStaticString(": ")
            buf.writeString(value)
            buf.writeStaticString("\r\n")
        }
        buf.writeStaticString("\r\n")
        wireBytes += buf.writerIndex - start
    }

    /// Status lines with Go's reason phrases (as Caddy sends them), precomputed.
    private static let statusLines: [String] = (0..<600).map { code in
        "HTTP/1.1 \(code) \(HTTPResponseStatusText.text(code))\r\n"
    }

    static func statusLine(_ status: HTTPResponseStatus) -> String {
        let code = Int(status.code)
        if code < statusLines.count { return statusLines[code] }
        return "HTTP/1.1 \(code) \r\n"
    }
}

extension HTTP1ResponseWriter: ConnectionUpgrading {
    var upgradeRequested: Bool { connection.upgradeRequestedByCurrent(self) }

    func upgrade(_ status: HTTPResponseStatus) async throws -> any UpgradedStream {
        guard !finished, !headSent, upgradeRequested else { throw ResponseFinishedError() }
        self.status = status
        var buf = connection.allocator.buffer(capacity: 256)
        encodeHead(status, headers: headers, into: &buf)
        headSent = true
        finished = true
        closeAfter = true
        try await connection.send(buf, flush: true)
        return HTTP1UpgradedStream(
            connection: connection, inbound: RequestBody(stream: try connection.beginUpgrade(), expectedLength: nil))
    }
}

/// An HTTP/1.1 connection after `101 Switching Protocols`.
final class HTTP1UpgradedStream: UpgradedStream {
    let connection: HTTP1Connection
    let inbound: RequestBody

    init(connection: HTTP1Connection, inbound: RequestBody) {
        self.connection = connection
        self.inbound = inbound
    }

    func write(_ buffer: ByteBuffer) async throws { try await connection.send(buffer, flush: true) }
    func close(sending last: ByteBuffer?) { connection.closeUpgraded(sending: last) }
}

extension HTTP1ResponseWriter: FileBodyWriting {
    func writeFileRegion(descriptor: CInt, offset: Int, length: Int) async throws -> Bool {
        guard connection.settings.zeroCopy, !finished, !isHEAD, length > 0 else { return false }
        if !headSent {
            guard pending == nil, headers.contains(name: "Content-Length") else { return false }
            if status == nil { status = .ok }
            try await sendHeadAndPending(final: false, flush: false)
        }
        guard case .contentLength(let remaining) = framing, length <= remaining else { return false }
        framing = .contentLength(remaining: remaining - length)
        bodyBytesWritten += length
        wireBytes += length
        try await connection.sendFile(descriptor: descriptor, offset: offset, length: length)
        return true
    }
}

/// More body bytes than the response's `Content-Length` declared.
struct ContentLengthExceededError: Error, CustomStringConvertible {
    var description: String { "wrote more than the declared Content-Length" }
}

/// A write after the response was completed.
struct ResponseFinishedError: Error, CustomStringConvertible {
    var description: String { "response already finished" }
}

extension String {
    var trimmingASCIISpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
