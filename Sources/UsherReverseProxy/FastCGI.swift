import Foundation
import Logging
public import NIOCore
import NIOHTTP1
public import UsherCore
public import UsherHTTP
import UsherHandlers
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// `http.reverse_proxy.transport.fastcgi`: the responder role of FastCGI (PHP-FPM and the like) instead of
/// HTTP. The CGI environment is Caddy's; connections are kept alive (`FCGI_KEEP_CONN`) and pooled per event loop
/// like HTTP ones, and bodies stream both ways through the same bounded buffers.
public struct FastCGITransport: ProxyTransport, Provisioner {
    public static let moduleID: ModuleID = "http.reverse_proxy.transport.fastcgi"
    /// `root`: the document root the application sees (`DOCUMENT_ROOT`, `SCRIPT_FILENAME`); placeholders allowed.
    /// Default: `{http.vars.root}`.
    public var root: String
    /// `split_path`: substrings (lowercase ASCII, matched case-insensitively) that end the script name; what
    /// follows is `PATH_INFO`.
    public var splitPath: [String]
    /// `resolve_root_symlink`: resolve symlinks in the root.
    public var resolveRootSymlink: Bool
    /// `env`: extra environment values; placeholders allowed.
    public var env: [(key: String, value: String)]
    /// `dial_timeout`: longest wait for a connection. Default: 3s.
    public var dialTimeout: ConfigDuration?
    /// `read_timeout`: longest wait for the next bytes from the application. Default: none.
    public var readTimeout: ConfigDuration?
    /// `write_timeout`: longest wait for the application to take more of the request. Default: none.
    public var writeTimeout: ConfigDuration?
    /// `capture_stderr`: log what the application writes to stderr (at error level when the status is 400 or
    /// more, else warning).
    public var captureStderr: Bool
    var logger = Logger(label: "http.reverse_proxy.transport.fastcgi")

