import NIOCore

/// The bytes a stream sends: queued until written, then held until acknowledged (nghttp3 and ngtcp2 point into
/// them until then). Writers wait while more than ``window`` bytes are unacknowledged. Used on one event loop.
final class SendQueue {
    /// Unacknowledged bytes above which ``waitForWindow(closed:)`` waits.
    var window: Int
    private(set) var pending = CircularBuffer<ByteBuffer>()
    private var inflight = CircularBuffer<ByteBuffer>()
    private(set) var unacked = 0
    private var waiters: [CheckedContinuation<Void, any Error>] = []

    init(window: Int) { self.window = window }

    func append(_ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        pending.append(buffer)
        unacked += buffer.readableBytes
    }

    /// The next queued buffer, now counted as written whole.
    func popForWrite() -> ByteBuffer? {
        guard let b = pending.popFirst() else { return nil }
        // The storage stays alive and unmoved in `inflight` until acknowledged: nothing writes to it.
        inflight.append(b)
        return b
    }

    /// `count` bytes of the first queued buffer were written.
    func wrote(_ count: Int) {
        guard count > 0, var first = pending.popFirst() else { return }
        if count < first.readableBytes {
            inflight.append(first.readSlice(length: count)!)
            pending.prepend(first)
        } else {
            inflight.append(first)
        }
    }

    /// The peer acknowledged `count` more bytes: they are released, and writers go on below the window.
    func acknowledged(_ count: Int) {
        var left = count
        while left > 0, var first = inflight.first {
            if first.readableBytes <= left {
                left -= first.readableBytes
                inflight.removeFirst()
            } else {
                first.moveReaderIndex(forwardBy: left)
                inflight[inflight.startIndex] = first
                left = 0
            }
        }
        unacked -= count
        if unacked <= window { wake(nil) }
    }

    /// Waits while more than ``window`` bytes are unacknowledged; throws once `closed` says the stream is gone.
    func waitForWindow(closed: () -> Bool) async throws {
        while unacked > window && !closed() {
            try await withCheckedThrowingContinuation { waiters.append($0) }
        }
        if closed() { throw HTTP3StreamClosedError() }
    }

    /// The stream is gone: nothing more goes out, and waiting writers fail.
    func fail() {
        pending.removeAll()
        wake(HTTP3StreamClosedError())
    }

    /// Drops what the peer never acknowledged, once nothing points into it any more.
    func release() { inflight.removeAll() }

    private func wake(_ error: (any Error)?) {
        guard !waiters.isEmpty else { return }
        let w = waiters
        waiters = []
        for c in w {
            if let error { c.resume(throwing: error) } else { c.resume() }
        }
    }
}
