import CNghttp3
import CNgtcp2
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// Packet writing: ngtcp2 and nghttp3 output packed into one buffer and sent as one GSO write per batch.

extension QUICConnection {
    /// Writes soon, once for everything queued until then. Inside a read there is nothing to schedule: the
    /// read is followed by a write anyway.
    func scheduleWrite() {
        guard !writeScheduled, !closed, !reading, !pendingWrite else { return }
        writeScheduled = true
        let bound = NIOLoopBound(Unmanaged.passRetained(self), eventLoop: sink.loop)
        sink.loop.execute {
            let me = bound.value.takeRetainedValue()
            me.writeScheduled = false
            me.writePackets()
            me.sink.flush()
        }
    }

    /// Sends whatever there is: HTTP/3 stream data from nghttp3, and ngtcp2's own packets (handshake, ACKs); then
    /// arms the timer for ngtcp2's next expiry.
    func writePackets() {
        guard let conn, !closed, !draining else { return }
        var ps = ngtcp2_path_storage()
        ngtcp2_path_storage_zero(&ps)
        var pi = ngtcp2_pkt_info()
        var vecs = [nghttp3_vec](repeating: nghttp3_vec(), count: 16)
        // Pacing: at most a send quantum now; ngtcp2's expiry brings us back for the rest.
        let quantum = max(1, min(ngtcp2_conn_get_send_quantum(conn) / Self.maxPacket, 64))
        var written = 0
        defer { ngtcp2_conn_update_pkt_tx_time(conn, quicTimestamp()) }
        while written < quantum {
            var streamID: Int64 = -1
            var fin: Int32 = 0
            var count = 0
            if let h3, ngtcp2_conn_get_max_data_left(conn) > 0 {
                let n = nghttp3_conn_writev_stream(h3, &streamID, &fin, &vecs, vecs.count)
                guard n >= 0 else {
                    close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
                    return
                }
                count = Int(n)
            }
            // nghttp3's first write on our control stream carries SETTINGS: send the spliced bytes instead, and
            // count only nghttp3's own towards its offset.
            var originalLength: Int?
            if streamID == controlStream && count > 0, let b = spliced, !splicedAccepted {
                // The spliced chunk did not go out last time; nghttp3 offers the same bytes again.
                originalLength = splicedOriginalLength
                vecs[0] = nghttp3_vec(base: b.baseAddress, len: b.count)
                count = 1
            } else if streamID == controlStream && !splice.done && count > 0 {
                var original: [UInt8] = []
                for v in vecs.prefix(count) where v.len > 0 {
                    original += UnsafeBufferPointer(start: v.base, count: v.len)
                }
                guard let rewritten = try? splice.rewrite(original) else {
                    close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
                    return
                }
                if rewritten != original {
                    let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: rewritten.count)
                    _ = b.initialize(from: rewritten)
                    spliced = b
                    ackShift = splice.added
                    originalLength = original.count
                    splicedOriginalLength = original.count
                    vecs[0] = nghttp3_vec(base: b.baseAddress, len: b.count)
                    count = 1
                }
            }
            var accepted: ngtcp2_ssize = -1
            var flags = UInt32(NGTCP2_WRITE_STREAM_FLAG_MORE)
            if fin != 0 { flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) }
            let n = writePacket { dest, destLength in
                vecs.withUnsafeBufferPointer { v in
                    // nghttp3_vec and ngtcp2_vec have the same layout (base pointer, length).
                    v.baseAddress!.withMemoryRebound(to: ngtcp2_vec.self, capacity: max(count, 1)) { nv in
                        usher_ngtcp2_conn_writev_stream(
                            conn, &ps.path, &pi, dest, destLength, &accepted, flags,
                            streamID, count > 0 ? nv : nil, count, quicTimestamp())
                    }
                }
            }
            if n < 0 {
                switch Int32(n) {
                case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                    if let h3 { nghttp3_conn_block_stream(h3, streamID) }
                    continue
                case NGTCP2_ERR_STREAM_SHUT_WR:
                    if let h3 { nghttp3_conn_shutdown_stream_write(h3, streamID) }
                    continue
                case NGTCP2_ERR_WRITE_MORE:
                    guard recordWritten(streamID, accepted, originalLength) else { return }
                    continue
                default:
                    close(sendingClose: true, error: Int32(n))
                    return
                }
            }
            guard recordWritten(streamID, accepted, originalLength) else { return }
            if n == 0 { break }
            written += 1
        }
        if ext != nil { writeExtensionData() }
        sendBatch()
        armTimer()
    }

    /// Tells nghttp3 how many of its bytes ngtcp2 took; false when the connection had to close.
    func recordWritten(_ streamID: Int64, _ accepted: ngtcp2_ssize, _ originalLength: Int?) -> Bool {
        guard accepted >= 0 else { return true }
        guard let written = nghttp3Written(accepted, original: originalLength),
            h3.map({ nghttp3_conn_add_write_offset($0, streamID, written) == 0 }) ?? true
        else {
            close(sendingClose: true, error: NGTCP2_ERR_CALLBACK_FAILURE)
            return false
        }
        return true
    }

    /// Has `write` put the next packet straight into the GSO batch (no copy), then queues it. `write` gets the
    /// destination and its room and returns what ngtcp2 returned: a packet's length, 0, or an error. ngtcp2 may
    /// leave a packet unfinished (`NGTCP2_ERR_WRITE_MORE`) and finish it in the next call, which must therefore get
    /// the same destination: nothing moves the batch between the two, and it always has room for a whole packet.
    func writePacket(_ write: (UnsafeMutablePointer<UInt8>, Int) -> ngtcp2_ssize) -> ngtcp2_ssize {
        if batch == nil {
            batch = sink.allocator.buffer(capacity: Self.useGSO ? Self.maxBatchBytes : Self.maxPacket)
        }
        var n: ngtcp2_ssize = 0
        batch!.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.maxPacket) { dest in
            n = write(dest.baseAddress!.assumingMemoryBound(to: UInt8.self), Self.maxPacket)
            return n > 0 ? Int(n) : 0
        }
        if n > 0 { queued(Int(n)) }
        return n
    }

    /// A packet of `length` bytes was just written at the end of ``batch``. Packets of one size go out together as
    /// one GSO write (the kernel cuts them apart): a write per packet is most of the cost of sending otherwise. A
    /// shorter packet ends a batch; a longer one starts the next.
    func queued(_ length: Int) {
        if batchCount > 0 && length > batchSegment {
            // Rare (sizes change at the ends of bursts): the batch goes without it, and it starts the next one.
            let end = batch!.writerIndex
            let last = batch!.getSlice(at: end - length, length: length)!
            batch!.moveWriterIndex(to: end - length)
            sendBatch()
            var next = sink.allocator.buffer(capacity: Self.useGSO ? Self.maxBatchBytes : Self.maxPacket)
            next.writeImmutableBuffer(last)
            batch = next
        }
        if batchCount == 0 { batchSegment = length }
        batchCount += 1
        if length < batchSegment || !Self.useGSO || batch!.writerIndex + Self.maxPacket > Self.maxBatchBytes
            || batchCount == Self.maxSegments
        {
            sendBatch()
        }
    }

    /// Sends the queued packets (flushed by the caller or at the end of the read batch).
    func sendBatch() {
        guard let b = batch else { return }
        // A batch with no packet is dropped unsent (an idle connection keeps no buffer).
        if batchCount > 0 { sink.send(b, segmentSize: batchCount > 1 ? batchSegment : nil, to: remote) }
        batch = nil
        batchCount = 0
    }

    /// Whether the kernel cuts a write into datagrams for us (Linux UDP GSO).
    static let useGSO = System.supportsUDPSegmentationOffload
    /// Packets per GSO write (the kernel's limit).
    static let maxSegments = 64
    /// The most a GSO write may carry: one UDP datagram's worth before the kernel cuts it.
    static let maxBatchBytes = 65_000
    /// The largest packet written (ngtcp2's default `max_tx_udp_payload_size`).
    static let maxPacket = 1452

    /// How many of nghttp3's bytes ngtcp2 took: all of them when the whole spliced SETTINGS chunk went out; a
    /// partly accepted spliced chunk cannot be mapped back (`nil`).
    func nghttp3Written(_ accepted: ngtcp2_ssize, original: Int?) -> Int? {
        guard let original else { return Int(accepted) }
        guard Int(accepted) == spliced?.count else { return nil }
        splicedAccepted = true
        return original
    }
}

