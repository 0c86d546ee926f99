import CUsherSystem
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
public import UsherCore
public import UsherHTTP

/// A content coding for `encode` (`http.encoders.*`, keyed by name).
public protocol ContentEncoding: Module {
    /// The `Content-Encoding` token, e.g. `gzip`.
    var encodingName: String { get }
    /// A compressor ready for a new stream.
    func makeCompressor() throws -> StreamCompressor
}

public enum ContentEncodings: ModuleNamespace {
    public static let prefix = "http.encoders"
    public static let inlineKey: String? = nil
    public typealias Instance = any ContentEncoding
}

/// A streaming compressor over the system's zlib or libzstd.
public final class StreamCompressor {
    private let handle: OpaquePointer

    init(kind: Int32, level: Int32) throws {
        guard let h = c_usher_encoder_new(kind, level) else {
            throw HandlerError(status: 500, HTTPErrorMessage("cannot create compressor"))
        }
        handle = h
    }

    deinit { c_usher_encoder_free(handle) }

    enum Mode: Int32 { case more = 0, flush = 1, end = 2 }

    /// Compresses `input` and returns what the compressor produced (possibly nothing until more arrives).
    func compress(_ input: ByteBuffer, _ mode: Mode, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var out = allocator.buffer(capacity: max(1024, input.readableBytes / 2 + 64))
        let failed = input.withUnsafeReadableBytes { inPtr -> Bool in
            var offset = 0
            while true {
                var consumed = 0
                var rc: Int32 = 0
                out.writeWithUnsafeMutableBytes(minimumWritableBytes: max(1024, out.writableBytes)) { outPtr -> Int in
                    var produced = 0
                    let base = inPtr.baseAddress.map { $0.advanced(by: offset).assumingMemoryBound(to: UInt8.self) }
                    rc = c_usher_encoder_step(
                        handle, base, inPtr.count - offset, &consumed,
                        outPtr.baseAddress!.assumingMemoryBound(to: UInt8.self), outPtr.count, &produced, mode.rawValue
                    )
                    return rc < 0 ? 0 : produced
                }
                offset += consumed
                if rc < 0 { return true }
                if rc == 0 { return false }
            }
        }
        if failed { throw HandlerError(status: 500, HTTPErrorMessage("compression failed")) }
        return out
    }

    func setChecksum(_ on: Bool) { c_usher_encoder_set_checksum(handle, on ? 1 : 0) }

    /// Readies the compressor for another stream.
    func reset() -> Bool { c_usher_encoder_reset(handle) == 0 }
}

/// Pools compressors per encoding: creating a zlib stream costs an allocation of a few hundred KiB.
final class CompressorPool: Sendable {
    private let idle = Mutex<[StreamCompressorBox]>([])
    let make: @Sendable () throws -> StreamCompressor

    init(make: @escaping @Sendable () throws -> StreamCompressor) { self.make = make }

    func get() throws -> StreamCompressor {
        if let box = idle.withLock({ $0.popLast() }) { return box.value }
        return try make()
    }

    func put(_ c: StreamCompressor) {
        guard c.reset() else { return }
        let box = StreamCompressorBox(value: c)
        idle.withLock { if $0.count < 64 { $0.append(box) } }
    }
}

/// A compressor moving between pool and response; only one owner uses it at a time.
struct StreamCompressorBox: @unchecked Sendable {
    let value: StreamCompressor
}

/// `http.encoders.gzip`.
public struct GzipEncoding: ContentEncoding {
    public static let moduleID: ModuleID = "http.encoders.gzip"
    /// `level`: 1 (fastest) to 9 (smallest). Default: 5.
    public var level: Int

    enum CodingKeys: String, CodingKey { case level }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        level = try c.decodeIfPresent(Int.self, forKey: .level) ?? 0
        if level == 0 { level = 5 }
        if level < 1 || level > 9 { throw c.error(.level, "quality too low; must be >= 1 and <= 9") }
    }

    public var encodingName: String { "gzip" }
    public func makeCompressor() throws -> StreamCompressor { try StreamCompressor(kind: 1, level: Int32(level)) }
}

/// `http.encoders.zstd`.
public struct ZstdEncoding: ContentEncoding {
    public static let moduleID: ModuleID = "http.encoders.zstd"
    /// `level`: `fastest`, `default`, `better` or `best`. Default: `default`.
    public var level: String
    /// `checksum`: end frames with a checksum. Default: true.
    public var checksum: Bool?