    enum CodingKeys: String, CodingKey {
        case root, splitPath = "split_path", resolveRootSymlink = "resolve_root_symlink", env
        case dialTimeout = "dial_timeout", readTimeout = "read_timeout", writeTimeout = "write_timeout"
        case captureStderr = "capture_stderr"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        root = try c.decodeIfPresent(String.self, forKey: .root) ?? ""
        if root.isEmpty { root = "{http.vars.root}" }
        splitPath = try c.decodeIfPresent([String].self, forKey: .splitPath) ?? []
        for s in splitPath where s.utf8.contains(where: { $0 >= 0x80 }) {
            throw c.error(.splitPath, "split path contains non-ASCII characters")
        }
        splitPath = splitPath.map { $0.lowercased() }
        resolveRootSymlink = try c.decodeIfPresent(Bool.self, forKey: .resolveRootSymlink) ?? false
        env = try c.decodeIfPresent([String: String].self, forKey: .env).map { $0.sorted { $0.key < $1.key } } ?? []
        dialTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .dialTimeout)
        readTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .readTimeout)
        writeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeTimeout)
        captureStderr = try c.decodeIfPresent(Bool.self, forKey: .captureStderr) ?? false
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
    }

    /// The HTTP transport settings the connection pool uses for these connections.
    var poolSettings: HTTPTransport {
        var t = HTTPTransport()
        t.dialTimeout = dialTimeout
        t.readTimeout = readTimeout
        t.writeTimeout = writeTimeout
        t.versions = ["1.1"]
        t.fastCGI = self
        return t
    }

    /// Where `path` splits into script and `PATH_INFO` (Caddy's `splitPos`): 0 without `split_path`, -1 when no
    /// split value occurs.
    func splitPosition(_ path: String) -> Int {
        if splitPath.isEmpty { return 0 }
        let bytes = Array(path.utf8)
        for split in splitPath {
            let s = Array(split.utf8)
            guard !s.isEmpty, s.count <= bytes.count else { continue }
            for i in 0...(bytes.count - s.count) {
                var match = true
                for j in 0..<s.count {
                    var c = bytes[i + j]
                    if c >= 0x80 {
                        match = false
                        break
                    }
                    if c >= 65 && c <= 90 { c += 32 }
                    if c != s[j] {
                        match = false
                        break
                    }
                }
                if match { return i + s.count }
            }
        }
        return -1
    }

    /// The CGI environment for `request` (Caddy's `buildEnv`); `head` is the request as it goes upstream (header
    /// ops applied, `X-Forwarded-*` added), `contentLength` what the application will read.
    func environment(
        _ request: Request, head: HTTPRequestHead, contentLength: Int
    ) throws -> [(String, String)] {
        let repl = request.replacer
        var root = absolutePath(repl.replaceAll(self.root, empty: "."))
        if resolveRootSymlink {
            guard let real = realpath(root, nil) else {
                throw HandlerError(status: 502, HTTPErrorMessage("building environment: resolving root \(root)"))
            }
            root = String(cString: real)
            free(real)
        }
        let path = request.path
        var scriptName = path
        var docURI = path
        var pathInfo = ""
        let split = splitPosition(path)
        if split > -1 {
            let b = Array(path.utf8)
            docURI = String(decoding: b[..<split], as: UTF8.self)
            pathInfo = String(decoding: b[split...], as: UTF8.self)
            if scriptName.hasSuffix(pathInfo) { scriptName = String(scriptName.utf8.dropLast(pathInfo.utf8.count))! }
        }
        if pathInfo.isEmpty { pathInfo = repl.get("http.matchers.file.remainder") ?? "" }
        let scriptFilename = sanitizedPathJoin(root, scriptName)
        if !scriptName.isEmpty && !scriptName.hasPrefix("/") { scriptName = "/" + scriptName }
        let secure = request.tls != nil
        let scheme = secure ? "https" : "http"
        let (reqHost, reqPort) = Self.splitHostPort(request.host)
        let ip = request.remoteHost
        let port = request.remoteAddress?.port.map(String.init) ?? ""
        var original = request.original.uri
        if original.isEmpty { original = "/" }
        let method = request.method.rawValue
        var env: [String: String] = [
            "AUTH_TYPE": "", "CONTENT_LENGTH": String(contentLength),
            "CONTENT_TYPE": head.headers.first(name: "Content-Type") ?? "", "GATEWAY_INTERFACE": "CGI/1.1",
            "PATH_INFO": pathInfo, "QUERY_STRING": request.rawQuery, "REMOTE_ADDR": ip, "REMOTE_HOST": ip,
            "REMOTE_PORT": port, "REMOTE_IDENT": "", "REMOTE_USER": repl.get("http.auth.user.id") ?? "",
            "REQUEST_METHOD": method, "REQUEST_SCHEME": scheme, "SERVER_NAME": reqHost,
            "SERVER_PROTOCOL": request.protocolString,
            "SERVER_SOFTWARE": "Usher/" + UsherVersion.current, "DOCUMENT_ROOT": root, "DOCUMENT_URI": docURI,
            "HTTP_HOST": request.host, "REQUEST_URI": original, "SCRIPT_FILENAME": scriptFilename,
            "SCRIPT_NAME": scriptName,
        ]
        if let local = request.localAddress?.ipAddress { env["SERVER_ADDR"] = Self.unmapped(local) }
        if !pathInfo.isEmpty { env["PATH_TRANSLATED"] = sanitizedPathJoin(root, pathInfo) }
        env["SERVER_PORT"] = reqPort ?? (secure ? "443" : "80")
        if let tls = request.tls {
            env["HTTPS"] = "on"
            switch tls.version {
            case 0x0304: env["SSL_PROTOCOL"] = "TLSv1.3"
            case 0x0303: env["SSL_PROTOCOL"] = "TLSv1.2"
            default: break
            }
        }
        if method == "HEAD" || method == "OPTIONS" {
            env["CONTENT_LENGTH"] = "0"
        } else if method != "GET" && env["CONTENT_TYPE"]!.isEmpty {
            env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        }
        for (k, v) in self.env { env[k] = repl.replaceAll(v) }
        // Repeated fields join with ", ", as Go's header map gives them.
        var fromHeaders: [String: String] = [:]
        for (name, value) in head.headers {
            // Go's server keeps Host and Transfer-Encoding out of the header map; Proxy is httpoxy.
            let key = Self.cgiName(name)
            if key == "HTTP_HOST" || key == "HTTP_TRANSFER_ENCODING" || key == "HTTP_PROXY" { continue }
            if let earlier = fromHeaders[key] {
                fromHeaders[key] = earlier + ", " + value
            } else {
                fromHeaders[key] = value
            }
        }
        for (k, v) in fromHeaders { env[k] = v }
        return Array(env)
    }

    /// `HTTP_` and the header name upper-cased with `-` as `_`, in one pass over its bytes.
    static func cgiName(_ name: String) -> String {
        var out: [UInt8] = Array("HTTP_".utf8)
        out.reserveCapacity(5 + name.utf8.count)
        for b in name.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): out.append(b - 32)
            case UInt8(ascii: "-"): out.append(UInt8(ascii: "_"))
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The environment for a request that did not come from a client (an active health check): what its head
    /// says, against the configured root without placeholders.
    func environment(for head: HTTPRequestHead) -> [(String, String)] {
        let path = String(head.uri.prefix { $0 != "?" })
        let query = head.uri.firstIndex(of: "?").map { String(head.uri[head.uri.index(after: $0)...]) } ?? ""
        let root = absolutePath(Replacer(includeGlobals: true).replaceAll(self.root, empty: "."))
        var env: [String: String] = [
            "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": head.method.rawValue, "REQUEST_URI": head.uri,
            "QUERY_STRING": query, "SCRIPT_NAME": path, "DOCUMENT_URI": path, "DOCUMENT_ROOT": root,
            "SCRIPT_FILENAME": sanitizedPathJoin(root, path), "CONTENT_LENGTH": "0", "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "Usher/" + UsherVersion.current,
        ]
        for (name, value) in head.headers where name.lowercased() != "transfer-encoding" {
            env["HTTP_" + name.uppercased().replacingOccurrences(of: "-", with: "_")] = value
        }
        return env.sorted { $0.key < $1.key }
    }

    /// An IPv4 peer of a dual-stack socket as Go shows it: `127.0.0.1`, not `::ffff:127.0.0.1`.
    static func unmapped(_ ip: String) -> String {
        ip.hasPrefix("::ffff:") && ip.contains(".") ? String(ip.dropFirst(7)) : ip
    }

    static func splitHostPort(_ host: String) -> (String, String?) {
        if host.hasPrefix("["), let close = host.lastIndex(of: "]") {
            let h = String(host[host.index(after: host.startIndex)..<close])
            let rest = host[host.index(after: close)...]
            return rest.hasPrefix(":") ? (h, String(rest.dropFirst())) : (host, nil)
        }
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            return (String(host[..<colon]), String(host[host.index(after: colon)...]))
        }
        return (host, nil)
    }
}

