import Foundation
import NIOCore
import NIOHTTP1
import UsherCore
import UsherTLS

/// Caddy's `http.*` placeholders for one request (`http.request.host`, `http.request.uri.path`,
/// `http.request.header.*`, `http.vars.*`, `http.response.header.*`, ...).
struct HTTPPlaceholderProvider: PlaceholderProvider {
    unowned let request: Request

    func placeholderValue(_ key: String) -> String? {
        guard key.hasPrefix("http.") else { return nil }
        let r = request
        if key.hasPrefix("http.request.") {
            let sub = key.dropFirst("http.request.".count)
            if sub.hasPrefix("uri.query.") { return r.queryPlaceholder(String(sub.dropFirst("uri.query.".count))) }
            if sub.hasPrefix("header.") { return r.headerPlaceholder(String(sub.dropFirst("header.".count))) }
            if sub.hasPrefix("cookie.") {
                let name = sub.dropFirst("cookie.".count).lowercased()
                for (n, v) in parseCookies(r.headers["Cookie"]) where n.lowercased() == name { return v }
                return nil
            }
            if sub.hasPrefix("tls.") { return tlsValue(String(sub.dropFirst(4))) }
            if let v = requestValue(String(sub)) { return v }
            if sub.hasPrefix("remote.host/") {
                return maskedRemote(String(sub.dropFirst("remote.host/".count)))
            }
            if sub.hasPrefix("host.labels.") {
                guard let idx = Int(sub.dropFirst("host.labels.".count)), idx >= 0 else { return nil }
                let labels = r.hostWithoutPort.split(separator: ".", omittingEmptySubsequences: false)
                guard idx < labels.count else { return "" }
                return labels[labels.count - idx - 1].lowercased()
            }
            if sub.hasPrefix("uri.path.") {
                guard let idx = Int(sub.dropFirst("uri.path.".count)), idx >= 0 else { return nil }
                return pathSegment(r.path, idx)
            }
            if sub.hasPrefix("orig_uri.path.") {
                guard let idx = Int(sub.dropFirst("orig_uri.path.".count)), idx >= 0 else { return nil }
                return pathSegment(r.original.path, idx)
            }
            return nil
        }
        if key.hasPrefix("http.vars.") {
            return r.vars[String(key.dropFirst("http.vars.".count))].map(varString) ?? ""
        }
        if key.hasPrefix("http.response.header.") {
            return r.topWriter?.headers[String(key.dropFirst("http.response.header.".count))].joined(separator: ",")
                ?? ""
        }
        switch key {
        case "http.shutting_down": return "false"
        case "http.time_until_shutdown": return ""
        default: return nil
        }
    }

    /// `http.request.tls.*`: what the handshake settled; unknown (nil) on cleartext requests, as in Caddy.
    private func tlsValue(_ key: String) -> String? {
        guard let tls = request.tls else { return nil }
        switch key {
        case "version": return tls.versionName
        case "proto": return tls.negotiatedProtocol
        case "proto_mutual": return "true"
        case "server_name": return tls.serverName
        case "ech": return "false"
        default: break
        }
        guard key.hasPrefix("client.") else { return nil }
        guard let cert = tls.clientCertificate else { return "" }
        let field = key.dropFirst("client.".count)
        func list(_ values: [String], _ rest: Substring) -> String? {
            if rest.isEmpty { return values.joined(separator: ",") }
            guard rest.hasPrefix("."), let i = Int(rest.dropFirst()), i >= 0 else { return nil }
            return i < values.count ? values[i] : ""
        }
        switch field {
        case "fingerprint": return cert.fingerprint
        case "subject": return cert.subject
        case "issuer": return cert.issuer
        case "serial": return cert.serial
        case "certificate_pem": return cert.pem
        case "certificate_der_base64": return Data(cert.der).base64EncodedString()
        default: break
        }
        for (name, values) in [
            ("san.dns_names", cert.dnsNames), ("san.emails", cert.emails), ("san.ips", cert.ips),
            ("san.uris", cert.uris),
        ]
        where field.hasPrefix(name) {
            return list(values, field.dropFirst(name.count))
        }
        return nil
    }

