import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// The request-stream API the HTTP/3 server and client use: submit heads, bodies and trailers; credit; resets.

extension QUICConnection {
    func streamClosed(_ streamID: Int64, complete: Bool) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.didClose(complete: complete)
        stream.releaseBuffers()
        // A client-initiated bidirectional stream ended: the client may open another.
        if isServer, streamID & 0x3 == 0, let conn { ngtcp2_conn_extend_max_streams_bidi(conn, 1) }
        if shuttingDown && streams.isEmpty { finishShutdown() }
    }

    func extendConnectionCredit(by count: Int) {
        guard let conn, !closed else { return }
        ngtcp2_conn_extend_max_offset(conn, UInt64(count))
        scheduleWrite()
    }

    func extendCredit(stream: Int64, by count: Int) {
        guard let conn, !closed else { return }
        ngtcp2_conn_extend_max_stream_offset(conn, stream, UInt64(count))
        ngtcp2_conn_extend_max_offset(conn, UInt64(count))
        scheduleWrite()
    }

    func submitInfo(stream: Int64, fields: [(String, String)]) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        let rv = withFieldVector(fields) { nghttp3_conn_submit_info(h3, stream, $0, $1) }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    /// nghttp3 pulls a stream's body through this: from the stream's queued buffers.
    static let bodyReader = nghttp3_data_reader(read_data: { _, streamID, vec, count, flags, userData, _ in
        guard let me = connection(userData), let vec, let flags, let stream = me.streams[streamID] else {
            return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE)
        }
        return nghttp3_ssize(stream.provide(vec, count: count, flags: flags))
    })

    func submitResponse(stream: Int64, fields: [(String, String)], withBody: Bool) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        var reader = Self.bodyReader
        let rv = withFieldVector(fields) { nva, n in
            withBody
                ? nghttp3_conn_submit_response(h3, stream, nva, n, &reader)
                : nghttp3_conn_submit_response(h3, stream, nva, n, nil)
        }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    func submitRequest(stream: Int64, fields: [(String, String)], withBody: Bool) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        var reader = Self.bodyReader
        let rv = withFieldVector(fields) { nva, n in
            withBody
                ? nghttp3_conn_submit_request(h3, stream, nva, n, &reader, nil)
                : nghttp3_conn_submit_request(h3, stream, nva, n, nil, nil)
        }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    /// Client: a new request stream, or ``HTTP3StreamsExhaustedError`` when the server allows no more now.
    func openRequestStream() throws -> HTTP3Stream {
        guard let conn, h3 != nil, !closed, !goawayReceived else { throw HTTP3StreamClosedError() }
        var id: Int64 = -1
        let rv = ngtcp2_conn_open_bidi_stream(conn, &id, nil)
        if rv == NGTCP2_ERR_STREAM_ID_BLOCKED { throw HTTP3StreamsExhaustedError() }
        guard rv == 0 else { throw QUICError("opening a stream: \(String(cString: ngtcp2_strerror(rv)))") }
        let stream = HTTP3Stream(id: id, connection: self)
        streams[id] = stream
        return stream
    }

    func submitTrailers(stream: Int64, fields: [(String, String)]) throws {
        guard let h3 else { throw HTTP3StreamClosedError() }
        let rv = withFieldVector(fields) { nghttp3_conn_submit_trailers(h3, stream, $0, $1) }
        guard rv == 0 else { throw NGHTTP3Error(code: rv) }
        scheduleWrite()
    }

    func resumeStream(_ id: Int64) {
        guard let h3 else { return }
        nghttp3_conn_resume_stream(h3, id)
        scheduleWrite()
    }

    func resetStream(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream(conn, id, code)
        scheduleWrite()
    }

    func resetStreamWrite(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream_write(conn, id, code)
        scheduleWrite()
    }

    func stopReading(_ id: Int64, code: UInt64) {
        guard let conn else { return }
        ngtcp2_conn_shutdown_stream_read(conn, id, code)
        scheduleWrite()
    }
}

/// Calls `body` with `fields` as an `nghttp3_nv` array (names lowercased by the caller); the bytes live for the
/// call only, which is enough: nghttp3 encodes them before returning.
func withFieldVector<R>(_ fields: [(String, String)], _ body: (UnsafePointer<nghttp3_nv>, Int) -> R) -> R {
    var bytes: [UInt8] = []
    var spans: [(Int, Int, Int, Int)] = []
    for (name, value) in fields {
        let n = bytes.count
        bytes += name.utf8
        let v = bytes.count
        bytes += value.utf8
        spans.append((n, name.utf8.count, v, value.utf8.count))
    }
    return bytes.withUnsafeMutableBufferPointer { b in
        let base = b.baseAddress ?? UnsafeMutablePointer(bitPattern: 1)!
        let nva = spans.map { s in
            nghttp3_nv(
                name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3, flags: UInt8(NGHTTP3_NV_FLAG_NONE))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}