    enum CodingKeys: String, CodingKey { case level, checksum }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        level = try c.decodeIfPresent(String.self, forKey: .level) ?? "default"
        if level.isEmpty { level = "default" }
        guard Self.levels[level] != nil else { throw c.error(.level, "unexpected compression level: \(level)") }
        checksum = try c.decodeIfPresent(Bool.self, forKey: .checksum)
    }

    /// klauspost/zstd's speed names mapped to libzstd levels of similar speed.
    static let levels: [String: Int32] = ["fastest": 1, "default": 3, "better": 7, "best": 11]

    public var encodingName: String { "zstd" }
    public func makeCompressor() throws -> StreamCompressor {
        let c = try StreamCompressor(kind: 2, level: Self.levels[level]!)
        if checksum == false { c.setChecksum(false) }
        return c
    }
}

/// `http.handlers.encode`: compresses responses for clients that accept it, streaming.
public struct EncodeHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.encode"

    /// `encodings`: the codings on offer, by name.
    public var encodings: LoadedMap<ContentEncodings>
    /// `prefer`: order among codings the client accepts equally. Default: `zstd`, `br`, `gzip` (those configured).
    public var prefer: [String]
    /// `minimum_length`: bodies no longer than this (bytes) go out unencoded. Default: 512.
    public var minimumLength: Int
    /// `match`: which responses to encode. Default: common text-based content types.
    public var match: ResponseMatcher?

    private var pools: [String: CompressorPool] = [:]

    enum CodingKeys: String, CodingKey {
        case encodings, prefer, minimumLength = "minimum_length", match
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        encodings =
            try c.decodeIfPresent(LoadedMap<ContentEncodings>.self, forKey: .encodings) ?? LoadedMap(entries: [])
        prefer = try c.decodeIfPresent([String].self, forKey: .prefer) ?? []
        minimumLength = try c.decodeIfPresent(Int.self, forKey: .minimumLength) ?? 0
        match = try c.decodeIfPresent(ResponseMatcher.self, forKey: .match)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        try await encodings.provision(context)
        for entry in encodings.entries {
            let enc = entry.module
            if pools[enc.encodingName] != nil {
                throw ConfigError(path: entry.configPath, "adding encoding \(enc.encodingName): encoding already added")
            }
            pools[enc.encodingName] = CompressorPool(make: { try enc.makeCompressor() })
        }
        if minimumLength == 0 { minimumLength = 512 }
        if match == nil {
            match = ResponseMatcher(headers: [(name: "Content-Type", values: Self.defaultContentTypes)])
        }
        if prefer.isEmpty { prefer = ["zstd", "br", "gzip"].filter { pools[$0] != nil } }
    }

    /// Caddy's default: common text-based types (Cloudflare's list).
    static let defaultContentTypes = [
        "application/atom+xml*", "application/eot*", "application/font*", "application/geo+json*",
        "application/graphql+json*", "application/graphql-response+json*", "application/javascript*",
        "application/json*", "application/ld+json*", "application/manifest+json*", "application/opentype*",
        "application/otf*", "application/rss+xml*", "application/truetype*", "application/ttf*",
        "application/vnd.api+json*", "application/vnd.ms-fontobject*", "application/wasm*", "application/x-httpd-cgi*",
        "application/x-javascript*", "application/x-opentype*", "application/x-otf*", "application/x-perl*",
        "application/x-protobuf*", "application/x-ttf*", "application/xhtml+xml*", "application/xml*", "font/ttf*",
        "font/otf*", "image/svg+xml*", "image/vnd.microsoft.icon*", "image/x-icon*", "multipart/bag*",
        "multipart/mixed*", "text/*",
    ]

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        guard noTransformAbsent(request.headers) else { return try await next.serve(request, writer) }
        for name in acceptedEncodings(request, preferredOrder: prefer) {
            guard let pool = pools[name] else { continue }
            // The ETag we hand out has our suffix; handlers upstream know only their own.
            if let inm = request.headers.first(name: "If-None-Match"), !inm.hasPrefix("W/"), inm.hasSuffix("-\(name)\"")
            {
                request.headers.replaceOrAdd(name: "If-None-Match", value: String(inm.dropLast(name.count + 2)) + "\"")
            }
            let encoder = EncodingResponseWriter(
                wrapping: writer, encoding: name, pool: pool, minimumLength: minimumLength, match: match!,
                isConnect: request.method == .CONNECT
            )
            do {
                try await next.serve(request, encoder)
            } catch {
                encoder.release()
                throw error
            }
            try await encoder.close()
            return
        }
        try await next.serve(request, writer)
    }
}

func noTransformAbsent(_ h: HTTPHeaders) -> Bool {
    !(h.first(name: "Cache-Control")?.contains("no-transform") ?? false)
}

/// Compresses what passes through once the response qualifies: long enough (first write, or a declared
/// `Content-Length`), of a matching type, not already encoded, not a partial response.
final class EncodingResponseWriter: WrappingResponseWriter, Flushing {
    let wrappedWriter: any ResponseWriter
    let encodingName: String
    let pool: CompressorPool
    let minimumLength: Int
    let matcher: ResponseMatcher
    let isConnect: Bool
    private var statusCode: HTTPResponseStatus?
    private var wroteHeader = false
    private var disabled = false
    private var compressor: StreamCompressor?
    private let allocator = ByteBufferAllocator()

