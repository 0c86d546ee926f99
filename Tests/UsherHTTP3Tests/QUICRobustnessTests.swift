import Foundation
import NIOCore
import NIOPosix
import Testing
import UsherHTTP3

#if canImport(Glibc)
import Glibc
#endif

/// Sends `datagrams` from one UDP socket to 127.0.0.1:`port` and returns what comes back within `wait` seconds.
func udpExchange(port: Int, _ datagrams: [[UInt8]], wait: Double = 0.5) -> [[UInt8]] {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var tv = timeval(tv_sec: 0, tv_usec: 50_000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var replies: [[UInt8]] = []
    var buf = [UInt8](repeating: 0, count: 2048)
    func drain() {
        while true {
            let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            guard n > 0 else { return }
            replies.append(Array(buf[0..<n]))
        }
    }
    for d in datagrams {
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, d, d.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        drain()
    }
    let deadline = Date().addingTimeInterval(wait)
    while Date() < deadline {
        let n = recv(fd, &buf, buf.count, 0)
        if n > 0 { replies.append(Array(buf[0..<n])) }
    }
    return replies
}

/// A long-header Initial with the given version and connection IDs, padded to 1200 bytes with `payload` bytes.
func fakeInitial(
    version: UInt32 = 1, dcid: [UInt8], scid: [UInt8], payload: (Int) -> UInt8 = { _ in .random(in: 0...255) }
) -> [UInt8] {
    var p: [UInt8] = [0xc3]
    p += withUnsafeBytes(of: version.bigEndian, Array.init)
    p.append(UInt8(dcid.count)); p += dcid
    p.append(UInt8(scid.count)); p += scid
    p.append(0)  // token length
    let rest = 1200 - p.count - 2
    p += [0x40 | UInt8(rest >> 8), UInt8(rest & 0xff)]
    p += (0..<rest).map(payload)
    return p
}

/// An endpoint with `configure` applied, answering every request "ok", on a loopback port of its own.
func withConfiguredEndpoint<T>(
    _ dir: QUICTestDirectory, _ configure: (inout HTTP3ServerConfiguration) -> Void,
    _ body: (QUICServerEndpoint, Int, any EventLoop) async throws -> T
) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let credentials = try QUICCredentials(certificateFile: dir.cert, keyFile: dir.key)
    var config = HTTP3ServerConfiguration(credentials: { _, _, _ in credentials })
    config.onRequest = { stream in
        stream.onEnd = {
            try? stream.sendResponse([(":status", "200"), ("content-length", "2")], hasBody: true)
            try? stream.enqueue(ByteBuffer(string: "ok"))
            try? stream.finish()
        }
    }
    configure(&config)
    let loop = group.next()
    let endpoint = QUICServerEndpoint(configuration: config, loop: loop)
    let port = try await endpoint.start(host: "127.0.0.1", port: 0)
    defer {
        Task {
            await endpoint.stop(); try? await group.shutdownGracefully()
        }
    }
    return try await body(endpoint, port, loop)
}

