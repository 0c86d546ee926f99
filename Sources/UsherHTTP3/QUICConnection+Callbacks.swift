import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// The C callback tables ngtcp2 and nghttp3 call into, and the step that starts HTTP/3 over the handshake.

/// Recovers the connection from a C callback's user data.
@inline(__always)
func connection(_ userData: UnsafeMutableRawPointer?) -> QUICConnection? {
    guard let userData else { return nil }
    let connection = Unmanaged<QUICConnection>.fromOpaque(userData).takeUnretainedValue()
    // ngtcp2 and nghttp3 call back only from inside our own calls into them, which all run on the connection's loop.
    connection.loop.preconditionInEventLoop()
    return connection
}

/// A header field nghttp3 decoded, as text.
func fieldText(_ name: OpaquePointer?, _ value: OpaquePointer?) -> (name: String, value: String)? {
    guard let name, let value else { return nil }
    let n = nghttp3_rcbuf_get_buf(name)
    let v = nghttp3_rcbuf_get_buf(value)
    return (
        String(decoding: UnsafeBufferPointer(start: n.base, count: n.len), as: UTF8.self),
        String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self)
    )
}

extension QUICConnection {
    /// The callbacks both sides share; subclasses add the handshake's first step.
    func commonCallbacks() -> ngtcp2_callbacks {
        var callbacks = ngtcp2_callbacks()
        callbacks.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb
        callbacks.encrypt = ngtcp2_crypto_encrypt_cb
        callbacks.decrypt = ngtcp2_crypto_decrypt_cb
        callbacks.hp_mask = ngtcp2_crypto_hp_mask_cb
        callbacks.update_key = ngtcp2_crypto_update_key_cb
        callbacks.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb
        callbacks.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb
        callbacks.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb
        callbacks.version_negotiation = ngtcp2_crypto_version_negotiation_cb
        callbacks.rand = { dest, len, _ in
            guard let dest else { return }
            for i in 0..<len { dest[i] = UInt8.random(in: 0...255) }
        }
        callbacks.get_new_connection_id = { _, cid, token, cidlen, userData in
            guard let cid, let token, let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let bytes = (0..<cidlen).map { _ in UInt8.random(in: 0...255) }
            bytes.withUnsafeBufferPointer { ngtcp2_cid_init(cid, $0.baseAddress, $0.count) }
            let reset = me.sink.statelessResetToken(for: bytes)
            for i in 0..<Int(NGTCP2_STATELESS_RESET_TOKENLEN) { token[i] = reset[i] }
            me.sink.register(bytes, me)
            return 0
        }
        callbacks.handshake_completed = { _, userData in
            guard let me = connection(userData) else { return 0 }
            return me.handshakeDidComplete()
        }
        callbacks.recv_stream_data = { _, flags, streamID, _, data, len, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let h3 = me.h3, let conn = me.conn else { return 0 }
            if me.ext != nil {
                return me.receiveClassified(streamID, data, len, fin: flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0)
            }
            let consumed = nghttp3_conn_read_stream(
                h3, streamID, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0 ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Credit goes back for framing nghttp3 consumed; body bytes are credited as the application takes
            // them (HTTP3Stream.consumed), the rest through deferred_consume.
            ngtcp2_conn_extend_max_stream_offset(conn, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        callbacks.acked_stream_data_offset = { _, streamID, _, datalen, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.acknowledged(Int(datalen))
                return 0
            }
            guard let h3 = me.h3 else { return 0 }
            var acked = datalen
            if streamID == me.controlStream && me.ackShift > 0 {
                let shift = min(UInt64(me.ackShift), acked)
                me.ackShift -= Int(shift)
                acked -= shift
            }
            return nghttp3_conn_add_ack_offset(h3, streamID, acked) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.stream_close = { _, flags, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let appError =
                flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0 ? code : UInt64(NGHTTP3_H3_NO_ERROR)
            if me.ext != nil {
                me.undecided[streamID] = nil
                me.plainStreams.remove(streamID)
                if let raw = me.rawStreams.removeValue(forKey: streamID) {
                    raw.didClose(code: flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0 ? code : nil)
                    raw.releaseBuffers()
                    // A stream the peer opened is done: it may open another of its kind.
                    if (streamID & 0x1 == 0) == me.isServer, let conn = me.conn {
                        if streamID & 0x2 == 0 {
                            ngtcp2_conn_extend_max_streams_bidi(conn, 1)
                        } else {
                            ngtcp2_conn_extend_max_streams_uni(conn, 1)
                        }
                    }
                    return 0
                }
            }
            if let h3 = me.h3 {
                let rv = nghttp3_conn_close_stream(h3, streamID, appError)
                if rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND { return NGTCP2_ERR_CALLBACK_FAILURE }
            }
            me.streamClosed(streamID, complete: appError == UInt64(NGHTTP3_H3_NO_ERROR))
            return 0
        }
        // The peer abandoned its side (RESET_STREAM) or wants no more of ours (STOP_SENDING; ngtcp2 answers with
        // RESET_STREAM): either way the exchange is over.
        callbacks.stream_reset = { _, streamID, _, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.peerReset(code: code)
                return 0
            }
            if me.ext != nil { me.undecided[streamID] = nil }
            return me.peerAbandoned(streamID, code: code)
        }
        callbacks.stream_stop_sending = { _, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let raw = me.rawStreams[streamID] {
                raw.peerStopSending(code: code)
                return 0
            }
            return me.peerAbandoned(streamID, code: code)
        }
        callbacks.recv_datagram = { _, _, data, len, userData in
            guard let me = connection(userData), let data, let ext = me.ext else { return 0 }
            // A malformed quarter stream ID is the peer's error (RFC 9297 2.1); dropping it is allowed too.
            guard let d = HTTP3Datagram.decode(Array(UnsafeBufferPointer(start: data, count: len))) else { return 0 }
            ext.datagramReceived(d.payload, streamID: d.streamID, on: me.handle)
            return 0
        }
        callbacks.extend_max_remote_streams_bidi = { _, maxStreams, userData in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Only a server counts the client's request streams (a client granting streams to an extension does not).
            if me.isServer, let h3 = me.h3 { nghttp3_conn_set_max_client_streams_bidi(h3, maxStreams) }
            return 0
        }
        callbacks.extend_max_stream_data = { _, streamID, _, userData, _ in
            guard let me = connection(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            if let h3 = me.h3 {
                return nghttp3_conn_unblock_stream(h3, streamID) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
            }
            return 0
        }
        return callbacks
    }

    /// After the handshake: our control and QPACK streams, and nghttp3 reading the peer's.
    func startHTTP3(server: Bool) -> Int32 {
        guard let conn else { return NGTCP2_ERR_CALLBACK_FAILURE }
        var callbacks = nghttp3_callbacks()
        callbacks.begin_headers = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if let stream = me.streams[streamID] {
                // A client sees interim (1xx) heads before the final one.
                stream.fields = []
            } else {
                me.streams[streamID] = HTTP3Stream(id: streamID, connection: me)
            }
            return 0
        }
        callbacks.recv_header = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID], let field = fieldText(name, value)
            else { return 0 }
            stream.fields.append(field)
            return 0
        }
        callbacks.end_headers = { _, streamID, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID] else { return 0 }
            me.headersReceived(stream)
            return 0
        }
        callbacks.recv_trailer = { _, streamID, _, name, value, _, userData, _ in
            guard let me = connection(userData), let stream = me.streams[streamID], let field = fieldText(name, value)
            else { return 0 }
            stream.trailers.append(field)
            return 0
        }
        callbacks.recv_data = { _, streamID, data, len, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = me.streams[streamID], let onData = stream.onData, let data else {
                // Nobody reads this body: credit it back at once.
                me.extendCredit(stream: streamID, by: len)
                return 0
            }
            stream.uncredited += len
            onData(ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: len)))
            return 0
        }
        callbacks.end_stream = { _, streamID, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.requestDidEnd()
            return 0
        }
        callbacks.deferred_consume = { _, streamID, consumed, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.extendCredit(stream: streamID, by: consumed)
            return 0
        }
        callbacks.acked_stream_data = { _, streamID, datalen, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streams[streamID]?.acknowledged(Int(datalen))
            return 0
        }
        callbacks.stream_close = { _, streamID, code, userData, _ in
            guard let me = connection(userData) else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            me.streamClosed(streamID, complete: code == UInt64(NGHTTP3_H3_NO_ERROR))
            return 0
        }
        callbacks.stop_sending = { _, streamID, code, userData, _ in
            guard let me = connection(userData), let conn = me.conn else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return ngtcp2_conn_shutdown_stream_read(conn, streamID, code) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
        }
        callbacks.shutdown = { _, _, userData in
            // The peer sent GOAWAY: no new requests on this connection.
            connection(userData)?.goawayReceived = true
            return 0
        }
        callbacks.reset_stream = { _, streamID, code, userData, _ in
            guard let me = connection(userData), let conn = me.conn else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            return ngtcp2_conn_shutdown_stream_write(conn, streamID, code) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE
        }
        var control: Int64 = -1, encoder: Int64 = -1, decoder: Int64 = -1
        do {
            let h3 = try NGHTTP3Connection(
                server: server, settings: http3Settings(), callbacks: callbacks, userData: userData)
            h3Connection = h3
            if server { nghttp3_conn_set_max_client_streams_bidi(h3.conn, maxPeerBidiStreams) }
            guard ngtcp2_conn_open_uni_stream(conn, &control, nil) == 0,
                ngtcp2_conn_open_uni_stream(conn, &encoder, nil) == 0,
                ngtcp2_conn_open_uni_stream(conn, &decoder, nil) == 0
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            try h3.bindLocalStreams(control: control, qpackEncoder: encoder, qpackDecoder: decoder)
        } catch {
            return NGTCP2_ERR_CALLBACK_FAILURE
        }
        controlStream = control
        if shuttingDown { beginShutdown() }
        return 0
    }

    func peerAbandoned(_ streamID: Int64, code: UInt64) -> Int32 {
        if let h3, nghttp3_conn_shutdown_stream_read(h3, streamID) != 0 { return NGTCP2_ERR_CALLBACK_FAILURE }
        streams[streamID]?.didClose(complete: false)
        return 0
    }
}
