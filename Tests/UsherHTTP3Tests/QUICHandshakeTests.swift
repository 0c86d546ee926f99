import Foundation
import NIOCore
import NIOPosix
import Testing
import UsherHTTP3

@Suite("QUIC endpoint against ngtcp2's gtlsclient and Python aioquic")
struct QUICHandshakeTests {
    @Test("a QUIC v1 handshake with TLS 1.3 and ALPN h3 completes with Debian's gtlsclient")
    func handshake() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let gen = Process()
        gen.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        gen.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        gen.standardError = FileHandle.nullDevice
        try gen.run()
        gen.waitUntilExit()
        #expect(gen.terminationStatus == 0)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoint = QUICServerEndpoint(credentials: try QUICCredentials(certificateFile: cert, keyFile: key),
                                          loop: group.next())
        let port = try await endpoint.start(host: "127.0.0.1", port: 0)

        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/gtlsclient")
        client.arguments = ["--timeout=1s", "--exit-on-all-streams-close", "127.0.0.1", String(port)]
        let out = Pipe()
        client.standardOutput = out
        client.standardError = out
        try client.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        let log = String(decoding: data, as: UTF8.self)
        let completed = try await group.next().submit { endpoint.handshakesCompleted }.get()
        #expect(completed == 1, "\(log.suffix(2000))")
        #expect(log.contains("QUIC handshake has completed"), "\(log.suffix(2000))")
        await endpoint.stop()
        try await group.shutdownGracefully()
    }

    @Test("HTTP/3 through nghttp3: gtlsclient's GET gets the responder's status, fields and body")
    func get() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-h3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("dl"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let gen = Process()
        gen.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        gen.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"]
        gen.standardError = FileHandle.nullDevice
        try gen.run()
        gen.waitUntilExit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoint = QUICServerEndpoint(credentials: try QUICCredentials(certificateFile: cert, keyFile: key),
                                          loop: group.next()) { method, path in
            (200, [("x-served-by", "usher")], Array("\(method) \(path) over h3\n".utf8))
        }
        let port = try await endpoint.start(host: "127.0.0.1", port: 0)
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/gtlsclient")
        client.arguments = ["--timeout=2s", "--exit-on-all-streams-close", "--download=\(dir.appendingPathComponent("dl").path)",
                            "127.0.0.1", String(port), "https://localhost:\(port)/hello.txt"]
        let out = Pipe()
        client.standardOutput = out
        client.standardError = out
        try client.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        let log = String(decoding: data, as: UTF8.self)
        let body = try? String(contentsOf: dir.appendingPathComponent("dl/hello.txt"), encoding: .utf8)
        #expect(body == "GET /hello.txt over h3\n", "\(log.suffix(3000))")
        #expect(log.contains("[:status: 200]"), "\(log.suffix(1500))")
        #expect(log.contains("[x-served-by: usher]"))
        await endpoint.stop()
        try await group.shutdownGracefully()
    }

    @Test("aioquic (Python) as the client: 100 GETs at once on one connection, each answered")
    func aioquicConcurrent() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-h3a-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let gen = Process()
        gen.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        gen.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"]
        gen.standardError = FileHandle.nullDevice
        try gen.run()
        gen.waitUntilExit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoint = QUICServerEndpoint(credentials: try QUICCredentials(certificateFile: cert, keyFile: key),
                                          loop: group.next()) { method, path in
            (200, [], Array("\(method) \(path);".utf8))
        }
        let port = try await endpoint.start(host: "127.0.0.1", port: 0)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let client = Process()
        client.executableURL = root.appendingPathComponent(".venv/bin/python")
        client.arguments = [root.appendingPathComponent("IntegrationTests/interop/h3_client.py").path, String(port), "/x", "100"]
        let out = Pipe()
        client.standardOutput = out
        client.standardError = out
        try client.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        #expect(client.terminationStatus == 0, "\(text.suffix(2000))")
        #expect(text == String(repeating: "200 GET /x;", count: 100), "\(text.suffix(500))")
        await endpoint.stop()
        try await group.shutdownGracefully()
    }

    @Test("extra SETTINGS reach aioquic on the live connection (H3_DATAGRAM, WebTransport), and requests still work")
    func extraSettings() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-h3s-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let gen = Process()
        gen.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        gen.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"]
        gen.standardError = FileHandle.nullDevice
        try gen.run()
        gen.waitUntilExit()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        func run(_ extra: [HTTP3Setting]) async throws -> String {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let endpoint = QUICServerEndpoint(credentials: try QUICCredentials(certificateFile: cert, keyFile: key),
                                              loop: group.next(), extraSettings: extra) { _, path in (200, [], Array(path.utf8)) }
            let port = try await endpoint.start(host: "127.0.0.1", port: 0)
            let client = Process()
            client.executableURL = root.appendingPathComponent(".venv/bin/python")
            client.arguments = [root.appendingPathComponent("IntegrationTests/interop/h3_client.py").path, String(port), "/s", "3", "--settings"]
            let out = Pipe()
            client.standardOutput = out
            client.standardError = out
            try client.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            client.waitUntilExit()
            await endpoint.stop()
            try await group.shutdownGracefully()
            return String(decoding: data, as: UTF8.self)
        }
        // nghttp3's own settings with its defaults: QPACK_MAX_TABLE_CAPACITY (1) 0, MAX_FIELD_SECTION_SIZE (6)
        // unlimited, QPACK_BLOCKED_STREAMS (7) 0.
        let plain = try await run([])
        #expect(plain == "settings 0x1=0 0x6=4611686018427387903 0x7=0\n200 /s200 /s200 /s", "\(plain.suffix(1500))")
        let extended = try await run([HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
                                      HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1)])
        #expect(extended == "settings 0x1=0 0x6=4611686018427387903 0x7=0 0x33=1 0x2b603742=1\n200 /s200 /s200 /s",
                "\(extended.suffix(1500))")
    }
}