/// The CGI environment of the next request, handed to the codec before its head.
struct FastCGIRequestParams {
    var env: [(String, String)]
    /// HEAD and OPTIONS send no body (CONTENT_LENGTH 0), as Caddy.
    var sendsBody: Bool
}

/// FastCGI framing between ``UpstreamConnection`` (HTTP parts) and the socket: a request becomes BEGIN_REQUEST,
/// PARAMS and STDIN records; STDOUT becomes a response head (from the CGI header block) and body, END_REQUEST its
/// end. One request at a time per connection, request ID 1, the connection kept open for the next.
final class FastCGIClientCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = ByteBuffer

    private let transport: FastCGITransport
    private let captureStderr: Bool
    private let logger: Logger
    private var params: FastCGIRequestParams?
    private var sendsBody = true
    private var inbound = ByteBuffer()
    private var header: ByteBuffer?
    private var headSent = false
    /// Between a request's head and its END_REQUEST.
    private var inRequest = false
    private var stderr: [UInt8] = []
    private var status = 200

    /// The CGI header block may not exceed this.
    static let maxHeaderBytes = 1 << 20
    /// What stays of the application's stderr per request for the log.
    static let maxStderrBytes = 64 * 1024

    init(transport: FastCGITransport) {
        self.transport = transport
        self.captureStderr = transport.captureStderr
        self.logger = transport.logger
    }

    // MARK: Requests

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let p = event as? FastCGIRequestParams {
            params = p
            promise?.succeed()
        } else {
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            let p = params ?? FastCGIRequestParams(env: transport.environment(for: head), sendsBody: false)
            params = nil
            sendsBody = p.sendsBody
            header = ByteBuffer()
            headSent = false
            inRequest = true
            stderr = []
            status = 200
            var out = context.channel.allocator.buffer(capacity: 1024)
            // BEGIN_REQUEST: the responder role, keep the connection.
            Self.record(&out, type: 1, content: [0, 1, 1, 0, 0, 0, 0, 0])
            var pairs: [UInt8] = []
            for (k, v) in p.env {
                Self.appendLength(&pairs, k.utf8.count)
                Self.appendLength(&pairs, v.utf8.count)
                pairs += k.utf8
                pairs += v.utf8
            }
            var i = 0
            while i < pairs.count {
                let n = min(65535, pairs.count - i)
                Self.record(&out, type: 4, content: pairs[i..<(i + n)])
                i += n
            }
            Self.record(&out, type: 4, content: [])
            context.write(wrapOutboundOut(out), promise: promise)
        case .body(.byteBuffer(var b)):
            guard sendsBody else {
                promise?.succeed()
                return
            }
            var out = context.channel.allocator.buffer(capacity: b.readableBytes + 8 * (b.readableBytes / 65535 + 1))
            while b.readableBytes > 0 {
                let n = min(65535, b.readableBytes)
                Self.recordHeader(&out, type: 5, length: n)
                var slice = b.readSlice(length: n)!
                out.writeBuffer(&slice)
            }
            context.write(wrapOutboundOut(out), promise: promise)
        case .body:
            promise?.fail(UpstreamError(description: "fastcgi: file regions are not sent", retryable: false))
        case .end:
            var out = context.channel.allocator.buffer(capacity: 8)
            Self.record(&out, type: 5, content: [])
            context.write(wrapOutboundOut(out), promise: promise)
        }
    }

    static func appendLength(_ out: inout [UInt8], _ n: Int) {
        if n < 128 {
            out.append(UInt8(n))
        } else {
            out += [UInt8((n >> 24) & 0x7F) | 0x80, UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        }
    }

    static func recordHeader(_ out: inout ByteBuffer, type: UInt8, length: Int) {
        out.writeBytes([1, type, 0, 1, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0])
    }

    static func record<C: Collection>(_ out: inout ByteBuffer, type: UInt8, content: C) where C.Element == UInt8 {
        recordHeader(&out, type: type, length: content.count)
        out.writeBytes(content)
    }

    // MARK: Responses

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        inbound.writeBuffer(&b)
        do {
            while inbound.readableBytes >= 8 {
                let start = inbound.readerIndex
                let type = inbound.getInteger(at: start + 1, as: UInt8.self)!
                let length = Int(inbound.getInteger(at: start + 4, as: UInt16.self)!)
                let padding = Int(inbound.getInteger(at: start + 6, as: UInt8.self)!)
                guard inbound.readableBytes >= 8 + length + padding else { break }
                inbound.moveReaderIndex(forwardBy: 8)
                var content = inbound.readSlice(length: length)!
                inbound.moveReaderIndex(forwardBy: padding)
                switch type {
                case 6: try stdout(context, &content)
                case 7:
                    let room = Self.maxStderrBytes - stderr.count
                    if room > 0 { stderr += content.readBytes(length: min(room, content.readableBytes)) ?? [] }
                case 3: try endRequest(context)
                default: break
                }
            }
            inbound.discardReadBytes()
        } catch {
            context.fireErrorCaught(error)
        }
    }

    private func stdout(_ context: ChannelHandlerContext, _ content: inout ByteBuffer) throws {
        guard inRequest else { throw Self.unsolicited }
        if headSent {
            if content.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(content))) }
            return
        }
        header!.writeBuffer(&content)
        let view = header!.readableBytesView
        // The header block ends at the first empty line (LF or CRLF line ends).
        var end: Int?
        var bodyStart = 0
        var i = view.startIndex
        var lineStart = true
        while i < view.endIndex {
            let c = view[i]
            if lineStart && c == 10 {
                end = i - view.startIndex
                bodyStart = end! + 1
                break
            }
            if lineStart && c == 13, i + 1 < view.endIndex, view[i + 1] == 10 {
                end = i - view.startIndex
                bodyStart = end! + 2
                break
            }
            lineStart = c == 10
            i += 1
        }
        guard let end else {
            if header!.readableBytes > Self.maxHeaderBytes {
                throw UpstreamError(description: "fastcgi: response header block too large", retryable: false)
            }
            return
        }
        let block = header!.getSlice(at: header!.readerIndex, length: end)!
        var rest = header!.getSlice(at: header!.readerIndex + bodyStart, length: header!.readableBytes - bodyStart)!
        header = nil
        try sendHead(context, block)
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(rest.slice()))) }
        _ = rest
    }

    /// The CGI header block as an HTTP head: `Status` sets the code (200 without it), names in Go's canonical form.
    private func sendHead(_ context: ChannelHandlerContext, _ block: ByteBuffer) throws {
        var headers = HTTPHeaders()
        var code = 200
        // Lines split on LF bytes (a String would keep CRLF as one character and never split it).
        let bytes = Array(block.readableBytesView)
        for raw in bytes.split(separator: 10, omittingEmptySubsequences: true) {
            let lineBytes = raw.last == 13 ? raw.dropLast() : raw
            let line = String(decoding: lineBytes, as: UTF8.self)
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw UpstreamError(description: "fastcgi: malformed MIME header line: \(line)", retryable: false)
            }
            let name = canonicalHeaderName(String(line[..<colon]))
            let value = Self.trimmed(line[line.index(after: colon)...])
            if name == "Status" {
                let number = value.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
                guard let n = Int(number) else {
                    throw UpstreamError(description: "fastcgi: bad Status \(value)", retryable: false)
                }
                code = n
            }
            headers.add(name: name, value: value)
        }
        status = code
        headSent = true
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code), headers: headers)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// Without leading and trailing spaces and tabs (textproto's trimming of header values).
    static func trimmed(_ s: Substring) -> String {
        let bytes = s.utf8
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, bytes[start] == 32 || bytes[start] == 9 { start = bytes.index(after: start) }
        while end > start, bytes[bytes.index(before: end)] == 32 || bytes[bytes.index(before: end)] == 9 {
            end = bytes.index(before: end)
        }
        return String(s[start..<end])
    }

    /// Records that answer no request (on an idle connection, or after END_REQUEST).
    static let unsolicited = UpstreamError(description: "fastcgi: output for no request", retryable: false)

    private func endRequest(_ context: ChannelHandlerContext) throws {
        guard inRequest else { throw Self.unsolicited }
        inRequest = false
        if !headSent {
            // Output that ended inside (or without) its header block: what there is, as Go's reader takes it.
            let block = header ?? ByteBuffer()
            header = nil
            try sendHead(context, block)
        }
        if captureStderr && !stderr.isEmpty {
            let level: Logger.Level = status >= 400 ? .error : .warning
            logger.log(level: level, "stderr", metadata: ["body": "\(String(decoding: stderr, as: UTF8.self))"])
        }
        stderr = []
        context.fireChannelRead(wrapInboundOut(.end(nil)))
    }
}
