public import NIOCore
import Synchronization

/// Runs Swift tasks on a NIO event loop, so a request's handler chain executes on its connection's loop: no
/// thread hop per request, and writes reach the channel without a round trip.
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        eventLoop.execute {
            unowned.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }

    private static let cache = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// The executor for `loop` (one per loop, made on first use).
    public static func forLoop(_ loop: any EventLoop) -> EventLoopTaskExecutor {
        cache.withLock { c in
            let key = ObjectIdentifier(loop)
            if let e = c[key] { return e }
            let e = EventLoopTaskExecutor(loop)
            c[key] = e
            return e
        }
    }
}
