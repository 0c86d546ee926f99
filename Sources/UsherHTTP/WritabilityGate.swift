/// Writers waiting for a channel to become writable again. Belongs to one channel handler and is used only on
/// its event loop: `wait()` when a write leaves the channel unwritable, `open()` when writability returns,
/// `fail(_:)` when the channel goes away.
public final class WritabilityGate {
    private var waiters: [CheckedContinuation<Void, any Error>] = []

    public init() {}

    /// Suspends until ``open()`` or ``fail(_:)``.
    public func wait() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in waiters.append(c) }
    }

    /// Resumes every waiter.
    public func open() {
        let w = waiters
        waiters.removeAll()
        for c in w { c.resume() }
    }

    /// Resumes every waiter with `error`.
    public func fail(_ error: any Error) {
        let w = waiters
        waiters.removeAll()
        for c in w { c.resume(throwing: error) }
    }
}
