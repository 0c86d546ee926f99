// wtbench: a WebTransport client on Usher's HTTP/3 layer, for measuring the WebTransport proxy against a direct
// connection with the same client (scripts/bench-wt). Python's aioquic would be the bottleneck.
//
//   wtbench throughput [-s STREAMS] [-b BYTES] [-D SECONDS] https://HOST:PORT/PATH
//       one session; STREAMS bidirectional streams at a time, each sending BYTES and reading the echo to its end,
//       replaced as they finish; prints echoed bytes per second.
//   wtbench rtt [-n COUNT] URL        datagram ping-pong, one at a time; prints round-trip percentiles (µs).
//   wtbench idle [-n SESSIONS] URL    opens SESSIONS sessions (one connection each), prints {"open": N}, waits for a
//                                     line on standard input, then closes them.
// Certificates are not verified. Prints one JSON object.
import Foundation
import NIOCore
import NIOPosix
import UsherHTTP
import UsherHTTP3

struct Options {
    var mode = ""
    var streams = 4
    var bytes = 1 << 20
    var duration = 5.0
    var count = 1000
    var url = ""
}

func parseOptions() -> Options {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    o.mode = args.isEmpty ? "" : args.removeFirst()
    while let a = args.first {
        args.removeFirst()
        func value() -> String { args.isEmpty ? "" : args.removeFirst() }
        switch a {
        case "-s": o.streams = Int(value()) ?? o.streams
        case "-b": o.bytes = Int(value()) ?? o.bytes
        case "-D": o.duration = Double(value()) ?? o.duration
        case "-n": o.count = Int(value()) ?? o.count
        default: o.url = a
        }
    }
    return o
}

let options = parseOptions()
guard ["throughput", "rtt", "idle"].contains(options.mode), let url = URL(string: options.url), let host = url.host
else {
    FileHandle.standardError.write(Data("usage: wtbench throughput|rtt|idle [options] https://HOST:PORT/PATH\n".utf8))
    exit(2)
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let executor = EventLoopTaskExecutor.forLoop(loop)
let address = try SocketAddress.makeAddressResolvingHost(host, port: url.port ?? 443)
let path = url.path.isEmpty ? "/" : url.path

/// Set once, on `loop`.
final class Flag: @unchecked Sendable {
    var value = false
}

/// A connection and its session, used only on `loop`.
struct Opened: @unchecked Sendable {
    let conn: HTTP3ClientConnection
    let session: WebTransportSession
}

/// Connects and opens one session, on `loop`.
func openSession() async throws -> Opened {
    let sessions = WebTransportSessions()
    var config = HTTP3ClientConfiguration(serverName: host)
    config.insecureSkipVerify = true
    config.extension = sessions
    config.extraSettings = WebTransportCodepoint.clientSettings
    let conn = try await HTTP3ClientConnection.connect(to: address, configuration: config, on: loop)
    let fields = [
        (":method", "CONNECT"), (":protocol", "webtransport"), (":scheme", "https"),
        (":authority", "\(host):\(url.port ?? 443)"), (":path", path),
    ]
    switch try await WebTransportSession.connect(over: conn, sessions: sessions, fields: fields) {
    case .accepted(let session, _): return Opened(conn: conn, session: session)
    case .refused(let status, _, _): throw WebTransportError("session refused with \(status)")
    }
}

/// Bidirectional echo streams, replaced as they finish, until the deadline.
final class Throughput: @unchecked Sendable {
    // @unchecked: used only on `loop`.
    let session: WebTransportSession
    var deadline = NIODeadline.now()
    var echoed = 0
    var streams = 0
    var active = 0
    let chunk: ByteBuffer
    let done: EventLoopPromise<Void>

    init(session: WebTransportSession) {
        self.session = session
        var b = ByteBufferAllocator().buffer(capacity: 65536)
        b.writeRepeatingByte(0x61, count: 65536)
        chunk = b
        done = loop.makePromise()
    }

    func start() {
        guard NIODeadline.now() < deadline, let s = try? session.openStream(bidirectional: true) else {
            if active == 0 { done.succeed() }
            return
        }
        active += 1
        var left = options.bytes
        while left > 0 {
            let n = min(left, chunk.readableBytes)
            try? s.enqueue(chunk.getSlice(at: 0, length: n)!, fin: left == n)
            left -= n
        }
        var finished = false
        s.onData = { [unowned self, unowned s] b, fin in
            self.echoed += b.readableBytes
            s.consumed(b.readableBytes)
            if fin {
                finished = true
                self.streams += 1
                self.active -= 1
                self.start()
            }
        }
        s.onClose = { [unowned self] _ in
            // Reset or refused before its echo ended: counted as done, and replaced.
            guard !finished else { return }
            finished = true
            self.active -= 1
            self.start()
        }
    }
}

var result: [String: Any] = [:]
switch options.mode {
case "throughput":
    let opened = try await Task(executorPreference: executor) { try await openSession() }.value
    let t = try await loop.submit {
        let session = opened.session
        let t = Throughput(session: session)
        t.deadline = .now() + .nanoseconds(Int64(options.duration * 1e9))
        for _ in 0..<options.streams { t.start() }
        return t
    }.get()
    let started = Date()
    try await t.done.futureResult.get()
    let seconds = Date().timeIntervalSince(started)
    let (echoed, streams) = try await loop.submit {
        opened.session.close()
        opened.conn.close()
        return (t.echoed, t.streams)
    }.get()
    result = [
        "echoed_bytes": echoed, "streams": streams, "seconds": seconds, "mb_per_s": Double(echoed) / seconds / 1e6,
    ]
case "rtt":
    let opened = try await Task(executorPreference: executor) { try await openSession() }.value
    let rtts: [Int64] = await Task(executorPreference: executor) {
        let session = opened.session
        var out: [Int64] = []
        var lost = 0
        for i in 0..<options.count {
            let payload = Array("ping \(i) ".utf8) + [UInt8](repeating: 0x70, count: 32)
            let start = NIODeadline.now()
            let got: Bool = await withCheckedContinuation { c in
                let resumed = Flag()
                let timer = loop.scheduleTask(in: .seconds(1)) {
                    if !resumed.value { resumed.value = true; c.resume(returning: false) }
                }
                session.onDatagram = { d in
                    guard d == payload, !resumed.value else { return }
                    resumed.value = true
                    timer.cancel()
                    c.resume(returning: true)
                }
                session.sendDatagram(payload)
            }
            if got { out.append((NIODeadline.now() - start).nanoseconds) } else { lost += 1 }
        }
        session.close()
        opened.conn.close()
        if lost > 0 { FileHandle.standardError.write(Data("\(lost) datagrams lost\n".utf8)) }
        return out
    }.value
    let sorted = rtts.sorted()
    func pct(_ p: Double) -> Double {
        sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e3
    }
    result = ["count": sorted.count, "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99)]
case "idle":
    var open: [Opened] = []
    for _ in 0..<options.count {
        open.append(try await Task(executorPreference: executor) { try await openSession() }.value)
    }
    FileHandle.standardOutput.write(Data("{\"open\": \(open.count)}\n".utf8))
    _ = readLine()
    let held = open
    try await loop.submit {
        for o in held {
            o.session.close()
            o.conn.close()
        }
    }.get()
    result = ["closed": held.count]
default:
    break
}
print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
try? await group.shutdownGracefully()