@Suite("QUIC endpoint robustness: version negotiation, stateless reset, Retry, garbage and fuzzed packets", .serialized)
struct QUICRobustnessTests {
    @Test("an Initial of an unknown version gets Version Negotiation listing QUIC v1, with the IDs swapped")
    func versionNegotiation() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withConfiguredEndpoint(dir, { _ in }) { endpoint, port, loop in
            let dcid: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8], scid: [UInt8] = [9, 9, 9, 9]
            let replies = udpExchange(port: port, [fakeInitial(version: 0x1a2a_3a4a, dcid: dcid, scid: scid)])
            let vn = try #require(replies.first)
            #expect(vn[0] & 0x80 != 0)
            #expect(Array(vn[1..<5]) == [0, 0, 0, 0])
            #expect(vn[5] == UInt8(scid.count) && Array(vn[6..<10]) == scid)
            #expect(vn[10] == UInt8(dcid.count) && Array(vn[11..<19]) == dcid)
            let versions = stride(from: 19, to: vn.count, by: 4).map { Array(vn[$0..<$0 + 4]) }
            #expect(versions.contains([0, 0, 0, 1]), "\(vn)")
            #expect(try await loop.submit { endpoint.connectionCount }.get() == 0)
        }
    }

    @Test("a short-header packet for an unknown connection gets a stateless reset ending in that ID's token")
    func statelessReset() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withConfiguredEndpoint(dir, { _ in }) { endpoint, port, _ in
            let dcid = (0..<18).map { _ in UInt8.random(in: 0...255) }
            let packet: [UInt8] = [0x41] + dcid + (0..<60).map { _ in UInt8.random(in: 0...255) }
            let replies = udpExchange(port: port, [packet])
            let reset = try #require(replies.first)
            #expect(reset.count < packet.count && reset.count >= 21)
            #expect(reset[0] & 0xc0 == 0x40)
            #expect(Array(reset.suffix(16)) == endpoint.statelessResetToken(for: dcid))
            // Too short a trigger gets nothing (no reset loops between two endpoints).
            #expect(udpExchange(port: port, [[0x41] + Array(dcid.prefix(10))], wait: 0.2).isEmpty)
        }
    }

    @Test("address validation: past the threshold an Initial gets Retry; aioquic follows it and is served")
    func retry() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withConfiguredEndpoint(dir, { $0.retryThreshold = 0 }) { endpoint, port, loop in
            let replies = udpExchange(port: port, [fakeInitial(dcid: [7, 7, 7, 7, 7, 7, 7, 7], scid: [1, 2, 3, 4])])
            #expect(replies.count == 1)
            #expect(replies.first.map { $0[0] & 0xf0 } == 0xf0, "a Retry packet (long header, type 3)")
            #expect(try await loop.submit { endpoint.connectionCount }.get() == 0, "a Retry keeps no state")
            let r = try aioquicGet(port: port, ["/x"])
            #expect(r.output == "200 ok", "\(r.output.suffix(1500))")
            #expect(try await loop.submit { endpoint.retriesSent }.get() >= 2)
            #expect(try await loop.submit { endpoint.handshakesCompleted }.get() == 1)
        }
    }

    @Test(
        "fuzz: 3,000 random, truncated and bit-flipped datagrams (some from a real Initial) crash nothing; requests still work; state drains"
    )
    func fuzz() async throws {
        let dir = try QUICTestDirectory()
        defer { dir.remove() }
        try await withConfiguredEndpoint(
            dir,
            { c in
                c.handshakeTimeout = .seconds(1)
                c.idleTimeout = .seconds(1)
                c.retryThreshold = 1000
            }
        ) { endpoint, port, loop in
            // A real Initial, from aioquic, to mutate: capture it on a socket of our own.
            let capture = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(capture) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(capture, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(capture, $0, &len) }
            }
            let capturePort = Int(UInt16(bigEndian: addr.sin_port))
            let client = Process()
            client.executableURL = quicPackageRoot.appendingPathComponent(".venv/bin/python")
            client.arguments = [
                quicPackageRoot.appendingPathComponent("IntegrationTests/interop/h3_client.py").path,
                String(capturePort), "/",
            ]
            client.standardOutput = FileHandle.nullDevice
            client.standardError = FileHandle.nullDevice
            try client.run()
            var buf = [UInt8](repeating: 0, count: 2048)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(capture, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let n = recv(capture, &buf, buf.count, 0)
            client.terminate()
            let initial = try #require(n > 0 ? Array(buf[0..<n]) : nil)

            var rng = SystemRandomNumberGenerator()
            var datagrams: [[UInt8]] = []
            for i in 0..<3000 {
                switch i % 4 {
                case 0:
                    datagrams.append(
                        (0..<Int.random(in: 1...1500, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                case 1: datagrams.append(Array(initial.prefix(Int.random(in: 1..<initial.count, using: &rng))))
                case 2:
                    var m = initial
                    for _ in 0..<Int.random(in: 1...8, using: &rng) {
                        m[Int.random(in: 0..<m.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                    }
                    datagrams.append(m)
                default:
                    datagrams.append(
                        fakeInitial(dcid: (0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }, scid: [1]))
                }
            }
            _ = udpExchange(port: port, datagrams, wait: 0.2)
            let r = try aioquicGet(port: port, ["/after"])
            #expect(r.output == "200 ok", "\(r.output.suffix(1500))")
            // Half-open connections from fake Initials go when their handshake times out.
            // Generous: under a loaded CI machine timers run late.
            let deadline = Date().addingTimeInterval(40)
            var left = -1
            while Date() < deadline {
                left = try await loop.submit { endpoint.connectionCount }.get()
                if left == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            // Seen twice in a loaded CI run (one connection left after 20 s, never alone): say what it was.
            let summaries = try await loop.submit { endpoint.connectionSummaries }.get()
            #expect(left == 0, "\(summaries.prefix(5))")
        }
    }
}
