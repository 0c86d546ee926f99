import Foundation
import NIOCore
import NIOPosix
import Testing
import UsherHTTP3

/// An extension that echoes WebTransport traffic: bidirectional streams on themselves, unidirectional streams on a
/// new stream of ours, datagrams as datagrams; each prefixed "echo:".
final class EchoExtension: HTTP3Extension, @unchecked Sendable {
    // @unchecked: used only on the endpoint's loop.
    var streamsSeen: [PeerStreamKind] = []
    var peerSettings: [HTTP3Setting]?

    func streamOpened(_ stream: HTTP3RawStream, kind: PeerStreamKind) {
        streamsSeen.append(kind)
        var collected = ByteBuffer(string: "echo:")
        stream.onData = { [unowned stream] buffer, fin in
            var b = buffer
            collected.writeBuffer(&b)
            stream.consumed(buffer.readableBytes)
            guard fin else { return }
            switch kind {
            case .webTransportBidi:
                try? stream.enqueue(collected, fin: true)
            case .webTransportUni(let session):
                let back = try? stream.handle.openStream(
                    bidirectional: false,
                    preamble: QUICVarint.encode(HTTP3Codepoint.webTransportUniStream) + QUICVarint.encode(session))
                try? back?.enqueue(collected, fin: true)
            default:
                break
            }
        }
    }

    func datagramReceived(_ payload: [UInt8], streamID: UInt64, on connection: HTTP3ConnectionHandle) {
        peerSettings = connection.peerSettings
        connection.sendDatagram(Array("echo:".utf8) + payload, streamID: streamID)
    }
}

@Suite("HTTP/3 extension points for WebTransport (aioquic as the client)", .serialized)
struct HTTP3ExtensionTests {
    static func run(_ dir: QUICTestDirectory, extension ext: EchoExtension?) async throws -> (
        json: [String: Any], endpoint: QUICServerEndpoint, loop: any EventLoop
    ) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let credentials = try QUICCredentials(certificateFile: dir.cert, keyFile: dir.key)
        var config = HTTP3ServerConfiguration(credentials: { _, _, _ in credentials })
        config.enableConnectProtocol = true
        config.onRequest = { stream in
            // The session: 200, and the stream stays open.
            if stream.field(":protocol") == "webtransport" {
                try? stream.sendResponse([(":status", "200")], hasBody: true)
            } else {
                try? stream.sendResponse([(":status", "404")], hasBody: false)
            }
        }
        if let ext {
            config.extension = ext
            config.extraSettings = [
                HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
                HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1),
            ]
        }
        let loop = group.next()
        let endpoint = QUICServerEndpoint(configuration: config, loop: loop)
        let port = try await endpoint.start(host: "127.0.0.1", port: 0)
        let r = try runPeer(
            quicPackageRoot.appendingPathComponent(".venv/bin/python").path,
            [quicPackageRoot.appendingPathComponent("IntegrationTests/interop/wt_client.py").path, String(port)])
        await endpoint.stop()
        let json =
            (try? JSONSerialization.jsonObject(with: Data(r.output.utf8))) as? [String: Any] ?? ["output": r.output]
        return (json, endpoint, loop)
    }

    @Test(
        "with an extension: bidirectional and unidirectional WebTransport streams and datagrams reach it and come back")
    func echo() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        let ext = EchoExtension()
        let (json, _, loop) = try await Self.run(dir, extension: ext)
        #expect(json["status"] as? String == "200", "\(json)")
        #expect(json["bidi"] as? String == "echo:bidi hello", "\(json)")
        #expect(json["uni"] as? [String] == ["echo:uni hello"], "\(json)")
        #expect(json["datagrams"] as? [String] == ["echo:dgram hello"], "\(json)")
        let settings = json["settings"] as? [String: Int] ?? [:]
        #expect(settings["0x33"] == 1 && settings["0x2b603742"] == 1, "\(settings)")
        let transport = json["transport"] as? [String: Any] ?? [:]
        #expect(transport["max_datagram_frame_size"] as? Int == 65535, "\(json)")
        #expect(transport["initial_max_streams_uni"] as? Int == 100, "\(json)")
        let seen = try await loop.submit { ext.streamsSeen }.get()
        #expect(seen == [.webTransportBidi(session: 0), .webTransportUni(session: 0)])
        // The peer's SETTINGS, read from its control stream beside nghttp3: aioquic offers WebTransport too.
        let peer = try await loop.submit { ext.peerSettings }.get() ?? []
        #expect(peer.contains(HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1)), "\(peer)")
    }

    @Test("without an extension: plain HTTP/3 on the wire (SETTINGS, 3 unidirectional streams, no DATAGRAM frames)")
    func plain() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        let (json, _, _) = try await Self.run(dir, extension: nil)
        let settings = json["settings"] as? [String: Int] ?? [:]
        #expect(settings["0x33"] == nil && settings["0x2b603742"] == nil, "\(json)")
        #expect(settings["0x8"] == 1, "Extended CONNECT is HTTP/3's own (RFC 9220): \(json)")
        let transport = json["transport"] as? [String: Any] ?? [:]
        #expect(transport["max_datagram_frame_size"] is NSNull, "\(json)")
        #expect(transport["initial_max_streams_uni"] as? Int == 3, "\(json)")
        #expect(json["bidi"] == nil, "\(json)")
    }
}
