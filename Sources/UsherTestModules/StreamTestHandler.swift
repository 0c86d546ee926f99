import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP

/// `http.handlers.test_stream` (test builds only): reads the whole request body, counting bytes, then streams
/// `?size=N` bytes of response in 64 KiB chunks (`?delay=MS` between chunks, each flushed), with `X-Request-Bytes`
/// telling how many bytes it read and, with `?checksum=1`, `X-Request-Checksum` their FNV-1a 64 hash (hex). Request trailer fields come
/// back as response trailers named `x-echo-NAME`. Exercises streaming both ways without buffering. With `?unread=MS`
/// it leaves the body unread: it waits MS milliseconds, then answers `unread`.
public struct StreamTestHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.test_stream"

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        if let wait = request.queryValue("unread").flatMap(Int.init) {
            try await Task.sleep(for: .milliseconds(wait))
            try await writer.write("unread")
            return
        }
        var received = 0
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        let checksum = request.queryValue("checksum") == "1"
        for try await chunk in request.body {
            received += chunk.readableBytes
            if checksum {
                for b in chunk.readableBytesView { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
            }
        }
        if checksum { writer.headers.replaceOrAdd(name: "X-Request-Checksum", value: String(hash, radix: 16)) }
        if !request.trailers.isEmpty, let trailing = writer.capability((any ResponseTrailing).self) {
            for (name, value) in request.trailers {
                trailing.trailers.add(name: "x-echo-" + name.lowercased(), value: value)
            }
        }
        let size = Int(request.queryValue("size") ?? "0") ?? 0
        writer.headers.replaceOrAdd(name: "X-Request-Bytes", value: String(received))
        writer.headers.replaceOrAdd(name: "Content-Type", value: "application/octet-stream")
        if request.queryValue("length") == "known" {
            writer.headers.replaceOrAdd(name: "Content-Length", value: String(size))
        }
        try await writer.writeHead(.ok)
        var chunk = ByteBufferAllocator().buffer(capacity: 65536)
        chunk.writeRepeatingByte(0x78, count: 65536)
        let delay = Int(request.queryValue("delay") ?? "0") ?? 0
        var left = size
        while left > 0 {
            let n = min(left, 65536)
            try await writer.write(chunk.getSlice(at: 0, length: n)!)
            left -= n
            if delay > 0 {
                try await writer.capability((any Flushing).self)?.flush()
                try await Task.sleep(for: .milliseconds(delay))
            }
        }
    }
}

/// Modules for integration tests; never part of the shipped `usher` binary.
public enum TestModules: ModuleBundle {
    public static let name = "usher/testing"
    public static let version = UsherVersion.current
    public static var modules: [any Module.Type] {
        [StreamTestHandler.self, WebTransportEchoHandler.self, RecordEventHandler.self]
    }
    public static var extensions: [any BundleExtension] { [testCaddyfileSupport] }
}
