import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// Streams and datagrams of an HTTP/3 extension (WebTransport): classified, queued and written beside nghttp3.

extension QUICConnection {
    /// Stream data when an extension is registered: a peer stream's first varint decides whether nghttp3 or the
    /// extension gets it; bytes wait here until there are enough to tell.
    func receiveClassified(_ id: Int64, _ data: UnsafePointer<UInt8>?, _ len: Int, fin: Bool) -> Int32 {
        guard let h3, let conn else { return 0 }
        let bytes = UnsafeBufferPointer(start: data, count: len)
        if let raw = rawStreams[id] {
            raw.receive(ByteBuffer(bytes: bytes), fin: fin)
            return 0
        }
        let peerInitiated = (id & 0x1 == 0) == isServer
        if !peerInitiated || plainStreams.contains(id) || streams[id] != nil {
            if id == peerControlStream { feedPeerControl(Array(bytes)) }
            let consumed = nghttp3_conn_read_stream(h3, id, data, len, fin ? 1 : 0)
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            ngtcp2_conn_extend_max_stream_offset(conn, id, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        }
        let first = (undecided[id] ?? []) + Array(bytes)
        let bidirectional = id & 0x2 == 0
        let (kind, headerLength) = PeerStreamClassifier.classify(first, bidirectional: bidirectional)
        switch kind {
        case .undecided:
            if fin { return 0 }
            undecided[id] = first
            return 0
        case .http3:
            undecided[id] = nil
            plainStreams.insert(id)
            if !bidirectional, QUICVarint.decode(first)?.value == HTTP3Codepoint.controlStream {
                peerControlStream = id
                feedPeerControl(first)
            }
            let consumed = first.withUnsafeBufferPointer {
                nghttp3_conn_read_stream(h3, id, $0.baseAddress, $0.count, fin ? 1 : 0)
            }
            guard consumed >= 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
            ngtcp2_conn_extend_max_stream_offset(conn, id, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(conn, UInt64(consumed))
            return 0
        case .webTransportBidi, .webTransportUni:
            undecided[id] = nil
            let raw = HTTP3RawStream(id: id, connection: self)
            rawStreams[id] = raw
            // The preamble is ours to credit; the rest is credited as the extension consumes it.
            extendCredit(stream: id, by: headerLength)
            ext?.streamOpened(raw, kind: kind)
            raw.receive(ByteBuffer(bytes: first[headerLength...]), fin: fin)
            return 0
        }
    }

    /// Reads the peer's control stream beside nghttp3 (which checks it); tells the extension when SETTINGS arrive.
    func feedPeerControl(_ bytes: [UInt8]) {
        let had = peerControl.settings != nil
        try? peerControl.receive(bytes)
        if !had, peerControl.settings != nil { ext?.settingsReceived(on: handle) }
    }

    func queueDatagram(_ datagram: [UInt8]) -> Bool {
        guard let conn, !closed else { return false }
        let max = ngtcp2_conn_get_remote_transport_params(conn)?.pointee.max_datagram_frame_size ?? 0
        // The frame adds a type byte and a length.
        guard UInt64(datagram.count + 4) <= max, datagram.count + 64 < Self.maxPacket else { return false }
        outgoingDatagrams.append(datagram)
        scheduleWrite()
        return true
    }

    func openRawStream(bidirectional: Bool, preamble: [UInt8]) throws -> HTTP3RawStream {
        guard let conn, !closed else { throw HTTP3StreamClosedError() }
        var id: Int64 = -1
        let rv =
            bidirectional ? ngtcp2_conn_open_bidi_stream(conn, &id, nil) : ngtcp2_conn_open_uni_stream(conn, &id, nil)
        if rv == NGTCP2_ERR_STREAM_ID_BLOCKED { throw HTTP3StreamsExhaustedError() }
        guard rv == 0 else { throw QUICError("opening a stream: \(String(cString: ngtcp2_strerror(rv)))") }
        let raw = HTTP3RawStream(id: id, connection: self)
        rawStreams[id] = raw
        try raw.enqueuePreamble(preamble)
        return raw
    }

    /// Datagrams, then extension streams' bytes, each into packets of their own.
    func writeExtensionData() {
        guard let conn else { return }
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        while let d = outgoingDatagrams.first {
            var accepted: Int32 = 0
            let n = writePacket { dest, destLength in
                d.withUnsafeBufferPointer { db in
                    var v = ngtcp2_vec(base: UnsafeMutablePointer(mutating: db.baseAddress), len: db.count)
                    return usher_ngtcp2_conn_writev_datagram(
                        conn, &ps.path, &pi, dest, destLength, &accepted, 0, 0,
                        &v, 1, quicTimestamp())
                }
            }
            if n < 0 {
                // Too large or not allowed: dropped, as datagrams may be.
                outgoingDatagrams.removeFirst()
                continue
            }
            if n == 0 { break }
            if accepted != 0 { outgoingDatagrams.removeFirst() }
        }
        for (id, raw) in rawStreams where raw.hasPendingWrite {
            while raw.hasPendingWrite {
                let (buffer, fin) = raw.nextWrite()
                var accepted: ngtcp2_ssize = -1
                let flags = fin ? UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) : 0
                let n: ngtcp2_ssize = writePacket { dest, destLength in
                    if let buffer {
                        return buffer.withUnsafeReadableBytes { r in
                            var v = ngtcp2_vec(
                                base: UnsafeMutablePointer(
                                    mutating: r.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                                len: r.count)
                            return usher_ngtcp2_conn_writev_stream(
                                conn, &ps.path, &pi, dest, destLength, &accepted, flags, id,
                                &v, 1, quicTimestamp())
                        }
                    }
                    return usher_ngtcp2_conn_writev_stream(
                        conn, &ps.path, &pi, dest, destLength, &accepted, flags, id,
                        nil, 0, quicTimestamp())
                }
                if n < 0 {
                    switch Int32(n) {
                    case NGTCP2_ERR_STREAM_DATA_BLOCKED: break
                    case NGTCP2_ERR_STREAM_SHUT_WR: raw.sendingWasShut()
                    case NGTCP2_ERR_STREAM_NOT_FOUND: raw.didClose(code: nil)
                    default:
                        close(sendingClose: true, error: Int32(n))
                        return
                    }
                    break
                }
                if accepted >= 0 { raw.wrote(Int(accepted), fin: fin && Int(accepted) == (buffer?.readableBytes ?? 0)) }
                if n == 0 { return }
            }
        }
    }
}
