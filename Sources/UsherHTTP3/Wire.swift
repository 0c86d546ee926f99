/// QUIC variable-length integers (RFC 9000 section 16): the two high bits of the first byte give the length (1, 2, 4
/// or 8 bytes), the rest is the value, big-endian.
public enum QUICVarint {
    /// The largest value a varint holds (2^62 − 1).
    public static let max: UInt64 = (1 << 62) - 1

    /// The value at the start of `bytes[from...]` and its length in bytes; `nil` when the bytes end first.
    public static func decode(_ bytes: some Collection<UInt8>, from start: Int = 0) -> (value: UInt64, length: Int)? {
        let b = Array(bytes.dropFirst(start).prefix(8))
        guard let first = b.first else { return nil }
        let length = 1 << Int(first >> 6)
        guard b.count >= length else { return nil }
        var v = UInt64(first & 0x3F)
        for i in 1..<length { v = v << 8 | UInt64(b[i]) }
        return (v, length)
    }

    /// The shortest encoding of `value` (which must not exceed ``max``).
    public static func encode(_ value: UInt64) -> [UInt8] {
        precondition(value <= max, "varint out of range")
        switch value {
        case ..<(1 << 6): return [UInt8(value)]
        case ..<(1 << 14): return [UInt8(0x40 | value >> 8), UInt8(truncatingIfNeeded: value)]
        case ..<(1 << 30):
            return (0..<4).map { i in UInt8(truncatingIfNeeded: value >> (8 * (3 - UInt64(i)))) | (i == 0 ? 0x80 : 0) }
        default:
            return (0..<8).map { i in UInt8(truncatingIfNeeded: value >> (8 * (7 - UInt64(i)))) | (i == 0 ? 0xC0 : 0) }
        }
    }
}

/// HTTP/3 codepoints this layer deals in (RFC 9114, RFC 9297, and the WebTransport over HTTP/3 draft).
public enum HTTP3Codepoint {
    /// Unidirectional stream types.
    public static let controlStream: UInt64 = 0x00
    public static let pushStream: UInt64 = 0x01
    public static let qpackEncoderStream: UInt64 = 0x02
    public static let qpackDecoderStream: UInt64 = 0x03
    public static let webTransportUniStream: UInt64 = 0x54
    /// The signal value that opens a WebTransport bidirectional stream (in place of a frame type).
    public static let webTransportBidiSignal: UInt64 = 0x41
    /// Frame types.
    public static let dataFrame: UInt64 = 0x00
    public static let headersFrame: UInt64 = 0x01
    public static let settingsFrame: UInt64 = 0x04
    public static let goawayFrame: UInt64 = 0x07
    /// Settings.
    public static let settingsH3Datagram: UInt64 = 0x33
    public static let settingsEnableConnectProtocol: UInt64 = 0x08
    public static let settingsEnableWebTransport: UInt64 = 0x2B60_3742
    public static let settingsWebTransportMaxSessions: UInt64 = 0xC671_706A
}

/// One HTTP/3 setting: identifier and value.
public struct HTTP3Setting: Equatable, Sendable {
    public var id: UInt64
    public var value: UInt64

    public init(_ id: UInt64, _ value: UInt64) {
        self.id = id
        self.value = value
    }

    /// The setting as it appears in a SETTINGS frame's payload.
    public var encoded: [UInt8] { QUICVarint.encode(id) + QUICVarint.encode(value) }
}

/// A malformed HTTP/3 stream, with the error code the connection closes with (RFC 9114 section 8.1).
public struct HTTP3WireError: Error, Equatable, CustomStringConvertible {
    public let code: UInt64
    public let description: String

    /// H3_FRAME_ERROR.
    static func frame(_ why: String) -> HTTP3WireError { HTTP3WireError(code: 0x106, description: why) }
    /// H3_SETTINGS_ERROR.
    static func settings(_ why: String) -> HTTP3WireError { HTTP3WireError(code: 0x109, description: why) }
    /// H3_MISSING_SETTINGS.
    static func missingSettings(_ why: String) -> HTTP3WireError { HTTP3WireError(code: 0x10A, description: why) }
}

