import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP
import UsherHTTP3
public import UsherHandlers

// Protocol switches through the proxy: HTTP/1.1 `Upgrade` and HTTP/2 extended CONNECT, bridged as byte tunnels.

extension ReverseProxyHandler {
    /// The upstream agreed to switch protocols: answer the client (101, or 200 to an HTTP/2 extended CONNECT),
    /// then bridge bytes both ways until either side closes. The tunnel counts as a request in flight meanwhile.
    func switchProtocols(
        _ request: Request, _ writer: any ResponseWriter, conn: any UpstreamExchange,
        upgrade: (type: String, extendedConnect: Bool), head: HTTPResponseHead,
        headers upstreamHeaders: HTTPHeaders, loop: any EventLoop
    ) async throws {
        let switchedTo = head.headers.first(name: "Upgrade") ?? ""
        guard switchedTo.lowercased() == upgrade.type.lowercased() else {
            conn.close()
            throw HandlerError(
                status: 502, HTTPErrorMessage("reverse_proxy: upstream switched to \(switchedTo), not \(upgrade.type)"))
        }
        guard let upgrader = writer.capability((any ConnectionUpgrading).self), upgrader.upgradeRequested else {
            conn.close()
            throw HandlerError(status: 502, HTTPErrorMessage("reverse_proxy: this connection cannot switch protocols"))
        }
        var h = upstreamHeaders
        if let r = headers?.response, let ops = r.ops, r.require?.matches(status: 101, headers: h) ?? true {
            ops.apply(to: &h, request.replacer)
        }
        writer.headers.remove(name: "Server")
        for (name, value) in h { writer.headers.add(name: name, value: value) }
        let status: HTTPResponseStatus
        if upgrade.extendedConnect {
            // RFC 8441: the tunnel is accepted with 200 and carries no handshake fields of HTTP/1.1.
            writer.headers.remove(name: "Sec-WebSocket-Accept")
            status = .ok
        } else {
            writer.headers.add(name: "Connection", value: "Upgrade")
            writer.headers.add(name: "Upgrade", value: switchedTo)
            status = .switchingProtocols
        }
        let upstream = try conn.becomeTunnel()
        let client: any UpgradedStream
        do {
            client = try await upgrader.upgrade(status)
        } catch {
            upstream.close(sending: nil)
            throw error
        }
        let websocket = upgrade.type.lowercased() == "websocket"
        let held = HeldTunnel(client: client, upstream: upstream, loop: loop, websocket: websocket)
        tunnels?.add(held, to: configKey)
        defer { tunnels?.remove(held, from: configKey) }
        let timeout = streamTimeout.flatMap { t -> Scheduled<Void>? in
            guard t.nanoseconds > 0 else { return nil }
            return loop.scheduleTask(in: .nanoseconds(t.nanoseconds)) { held.close() }
        }
        defer { timeout?.cancel() }
        let ends = NIOLoopBound((client: client, upstream: upstream), eventLoop: loop)
        // Each direction copies with backpressure: a read waits until the other side took the previous write.
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                let (client, upstream) = ends.value
                do { for try await chunk in client.inbound { try await upstream.write(chunk) } } catch {}
            }
            group.addTask {
                let (client, upstream) = ends.value
                do { while let chunk = try await upstream.next() { try await client.write(chunk) } } catch {}
            }
            await group.next()
            // One side is done: close both, which ends the other copy.
            let (client, upstream) = ends.value
            upstream.close(sending: nil)
            client.close(sending: nil)
            await group.next()
        }
    }

    /// What the request asks to switch to: an HTTP/1.1 `Upgrade` (with `Connection: upgrade`), or the
    /// `:protocol` of an HTTP/2 extended CONNECT.
    static func requestedUpgrade(_ request: Request) -> (type: String, extendedConnect: Bool)? {
        if request.method == .CONNECT, let p = request.connectProtocol { return (p, true) }
        guard request.version.major == 1, let type = request.headers.first(name: "Upgrade"), !type.isEmpty,
            request.headers[canonicalForm: "Connection"].contains(where: { $0.lowercased() == "upgrade" })
        else { return nil }
        return (type, false)
    }
}
