public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
public import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// Sends a PROXY protocol header as the connection opens, before anything else (TLS included).
final class ProxyHeaderWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    let header: ByteBuffer

    init(header: ByteBuffer) { self.header = header }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(header), promise: nil)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}

/// PROXY protocol headers (v1 text, v2 binary) with the client as source and an all-zero destination of the same
/// family, as Caddy sends them.
enum ProxyProtocolHeader {
    static func make(version: String, source: String) -> ByteBuffer? {
        guard let src = try? NetworkAddress(parsing: source),
            let ip = try? SocketAddress(ipAddress: src.host, port: src.startPort)
        else { return nil }
        let v6: Bool
        switch ip {
        case .v6: v6 = true
        default: v6 = false
        }
        var b = ByteBuffer()
        if version == "v1" {
            b.writeString("PROXY \(v6 ? "TCP6" : "TCP4") \(src.host) \(v6 ? "::" : "0.0.0.0") \(src.startPort) 0\r\n")
            return b
        }
        b.writeBytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
        b.writeInteger(UInt8(0x21))  // version 2, PROXY
        b.writeInteger(UInt8(v6 ? 0x21 : 0x11))  // TCP over IPv6 / IPv4
        b.writeInteger(UInt16(v6 ? 36 : 12))
        var addr = [UInt8](repeating: 0, count: v6 ? 16 : 4)
        _ = inet_pton(v6 ? AF_INET6 : AF_INET, src.host, &addr)
        b.writeBytes(addr)
        b.writeBytes([UInt8](repeating: 0, count: v6 ? 16 : 4))
        b.writeInteger(UInt16(src.startPort))
        b.writeInteger(UInt16(0))
        return b
    }
}
