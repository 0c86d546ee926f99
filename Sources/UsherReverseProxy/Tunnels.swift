import Foundation
import NIOCore
import Synchronization
import UsherCore
import UsherHTTP

/// Upgraded connections (WebSockets and other protocol switches) held by `reverse_proxy` handlers, grouped by the
/// handler's config. A reload that keeps a handler with the same config keeps its tunnels open; when the last
/// handler with that config is unloaded, they are closed after `stream_close_delay`.
final class TunnelRegistry: Sendable {
    private struct Group {
        var handlers = 0
        var tunnels: [ObjectIdentifier: any HeldConnection] = [:]
        /// Bumped on every retain, so a delayed close can tell that the group came back meanwhile.
        var epoch = 0
    }
    private let groups = Mutex<[JSONValue: Group]>([:])

    /// A handler with config `key` was provisioned.
    func retain(_ key: JSONValue) {
        groups.withLock { g in
            g[key, default: Group()].handlers += 1
            g[key]!.epoch += 1
        }
    }

    /// A handler with config `key` was cleaned up: when no handler with that config is left, its tunnels close
    /// after `delay`.
    func release(_ key: JSONValue, closeAfter delay: Duration) {
        let (orphaned, epoch): (Bool, Int) = groups.withLock { g in
            guard var group = g[key] else { return (false, 0) }
            group.handlers -= 1
            g[key] = group
            return (group.handlers <= 0, group.epoch)
        }
        guard orphaned else { return }
        // Sessions that can be asked to wind down (WebTransport) are asked at once.
        for t in groups.withLock({ Array(($0[key]?.tunnels ?? [:]).values) }) { t.drain() }
        if delay <= .zero {
            closeOrphans(key, epoch: epoch)
            return
        }
        Task {
            try? await Task.sleep(for: delay)
            self.closeOrphans(key, epoch: epoch)
        }
    }

    private func closeOrphans(_ key: JSONValue, epoch: Int) {
        let tunnels: [any HeldConnection] = groups.withLock { g in
            guard let group = g[key], group.handlers <= 0, group.epoch == epoch else { return [] }
            g[key] = nil
            return Array(group.tunnels.values)
        }
        for t in tunnels { t.close() }
    }

    func add(_ tunnel: any HeldConnection, to key: JSONValue) {
        groups.withLock { g in g[key, default: Group()].tunnels[ObjectIdentifier(tunnel)] = tunnel }
    }

    func remove(_ tunnel: any HeldConnection, from key: JSONValue) {
        groups.withLock { g in
            g[key]?.tunnels[ObjectIdentifier(tunnel)] = nil
            if let group = g[key], group.handlers <= 0, group.tunnels.isEmpty { g[key] = nil }
        }
    }

    /// Tunnels open now, for tests and metrics.
    var count: Int { groups.withLock { $0.values.reduce(0) { $0 + $1.tunnels.count } } }
}

/// A long-lived exchange a handler holds beyond one request: a tunnel, or a WebTransport session.
protocol HeldConnection: AnyObject, Sendable {
    /// Asks both ends to wind down (the handler is going away); closing follows after `stream_close_delay`.
    func drain()
    /// Closes both ends.
    func close()
}

/// One open tunnel: its two ends, reachable from any thread through their event loop.
final class HeldTunnel: HeldConnection {
    private let ends: NIOLoopBound<(client: any UpgradedStream, upstream: UpstreamTunnel)>
    private let websocket: Bool

    /// Made on the loop both ends live on.
    init(client: any UpgradedStream, upstream: UpstreamTunnel, loop: any EventLoop, websocket: Bool) {
        ends = NIOLoopBound((client, upstream), eventLoop: loop)
        self.websocket = websocket
    }

    /// Tunnels have no way to ask their ends to wind down.
    func drain() {}

    /// Closes both ends; a WebSocket first gets a Close frame with 1001 (going away) each way, as Caddy sends.
    func close() {
        let ends = self.ends
        let websocket = self.websocket
        ends.eventLoop.execute {
            let (client, upstream) = ends.value
            client.close(sending: websocket ? WebSocketFrames.goingAway(masked: false) : nil)
            upstream.close(sending: websocket ? WebSocketFrames.goingAway(masked: true) : nil)
        }
    }
}

/// The few WebSocket frames a proxy writes itself (RFC 6455 section 5).
enum WebSocketFrames {
    /// A Close frame with status 1001 (going away); frames towards a server must be masked.
    static func goingAway(masked: Bool) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt8(0x88))  // FIN + opcode 8 (close)
        let payload: [UInt8] = [0x03, 0xE9]  // 1001
        if masked {
            b.writeInteger(UInt8(0x80 | payload.count))
            let key = (0..<4).map { _ in UInt8.random(in: 0...255) }
            b.writeBytes(key)
            b.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset % 4] })
        } else {
            b.writeInteger(UInt8(payload.count))
            b.writeBytes(payload)
        }
        return b
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
    static func newKey() -> String {
        Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }
}
