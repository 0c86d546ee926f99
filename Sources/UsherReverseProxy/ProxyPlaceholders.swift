import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP
import UsherHTTP3
public import UsherHandlers

/// Caddy's `{http.reverse_proxy.*}` placeholders for one request, computed only when asked for.
final class ProxyPlaceholders: PlaceholderProvider {
    let start: NIODeadline
    var end: NIODeadline?
    var upstream: Upstream?
    var latency: TimeAmount?
    var status: Int?
    var responseHeaders: HTTPHeaders?
    var retries = 0

    init(start: NIODeadline) { self.start = start }

    func placeholderValue(_ key: String) -> String? {
        guard key.hasPrefix("http.reverse_proxy.") else { return nil }
        switch key.dropFirst(19) {
        case "duration": return formatGoDuration(seconds(start, end))
        case "duration_ms": return String(seconds(start, end) * 1e3)
        case "retries": return String(retries)
        case "status_code": return status.map(String.init)
        case "status_text": return status.map { "\($0) \(HTTPResponseStatusText.text($0))" }
        case "upstream.latency": return latency.map { formatGoDuration(Double($0.nanoseconds) / 1e9) }
        case "upstream.latency_ms": return latency.map { String(Double($0.nanoseconds) / 1e6) }
        default: break
        }
        if key.hasPrefix("http.reverse_proxy.header."), let h = responseHeaders {
            let values = h[String(key.dropFirst(26))]
            return values.isEmpty ? nil : values.joined(separator: ",")
        }
        guard let upstream, key.hasPrefix("http.reverse_proxy.upstream.") else { return nil }
        let address = upstream.address
        switch key.dropFirst(28) {
        case "address", "hostport": return address
        case "host": return splitHostPort(address).host
        case "port": return splitHostPort(address).port
        case "requests": return String(upstream.host.numRequests)
        case "max_requests": return String(upstream.maxRequests)
        case "fails": return String(upstream.health.failures)
        default: return nil
        }
    }

    private func seconds(_ from: NIODeadline, _ to: NIODeadline?) -> Double {
        Double(((to ?? .now()) - from).nanoseconds) / 1e9
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (no Foundation, no copy).
    var trimmedOfSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
