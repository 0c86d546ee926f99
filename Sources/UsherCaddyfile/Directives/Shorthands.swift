import UsherCore

/// Caddyfile placeholder shorthands and what they stand for (`{host}` → `{http.request.host}`).
package let placeholderShorthands: [(String, String)] = [
    ("{host}", "{http.request.host}"),
    ("{hostport}", "{http.request.hostport}"),
    ("{port}", "{http.request.port}"),
    ("{orig_method}", "{http.request.orig_method}"),
    ("{orig_uri}", "{http.request.orig_uri}"),
    ("{orig_path}", "{http.request.orig_uri.path}"),
    ("{orig_dir}", "{http.request.orig_uri.path.dir}"),
    ("{orig_file}", "{http.request.orig_uri.path.file}"),
    ("{orig_query}", "{http.request.orig_uri.query}"),
    ("{orig_?query}", "{http.request.orig_uri.prefixed_query}"),
    ("{method}", "{http.request.method}"),
    ("{uri}", "{http.request.uri}"),
    ("{%uri}", "{http.request.uri_escaped}"),
    ("{path}", "{http.request.uri.path}"),
    ("{%path}", "{http.request.uri.path_escaped}"),
    ("{dir}", "{http.request.uri.path.dir}"),
    ("{file}", "{http.request.uri.path.file}"),
    ("{query}", "{http.request.uri.query}"),
    ("{%query}", "{http.request.uri.query_escaped}"),
    ("{?query}", "{http.request.uri.prefixed_query}"),
    ("{remote}", "{http.request.remote}"),
    ("{remote_host}", "{http.request.remote.host}"),
    ("{remote_port}", "{http.request.remote.port}"),
    ("{scheme}", "{http.request.scheme}"),
    ("{uuid}", "{http.request.uuid}"),
    ("{tls_cipher}", "{http.request.tls.cipher_suite}"),
    ("{tls_version}", "{http.request.tls.version}"),
    ("{tls_client_fingerprint}", "{http.request.tls.client.fingerprint}"),
    ("{tls_client_issuer}", "{http.request.tls.client.issuer}"),
    ("{tls_client_serial}", "{http.request.tls.client.serial}"),
    ("{tls_client_subject}", "{http.request.tls.client.subject}"),
    ("{tls_client_certificate_pem}", "{http.request.tls.client.certificate_pem}"),
    ("{tls_client_certificate_der_base64}", "{http.request.tls.client.certificate_der_base64}"),
    ("{upstream_hostport}", "{http.reverse_proxy.upstream.hostport}"),
    ("{client_ip}", "{http.vars.client_ip}"),
]

/// Shorthands with a variable part: `{header.X}` → `{http.request.header.X}`. The part is `[\w-]*`, or
/// `[\w-.]*` where dots are allowed.
private let complexShorthands: [(prefix: String, dots: Bool, replacement: String)] = [
    ("header.", false, "http.request.header."),
    ("cookie.", false, "http.request.cookie."),
    ("labels.", false, "http.request.host.labels."),
    ("path.", false, "http.request.uri.path."),
    ("file.", false, "http.request.uri.path.file."),
    ("query.", false, "http.request.uri.query."),
    ("re.", true, "http.regexp."),
    ("vars.", false, "http.vars."),
    ("rp.", true, "http.reverse_proxy."),
    ("resp.", true, "http.intercept."),
    ("err.", true, "http.error."),
    ("file_match.", false, "http.matchers.file."),
]

/// Expands placeholder shorthands in token text (Caddy's `ShorthandReplacer`).
package struct ShorthandReplacer {
    package init() {}

    package func apply(_ segment: inout [CaddyfileToken]) {
        for i in segment.indices {
            segment[i].text = replace(segment[i].text)
        }
    }

    package func replace(_ input: String) -> String {
        guard input.contains("{") else { return input }
        var text = simpleReplace(input)
        for c in complexShorthands { text = regexReplace(text, c.prefix, c.dots, c.replacement) }
        return text
    }

    /// Go's `strings.Replacer` over the fixed shorthands: scans left to right, at each position the first listed
    /// shorthand that matches is replaced and scanning resumes after it.
    private func simpleReplace(_ s: String) -> String {
        let bytes = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        outer: while i < bytes.count {
            if bytes[i] == UInt8(ascii: "{") {
                for (from, to) in placeholderShorthands {
                    let f = Array(from.utf8)
                    if i + f.count <= bytes.count && Array(bytes[i..<(i + f.count)]) == f {
                        out.append(contentsOf: to.utf8)
                        i += f.count
                        continue outer
                    }
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `regexp.ReplaceAllString` for `{prefix([\w-]*)}` (dots allowed when `dots`).
    private func regexReplace(_ s: String, _ prefix: String, _ dots: Bool, _ replacement: String) -> String {
        let bytes = Array(s.utf8)
        let p = Array(("{" + prefix).utf8)
        var out: [UInt8] = []
        var i = 0
        func isWord(_ c: UInt8) -> Bool {
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c == 45
                || (dots && c == 46)
        }
        while i < bytes.count {
            if i + p.count <= bytes.count && Array(bytes[i..<(i + p.count)]) == p {
                var j = i + p.count
                while j < bytes.count && isWord(bytes[j]) { j += 1 }
                if j < bytes.count && bytes[j] == UInt8(ascii: "}") {
                    out.append(UInt8(ascii: "{"))
                    out.append(contentsOf: replacement.utf8)
                    out.append(contentsOf: bytes[(i + p.count)..<j])
                    out.append(UInt8(ascii: "}"))
                    i = j + 1
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The shorthand a token would have been before expansion, when it is one of the fixed shorthands' expansions
/// (Caddy's `WasReplacedPlaceholderShorthand`).
public func wasReplacedPlaceholderShorthand(_ token: String) -> String {
    let t = token.trimmingCharacters(in: "{}")
    for (from, to) in placeholderShorthands where t == to.trimmingCharacters(in: "{}") { return from }
    return ""
}
