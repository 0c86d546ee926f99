public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
public import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// Counts open connections per upstream against `max_conns_per_host`; requests over the limit wait, first come
/// first served, for one to close.
final class ConnectionLimiter: Sendable {
    private struct Host {
        var open = 0
        var waiters: [(id: Int, resume: CheckedContinuation<Void, any Error>)] = []
    }
    private let max: Int
    private let hosts = Mutex<(byAddress: [String: Host], nextID: Int)>(([:], 0))

    init(max: Int) { self.max = max }

    /// Takes a slot for a new connection to `address`, waiting while all are taken (`makeRoom` may close an idle
    /// one). Throws when the waiting task is cancelled.
    func reserve(_ address: String, makeRoom: @Sendable () -> Void) async throws {
        let id = hosts.withLock { h -> Int? in
            if h.byAddress[address, default: Host()].open < max {
                h.byAddress[address, default: Host()].open += 1
                return nil
            }
            h.nextID += 1
            return h.nextID
        }
        guard let id else { return }
        makeRoom()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let granted = hosts.withLock { h -> Bool in
                    // A slot may have come free meanwhile.
                    if h.byAddress[address, default: Host()].open < max {
                        h.byAddress[address, default: Host()].open += 1
                        return true
                    }
                    h.byAddress[address, default: Host()].waiters.append((id, c))
                    return false
                }
                if granted { c.resume() }
            }
        } onCancel: {
            let waiter = hosts.withLock { h -> CheckedContinuation<Void, any Error>? in
                guard let i = h.byAddress[address]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return h.byAddress[address]!.waiters.remove(at: i).resume
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    func hasWaiters(_ address: String) -> Bool {
        hosts.withLock { !($0.byAddress[address]?.waiters.isEmpty ?? true) }
    }

    /// A connection to `address` closed (or its dial failed): the slot goes to the first waiter, if any.
    func free(_ address: String) {
        let next = hosts.withLock { h -> CheckedContinuation<Void, any Error>? in
            guard var host = h.byAddress[address] else { return nil }
            if !host.waiters.isEmpty {
                let w = host.waiters.removeFirst()
                h.byAddress[address] = host
                return w.resume
            }
            host.open -= 1
            h.byAddress[address] = host.open > 0 ? host : nil
            return nil
        }
        next?.resume()
    }
}
