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

// The request head that goes up (forwarding headers, trusted proxies) and the hop-by-hop rules both ways.

extension ReverseProxyHandler {
    /// The request as it goes up: the (possibly rewritten) method and URI, headers without hop-by-hop fields, the
    /// `X-Forwarded-*` fields, the client's Host, and the configured header ops.
    /// `tlsUpstream`: the upstream's `host:port` when the transport speaks TLS to it; Caddy 2.11 then sends it as
    /// `Host` unless a `header_up` says otherwise.
    func upstreamRequestHead(
        _ request: Request, upgrade: (type: String, extendedConnect: Bool)?,
        target: (method: HTTPMethod, uri: String)? = nil, withoutBody: Bool = false, tlsUpstream: String? = nil
    ) -> HTTPRequestHead {
        var h = request.headers
        let te = h.first(name: "TE")?.lowercased().contains("trailers") ?? false
        Self.removeHopByHop(&h)
        if te { h.add(name: "TE", value: "trailers") }
        // Fields a trusted proxy set are kept (X-Forwarded-For extended); from anyone else they are replaced.
        let trusted = isTrusted(request)
        let priorFor = h[canonicalForm: "X-Forwarded-For"].map(String.init)
        let clientIP = request.remoteHost
        h.replaceOrAdd(
            name: "X-Forwarded-For",
            value: trusted && !priorFor.isEmpty
                ? priorFor.joined(separator: ", ") + ", " + clientIP : clientIP)
        let priorProto = h.first(name: "X-Forwarded-Proto") ?? ""
        h.replaceOrAdd(name: "X-Forwarded-Proto", value: trusted && !priorProto.isEmpty ? priorProto : request.scheme)
        let priorHost = h.first(name: "X-Forwarded-Host") ?? ""
        h.replaceOrAdd(name: "X-Forwarded-Host", value: trusted && !priorHost.isEmpty ? priorHost : request.host)
        if !h.contains(name: "Host") { h.add(name: "Host", value: request.host) }
        h.add(name: "Via", value: "\(request.version.major).\(request.version.minor) Usher")
        var method = request.method
        if let upgrade {
            // Hop-by-hop, but the point of the request: they go up again (as Go's proxy does).
            h.add(name: "Connection", value: "Upgrade")
            h.add(name: "Upgrade", value: upgrade.type)
            if upgrade.extendedConnect {
                // An HTTP/2 WebSocket (RFC 8441) reaches the upstream as an HTTP/1.1 handshake.
                method = .GET
                h.replaceOrAdd(name: "Sec-WebSocket-Key", value: WebSocketFrames.newKey())
                if !h.contains(name: "Sec-WebSocket-Version") { h.add(name: "Sec-WebSocket-Version", value: "13") }
            }
        } else if withoutBody {
            h.remove(name: "Content-Length")
        } else if request.body.expectedLength == nil && request.method != .GET && request.method != .HEAD {
            h.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
        }
        if let tlsUpstream { h.replaceOrAdd(name: "Host", value: tlsUpstream) }
        if let ops = headers?.request {
            ops.apply(to: &h, request.replacer)
            // Values made from placeholders may carry what a client sent; none may break the header block.
            for (name, value) in h where value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
                h.replaceOrAdd(name: name, value: String(value.filter { $0 != "\r" && $0 != "\n" && $0 != "\0" }))
            }
        }
        if let target {
            return HTTPRequestHead(
                version: .http1_1, method: upgrade?.extendedConnect == true ? method : target.method,
                uri: Self.requestURI(target.uri), headers: h)
        }
        var uri = request.escapedPath
        if !request.rawQuery.isEmpty { uri += "?" + request.rawQuery }
        uri = Self.requestURI(uri)
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: h)
    }

    /// An empty path (left by `handle_path` stripping all of it) goes upstream as `/`, as Go's `URL.RequestURI`.
    static func requestURI(_ uri: String) -> String {
        uri.isEmpty || uri.hasPrefix("?") ? "/" + uri : uri
    }

    /// Whether the peer is a trusted proxy: by the server's `trusted_proxies` or this handler's.
    func isTrusted(_ request: Request) -> Bool {
        if request.server.hasTrustedProxies && request.isFromTrustedProxy { return true }
        guard !trustedProxies.isEmpty, let ip = request.remoteAddress?.ip else { return false }
        return trustedProxies.contains { $0.contains(ip) }
    }

    static let hopByHop: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade",
    ]

    /// Drops hop-by-hop fields (RFC 9110 7.6.1), including those the Connection field names. One scan finds them;
    /// the common case (just `Connection`, perhaps `Keep-Alive`) is then a removal or two.
    static func removeHopByHop(_ h: inout HTTPHeaders) {
        var fixed: [String] = []
        var named: [String] = []
        for (name, value) in h where isHopByHop(name) {
            if !fixed.contains(name) { fixed.append(name) }
            if name.utf8.count == 10 && name.equalsASCIICaseInsensitive("connection") {
                for token in value.split(separator: ",") {
                    let t = token.trimmedOfSpaces
                    if !t.isEmpty && !isHopByHop(t) && !t.equalsASCIICaseInsensitive("close") {
                        named.append(String(t))
                    }
                }
            }
        }
        for name in fixed + named { h.remove(name: name) }
    }

    /// Whether `name` is one of the fixed hop-by-hop fields, compared without allocating.
    static func isHopByHop(_ name: some StringProtocol) -> Bool {
        switch name.utf8.count {
        case 2: return name.equalsASCIICaseInsensitive("te")
        case 7: return name.equalsASCIICaseInsensitive("trailer") || name.equalsASCIICaseInsensitive("upgrade")
        case 10: return name.equalsASCIICaseInsensitive("connection") || name.equalsASCIICaseInsensitive("keep-alive")
        case 16: return name.equalsASCIICaseInsensitive("proxy-connection")
        case 17: return name.equalsASCIICaseInsensitive("transfer-encoding")
        case 18: return name.equalsASCIICaseInsensitive("proxy-authenticate")
        case 19: return name.equalsASCIICaseInsensitive("proxy-authorization")
        default: return false
        }
    }

    static func connectionCloses(_ head: HTTPResponseHead) -> Bool {
        if head.version.minor == 0 { return true }
        guard let c = head.headers.first(name: "Connection") else { return false }
        if c.utf8.count == 10 { return false }  // "keep-alive", by far the most common
        return c.split(separator: ",").contains { $0.trimmedOfSpaces.equalsASCIICaseInsensitive("close") }
    }
}
