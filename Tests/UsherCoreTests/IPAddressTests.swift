import Testing

@testable import UsherCore

/// Address parsing as Go's `net.ParseIP`/`netip` accept addresses: the forms it takes, the ones it refuses, and the
/// canonical text it prints.
@Suite("IP address parsing and printing")
struct IPAddressTests {
    @Test("accepted forms print canonically")
    func accepted() {
        let cases: [(String, String)] = [
            ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"), ("10.1.2.3", "10.1.2.3"),
            ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("2001:db8::1", "2001:db8::1"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"), ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
            ("1:0:0:4:0:0:0:8", "1:0:0:4::8"), ("::ffff:1.2.3.4", "::ffff:102:304"),
            ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"), ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("fe80::1%eth0", "fe80::1"), ("0:0:0:0:0:0:0:0", "::"),
        ]
        for (text, printed) in cases {
            #expect(IPAddress(text)?.description == printed, "\(text)")
        }
        #expect(IPAddress("::ffff:1.2.3.4")?.unmapped.description == "1.2.3.4")
    }

    @Test("refused forms")
    func refused() {
        for text in [
            "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "1..2.3", "a.b.c.d", ":", ":::", "1:::2",
            "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "1:2:3:4:5:6:7:8::", "::1.2.3", ":1",
            "1:", "1:2:3:4:5:6:7:1.2.3.4", "g::1", "1.2.3.4::",
        ] {
            #expect(IPAddress(text) == nil, "\(text)")
        }
    }
}