    init(
        wrapping: any ResponseWriter, encoding: String, pool: CompressorPool, minimumLength: Int,
        match: ResponseMatcher, isConnect: Bool
    ) {
        self.wrappedWriter = wrapping
        self.encodingName = encoding
        self.pool = pool
        self.minimumLength = minimumLength
        self.matcher = match
        self.isConnect = isConnect
    }

    var status: HTTPResponseStatus? { statusCode ?? wrappedWriter.status }

    func writeHead(_ status: HTTPResponseStatus) async throws {
        if status.code >= 100 && status.code < 200 {
            try await wrappedWriter.writeHead(status)
            return
        }
        guard !wroteHeader else { return }
        statusCode = status
        if status == .partialContent { disabled = true }
        if status == .notModified && !hasVary(headers, "Accept-Encoding") {
            headers.add(name: "Vary", value: "Accept-Encoding")
        }
        if isConnect && status.code >= 200 && status.code < 300 {
            try await wrappedWriter.writeHead(status)
            wroteHeader = true
            return
        }
        // Server-sent events need their head now; the body may be a long time coming.
        if let ct = headers.first(name: "Content-Type"), ct.lowercased().hasPrefix("text/event-stream") {
            try start()
            try await wrappedWriter.writeHead(status)
            wroteHeader = true
        }
    }

    func write(_ buffer: ByteBuffer) async throws {
        guard buffer.readableBytes > 0 else { return }
        if statusCode == nil && !wroteHeader { statusCode = .ok }
        if !wroteHeader {
            let declared = headers.first(name: "Content-Length").flatMap { Int($0) } ?? 0
            if buffer.readableBytes > minimumLength || declared > minimumLength {
                if (headers.first(name: "Content-Type") ?? "").isEmpty && !headers.contains(name: "Content-Type") {
                    headers.add(name: "Content-Type", value: sniffContentType(buffer))
                }
                try start()
            }
            try await wrappedWriter.writeHead(statusCode ?? .ok)
            wroteHeader = true
        }
        if let compressor {
            let out = try compressor.compress(buffer, .more, allocator: allocator)
            if out.readableBytes > 0 { try await wrappedWriter.write(out) }
        } else {
            try await wrappedWriter.write(buffer)
        }
    }

    func flush() async throws {
        if !wroteHeader {
            try start()
            try await wrappedWriter.writeHead(statusCode ?? .ok)
            wroteHeader = true
        }
        if let compressor {
            let out = try compressor.compress(ByteBuffer(), .flush, allocator: allocator)
            if out.readableBytes > 0 { try await wrappedWriter.write(out) }
        }
        try await wrappedWriter.capability((any Flushing).self)?.flush()
    }

    /// Ends the compressed stream (the handler chain has returned).
    func close() async throws {
        if !wroteHeader {
            let declared = headers.first(name: "Content-Length").flatMap { Int($0) } ?? 0
            if declared > minimumLength { try start() }
            if let statusCode { try await wrappedWriter.writeHead(statusCode) }
            wroteHeader = true
        }
        if let compressor {
            self.compressor = nil
            let out = try compressor.compress(ByteBuffer(), .end, allocator: allocator)
            pool.put(compressor)
            if out.readableBytes > 0 { try await wrappedWriter.write(out) }
        }
    }

    /// Drops the compressor without finishing the stream (the response failed).
    func release() { compressor = nil }

    /// Decides whether to encode (Caddy's `init`), and if so rewrites the headers for it.
    private func start() throws {
        guard !disabled, compressor == nil else { return }
        let existing = headers.first(name: "Content-Encoding") ?? ""
        guard existing.isEmpty, noTransformAbsent(headers),
            matcher.matches(status: Int(statusCode?.code ?? 200), headers: headers)
        else { return }
        compressor = try pool.get()
        headers.remove(name: "Content-Length")
        headers.replaceOrAdd(name: "Content-Encoding", value: encodingName)
        if !hasVary(headers, "Accept-Encoding") { headers.add(name: "Vary", value: "Accept-Encoding") }
        headers.remove(name: "Accept-Ranges")
        if let etag = headers.first(name: "ETag"), !etag.isEmpty, !etag.hasPrefix("W/") {
            let bare = etag.hasSuffix("\"") ? String(etag.dropLast()) : etag
            headers.replaceOrAdd(name: "ETag", value: bare + "-\(encodingName)\"")
        }
    }

    private func hasVary(_ h: HTTPHeaders, _ value: String) -> Bool {
        h[canonicalForm: "Vary"].contains {
            $0.trimmingCharacters(in: .whitespaces).caseInsensitiveCompare(value) == .orderedSame
        }
    }
}
