import Foundation
import NIOHTTP1

/// The content codings a request accepts, best first: by q-value, ties broken by `preferredOrder` (Caddy's
/// `AcceptedEncodings`). Codings with q=0 are left out; WebSocket handshakes accept none.
public func acceptedEncodings(_ request: Request, preferredOrder: [String]) -> [String] {
    guard let header = request.headers.first(name: "Accept-Encoding"), !header.isEmpty else { return [] }
    if request.headers.contains(name: "Sec-WebSocket-Key") { return [] }
    var prefs: [(name: String, q: Double, order: Int)] = []
    for accepted in header.split(separator: ",") {
        let parts = accepted.split(separator: ";", omittingEmptySubsequences: false)
        let name = parts[0].trimmingCharacters(in: .whitespaces).lowercased()
        var q = 1.0
        if parts.count > 1 {
            let p = parts[1].trimmingCharacters(in: .whitespaces).lowercased()
            if p.hasPrefix("q="), let v = Double(p.dropFirst(2)), v >= 0, v <= 1 { q = v }
        }
        if q < 0.00001 { continue }
        var order = preferredOrder.firstIndex(of: name) ?? -1
        if order > -1 { order = preferredOrder.count - order }
        prefs.append((name, q, order))
    }
    let sorted = prefs.enumerated().sorted { a, b in
        if abs(a.element.q - b.element.q) < 0.00001 {
            if a.element.order != b.element.order { return a.element.order > b.element.order }
            return a.offset < b.offset
        }
        return a.element.q > b.element.q
    }
    return sorted.map(\.element.name)
}

/// Body bytes that a root writer can send straight from a file (sendfile on cleartext TCP).
public protocol FileBodyWriting: AnyObject {
    /// Sends `length` bytes of the file open as `descriptor`, from `offset`, as body bytes. Returns `false`
    /// (having sent nothing) when this response cannot take a file here; the caller then writes the bytes itself.
    /// The descriptor must stay open until the call returns.
    func writeFileRegion(descriptor: CInt, offset: Int, length: Int) async throws -> Bool
}
