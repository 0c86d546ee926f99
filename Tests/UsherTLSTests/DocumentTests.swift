import Testing
import UsherCaddyfile
import UsherCore

@testable import UsherTLS

/// What the Caddyfile adapter builds must decode, strictly, into the runtime it configures: one model, one spelling
/// of each key.
@Suite("TLS documents: what the adapter writes, the runtime reads")
struct DocumentTests {
    let decoder = ConfigDecoder(registry: try! ModuleRegistry(bundles: [TLSTestModules.self]))

    @Test("a connection policy with every setting the runtime takes decodes with those values")
    func connectionPolicy() throws {
        let doc = ConnectionPolicy.Document()
        doc.cipherSuites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
        doc.curves = ["x25519"]
        doc.alpn = ["h2", "http/1.1"]
        doc.protocolMin = "tls1.2"
        doc.protocolMax = "tls1.3"
        doc.defaultSNI = "example.com"
        var selection = CertificateSelection.Document()
        selection.anyTag = ["blue"]
        doc.certSelection = selection
        let policy = try decoder.decode(ConnectionPolicy.self, from: .object(doc.json))
        #expect(policy.cipherSuites == ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"])
        #expect(policy.curves == ["x25519"])
        #expect(policy.alpn == ["h2", "http/1.1"])
        #expect(policy.protocolMin == "tls1.2" && policy.protocolMax == "tls1.3")
        #expect(policy.defaultSNI == "example.com")
        #expect(policy.certificateSelection?.anyTag == ["blue"])
    }

    @Test("an empty connection policy writes {} and decodes to the defaults")
    func emptyPolicy() throws {
        let doc = ConnectionPolicy.Document()
        #expect(doc.json.isEmpty)
        let policy = try decoder.decode(ConnectionPolicy.self, from: .object(doc.json))
        #expect(policy.cipherSuites.isEmpty && policy.certificateSelection == nil)
    }

    @Test("an automation policy with the internal issuer decodes with its subjects and issuer")
    func automationPolicy() throws {
        let doc = AutomationPolicy.Document()
        doc.subjects = ["localhost", "*.internal.example"]
        doc.keyType = "p256"
        doc.issuersRaw = [Issuer.internal(["ca": "local"]).json]
        let policy = try decoder.decode(AutomationPolicy.self, from: .object(doc.json))
        #expect(policy.subjects == ["localhost", "*.internal.example"])
        #expect(policy.issuers.count == 1)
        #expect((policy.issuers.first?.module as? InternalIssuer)?.ca == "local")
    }

    @Test("a CA's document decodes into the pki app's CA config, durations in nanoseconds")
    func certificateAuthority() throws {
        let doc = CAConfig.Document()
        doc.name = "Test CA"
        doc.rootCommonName = "Test Root"
        doc.intermediateLifetime = 3_600_000_000_000
        doc.installTrust = false
        let json = doc.json
        #expect(json["intermediate_lifetime"] == .number(JSONNumber(3_600_000_000_000)))
        let ca = try decoder.decode(CAConfig.self, from: .object(json))
        #expect(ca.name == "Test CA" && ca.rootCommonName == "Test Root")
        #expect(ca.intermediateLifetime?.nanoseconds == 3_600_000_000_000)
        #expect(ca.installTrust == false)
    }

    @Test("the internal issuer's Caddyfile syntax, beside it, gives JSON its decoder takes")
    func internalIssuerSyntax() throws {
        let tokens = try CaddyfileLexer.tokenize("internal {\n\tca corp\n\tlifetime 2d\n}\n", filename: "Caddyfile")
        let registry = try CaddyfileRegistry([TLSCaddyfile.support])
        let d = Dispenser(tokens)
        d.next()  // at `internal`, as the `issuer` subdirective leaves it
        let json = try registry.unmarshalModule(d, "tls.issuance.internal")
        let issuer = try decoder.decode(InternalIssuer.self, from: json)
        #expect(issuer.ca == "corp")
        #expect(issuer.lifetime == ConfigDuration(nanoseconds: 172_800_000_000_000))
    }
}

/// The modules the documents above nest.
enum TLSTestModules: ModuleBundle {
    static let name = "test/tls"
    static let version = "0"
    static var modules: [any Module.Type] { [InternalIssuer.self] }
}

@Suite("certmagic's subject rules")
struct SubjectRuleTests {
    @Test(
        "which names qualify for a publicly trusted certificate",
        arguments: [
            ("example.com", true), ("sub.example.com", true), ("*.example.com", true), ("8.8.8.8", true),
            ("localhost", false), ("app.localhost", false), ("printer.local", false), ("db.internal", false),
            ("router.home.arpa", false), ("127.0.0.1", false), ("192.168.1.5", false), ("10.0.0.1", false),
            ("::1", false), ("*.com", false), ("*.*.example.com", false), ("a.*.example.com", false),
            ("", false), ("example.com.", false), (".example.com", false), ("ex ample.com", false),
        ])
    func publicNames(_ name: String, _ qualifies: Bool) {
        #expect(certmagicQualifiesForPublicCert(name) == qualifies)
    }

    @Test(
        "wildcards match one label at a time, left to right, as certmagic's MatchWildcard",
        arguments: [
            ("sub.example.com", "*.example.com", true), ("Sub.Example.com", "*.example.COM", true),
            ("example.com", "*.example.com", false), ("a.b.example.com", "*.example.com", false),
            ("a.b.example.com", "*.*.example.com", true), ("a.b.com", "a.*.com", false),
            ("sub.example.com:443", "*.example.com", true), ("example.com", "example.com", true),
        ])
    func wildcards(_ subject: String, _ wildcard: String, _ matches: Bool) {
        #expect(matchWildcard(subject, wildcard) == matches)
    }
}
