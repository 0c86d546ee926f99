public import NIOCore
import Synchronization

/// A request body as an async sequence of buffers, with backpressure: the connection stops reading from the
/// socket while more than a window of data waits here, so a handler can stream a body of any size in bounded
/// memory.
///
/// ```swift
/// for try await chunk in request.body { ... }
/// let all = try await request.body.collect(upTo: 1 << 20)
/// ```
public final class RequestBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    public typealias Failure = any Error

    /// The declared length (`Content-Length`), if any.
    public let expectedLength: Int?
    let stream: BodyStream?
    /// A body substituted by a handler (already read into memory, or a limited view).
    let replacement: Mutex<(any BodySource)?>

    /// A body with no bytes.
    public static var empty: RequestBody { RequestBody(stream: nil, expectedLength: 0) }

    init(stream: BodyStream?, expectedLength: Int?) {
        self.stream = stream
        self.expectedLength = expectedLength
        self.replacement = Mutex(nil)
    }

    /// A body that yields the given buffers.
    public convenience init(buffers: [ByteBuffer]) {
        self.init(stream: nil, expectedLength: buffers.reduce(0) { $0 + $1.readableBytes })
        replacement.withLock { $0 = BufferedBodySource(buffers: buffers) }
    }

    /// Whether the request has no body at all.
    public var isEmpty: Bool {
        stream == nil && replacement.withLock { $0 == nil }
    }

    /// Substitutes another source, e.g. a byte-counting limit or a buffered copy.
    public func replace(with source: any BodySource) {
        replacement.withLock { $0 = source }
    }

    /// The current source of bytes.
    public var source: any BodySource {
        if let r = replacement.withLock({ $0 }) { return r }
        return stream ?? BufferedBodySource(buffers: [])
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let source: any BodySource
        public mutating func next() async throws -> ByteBuffer? { try await source.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source) }

    /// Reads the whole body; throws ``BodyTooLargeError`` beyond `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var result = ByteBuffer()
        for try await var chunk in self {
            guard result.readableBytes + chunk.readableBytes <= limit else { throw BodyTooLargeError(limit: limit) }
            result.writeBuffer(&chunk)
        }
        return result
    }

    /// Reads and discards whatever is left.
    public func drain() async throws {
        for try await _ in self {}
    }
}

/// A source of body bytes.
public protocol BodySource: Sendable {
    /// The next chunk, or `nil` at the end.
    func next() async throws -> ByteBuffer?
}

/// A body larger than a configured limit.
public struct BodyTooLargeError: Error, CustomStringConvertible, Sendable {
    public let limit: Int
    public init(limit: Int) { self.limit = limit }
    public var description: String { "request body too large (limit \(limit) bytes)" }
}

/// Body bytes held in memory.
public final class BufferedBodySource: BodySource {
    let buffers: Mutex<[ByteBuffer]>
    public init(buffers: [ByteBuffer]) { self.buffers = Mutex(buffers.reversed()) }
    public func next() async throws -> ByteBuffer? { buffers.withLock { $0.popLast() } }
}

/// The connection's side of a body being received: the connection yields, the handler reads.
final class BodyStream: BodySource {
    private struct State {
        var buffers: [ByteBuffer] = []
        var bufferedBytes = 0
        var finished = false
        var error: (any Error)?
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        /// The consumer has started reading (for `Expect: 100-continue`).
        var started = false
        var consumed = 0
    }

    private let state = Mutex(State())
    /// Bytes to hold before the connection stops reading.
    let highWatermark: Int
    /// Called (from any thread) when the consumer wants more: first read, or buffer drained below the watermark.
    let onDemand: @Sendable (_ first: Bool) -> Void

    init(highWatermark: Int = 256 * 1024, onDemand: @escaping @Sendable (_ first: Bool) -> Void) {
        self.highWatermark = highWatermark
        self.onDemand = onDemand
    }

    /// Adds received bytes; returns whether the connection may keep reading.
    func yield(_ buffer: ByteBuffer) -> Bool {
        let (waiter, keepReading): (CheckedContinuation<ByteBuffer?, any Error>?, Bool) = state.withLock { s in
            if let w = s.waiter {
                s.waiter = nil
                s.consumed += buffer.readableBytes
                return (w, true)
            }
            s.buffers.append(buffer)
            s.bufferedBytes += buffer.readableBytes
            return (nil, s.bufferedBytes < highWatermark)
        }
        waiter?.resume(returning: buffer)
        return keepReading
    }

    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<ByteBuffer?, any Error>? in
            s.finished = true
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume(returning: nil)
    }

    func fail(_ error: any Error) {
        let waiter = state.withLock { s -> CheckedContinuation<ByteBuffer?, any Error>? in
            if s.finished { return nil }
            s.error = error
            s.finished = true
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume(throwing: error)
    }

    /// Bytes handed to the consumer so far.
    var consumedBytes: Int { state.withLock { $0.consumed } }

    /// Whether the body has been fully received (or failed).
    var isFinished: Bool { state.withLock { $0.finished } }

    func next() async throws -> ByteBuffer? {
        enum Step {
            case value(ByteBuffer, demand: Bool, first: Bool)
            case end
            case fail(any Error)
            case wait(first: Bool)
        }
        let step: Step = state.withLock { s in
            let first = !s.started
            s.started = true
            if !s.buffers.isEmpty {
                let b = s.buffers.removeFirst()
                let wasAbove = s.bufferedBytes >= highWatermark
                s.bufferedBytes -= b.readableBytes
                s.consumed += b.readableBytes
                return .value(b, demand: wasAbove && s.bufferedBytes < highWatermark, first: first)
            }
            if let e = s.error { return .fail(e) }
            if s.finished { return .end }
            return .wait(first: first)
        }
        switch step {
        case .value(let b, let demand, let first):
            if demand || first { onDemand(first) }
            return b
        case .end: return nil
        case .fail(let e): throw e
        case .wait(let first):
            return try await withCheckedThrowingContinuation { (c: CheckedContinuation<ByteBuffer?, any Error>) in
                let immediate: Result<ByteBuffer?, any Error>? = state.withLock { s in
                    if !s.buffers.isEmpty {
                        let b = s.buffers.removeFirst()
                        s.bufferedBytes -= b.readableBytes
                        s.consumed += b.readableBytes
                        return .success(b)
                    }
                    if let e = s.error { return .failure(e) }
                    if s.finished { return .success(nil) }
                    s.waiter = c
                    return nil
                }
                if let immediate {
                    c.resume(with: immediate)
                } else {
                    onDemand(first)
                }
            }
        }
    }
}
