import Foundation
import NIOCore
import NIOPosix
import Testing
import UsherHTTP3

/// A scratch directory with a self-signed P-256 certificate for `localhost`, made by openssl.
struct QUICTestDirectory {
    let url: URL
    var cert: String { url.appendingPathComponent("cert.pem").path }
    var key: String { url.appendingPathComponent("key.pem").path }

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("usher-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let made = try runPeer(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", url.appendingPathComponent("key.pem").path, "-out",
                url.appendingPathComponent("cert.pem").path,
                "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
        #expect(made.status == 0, "\(made.output)")
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Runs a peer to completion: its exit status and everything it printed (stdout and stderr together).
func runPeer(_ executable: String, _ args: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The package root, for the test virtualenv and the interop scripts.
let quicPackageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Runs `body` with an endpoint listening on a loopback port of its own, stopped afterwards.
func withEndpoint<T>(
    _ dir: QUICTestDirectory, extraSettings: [HTTP3Setting] = [], responder: HTTP3Responder? = nil,
    _ body: (QUICServerEndpoint, Int, any EventLoop) async throws -> T
) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let endpoint = QUICServerEndpoint(
        credentials: try QUICCredentials(certificateFile: dir.cert, keyFile: dir.key),
        loop: group.next(), extraSettings: extraSettings, responder: responder)
    let port = try await endpoint.start(host: "127.0.0.1", port: 0)
    do {
        let result = try await body(endpoint, port, group.next())
        await endpoint.stop()
        try await group.shutdownGracefully()
        return result
    } catch {
        await endpoint.stop()
        try await group.shutdownGracefully()
        throw error
    }
}

/// aioquic's GETs (`IntegrationTests/interop/h3_client.py`) against `port`.
func aioquicGet(port: Int, _ args: [String]) throws -> (status: Int32, output: String) {
    try runPeer(
        quicPackageRoot.appendingPathComponent(".venv/bin/python").path,
        [quicPackageRoot.appendingPathComponent("IntegrationTests/interop/h3_client.py").path, String(port)] + args)
}

@Suite("QUIC endpoint against ngtcp2's gtlsclient and Python aioquic")
struct QUICHandshakeTests {
    @Test("a QUIC v1 handshake with TLS 1.3 and ALPN h3 completes with Debian's gtlsclient")
    func handshake() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withEndpoint(dir) { endpoint, port, loop in
            let log = try runPeer(
                "/usr/bin/gtlsclient", ["--timeout=1s", "--exit-on-all-streams-close", "127.0.0.1", String(port)]
            ).output
            let completed = try await loop.submit { endpoint.handshakesCompleted }.get()
            #expect(completed == 1, "\(log.suffix(2000))")
            #expect(log.contains("QUIC handshake has completed"), "\(log.suffix(2000))")
        }
    }

    @Test("HTTP/3 through nghttp3: gtlsclient's GET gets the responder's status, fields and body")
    func get() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        let downloads = dir.url.appendingPathComponent("dl")
        try FileManager.default.createDirectory(at: downloads, withIntermediateDirectories: true)
        try await withEndpoint(
            dir,
            responder: { method, path in
                (200, [("x-served-by", "usher")], Array("\(method) \(path) over h3\n".utf8))
            }
        ) { _, port, _ in
            let log = try runPeer(
                "/usr/bin/gtlsclient",
                [
                    "--timeout=2s", "--exit-on-all-streams-close", "--download=\(downloads.path)",
                    "127.0.0.1", String(port), "https://localhost:\(port)/hello.txt",
                ]
            ).output
            let body = try? String(contentsOf: downloads.appendingPathComponent("hello.txt"), encoding: .utf8)
            #expect(body == "GET /hello.txt over h3\n", "\(log.suffix(3000))")
            #expect(log.contains("[:status: 200]"), "\(log.suffix(1500))")
            #expect(log.contains("[x-served-by: usher]"))
        }
    }

    @Test("aioquic (Python) as the client: 100 GETs at once on one connection, each answered")
    func aioquicConcurrent() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withEndpoint(dir, responder: { method, path in (200, [], Array("\(method) \(path);".utf8)) }) {
            _, port, _ in
            let (status, text) = try aioquicGet(port: port, ["/x", "100"])
            #expect(status == 0, "\(text.suffix(2000))")
            #expect(text == String(repeating: "200 GET /x;", count: 100), "\(text.suffix(500))")
        }
    }

    @Test("extra SETTINGS reach aioquic on the live connection (H3_DATAGRAM, WebTransport), and requests still work")
    func extraSettings() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        func run(_ extra: [HTTP3Setting]) async throws -> String {
            try await withEndpoint(dir, extraSettings: extra, responder: { _, path in (200, [], Array(path.utf8)) }) {
                _, port, _ in
                try aioquicGet(port: port, ["/s", "3", "--settings"]).output
            }
        }
        // nghttp3's own settings with its defaults: QPACK_MAX_TABLE_CAPACITY (1) 0, MAX_FIELD_SECTION_SIZE (6)
        // unlimited, QPACK_BLOCKED_STREAMS (7) 0.
        let plain = try await run([])
        #expect(plain == "settings 0x1=0 0x6=4611686018427387903 0x7=0\n200 /s200 /s200 /s", "\(plain.suffix(1500))")
        let extended = try await run([
            HTTP3Setting(HTTP3Codepoint.settingsH3Datagram, 1),
            HTTP3Setting(HTTP3Codepoint.settingsEnableWebTransport, 1),
        ])
        #expect(
            extended == "settings 0x1=0 0x6=4611686018427387903 0x7=0 0x33=1 0x2b603742=1\n200 /s200 /s200 /s",
            "\(extended.suffix(1500))")
    }
}