/// Adds settings that nghttp3 0.8.0 cannot send (`SETTINGS_H3_DATAGRAM`, WebTransport's) to the SETTINGS frame it
/// writes at the start of its control stream.
///
/// nghttp3 keeps its own view of the stream's offsets, so the caller tells it only about the bytes it produced
/// (`nghttp3_conn_add_write_offset` with the original length) and subtracts ``added`` from the acknowledged offsets
/// it passes back for that stream. With no extra settings the bytes are passed through untouched.
public struct ControlStreamSplice: Sendable {
    public let extra: [HTTP3Setting]
    /// Bytes inserted so far (0 until the SETTINGS frame has been rewritten).
    public private(set) var added = 0
    /// Whether the SETTINGS frame has been seen (and rewritten).
    public private(set) var done = false
    private var sawType = false

    public init(extra: [HTTP3Setting]) {
        self.extra = extra
        done = extra.isEmpty
    }

    /// The bytes to send for a chunk nghttp3 wrote on its control stream. nghttp3 may write the stream type alone
    /// and the SETTINGS frame in a later chunk; the frame itself must arrive whole in one chunk, as nghttp3 writes it.
    public mutating func rewrite(_ chunk: [UInt8]) throws -> [UInt8] {
        guard !done, !chunk.isEmpty else { return chunk }
        var i = 0
        if !sawType {
            guard let type = QUICVarint.decode(chunk), type.value == HTTP3Codepoint.controlStream else {
                throw HTTP3WireError.frame("control stream does not start with its stream type")
            }
            sawType = true
            i = type.length
            if i == chunk.count { return chunk }
        }
        guard let frameType = QUICVarint.decode(chunk, from: i), frameType.value == HTTP3Codepoint.settingsFrame else {
            throw HTTP3WireError.missingSettings("control stream does not start with SETTINGS")
        }
        i += frameType.length
        guard let length = QUICVarint.decode(chunk, from: i) else {
            throw HTTP3WireError.frame("SETTINGS frame cut short")
        }
        let payloadStart = i + length.length
        let payloadEnd = payloadStart + Int(length.value)
        guard payloadEnd <= chunk.count else { throw HTTP3WireError.frame("SETTINGS frame cut short") }
        let ours = Set(extra.map(\.id))
        let theirs = try HTTP3Settings.parse(Array(chunk[payloadStart..<payloadEnd])).filter { !ours.contains($0.id) }
        var payload: [UInt8] = []
        for s in theirs { payload += s.encoded }
        for s in extra { payload += s.encoded }
        let out = Array(chunk[..<i]) + QUICVarint.encode(UInt64(payload.count)) + payload + Array(chunk[payloadEnd...])
        added = out.count - chunk.count
        done = true
        return out
    }
}

/// SETTINGS frame payloads.
public enum HTTP3Settings {
    /// The settings in a payload, in order; a repeated identifier is an error (RFC 9114 section 7.2.4).
    public static func parse(_ payload: [UInt8]) throws -> [HTTP3Setting] {
        var out: [HTTP3Setting] = []
        var seen = Set<UInt64>()
        var i = 0
        while i < payload.count {
            guard let id = QUICVarint.decode(payload, from: i),
                let value = QUICVarint.decode(payload, from: i + id.length)
            else {
                throw HTTP3WireError.frame("SETTINGS payload cut short")
            }
            guard seen.insert(id.value).inserted else {
                throw HTTP3WireError.settings("setting 0x\(String(id.value, radix: 16)) repeated")
            }
            // HTTP/2 settings that HTTP/3 reserves (RFC 9114 section 7.2.4.1).
            if [0x02, 0x03, 0x04, 0x05].contains(id.value) {
                throw HTTP3WireError.settings("HTTP/2 setting 0x\(String(id.value, radix: 16)) in HTTP/3")
            }
            out.append(HTTP3Setting(id.value, value.value))
            i += id.length + value.length
        }
        return out
    }
}

/// Reads the peer's control stream as it arrives, in pieces of any size: the stream type, then frames, of which it
/// keeps the first SETTINGS (which must come first) and notes GOAWAY. Other frames are skipped.
public struct PeerControlStream: Sendable {
    public private(set) var settings: [HTTP3Setting]?
    /// The last GOAWAY's identifier.
    public private(set) var goaway: UInt64?
    private var buffer: [UInt8] = []
    private var sawType = false