    private func requestValue(_ sub: String) -> String? {
        let r = request
        switch sub {
        case "method": return r.method.rawValue
        case "scheme": return r.scheme
        case "proto": return r.protocolString
        case "proto_name":
            switch r.version.major {
            case 2: return "HTTP/2"
            case 3: return "HTTP/3"
            default: return r.protocolString
            }
        case "host": return r.hostWithoutPort
        case "port": return splitHostPort(r.host).port
        case "hostport": return r.host
        case "local": return r.localAddress?.hostPortString ?? ""
        case "local.host": return r.localAddress.map { $0.ip?.description ?? $0.hostPortString } ?? ""
        case "local.port": return r.localAddress?.port.map(String.init) ?? ""
        case "remote": return r.remoteAddress.map(remoteString) ?? ""
        case "remote.host":
            guard let a = r.remoteAddress else { return "" }
            return a.ip?.description ?? a.hostPortString
        case "remote.port": return r.remoteAddress?.port.map(String.init) ?? ""
        case "uri": return r.uri
        case "uri_escaped": return URLEscaping.queryEscape(r.uri)
        case "uri.path": return r.path
        case "uri.path_escaped": return URLEscaping.queryEscape(r.path)
        case "uri.path.file": return PathUtil.split(r.path).file
        case "uri.path.dir": return PathUtil.split(r.path).dir
        case "uri.path.file.base":
            let ext = PathUtil.ext(r.path)
            let base = PathUtil.base(r.path)
            return String(base.dropLast(ext.count))
        case "uri.path.file.ext": return PathUtil.ext(r.path)
        case "uri.query": return r.rawQuery
        case "uri.query_escaped": return URLEscaping.queryEscape(r.rawQuery)
        case "uri.prefixed_query": return r.rawQuery.isEmpty ? "" : "?" + r.rawQuery
        case "duration": return formatGoDuration(r.elapsedSeconds)
        case "duration_ms": return String(r.elapsedSeconds * 1000)
        case "uuid":
            if let u = r.uuid { return u }
            let u = makeUUID()
            r.uuid = u
            r.extraLogFields.append(LogField("uuid", .string(u)))
            return u
        case "orig_method": return r.original.method.rawValue
        case "orig_uri": return r.original.uri
        case "orig_uri.path": return r.original.path
        case "orig_uri.path.file": return PathUtil.split(r.original.path).file
        case "orig_uri.path.dir": return PathUtil.split(r.original.path).dir
        case "orig_uri.query": return r.original.rawQuery
        case "orig_uri.prefixed_query": return r.original.rawQuery.isEmpty ? "" : "?" + r.original.rawQuery
        case "body", "body_base64": return nil
        default: return nil
        }
    }

    private func remoteString(_ a: SocketAddress) -> String {
        if case .unixDomainSocket = a { return "@" }
        guard let ip = a.ip else { return a.hostPortString }
        let host = ip.isIPv4 ? ip.description : "[\(ip)]"
        return "\(host):\(a.port ?? 0)"
    }

    private func maskedRemote(_ bits: String) -> String {
        guard let ip = request.remoteAddress?.ip else { return request.remoteHost }
        let parts = bits.split(separator: ",", maxSplits: 1)
        let chosen = (!ip.isIPv4 && parts.count == 2) ? parts[1] : parts.first ?? ""
        guard let n = Int(chosen), let prefix = IPPrefix(address: ip, bits: n) else { return "" }
        return prefix.masked.description
    }

    private func pathSegment(_ path: String, _ idx: Int) -> String {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.first == "" { parts.removeFirst() }
        return idx < parts.count ? String(parts[idx]) : ""
    }
}

/// A variable's value as placeholders show it.
func varString(_ v: JSONValue) -> String {
    switch v {
    case .string(let s): return s
    case .number(let n): return n.text
    case .bool(let b): return b ? "true" : "false"
    case .null: return ""
    default: return v.serialized()
    }
}

/// Cookie name/value pairs from `Cookie` headers.
public func parseCookies(_ headers: [String]) -> [(String, String)] {
    var out: [(String, String)] = []
    for h in headers {
        for part in h.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard let name = kv.first else { continue }
            let n = String(name).trimmingASCIISpaces
            var v = kv.count > 1 ? String(kv[1]).trimmingASCIISpaces : ""
            if v.count >= 2 && v.hasPrefix("\"") && v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            if !n.isEmpty { out.append((n, v)) }
        }
    }
    return out
}

/// A random version 4 UUID string.
func makeUUID() -> String {
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
    bytes[6] = (bytes[6] & 0x0F) | 0x40
    bytes[8] = (bytes[8] & 0x3F) | 0x80
    let hex = bytes.map { b -> String in
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
    return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-" + hex[8..<10].joined()
        + "-" + hex[10..<16].joined()
}

extension Request {
    /// `{http.request.header.<name>}`: the field's values joined by commas (empty when absent), as Caddy's replacer.
    func headerPlaceholder(_ name: String) -> String {
        let values = headers[name]
        return values.count == 1 ? values[0] : values.joined(separator: ",")
    }

    /// `{http.request.uri.query.<name>}`: the parameter's values joined by commas (empty when absent).
    func queryPlaceholder(_ name: String) -> String {
        var out = ""
        var first = true
        for item in queryItems where item.name == name {
            if !first { out += "," }
            out += item.value
            first = false
        }
        return out
    }
}
