import UsherCore

// certmagic's rules for certificate subjects: which names are internal, which qualify for a public certificate,
// how wildcards match.

/// certmagic's `hostOnly`.
package func hostOnly(_ hostport: String) -> String {
    if let hp = try? Go.splitHostPort(hostport) { return hp.host }
    if hostport.count > 1 && hostport.hasPrefix("[") && hostport.hasSuffix("]") {
        return String(hostport.dropFirst().dropLast())
    }
    return hostport
}

/// certmagic's `MatchWildcard`: whether `subject` is matched by `wildcard` (one label replaced by `*`).
package func matchWildcard(_ subjectIn: String, _ wildcardIn: String) -> Bool {
    let subject = hostOnly(subjectIn).lowercased()
    let wildcard = wildcardIn.lowercased()
    if subject == wildcard { return true }
    if !wildcard.contains("*") { return false }
    var labels = subject.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    for i in labels.indices {
        if labels[i].isEmpty { continue }
        labels[i] = "*"
        if labels.joined(separator: ".") == wildcard { return true }
    }
    return false
}

/// Go's `net.ParseIP` as 16 bytes (IPv4 mapped), or nil.
package func goParseIP(_ s: String) -> [UInt8]? {
    if isIPv4(s) {
        return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + s.split(separator: ".").map { UInt8($0)! }
    }
    guard !s.contains("%"), s.contains(":"), let ip = IPAddress(s) else { return nil }
    return ip.bytes
}

/// certmagic's `SubjectIsIP`.
package func subjectIsIP(_ s: String) -> Bool { goParseIP(s) != nil }

/// Dotted-quad IPv4 as Go accepts it (no leading zeros).
package func isIPv4(_ s: String) -> Bool {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4 else { return false }
    return parts.allSatisfy { p in
        !p.isEmpty && p.count <= 3 && p.allSatisfy { $0.isASCII && $0.isNumber } && (Int(p) ?? 999) <= 255
            && !(p.count > 1 && p.first == "0")
    }
}

/// certmagic's `SubjectIsInternal`.
package func subjectIsInternal(_ subj: String) -> Bool {
    var s = hostOnly(subj)
    if s.hasSuffix(".") { s.removeLast() }
    s = s.lowercased()
    return s == "localhost" || s.hasSuffix(".localhost") || s.hasSuffix(".local") || s.hasSuffix(".internal")
        || s.hasSuffix(".home.arpa") || isInternalIP(s)
}

/// Whether `addr` is in a loopback, private or link-local range (certmagic's `isInternalIP`).
package func isInternalIP(_ addr: String) -> Bool {
    guard let ip = goParseIP(hostOnly(addr)) else { return false }
    let v4mapped = ip[0..<10].allSatisfy { $0 == 0 } && ip[10] == 0xff && ip[11] == 0xff
    if v4mapped {
        let a = ip[12], b = ip[13]
        return a == 127 || (a == 0 && b == 0) || a == 10 || (a == 172 && b >= 16 && b <= 31)
            || (a == 192 && b == 168) || (a == 169 && b == 254)
    }
    return ip[0] & 0xfe == 0x00 || (ip[0] == 0xfe && ip[1] & 0xc0 == 0x80) || ip[0] & 0xfe == 0xfc
}

/// certmagic's `SubjectQualifiesForCert`.
package func subjectQualifiesForCert(_ subj: String) -> Bool {
    subj.trimmingWhitespace() != "" && !subj.hasPrefix(".") && !subj.hasSuffix(".")
        && (!subj.contains("*") || subj.hasPrefix("*.") || subj == "*")
        && !subj.contains(where: { "()[]{}<> \t\n\"\\!@#$%^&|;'+=".contains($0) })
}

/// certmagic's `SubjectQualifiesForPublicCert`.
package func certmagicQualifiesForPublicCert(_ subj: String) -> Bool {
    subjectQualifiesForCert(subj) && !subjectIsInternal(subj)
        && (!subj.contains("*")
            || (subj.filter { $0 == "*" }.count == 1 && subj.filter { $0 == "." }.count > 1 && subj.utf8.count > 2
                && subj.hasPrefix("*.")))
}

extension String {
    /// How many times `sep` occurs (Go's `strings.Count`).
    package func occurrences(of sep: String) -> Int {
        var n = 0
        var rest = Substring(self)
        while let r = rest.firstRange(of: sep) {
            n += 1
            rest = rest[r.upperBound...]
        }
        return n
    }
}