    public init() {}

    /// Takes more bytes; throws on a malformed stream.
    public mutating func receive(_ bytes: [UInt8]) throws {
        buffer += bytes
        if !sawType {
            guard let type = QUICVarint.decode(buffer) else { return }
            guard type.value == HTTP3Codepoint.controlStream else {
                throw HTTP3WireError.frame("not a control stream (type 0x\(String(type.value, radix: 16)))")
            }
            buffer.removeFirst(type.length)
            sawType = true
        }
        while let type = QUICVarint.decode(buffer), let length = QUICVarint.decode(buffer, from: type.length) {
            let start = type.length + length.length
            guard buffer.count >= start + Int(length.value) else { return }
            let payload = Array(buffer[start..<start + Int(length.value)])
            buffer.removeFirst(start + Int(length.value))
            if settings == nil && type.value != HTTP3Codepoint.settingsFrame {
                throw HTTP3WireError.missingSettings("first frame on the control stream is not SETTINGS")
            }
            switch type.value {
            case HTTP3Codepoint.settingsFrame:
                guard settings == nil else { throw HTTP3WireError.frame("second SETTINGS frame") }
                settings = try HTTP3Settings.parse(payload)
            case HTTP3Codepoint.goawayFrame:
                guard let id = QUICVarint.decode(payload), id.length == payload.count else {
                    throw HTTP3WireError.frame("malformed GOAWAY")
                }
                goaway = id.value
            case HTTP3Codepoint.dataFrame, HTTP3Codepoint.headersFrame:
                throw HTTP3WireError(code: 0x105, description: "DATA or HEADERS on the control stream")
            default:
                break
            }
        }
    }

    /// The value of setting `id`, when the peer sent it.
    public func value(of id: UInt64) -> UInt64? { settings?.first { $0.id == id }?.value }
}

/// Who gets a stream the peer opened, decided by its first varint: nghttp3 (plain HTTP/3), or an extension
/// (WebTransport) that nghttp3 must never see.
public enum PeerStreamKind: Equatable, Sendable {
    /// Request streams and HTTP/3's own unidirectional streams: for nghttp3.
    case http3
    /// A WebTransport bidirectional stream of session `session` (the stream ID of its Extended CONNECT).
    case webTransportBidi(session: UInt64)
    /// A WebTransport unidirectional stream of session `session`.
    case webTransportUni(session: UInt64)
    /// Not enough bytes yet to tell.
    case undecided
}

public enum PeerStreamClassifier {
    /// Classifies a stream from its first bytes. `headerLength` is how many bytes the WebTransport preamble (signal
    /// or type, then session ID) takes, for the extension to skip; 0 for HTTP/3 streams.
    public static func classify(_ first: [UInt8], bidirectional: Bool) -> (kind: PeerStreamKind, headerLength: Int) {
        guard let lead = QUICVarint.decode(first) else { return (.undecided, 0) }
        let marker = bidirectional ? HTTP3Codepoint.webTransportBidiSignal : HTTP3Codepoint.webTransportUniStream
        guard lead.value == marker else { return (.http3, 0) }
        guard let session = QUICVarint.decode(first, from: lead.length) else { return (.undecided, 0) }
        let kind: PeerStreamKind =
            bidirectional ? .webTransportBidi(session: session.value) : .webTransportUni(session: session.value)
        return (kind, lead.length + session.length)
    }
}

/// HTTP/3 datagrams (RFC 9297): a quarter stream ID, then the payload.
public enum HTTP3Datagram {
    /// The payload framed for the request stream `streamID` (a client-initiated bidirectional stream).
    public static func encode(streamID: UInt64, payload: [UInt8]) -> [UInt8] {
        QUICVarint.encode(streamID / 4) + payload
    }

    /// The request stream and payload of a received datagram; `nil` when it is malformed.
    public static func decode(_ datagram: [UInt8]) -> (streamID: UInt64, payload: [UInt8])? {
        guard let q = QUICVarint.decode(datagram), q.value <= QUICVarint.max / 4 else { return nil }
        return (q.value * 4, Array(datagram[q.length...]))
    }
}
