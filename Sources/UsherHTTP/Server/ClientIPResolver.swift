import NIOCore
import NIOHTTP1
import UsherCore

/// Works out a request's client IP: the peer address, or (from trusted proxies) the address their
/// `client_ip_headers` name, as Caddy's `determineTrustedProxy` does.
struct ClientIPResolver: Sendable {
    let trustedProxies: (any IPRangeSource)?
    let headers: [String]
    let strict: Bool
    let trustUnix: Bool

    func resolve(_ request: Request) -> (ip: String, trusted: Bool) {
        guard let remote = request.remoteAddress else { return ("", false) }
        if case .unixDomainSocket = remote {
            guard trustUnix else { return ("", false) }
            let ranges = trustedProxies?.ranges(for: request) ?? []
            return (
                strict ? strictClientIP(request, ranges: ranges, fallback: "@") : realClientIP(request, fallback: "@"),
                true
            )
        }
        guard let ip = remote.ip else { return ("", false) }
        let ipText = ip.description
        guard let trustedProxies else { return (ipText, false) }
        let ranges = trustedProxies.ranges(for: request)
        guard ranges.contains(where: { $0.contains(ip) }) else { return (ipText, false) }
        return (
            strict
                ? strictClientIP(request, ranges: ranges, fallback: ipText) : realClientIP(request, fallback: ipText),
            true
        )
    }

    private func headerIPs(_ request: Request, _ field: String) -> [Substring] {
        request.headers[field].joined(separator: ",").split(separator: ",", omittingEmptySubsequences: false)
    }

    private static func parseIPPart(_ part: Substring) -> IPAddress? {
        var host = String(part).trimmingASCIISpaces
        let (h, p) = splitHostPort(host)
        if !p.isEmpty || host.hasPrefix("[") { host = h }
        if let pct = host.firstIndex(of: "%") { host = String(host[..<pct]) }
        return IPAddress(host)
    }

    private func realClientIP(_ request: Request, fallback: String) -> String {
        let parts = headers.flatMap { headerIPs(request, $0) }
        for part in parts {
            if let ip = Self.parseIPPart(part) { return ip.description }
        }
        return fallback
    }

    private func strictClientIP(_ request: Request, ranges: [IPPrefix], fallback: String) -> String {
        for field in headers {
            for part in headerIPs(request, field).reversed() {
                guard let ip = Self.parseIPPart(part) else { continue }
                if !ranges.contains(where: { $0.contains(ip) }) { return ip.description }
            }
        }
        return fallback
    }
}
