// h3load: an HTTP/3 load generator on Usher's QUIC client (Debian's h2load has no QUIC), for the bench harness
// and the interop tests.
//
//   h3load [-c CONNS] [-m STREAMS] [-D SECONDS | -n REQUESTS] [--insecure] [--sni NAME] [--json] https://HOST:PORT/PATH
//
// Opens CONNS connections, keeps STREAMS requests in flight on each until SECONDS have passed (or REQUESTS are
// done), and prints how many succeeded (2xx), failed and errored, requests/s, bytes/s and latency percentiles.
import Foundation
import NIOCore
import NIOPosix
import UsherHTTP3

struct Options {
    var connections = 1
    var streams = 1
    var duration: Double?
    var requests: Int?
    var insecure = false
    var sni: String?
    var json = false
    var url = ""
}

func parseOptions() -> Options {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    func value() -> String {
        guard !args.isEmpty else { fatalError("missing value") }
        return args.removeFirst()
    }
    while let a = args.first {
        args.removeFirst()
        switch a {
        case "-c": o.connections = Int(value()) ?? 1
        case "-m": o.streams = Int(value()) ?? 1
        case "-D": o.duration = Double(value())
        case "-n": o.requests = Int(value())
        case "--insecure", "-k": o.insecure = true
        case "--sni": o.sni = value()
        case "--json": o.json = true
        default: o.url = a
        }
    }
    if o.duration == nil && o.requests == nil { o.requests = 1 }
    return o
}

/// Everything the run touches lives on one event loop.
final class Run: @unchecked Sendable {
    let options: Options
    let host: String
    let authority: String
    let path: String
    let loop: any EventLoop
    var started = NIODeadline.now()
    var deadline: NIODeadline?
    var issued = 0
    var succeeded = 0
    var failed = 0
    var errored = 0
    var bytes = 0
    var latencies: [Int64] = []
    var statuses: [Int: Int] = [:]
    var active = 0
    let done: EventLoopPromise<Void>

    init(options: Options, loop: any EventLoop) {
        self.options = options
        self.loop = loop
        let u = URL(string: options.url)!
        let h = u.host ?? "127.0.0.1"
        host = h
        authority = u.port.map { "\(h):\($0)" } ?? h
        var p = u.path.isEmpty ? "/" : u.path
        if let q = u.query { p += "?" + q }
        path = p
        done = loop.makePromise()
    }

    var moreWanted: Bool {
        if let d = deadline, NIODeadline.now() >= d { return false }
        if let n = options.requests, issued >= n { return false }
        return true
    }

    func issue(on conn: HTTP3ClientConnection) {
        guard moreWanted, conn.isUsable else { return }
        let stream: HTTP3Stream
        do {
            stream = try conn.openStream()
        } catch {
            return
        }
        issued += 1
        active += 1
        let start = NIODeadline.now()
        var status = 0
        stream.onHeaders = { status = Int(stream.field(":status") ?? "") ?? 0 }
        stream.onData = { [unowned self] b in
            self.bytes += b.readableBytes
            stream.consumed(b.readableBytes)
        }
        stream.onClose = { [unowned self] complete in
            self.active -= 1
            if complete || stream.requestEnded {
                self.latencies.append((NIODeadline.now() - start).nanoseconds)
                self.statuses[status, default: 0] += 1
                if (200..<300).contains(status) { self.succeeded += 1 } else { self.failed += 1 }
            } else {
                self.errored += 1
            }
            self.issue(on: conn)
            self.finishIfIdle()
        }
        do {
            try stream.sendRequest(
                [
                    (":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path),
                    ("user-agent", "h3load"),
                ], hasBody: false)
        } catch {
            stream.reset()
        }
    }

    func finishIfIdle() {
        if active == 0 && !moreWanted { done.succeed() }
    }
}

let options = parseOptions()
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let run = Run(options: options, loop: loop)
var config = HTTP3ClientConfiguration(serverName: options.sni ?? run.host)
config.insecureSkipVerify = options.insecure
let url = URL(string: options.url)!
let address = try SocketAddress.makeAddressResolvingHost(run.host, port: url.port ?? 443)
var connections: [HTTP3ClientConnection] = []
for _ in 0..<options.connections {
    connections.append(try await HTTP3ClientConnection.connect(to: address, configuration: config, on: loop))
}
let conns = connections
try await loop.submit {
    run.started = .now()
    if let d = options.duration { run.deadline = .now() + .nanoseconds(Int64(d * 1e9)) }
    for c in conns {
        for _ in 0..<options.streams { run.issue(on: c) }
    }
    run.finishIfIdle()
}.get()
if let d = options.duration {
    // Streams that cannot finish (a stalled server) do not hold the run past its time by much.
    loop.scheduleTask(in: .nanoseconds(Int64((d + 10) * 1e9))) { run.done.succeed() }
}
try await run.done.futureResult.get()
let summaryJSON: Data = try await loop.submit {
    let elapsed = Double((NIODeadline.now() - run.started).nanoseconds) / 1e9
    let sorted = run.latencies.sorted()
    func pct(_ p: Double) -> Double {
        sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
    }
    for c in conns { c.close() }
    let summary: [String: Any] = [
        "requests": run.issued, "succeeded": run.succeeded, "failed": run.failed, "errored": run.errored,
        "seconds": elapsed, "req_per_s": Double(run.succeeded) / elapsed, "bytes": run.bytes,
        "bytes_per_s": Double(run.bytes) / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "statuses": Dictionary(uniqueKeysWithValues: run.statuses.map { (String($0.key), $0.value) }),
    ]
    return try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
}.get()
let summary = try JSONSerialization.jsonObject(with: summaryJSON) as! [String: Any]
if options.json {
    print(String(decoding: summaryJSON, as: UTF8.self))
} else {
    print(
        "requests: \(summary["requests"]!) total, \(summary["succeeded"]!) succeeded, \(summary["failed"]!) failed, \(summary["errored"]!) errored"
    )
    print(
        String(
            format: "finished in %.2fs, %.2f req/s, %.2f MB/s", summary["seconds"] as! Double,
            summary["req_per_s"] as! Double,
            (summary["bytes_per_s"] as! Double) / 1e6))
    print(
        String(format: "latency p50 %.2f ms, p99 %.2f ms", summary["p50_ms"] as! Double, summary["p99_ms"] as! Double))
    print("status codes: \(summary["statuses"]!)")
}
try? await group.shutdownGracefully()
