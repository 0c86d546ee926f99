import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import UsherCore
import UsherHTTP3

/// HTTP/3 connections to upstreams (`versions ["3"]`): per event loop and address, shared by that loop's requests,
/// each request a stream. A connection whose streams are used up, or that got GOAWAY, gives way to a new one.
final class HTTP3UpstreamPool: Sendable {
    let transport: HTTPTransport
    private let connections = Mutex<[ObjectIdentifier: [String: [LoopConfinedConnection]]]>([:])

    /// A connection that is only used on its loop.
    private struct LoopConfinedConnection: @unchecked Sendable {
        let connection: HTTP3ClientConnection
    }

    init(transport: HTTPTransport) { self.transport = transport }

    /// A new request stream to `address`, on a connection of `loop` (dialled if needed).
    func stream(_ address: String, on loop: any EventLoop) async throws -> (any UpstreamExchange, reused: Bool) {
        let key = ObjectIdentifier(loop)
        let existing = connections.withLock { $0[key]?[address] ?? [] }
        for c in existing where c.connection.isUsable {
            if let s = try? c.connection.openStream() {
                return (HTTP3UpstreamExchange(stream: s, loop: loop, transport: transport), true)
            }
        }
        let conn = try await dial(address, on: loop)
        let confined = LoopConfinedConnection(connection: conn)
        connections.withLock { d in
            var list = (d[key]?[address] ?? []).filter { $0.connection.isUsable }
            list.append(confined)
            d[key, default: [:]][address] = list
        }
        conn.onClose = { [weak self] in
            self?.connections.withLock { d in d[key]?[address]?.removeAll { $0.connection === conn } }
        }
        do {
            return (HTTP3UpstreamExchange(stream: try conn.openStream(), loop: loop, transport: transport), false)
        } catch {
            throw UpstreamError(description: "HTTP/3 to \(address): \(error)", retryable: true)
        }
    }

    /// A new connection to `address` on `loop`; with `webTransport`, one that offers WebTransport and hands the
    /// server's WebTransport streams and datagrams to that registry.
    func dial(_ address: String, on loop: any EventLoop, webTransport: WebTransportSessions? = nil) async throws
        -> HTTP3ClientConnection
    {
        let parsed: NetworkAddress
        do {
            parsed = try NetworkAddress(parsing: address)
        } catch {
            throw UpstreamError(description: "invalid upstream address \(address): \(error)", retryable: true)
        }
        let host = parsed.host.isEmpty ? "127.0.0.1" : parsed.host
        let remote: SocketAddress
        do {
            remote = try SocketAddress(ipAddress: host, port: parsed.startPort)
        } catch {
            do {
                remote = try SocketAddress.makeAddressResolvingHost(host, port: parsed.startPort)
            } catch {
                throw UpstreamError(description: "dialing \(address): resolving \(host): \(error)", retryable: true)
            }
        }
        let tls = transport.tls
        var config = HTTP3ClientConfiguration(serverName: tls?.sni(for: host) ?? host)
        config.insecureSkipVerify = tls?.insecureSkipVerify ?? false
        config.rootCAPEM = transport.quicRootCAPEM
        config.clientCertificate = transport.quicClientCertificate
        if let t = transport.dialTimeout, t.nanoseconds > 0 { config.handshakeTimeout = .nanoseconds(t.nanoseconds) }
        if let webTransport {
            config.extension = webTransport
            config.extraSettings = WebTransportCodepoint.clientSettings
        }
        do {
            return try await HTTP3ClientConnection.connect(to: remote, configuration: config, on: loop)
        } catch {
            throw UpstreamError(description: "dialing \(address) (HTTP/3): \(error)", retryable: true)
        }
    }

    /// Closes every connection (the handler is being cleaned up).
    func closeAll() {
        let all = connections.withLock { d -> [LoopConfinedConnection] in
            let all = d.values.flatMap { $0.values.flatMap { $0 } }
            d = [:]
            return all
        }
        for c in all { c.connection.loop.execute { c.connection.close() } }
    }
}

/// One request over an HTTP/3 stream, translated from and to the HTTP/1 parts the proxy speaks: the head goes out
/// when the body starts (or ends), so a request without a body is one HEADERS frame with FIN.
final class HTTP3UpstreamExchange: UpstreamExchange {
    let stream: HTTP3Stream
    let loop: any EventLoop
    let readTimeout: TimeAmount?
    private var pendingHead: HTTPRequestHead?
    private var parts = CircularBuffer<HTTPClientResponsePart>()
    private var waiter: CheckedContinuation<HTTPClientResponsePart?, any Error>?
    private var failure: (any Error)?
    private var ended = false
    private(set) var timedOut = false
    private var timer: Scheduled<Void>?

    init(stream: HTTP3Stream, loop: any EventLoop, transport: HTTPTransport) {
        self.stream = stream
        self.loop = loop
        readTimeout = transport.readTimeout.flatMap { $0.nanoseconds > 0 ? .nanoseconds($0.nanoseconds) : nil }
        stream.onHeaders = { [unowned self] in
            guard let head = self.responseHead() else {
                self.fail(UpstreamError(description: "malformed HTTP/3 response head", retryable: false))
                return
            }
            self.deliver(.head(head))
        }
        stream.onData = { [unowned self] buffer in
            // Credit goes back to the upstream when the proxy takes the bytes (next()).
            self.deliver(.body(buffer))
        }
        stream.onEnd = { [unowned self] in
            var trailers: HTTPHeaders?
            if !self.stream.trailers.isEmpty {
                trailers = HTTPHeaders(self.stream.trailers.map { ($0.name, $0.value) })
            }
            self.deliver(.end(trailers))
        }
        stream.onClose = { [unowned self] complete in
            if !self.ended {
                self.fail(
                    UpstreamError(
                        description: complete ? "upstream ended the stream early" : "upstream reset the stream",
                        retryable: false))
            }
        }
    }

