import CNghttp3

/// Settings Usher's HTTP/3 layer gives nghttp3.
public struct HTTP3ConnectionSettings: Sendable {
    /// SETTINGS_MAX_FIELD_SECTION_SIZE: the most header bytes accepted. Default: nghttp3's (no limit announced).
    public var maxFieldSectionSize: UInt64?
    /// QPACK dynamic table capacity offered to the peer's encoder. Default: 4096.
    public var qpackMaxTableCapacity = 4096
    /// QPACK streams that may be blocked. Default: 100.
    public var qpackBlockedStreams = 100
    /// Accept Extended CONNECT (`:protocol`), as WebTransport needs.
    public var enableConnectProtocol = false

    public init() {}
}

/// The HTTP/3 framing of one connection, done by nghttp3: it reads the peer's streams and produces what to write on
/// ours. Not thread-safe; a connection lives on one event loop.
///
/// Only what the QUIC layer needs is exposed; the unsafe C is confined here.
public final class NGHTTP3Connection {
    /// The `nghttp3_conn`, for the QUIC layer's callbacks.
    private(set) var conn: OpaquePointer?

    /// A server- or client-side connection; `callbacks` and `userData` reach nghttp3 as they are.
    init(
        server: Bool, settings: HTTP3ConnectionSettings, callbacks: nghttp3_callbacks,
        userData: UnsafeMutableRawPointer?
    ) throws {
        var s = nghttp3_settings()
        usher_nghttp3_settings_default(&s)
        if let max = settings.maxFieldSectionSize { s.max_field_section_size = max }
        s.qpack_max_dtable_capacity = settings.qpackMaxTableCapacity
        s.qpack_blocked_streams = settings.qpackBlockedStreams
        s.enable_connect_protocol = settings.enableConnectProtocol ? 1 : 0
        var callbacks = callbacks
        var c: OpaquePointer?
        let rv =
            server
            ? usher_nghttp3_conn_server_new(&c, &callbacks, &s, nil, userData)
            : usher_nghttp3_conn_client_new(&c, &callbacks, &s, nil, userData)
        guard rv == 0, let c else { throw NGHTTP3Error(code: rv) }
        conn = c
    }

    /// A server-side connection that only frames (no callbacks), e.g. to see what nghttp3 writes.
    public convenience init(server settings: HTTP3ConnectionSettings) throws {
        try self.init(server: true, settings: settings, callbacks: nghttp3_callbacks(), userData: nil)
    }

    deinit {
        if let conn { nghttp3_conn_del(conn) }
    }

    /// Binds our control stream and QPACK encoder/decoder streams (server-initiated unidirectional stream IDs).
    public func bindLocalStreams(control: Int64, qpackEncoder: Int64, qpackDecoder: Int64) throws {
        var rv = nghttp3_conn_bind_control_stream(conn, control)
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        rv = nghttp3_conn_bind_qpack_streams(conn, qpackEncoder, qpackDecoder)
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
    }

    /// The next bytes nghttp3 wants sent: stream, data and whether the stream ends; `nil` when there is nothing.
    /// The bytes are copied, and counted as written (`nghttp3_conn_add_write_offset`).
    public func nextWrite() throws -> (streamID: Int64, bytes: [UInt8], fin: Bool)? {
        var streamID: Int64 = -1
        var fin: Int32 = 0
        var vecs = [nghttp3_vec](repeating: nghttp3_vec(), count: 16)
        let n = nghttp3_conn_writev_stream(conn, &streamID, &fin, &vecs, vecs.count)
        guard n >= 0 else { throw NGHTTP3Error(code: Int32(n)) }
        guard streamID >= 0 else { return nil }
        var bytes: [UInt8] = []
        for v in vecs.prefix(Int(n)) where v.len > 0 {
            bytes += UnsafeBufferPointer(start: v.base, count: v.len)
        }
        let rv = nghttp3_conn_add_write_offset(conn, streamID, bytes.count)
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        return (streamID, bytes, fin != 0)
    }
}

/// An nghttp3 failure (`NGHTTP3_ERR_*`).
public struct NGHTTP3Error: Error, CustomStringConvertible {
    public let code: Int32
    public var description: String { "nghttp3: \(String(cString: nghttp3_strerror(code))) (\(code))" }
}
