import Logging
import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP
import UsherHTTP3

/// `http.handlers.webtransport` (test builds only): accepts a WebTransport session and echoes it.
/// - a bidirectional stream the client opens: its bytes come back on it, FIN for FIN; a reset comes back as a
///   reset with the same code;
/// - a unidirectional stream: its bytes come back on a new unidirectional stream once it ends; if they are
///   `open bidi`, the handler instead opens a bidirectional stream, sends `server bidi` with FIN, and sends what
///   the client answers on it back on a unidirectional stream, prefixed `reply:`;
/// - a datagram comes back as it is, except `close:CODE:REASON`, which closes the session with that code and
///   reason;
/// - `WT-Protocol` answers with the first protocol of `WT-Available-Protocols`, and the fields named in the
///   type's doc come back as x-echo-*;
/// - the session's end is logged (`webtransport echo session closed`, with `code`, `reason`, `aborted`).
/// The handler returns when the session ends.
public struct WebTransportEchoHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.webtransport"
    private var logger: Logger?

    enum CodingKeys: CodingKey {}

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard let accepting = writer.capability((any WebTransportAccepting).self), accepting.webTransportRequested
        else {
            throw HandlerError(status: 400, HTTPErrorMessage("webtransport: not a WebTransport CONNECT"))
        }
        writer.headers.replaceOrAdd(
            name: "x-echo-forwarded-for", value: request.headers.first(name: "X-Forwarded-For") ?? "")
        writer.headers.replaceOrAdd(name: "x-echo-via", value: request.headers.first(name: "Via") ?? "")
        writer.headers.replaceOrAdd(name: "x-echo-up", value: request.headers.first(name: "X-Up") ?? "")
        writer.headers.replaceOrAdd(name: "x-echo-path", value: request.uri)
        // Subprotocol negotiation (WT-Available-Protocols / WT-Protocol): the first offered one is chosen.
        if let offered = request.headers.first(name: "WT-Available-Protocols"),
            let first = offered.split(separator: ",").first.map({ String($0.drop { $0 == " " }) })
        {
            writer.headers.replaceOrAdd(name: "WT-Protocol", value: first)
        }
        let session = try await accepting.acceptWebTransport(.ok)
        let logger = self.logger
        let echo = WebTransportEcho(session: session)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            echo.start { info in
                logger?.info(
                    "webtransport echo session closed",
                    metadata: [
                        "code": .stringConvertible(info.code), "reason": .string(info.reason),
                        "aborted": .stringConvertible(info.aborted),
                    ])
                done.resume()
            }
        }
    }
}

/// The echo's state, on the session's event loop.
private final class WebTransportEcho: @unchecked Sendable {
    // @unchecked: used only on the session's event loop, where the handler task also runs.
    let session: WebTransportSession

    init(session: WebTransportSession) { self.session = session }

    func start(onClose: @escaping (WebTransportCloseInfo) -> Void) {
        session.onClose = onClose
        // The handler holds this object until the session ends; streams may call back after that (weak).
        session.onStream = { [weak self] s in
            if s.isBidirectional { self?.echoBidi(s) } else { self?.collectUni(s) }
        }
        session.onDatagram = { [weak self] d in
            guard let self else { return }
            let text = String(decoding: d, as: UTF8.self)
            if text.hasPrefix("close:") {
                let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                self.session.close(
                    code: UInt32(parts.count > 1 ? parts[1] : "0") ?? 0, reason: parts.count > 2 ? String(parts[2]) : ""
                )
            } else {
                self.session.sendDatagram(d)
            }
        }
        if let info = session.closeInfo { onClose(info) }
    }

    private func echoBidi(_ s: HTTP3RawStream) {
        s.onData = { [unowned s] b, fin in try? s.enqueue(b, fin: fin) }
        s.onAcknowledged = { [unowned s] n in s.consumed(n) }
        s.onReset = { [unowned s] code in s.resetSending(code) }
    }

    private func collectUni(_ s: HTTP3RawStream) {
        var got = ByteBuffer()
        s.onData = { [weak self, unowned s] b, fin in
            var b = b
            s.consumed(b.readableBytes)
            got.writeBuffer(&b)
            guard fin else { return }
            if got.readableBytesView.elementsEqual("open bidi".utf8) {
                self?.openBidi()
            } else {
                self?.send(got)
            }
        }
    }

    private func openBidi() {
        guard let s = try? session.openStream(bidirectional: true) else { return }
        try? s.enqueue(ByteBuffer(string: "server bidi"), fin: true)
        var got = ByteBuffer(string: "reply:")
        s.onData = { [weak self, unowned s] b, fin in
            var b = b
            s.consumed(b.readableBytes)
            got.writeBuffer(&b)
            if fin { self?.send(got) }
        }
    }

    private func send(_ bytes: ByteBuffer) {
        guard let out = try? session.openStream(bidirectional: false) else { return }
        try? out.enqueue(bytes, fin: true)
    }
}