    private func responseHead() -> HTTPResponseHead? {
        var status: Int?
        var headers = HTTPHeaders()
        for (name, value) in stream.fields {
            if name == ":status" {
                status = Int(value)
            } else if !name.hasPrefix(":") {
                headers.add(name: name, value: value)
            }
        }
        guard let status else { return nil }
        return HTTPResponseHead(
            version: HTTPVersion(major: 3, minor: 0), status: HTTPResponseStatus(statusCode: status), headers: headers)
    }

    private func deliver(_ part: HTTPClientResponsePart) {
        if case .end = part { ended = true }
        if let w = waiter {
            waiter = nil
            timer?.cancel()
            if case .body(let b) = part { stream.consumed(b.readableBytes) }
            w.resume(returning: part)
        } else {
            parts.append(part)
        }
    }

    private func fail(_ error: any Error) {
        guard failure == nil else { return }
        failure = error
        timer?.cancel()
        if let w = waiter {
            waiter = nil
            w.resume(throwing: error)
        }
    }

    func next() async throws -> HTTPClientResponsePart? {
        if let part = parts.popFirst() {
            if case .body(let b) = part { stream.consumed(b.readableBytes) }
            return part
        }
        if ended { return nil }
        if let failure { throw failure }
        return try await withCheckedThrowingContinuation { c in
            waiter = c
            if let t = readTimeout {
                let bound = NIOLoopBound(self, eventLoop: loop)
                timer = loop.scheduleTask(in: t) {
                    bound.value.timedOut = true
                    bound.value.fail(
                        UpstreamError(description: "timeout reading from upstream", retryable: false, timedOut: true))
                    bound.value.stream.reset()
                }
            }
        }
    }

    func write(_ part: HTTPClientRequestPart, flush: Bool) async throws {
        if let failure { throw failure }
        do {
            switch part {
            case .head(let head):
                pendingHead = head
            case .body(.byteBuffer(let buffer)):
                try sendHead(hasBody: true)
                try await stream.write(buffer)
            case .body(.fileRegion):
                throw UpstreamError(description: "file regions cannot go over HTTP/3", retryable: false)
            case .end(let trailers):
                if pendingHead != nil {
                    try sendHead(hasBody: trailers != nil)
                }
                if let trailers {
                    try stream.finish(trailers: trailers.map { ($0.name.lowercased(), $0.value) })
                } else {
                    try stream.finish()
                }
            }
        } catch let e as UpstreamError {
            throw e
        } catch {
            throw UpstreamError(description: "HTTP/3 stream: \(error)", retryable: false)
        }
    }

    /// Sends the held head: pseudo-header fields from the request line and Host, the rest lowercased without
    /// connection-specific fields (RFC 9114 4.2).
    private func sendHead(hasBody: Bool) throws {
        guard let head = pendingHead else { return }
        pendingHead = nil
        try stream.sendRequest(Self.fields(head), hasBody: hasBody)
    }

    /// An HTTP/1 request head as HTTP/3 fields; with `connectProtocol`, an Extended CONNECT for that protocol.
    static func fields(_ head: HTTPRequestHead, connectProtocol: String? = nil) -> [(String, String)] {
        var fields: [(String, String)] = [(":method", connectProtocol == nil ? head.method.rawValue : "CONNECT")]
        if let connectProtocol { fields.append((":protocol", connectProtocol)) }
        fields += [(":scheme", "https"), (":authority", head.headers.first(name: "Host") ?? ""), (":path", head.uri)]
        for (name, value) in head.headers {
            switch name.lowercased() {
            case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": continue
            case "te" where value.lowercased() != "trailers": continue
            case let lower: fields.append((lower, value))
            }
        }
        return fields
    }

    func close() {
        timer?.cancel()
        if !ended { stream.reset() }
    }

    func timeOut() {
        timedOut = true
        fail(UpstreamError(description: "timeout awaiting response headers", retryable: false))
        stream.reset()
    }

    func becomeTunnel() throws -> UpstreamTunnel {
        throw UpstreamError(description: "protocol upgrades are not carried over HTTP/3 to upstreams", retryable: false)
    }
}

extension HTTPTransport {
    /// Trusted roots for QUIC (GnuTLS takes PEM): `root_ca_pem_files` and `root_ca_pool`; `nil` for the system's.
    var quicRootCAPEM: [String]? {
        guard let tls else { return nil }
        var pems: [String] = []
        for file in tls.rootCAPEMFiles {
            if let text = try? String(contentsOfFile: file, encoding: .utf8) { pems.append(text) }
        }
        for b64 in tls.rootCAPool {
            let lines = stride(from: 0, to: b64.count, by: 64).map { i -> Substring in
                let start = b64.index(b64.startIndex, offsetBy: i)
                return b64[start..<(b64.index(start, offsetBy: 64, limitedBy: b64.endIndex) ?? b64.endIndex)]
            }
            pems.append(
                "-----BEGIN CERTIFICATE-----\n" + lines.joined(separator: "\n") + "\n-----END CERTIFICATE-----\n")
        }
        return pems.isEmpty ? nil : pems
    }

    /// The client certificate for QUIC, from `client_certificate_file` and `client_certificate_key_file`.
    var quicClientCertificate: (chainPEM: String, keyPEM: String)? {
        guard let tls, let certFile = tls.clientCertificateFile, let keyFile = tls.clientCertificateKeyFile,
            let chain = try? String(contentsOfFile: certFile, encoding: .utf8),
            let key = try? String(contentsOfFile: keyFile, encoding: .utf8)
        else { return nil }
        return (chain, key)
    }
}
