public import NIOCore
public import NIOHTTP1

/// Where a handler writes its response. Handlers pass it down the chain, possibly wrapped; a wrapper overrides
/// what it changes and forwards the rest (``WrappingResponseWriter``), and ``capability(_:)`` finds a
/// capability (``Flushing``, ...) anywhere in the wrapper chain, as Caddy's `Unwrap` does.
///
/// Semantics follow Go's `http.ResponseWriter`: ``headers`` may be changed until the head is written; writing
/// body bytes without ``writeHead(_:)`` implies `200 OK`; a 1xx status is sent as an interim response. The server
/// completes the response when the chain returns. A writer belongs to one request and is not `Sendable`.
public protocol ResponseWriter: AnyObject {
    /// The header fields to send; changes after the head is written have no effect.
    var headers: HTTPHeaders { get set }
    /// The final status once the head is written, else `nil`.
    var status: HTTPResponseStatus? { get }
    /// Sends the status and headers (1xx: an interim response, and the final head is still to come).
    func writeHead(_ status: HTTPResponseStatus) async throws
    /// Sends body bytes, writing a `200 OK` head first if none was written.
    func write(_ buffer: ByteBuffer) async throws
    /// The writer this one wraps, if any.
    var wrapped: (any ResponseWriter)? { get }
}

extension ResponseWriter {
    /// The first writer in the wrapper chain (this one first) that has capability `C`.
    public func capability<C>(_ type: C.Type) -> C? {
        var current: (any ResponseWriter)? = self
        while let w = current {
            if let c = w as? C { return c }
            current = w.wrapped
        }
        return nil
    }

    /// Writes a string as UTF-8.
    public func write(_ string: String) async throws {
        var buf = ByteBufferAllocator().buffer(capacity: string.utf8.count)
        buf.writeString(string)
        try await write(buf)
    }

    /// Whether the head has been written.
    public var headWritten: Bool { status != nil }
}

/// A writer that wraps another and, by default, forwards everything to it.
public protocol WrappingResponseWriter: ResponseWriter {
    var wrappedWriter: any ResponseWriter { get }
}

extension WrappingResponseWriter {
    public var wrapped: (any ResponseWriter)? { wrappedWriter }

    public var headers: HTTPHeaders {
        get { wrappedWriter.headers }
        set { wrappedWriter.headers = newValue }
        _modify { yield &wrappedWriter.headers }
    }

    public var status: HTTPResponseStatus? { wrappedWriter.status }

    public func writeHead(_ status: HTTPResponseStatus) async throws {
        try await wrappedWriter.writeHead(status)
    }

    public func write(_ buffer: ByteBuffer) async throws {
        try await wrappedWriter.write(buffer)
    }
}

/// Sends buffered response bytes to the client now.
public protocol Flushing: AnyObject {
    func flush() async throws
}

/// Counts what passes through, for access logs.
public protocol ResponseAccounting: AnyObject {
    /// Body bytes written (before transfer encoding).
    var bodyBytesWritten: Int { get }
}

/// A writer that records the status and body bytes it passes on: for access logs and `handle_response`.
public final class CountingResponseWriter: WrappingResponseWriter, ResponseAccounting {
    public let wrappedWriter: any ResponseWriter
    public private(set) var bodyBytesWritten = 0

    public init(_ wrapped: any ResponseWriter) { self.wrappedWriter = wrapped }

    public func write(_ buffer: ByteBuffer) async throws {
        bodyBytesWritten += buffer.readableBytes
        try await wrappedWriter.write(buffer)
    }
}

/// Records a response in memory when `shouldBuffer` says so at head time, else passes it through: the basis of
/// handlers that inspect or replace responses (Caddy's `ResponseRecorder`).
public final class ResponseRecorder: WrappingResponseWriter {
    public let wrappedWriter: any ResponseWriter
    let shouldBuffer: (HTTPResponseStatus, HTTPHeaders) -> Bool
    /// The status written by the handler (recorded or passed through).
    public private(set) var recordedStatus: HTTPResponseStatus?
    /// Whether the response is being buffered rather than passed through.
    public private(set) var buffering = false
    /// The buffered body.
    public private(set) var body = ByteBuffer()
    public private(set) var size = 0
    /// Body bytes beyond `limit` were dropped (`size` still counts them).
    public private(set) var overflowed = false
    private let limit: Int
    private var ownHeaders: HTTPHeaders?

    /// `limit`: most body bytes held; what comes beyond is counted and dropped.
    public init(
        _ wrapped: any ResponseWriter, limit: Int = .max,
        shouldBuffer: @escaping (HTTPResponseStatus, HTTPHeaders) -> Bool
    ) {
        self.wrappedWriter = wrapped
        self.limit = limit
        self.shouldBuffer = shouldBuffer
    }

    public var headers: HTTPHeaders {
        get { ownHeaders ?? wrappedWriter.headers }
        set {
            if ownHeaders != nil { ownHeaders = newValue } else { wrappedWriter.headers = newValue }
        }
    }

    public var status: HTTPResponseStatus? { recordedStatus }

    public func writeHead(_ status: HTTPResponseStatus) async throws {
        guard recordedStatus == nil else { return }
        if status.code < 200 && status != .switchingProtocols {
            try await wrappedWriter.writeHead(status)
            return
        }
        recordedStatus = status
        buffering = shouldBuffer(status, wrappedWriter.headers)
        if !buffering {
            try await wrappedWriter.writeHead(status)
        }
    }

    public func write(_ buffer: ByteBuffer) async throws {
        if recordedStatus == nil { try await writeHead(.ok) }
        size += buffer.readableBytes
        if buffering {
            guard body.readableBytes + buffer.readableBytes <= limit else {
                overflowed = true
                return
            }
            var b = buffer
            body.writeBuffer(&b)
        } else {
            try await wrappedWriter.write(buffer)
        }
    }

    /// After a buffered response: sends the recorded status, headers and body on.
    public func writeRecordedResponse() async throws {
        guard buffering, let s = recordedStatus else { return }
        try await wrappedWriter.writeHead(s)
        if body.readableBytes > 0 { try await wrappedWriter.write(body) }
    }
}