extension DatagramBootstrap {
    /// Socket options for QUIC: big buffers, and with `coalesced` the kernel's receive offload (GRO), which hands
    /// over runs of datagrams from one sender as one read (``forEachDatagram(_:_:)`` cuts them apart again).
    func quicSocketOptions(coalesced: Bool) -> DatagramBootstrap {
        let gro = coalesced && System.supportsUDPReceiveOffload
        var b =
            self
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .channelOption(.maxMessagesPerRead, value: 64)
        if gro {
            b = b.channelOption(.datagramReceiveOffload, value: true)
                .channelOption(.datagramReceiveSegmentSize, value: true)
                // Sized by what arrives: small datagrams (request/response traffic) do not get 64 KiB each.
                .channelOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 16384, maximum: 65536))
        } else {
            b = b.channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048))
        }
        return b
    }
}

/// Calls `body` with each datagram of `envelope`: one, or several of the reported segment size after GRO.
func forEachDatagram(_ envelope: AddressedEnvelope<ByteBuffer>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    envelope.data.withUnsafeReadableBytes { raw in
        let all = raw.bindMemory(to: UInt8.self)
        guard let size = envelope.metadata?.segmentSize, size > 0, size < all.count else {
            body(all)
            return
        }
        var offset = 0
        while offset < all.count {
            let end = min(offset + size, all.count)
            body(UnsafeBufferPointer(rebasing: all[offset..<end]))
            offset = end
        }
    }
}
