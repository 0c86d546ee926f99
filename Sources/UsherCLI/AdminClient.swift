import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 client for talking to a running server's admin endpoint (`stop`, `reload`).
enum AdminClient {
    struct Response {
        var status: Int
        var body: [UInt8]
    }

    /// The admin address to use: the flag, else the config's `admin.listen`, else the default.
    static func address(flag: String?, config: JSONValue?) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let listen = config?["admin"]?["listen"]?.stringValue, !listen.isEmpty { return listen }
        return ProcessEnvironment.get("USHER_ADMIN").flatMap { $0.isEmpty ? nil : $0 } ?? AdminConfig.defaultListen
    }

    static func request(
        address: String, method: String, path: String, headers: [(String, String)] = [], body: [UInt8] = []
    ) throws -> Response {
        let a = try NetworkAddress(parsing: address, defaultPort: 2019)
        let fd: Int32
        var hostHeader: String
        if a.isUnixNetwork {
            let (path, _) = try NetworkAddress.splitUnixPermissions(a.host)
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw CLIError("socket: \(String(cString: strerror(errno)))") }
            var sun = sockaddr_un()
            sun.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: sun.sun_path) else { throw CLIError("socket path too long") }
            withUnsafeMutableBytes(of: &sun.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &sun) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard rc == 0 else {
                close(fd)
                throw CLIError("performing request: dial unix \(path): \(String(cString: strerror(errno)))")
            }
            hostHeader = "127.0.0.1"
        } else {
            var host = a.host.isEmpty ? "127.0.0.1" : a.host
            if host == "localhost" { host = "127.0.0.1" }
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var res: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(a.startPort), &hints, &res) == 0, let info = res else {
                throw CLIError("performing request: cannot resolve \(host)")
            }
            defer { freeaddrinfo(res) }
            fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw CLIError("socket: \(String(cString: strerror(errno)))") }
            guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw CLIError(
                    "performing request: dial tcp \(a.joinHostPort()): \(reason) (is the server running, with its admin endpoint at \(address)?)"
                )
            }
            hostHeader = a.host.isEmpty ? "localhost:\(a.startPort)" : a.joinHostPort()
        }
        defer { close(fd) }
        var req =
            "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        for (n, v) in headers { req += "\(n): \(v)\r\n" }
        req += "\r\n"
        writeFully(fd, Array(req.utf8) + body)
        var raw: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            raw.append(contentsOf: buf[0..<n])
        }
        guard let split = findHeaderEnd(raw) else { throw CLIError("malformed response from admin endpoint") }
        let head = String(decoding: raw[0..<split], as: UTF8.self)
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        let status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        var bodyBytes = Array(raw[(split + 4)...])
        if head.lowercased().contains("transfer-encoding: chunked") { bodyBytes = dechunk(bodyBytes) }
        return Response(status: status, body: bodyBytes)
    }

    private static func findHeaderEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    private static func dechunk(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < b.count {
            var j = i
            while j + 1 < b.count && !(b[j] == 13 && b[j + 1] == 10) { j += 1 }
            guard let size = Int(String(decoding: b[i..<j], as: UTF8.self), radix: 16), size > 0 else { break }
            let start = j + 2
            guard start + size <= b.count else { break }
            out += b[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }

    /// The admin API's error message from a JSON error body, or the raw body.
    static func errorMessage(_ r: Response) -> String {
        if let json = try? JSONValue.parse(r.body), let e = json["error"]?.stringValue { return e }
        return String(decoding: r.body, as: UTF8.self)
    }
}
