import Logging
import NIOCore
import NIOHTTP1
import UsherCore
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

// Closing (graceful, forced, on a timeout) and the one timer that enforces every limit of the connection.

extension HTTP1Connection {
    /// Closes once the current response is out; idle connections close at once.
    func closeGracefully() {
        guard !closed, let context else { return }
        if let current, !current.handlerDone { return }
        // Close once everything written so far is out: closing at once would drop writes still queued.
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(mode: .all, promise: nil)
        }
    }

    /// Called by the listener when it shuts down: idle connections close now, busy ones after their response.
    func shutdown() {
        if current == nil && receiving == nil { closeGracefully() }
    }

    /// Closes now, whatever is in flight.
    func forceClose() {
        context?.close(promise: nil)
    }

    private func closeForTimeout() {
        guard !closed, let context else { return }
        if let current, current.writer.status == nil && !current.writer.finished && !current.bodyComplete {
            sendErrorAndClose(.requestTimeout)
            return
        }
        context.close(promise: nil)
    }

    /// Bytes arrived before a head was parsed: the header timeout starts, and heads that never end are cut off.
    func headBytesArrived(_ count: Int) {
        guard awaitingHead, !closed else { return }
        if settings.readHeaderTimeout != nil {
            if headStartedAt == nil { headStartedAt = .now() }
            idleSince = nil
        }
        headBytesPending += count
    }

    func checkHeadOverflow() {
        if awaitingHead && headBytesPending > settings.maxHeaderBytes + 4096 {
            sendErrorAndClose(.requestHeaderFieldsTooLarge)
        }
    }

    func armTimer() {
        guard timer == nil, !closed else { return }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        timer = eventLoop.scheduleTask(in: timerCap) { loopBound.value.timerFired() }
    }

    /// Checks every deadline; acts on the first that has passed, and re-arms otherwise.
    private func timerFired() {
        timer = nil
        // A connection handed over by an upgrade has no HTTP timeouts (Go's hijacked connections neither).
        guard !closed, upgraded == nil else { return }
        let now = NIODeadline.now()
        func passed(_ since: NIODeadline?, _ limit: TimeAmount?) -> Bool {
            guard let since, let limit else { return false }
            return now - since >= limit
        }
        if passed(headStartedAt, settings.readHeaderTimeout) {
            // A connection that never sent a byte is closed quietly, as Go does.
            if headBytesPending == 0 && current == nil { forceClose() } else { sendErrorAndClose(.requestTimeout) }
            return
        }
        if current == nil && receiving == nil && passed(idleSince, settings.idleTimeout) {
            forceClose()
            return
        }
        if receiving != nil
            && (passed(requestStartedAt, settings.readTimeout) || passed(bodyActivityAt, settings.readIdleTimeout))
        {
            closeForTimeout()
            return
        }
        if let current, !current.handlerDone,
            passed(requestStartedAt, settings.writeTimeout) || passed(writeStalledAt, settings.writeIdleTimeout)
        {
            closeForTimeout()
            return
        }
        armTimer()
    }
}
