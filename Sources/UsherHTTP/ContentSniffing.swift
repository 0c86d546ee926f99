public import NIOCore

/// Guesses a body's media type from its first bytes, after Go's `http.DetectContentType`, which Caddy relies on
/// when a handler sets no `Content-Type`.
public func sniffContentType(_ body: ByteBuffer) -> String {
    let bytes = body.getBytes(at: body.readerIndex, length: min(512, body.readableBytes)) ?? []
    return sniffContentType(bytes)
}

public func sniffContentType(_ data: [UInt8]) -> String {
    func hasPrefix(_ sig: [UInt8]) -> Bool { data.count >= sig.count && Array(data[0..<sig.count]) == sig }
    // Leading white space is skipped for the markup signatures.
    var start = 0
    while start < data.count, [0x09, 0x0A, 0x0C, 0x0D, 0x20].contains(data[start]) { start += 1 }
    let trimmed = Array(data[start...])
    let htmlTags = [
        "<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV", "<FONT", "<TABLE", "<A",
        "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P", "<!--",
    ]
    for tag in htmlTags {
        let t = Array(tag.utf8)
        guard trimmed.count > t.count else { continue }
        var match = true
        for (i, c) in t.enumerated() {
            var b = trimmed[i]
            if b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") { b -= 32 }
            if b != c { match = false; break }
        }
        let term = trimmed[t.count]
        if match && (term == UInt8(ascii: " ") || term == UInt8(ascii: ">")) { return "text/html; charset=utf-8" }
    }
    if trimmed.starts(with: Array("<?xml".utf8)) { return "text/xml; charset=utf-8" }
    if hasPrefix(Array("%PDF-".utf8)) { return "application/pdf" }
    if hasPrefix([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
    if hasPrefix([0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
    if hasPrefix(Array("GIF87a".utf8)) || hasPrefix(Array("GIF89a".utf8)) { return "image/gif" }
    if hasPrefix([0x1F, 0x8B, 0x08]) { return "application/x-gzip" }
    if hasPrefix([0x50, 0x4B, 0x03, 0x04]) { return "application/zip" }
    if hasPrefix(Array("RIFF".utf8)) && data.count >= 12 && Array(data[8..<12]) == Array("WEBP".utf8) {
        return "image/webp"
    }
    if hasPrefix([0x00, 0x61, 0x73, 0x6D]) { return "application/wasm" }
    if hasPrefix([0xFE, 0xFF]) || hasPrefix([0xFF, 0xFE]) { return "text/plain; charset=utf-16" }
    if hasPrefix([0xEF, 0xBB, 0xBF]) { return "text/plain; charset=utf-8" }
    for b in data where b <= 0x08 || b == 0x0B || (b >= 0x0E && b <= 0x1A) || (b >= 0x1C && b <= 0x1F) {
        return "application/octet-stream"
    }
    return "text/plain; charset=utf-8"
}
