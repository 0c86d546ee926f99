import NIOCore
import Testing

@testable import UsherReverseProxy

@Suite("reverse_proxy: hashing and frames on the byte level")
struct ProxyHashTests {
    @Test("xxHash64 matches the reference implementation (empty, short, 8/4/1-byte tails, 32-byte stripes)")
    func xxHash() {
        #expect(xxHash64([]) == 0xEF46_DB37_51D8_E999)
        #expect(xxHash64(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(xxHash64(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        #expect(xxHash64(Array("Nobody inspects the spammish repetition".utf8)) == 0xFBCE_A83C_8A37_8BF1)
        #expect(xxHash64(Array(String(repeating: "127.0.0.1:8080/?page=1", count: 3).utf8)) == 0x81EA_4963_2B88_7E57)
    }

    @Test("the Close frame sent on unload: 1001, masked only towards the upstream")
    func closeFrames() {
        let plain = WebSocketFrames.goingAway(masked: false)
        #expect(Array(plain.readableBytesView) == [0x88, 0x02, 0x03, 0xE9])
        let masked = Array(WebSocketFrames.goingAway(masked: true).readableBytesView)
        #expect(masked.count == 8)
        #expect(masked[0] == 0x88 && masked[1] == 0x82)
        let key = masked[2..<6].map { $0 }
        #expect([masked[6] ^ key[0], masked[7] ^ key[1]] == [0x03, 0xE9])
    }
}
