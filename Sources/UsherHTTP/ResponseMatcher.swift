import NIOCore
public import NIOHTTP1
import UsherCore

/// Matches a response by status and headers (Caddy's `ResponseMatcher`), for `headers` `require`,
/// `handle_response` and `intercept`.
public struct ResponseMatcher: Decodable, Sendable {
    /// `status_code`: exact codes, or a single digit for a class (`2` matches 2xx). Absent: any.
    public var statusCode: [Int]?
    /// `headers`: header fields with allowed values, as the `header` request matcher.
    public var headers: [(name: String, values: [String]?)]

    package enum CodingKeys: String, CodingKey {
        case statusCode = "status_code", headers
    }

    public init(statusCode: [Int]? = nil, headers: [(name: String, values: [String]?)] = []) {
        self.statusCode = statusCode
        self.headers = headers
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        statusCode = try c.decodeIfPresent([Int].self, forKey: .statusCode)
        if c.contains(.headers) {
            headers = try HeaderMatcher(from: try c.superDecoder(forKey: .headers)).fields
        } else {
            headers = []
        }
    }

    public func matches(status: Int, headers h: HTTPHeaders) -> Bool {
        if let statusCode, !statusCode.contains(where: { Self.statusMatches(status, $0) }) { return false }
        return (try? HeaderMatcher.match(headers, h, request: nil)) ?? false
    }

    /// `configured` equals `actual`, or is a one-digit class containing it.
    public static func statusMatches(_ actual: Int, _ configured: Int) -> Bool {
        actual == configured || (configured < 100 && actual >= configured * 100 && actual < (configured + 1) * 100)
    }
}

/// A config value that may be written as a string or a number (Caddy's `WeakString`), e.g. `status_code`.
public struct WeakString: Decodable, Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(_ value: String) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            value = s
        } else if let i = try? c.decode(Int.self) {
            value = String(i)
        } else if let d = try? c.decode(Double.self) {
            value = String(d)
        } else if let b = try? c.decode(Bool.self) {
            value = b ? "true" : "false"
        } else {
            throw decoder.configError("expected a string or a number")
        }
    }

    public var description: String { value }
}

/// Closes the connection without a response (`static_response` with `abort`).
public struct AbortConnectionError: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "connection aborted by handler" }
}

extension Request {
    /// Replaces all placeholders in `input`, reading the body first if `{http.request.body}` appears in it.
    public func replaceAllReadingBody(_ input: String, empty: String = "") async -> String {
        guard Replacer.mayContainPlaceholders(input) else { return input }
        if input.contains("{http.request.body") { await bufferBodyForPlaceholder() }
        return replacer.replaceAll(input, empty: empty)
    }

    /// As ``replaceAllReadingBody(_:empty:)``, leaving unknown placeholders as written.
    public func replaceKnownReadingBody(_ input: String) async -> String {
        guard Replacer.mayContainPlaceholders(input) else { return input }
        if input.contains("{http.request.body") { await bufferBodyForPlaceholder() }
        return replacer.replaceKnown(input)
    }

    /// Reads the body into memory once, keeping it readable for later handlers, and exposes it as
    /// `{http.request.body}` and `{http.request.body_base64}`.
    func bufferBodyForPlaceholder() async {
        guard !hasBufferedBody else { return }
        var chunks: [ByteBuffer] = []
        do {
            for try await chunk in body { chunks.append(chunk) }
        } catch {
            // Caddy ignores read errors here; what was read is used.
        }
        let bytes = chunks.flatMap { $0.readableBytesView }
        body.replace(with: BufferedBodySource(buffers: chunks))
        replacer.set("http.request.body", String(decoding: bytes, as: UTF8.self))
        replacer.set("http.request.body_base64", Base64.encode(bytes))
        hasBufferedBody = true
    }
}

/// Standard base64 with padding.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [
                alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)],
                alphabet[Int(n & 63)],
            ]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [
                alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], UInt8(ascii: "="),
            ]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
