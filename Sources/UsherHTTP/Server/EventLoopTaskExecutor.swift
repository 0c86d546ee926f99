public import NIOCore
import Synchronization

/// Runs Swift tasks on a NIO event loop, so a request's handler chain executes on its connection's loop: no
/// thread hop per request, and writes reach the channel without a round trip.
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    private init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// Set by ``startTask(_:)`` for the one job it enqueues; read and written only on the loop's thread.
    nonisolated(unsafe) private var runNextInline = false

    public func enqueue(_ job: consuming ExecutorJob) {
        if eventLoop.inEventLoop && runNextInline {
            runNextInline = false
            job.runSynchronously(on: asUnownedTaskExecutor())
            return
        }
        let unowned = UnownedJob(job)
        eventLoop.execute {
            unowned.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }

    /// Starts `operation` as a task on this executor and runs it on the calling thread, which must be the loop's,
    /// until it first suspends: what `Task.immediate(executorPreference:)` does. That one is not used because in
    /// Swift 6.3.1, called from outside any task (as from a channel handler), it never frees its task: ~1.6 KB and
    /// everything the closure holds, per request.
    @discardableResult
    public func startTask(_ operation: sending @escaping () async -> Void) -> Task<Void, Never> {
        eventLoop.preconditionInEventLoop()
        runNextInline = true
        defer { runNextInline = false }
        return Task(executorPreference: self, operation: operation)
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

extension EventLoopTaskExecutor {
    /// Starts the task that serves one request on this loop (HTTP/1.1, HTTP/2 and HTTP/3 all start requests here):
    /// `server` handles `request` through `writer`, then `finished(owner)` runs. The request, writer and owner belong
    /// to the loop; `NIOLoopBound` carries them into the task and checks there that they are used on it.
    ///
    /// The returned task's closure holds all three until the task is freed; a caller that keeps the task must drop
    /// it once `finished` has run, or the two keep each other alive.
    func startRequest<Writer: RootResponseWriter, Owner>(
        _ server: HTTPServerInstance, _ request: Request, _ writer: Writer, owner: Owner,
        finished: @escaping (Owner) -> Void
    ) -> Task<Void, Never> {
        let bound = NIOLoopBound(
            (request: request, writer: writer, owner: owner, finished: finished), eventLoop: eventLoop)
        return startTask {
            let state = bound.value
            await server.serve(state.request, state.writer)
            state.finished(state.owner)
        }
    }
}
