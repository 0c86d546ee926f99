import NIOCore
import NIOEmbedded
import Testing

@testable import UsherCore
@testable import UsherHTTP

/// One HTTP/1.1 connection on a testing channel: the real pipeline (`HTTP1Pipeline`) in front of a server whose
/// routes come from JSON. Bytes in, bytes out, no sockets.
private final class TestConnection {
    let channel: NIOAsyncTestingChannel
    /// Everything the server wrote so far.
    private var written: [UInt8] = []

    init(routes: String, extra: String = "") async throws {
        let registry = try ModuleRegistry(bundles: [CoreModules.self, TestStandard.self, EchoBodyModules.self])
        var config = try ConfigDecoder(registry: registry).decode(
            ServerConfig.self, from: try JSONValue.parse(#"{"listen": [":0"], "routes": \#(routes)\#(extra)}"#)
        )
        let env = RuntimeEnvironment(registry: registry, eventLoopGroup: MultiThreadedEventLoopGroupHolder.group)
        try await config.provision(ProvisionContext(environment: env, mode: .validate, generation: 1, apps: []))
        let server = HTTPServerInstance(name: "srv0", config: config, router: LogRouter(), tls: nil)
        let slot = ListenerSlot(address: config.listen[0], server: server)
        channel = NIOAsyncTestingChannel()
        let channel = self.channel
        try await channel.eventLoop.submit {
            try HTTP1Pipeline.configure(channel, slot: slot, settings: server.settings, connectionGuard: nil)
        }.get()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1))
    }

    func send(_ text: String) async throws {
        try await channel.writeInbound(ByteBuffer(string: text))
    }

    /// What the server wrote, read until `responses` complete responses have arrived (bounded: 5 s).
    func responses(_ count: Int) async throws -> [ParsedResponse] {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            // The testing loop runs what was handed to it (a request task resuming) only when told to.
            await channel.testingEventLoop.run()
            while let out = try await channel.readOutbound(as: IOData.self) {
                if case .byteBuffer(let b) = out { written += b.readableBytesView }
            }
            let parsed = ParsedResponse.all(in: written)
            if parsed.count >= count { return parsed }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record(
            "only \(ParsedResponse.all(in: written).count) of \(count) responses in 5 s: \(String(decoding: written, as: UTF8.self))"
        )
        return ParsedResponse.all(in: written)
    }

    var isActive: Bool { get async throws { try await channel.eventLoop.submit { self.channel.isActive }.get() } }
}

/// A response as it came off the wire: status line, header fields, and a body framed by Content-Length.
private struct ParsedResponse {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }

    /// Every complete response in `bytes` (interim 1xx responses included, as they have no body).
    static func all(in bytes: [UInt8]) -> [ParsedResponse] {
        var out: [ParsedResponse] = []
        var text = Substring(String(decoding: bytes, as: UTF8.self))
        while let end = text.firstRange(of: "\r\n\r\n") {
            let lines = text[..<end.lowerBound].split(separator: "\r\n", omittingEmptySubsequences: false)
            let statusParts = lines[0].split(separator: " ")
            guard statusParts.count >= 2, let status = Int(statusParts[1]) else { break }
            let headers = lines.dropFirst().compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " }))
            }
            let rest = text[end.upperBound...]
            let length = Int(headers.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
            guard rest.utf8.count >= length else { break }
            let bodyEnd = rest.utf8.index(rest.startIndex, offsetBy: length)
            out.append(ParsedResponse(status: status, headers: headers, body: String(rest[..<bodyEnd])))
            text = rest[bodyEnd...]
        }
        return out
    }
}

/// `http.handlers.test_echo_body`: answers with the request body it reads.
private struct EchoBodyHandler: MiddlewareHandler {
    static let moduleID: ModuleID = "http.handlers.test_echo_body"
    init(from decoder: any Decoder) throws {}
    func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let body = try await request.body.collect(upTo: 1 << 20)
        try await writer.write(String(buffer: body))
    }
}

private enum EchoBodyModules: ModuleBundle {
    static let name = "test/echo-body"
    static let version = "0"
    static var modules: [any Module.Type] { [EchoBodyHandler.self] }
}

private let echoRoutes =
    #"[{"handle": [{"handler": "static_response", "body": "{http.request.method} {http.request.uri}"}]}]"#

@Suite("HTTP/1.1 connection on a testing channel: bytes in, bytes out")
struct HTTP1ConnectionTests {
    @Test("pipelined requests in one write are answered in order")
    func pipelining() async throws {
        let c = try await TestConnection(routes: echoRoutes)
        try await c.send(
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        let r = try await c.responses(3)
        #expect(r.map(\.status) == [200, 200, 200])
        #expect(r.map(\.body) == ["GET /a", "POST /b", "GET /c"])
    }

    @Test("Expect: 100-continue gets 100 Continue only when the handler reads the body")
    func continueOnRead() async throws {
        let reads = #"[{"handle": [{"handler": "test_echo_body"}]}]"#
        let c = try await TestConnection(routes: reads)
        try await c.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        let interim = try await c.responses(1)
        #expect(interim.first?.status == 100)
        try await c.send("hello")
        let all = try await c.responses(2)
        #expect(all.last?.status == 200)
        #expect(all.last?.body == "hello")

        let ignores = try await TestConnection(routes: echoRoutes)
        try await ignores.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        let direct = try await ignores.responses(1)
        #expect(direct.map(\.status) == [200], "a handler that never reads the body gets no 100 Continue")
    }

    @Test(
        "bad input gets Caddy's 400 and the connection closes",
        arguments: [
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        ])
    func badInput(_ request: String) async throws {
        let c = try await TestConnection(routes: echoRoutes)
        try await c.send(request)
        let r = try await c.responses(1)
        #expect(r.first?.status == 400)
        #expect(r.first?.header("Connection") == "close")
        let deadline = ContinuousClock.now + .seconds(5)
        while try await c.isActive, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try await !c.isActive)
    }

    @Test("a chunked body arriving in pieces reaches the handler whole, and the connection serves the next request")
    func chunkedInPieces() async throws {
        let c = try await TestConnection(routes: #"[{"handle": [{"handler": "test_echo_body"}]}]"#)
        try await c.send("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        try await c.send("lo\r\n7\r\n, wor")
        try await c.send("ld\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try await c.responses(2)
        #expect(r.map(\.status) == [200, 200])
        #expect(r.first?.body == "hello, world")
        #expect(r.last?.body == "")
    }

    @Test("a head larger than max_header_bytes gets 431")
    func headerTooLarge() async throws {
        let c = try await TestConnection(routes: echoRoutes, extra: #", "max_header_bytes": 1024"#)
        try await c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 4000))\r\n\r\n")
        let r = try await c.responses(1)
        #expect(r.first?.status == 431)
    }
}
