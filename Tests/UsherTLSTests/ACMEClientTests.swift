import Crypto
import Foundation
import SwiftASN1
import Testing
import UsherCore
import X509

@testable import UsherACME
@testable import UsherTLS

@Suite("ACME client pieces: base64url, JWK thumbprints, JWS and EAB signatures, issuer keys")
struct ACMEClientTests {
    @Test("base64url round-trips every length and rejects other alphabets")
    func base64url() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
            let text = Base64URL.encode(bytes)
            #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
            #expect(Base64URL.decode(text) == bytes)
        }
        #expect(Base64URL.encode(Array("hello?>".utf8)) == "aGVsbG8_Pg")
        #expect(Base64URL.decode("a*b") == nil)
    }

    @Test("RFC 7638's example JWK has the thumbprint the RFC gives")
    func thumbprint() {
        let n =
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        let jwk: JSONObject = ["kty": "RSA", "n": .string(n), "e": "AQAB"]
        #expect(JWS.thumbprint(jwk: jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    }

    @Test("a flattened JWS verifies with the JWK it carries; with a kid it carries no JWK")
    func jwsSignature() throws {
        let key = ACMESigningKey.generate()
        let body = try JWS.sign(
            payload: ["termsOfServiceAgreed": true], url: "https://ca/new-acct", nonce: "n1", key: key, kid: nil)
        let o = try #require(try JSONValue.parse(body).objectValue)
        let p64 = try #require(o["protected"]?.stringValue)
        let s64 = try #require(o["signature"]?.stringValue)
        let payload64 = try #require(o["payload"]?.stringValue)
        let protectedBytes = try #require(Base64URL.decode(p64))
        let protected = try #require(try JSONValue.parse(protectedBytes).objectValue)
        #expect(protected["alg"]?.stringValue == "ES256")
        #expect(protected["nonce"]?.stringValue == "n1")
        #expect(protected["url"]?.stringValue == "https://ca/new-acct")
        let jwk = try #require(protected["jwk"]?.objectValue)
        let x = try #require(jwk["x"]?.stringValue.flatMap(Base64URL.decode))
        let y = try #require(jwk["y"]?.stringValue.flatMap(Base64URL.decode))
        let pub = try P256.Signing.PublicKey(rawRepresentation: x + y)
        let sigBytes = try #require(Base64URL.decode(s64))
        let sig = try P256.Signing.ECDSASignature(rawRepresentation: sigBytes)
        #expect(pub.isValidSignature(sig, for: Array((p64 + "." + payload64).utf8)))
        #expect(key.thumbprint == JWS.thumbprint(jwk: jwk))

        let asGet = try JWS.sign(
            payload: nil, url: "https://ca/order/1", nonce: "n2", key: key, kid: "https://ca/acct/7")
        let g = try #require(try JSONValue.parse(asGet).objectValue)
        #expect(g["payload"]?.stringValue == "")
        let gp64 = try #require(g["protected"]?.stringValue)
        let gpBytes = try #require(Base64URL.decode(gp64))
        let gp = try #require(try JSONValue.parse(gpBytes).objectValue)
        #expect(gp["kid"]?.stringValue == "https://ca/acct/7")
        #expect(gp["jwk"] == nil)
    }

    @Test("External Account Binding is HS256 over the account JWK, under the CA's key ID and newAccount URL")
    func eab() throws {
        let key = ACMESigningKey.generate()
        let mac = Array("0123456789abcdef0123456789abcdef".utf8)
        let eab = JWS.externalAccountBinding(keyID: "kid-1", macKey: mac, accountKey: key, url: "https://ca/new-acct")
        let o = try #require(eab.objectValue)
        let p64 = try #require(o["protected"]?.stringValue)
        let payload64 = try #require(o["payload"]?.stringValue)
        let protectedBytes = try #require(Base64URL.decode(p64))
        let protected = try #require(try JSONValue.parse(protectedBytes).objectValue)
        #expect(protected["alg"]?.stringValue == "HS256")
        #expect(protected["kid"]?.stringValue == "kid-1")
        let payloadBytes = try #require(Base64URL.decode(payload64))
        #expect(try JSONValue.parse(payloadBytes).objectValue == key.jwk)
        let expected = HMAC<SHA256>.authenticationCode(
            for: Array((p64 + "." + payload64).utf8), using: SymmetricKey(data: mac))
        #expect(o["signature"]?.stringValue == Base64URL.encode(Array(expected)))
    }

    @Test("account keys read back from PEM, including P-384 and RSA")
    func keysFromPEM() throws {
        let p256 = ACMESigningKey.generate()
        #expect(try ACMESigningKey(pem: p256.pem).thumbprint == p256.thumbprint)
        let p384 = ACMESigningKey(p384: P384.Signing.PrivateKey())
        #expect(try ACMESigningKey(pem: p384.pem).algorithm == "ES384")
        #expect(throws: ACMEError.self) { try ACMESigningKey(pem: "nonsense") }
    }

    @Test("issuer keys as certmagic derives them from the CA URL")
    func issuerKeys() {
        #expect(
            ACMEIssuer.issuerKey("https://acme-v02.api.letsencrypt.org/directory")
                == "acme-v02.api.letsencrypt.org-directory")
        #expect(ACMEIssuer.issuerKey("https://127.0.0.1:14000/dir") == "127.0.0.1:14000-dir")
        #expect(StorageKeys.safe(ACMEIssuer.issuerKey("https://127.0.0.1:14000/dir")) == "127.0.0.1-14000-dir")
        #expect(ACMEIssuer.issuerKey("https://ca.example/acme/v2/dir/") == "ca.example-acme-v2-dir")
    }

    @Test("Link headers: alternate chains are found among other relations")
    func links() {
        let h =
            #"<https://ca/cert/1/1>;rel="alternate", <https://ca/dir>;rel="index", <https://ca/cert/1/2>; rel="alternate""#
        #expect(ACMEClient.links(h, rel: "alternate") == ["https://ca/cert/1/1", "https://ca/cert/1/2"])
    }

    @Test("CSRs name the SANs, verify, and carry TLS Feature status_request only with must_staple")
    func csr() throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        for staple in [false, true] {
            let der = try makeCSR(
                names: ["a.test", "127.0.0.1"], key: key, algorithm: .ecdsaWithSHA256, mustStaple: staple)
            let csr = try CertificateSigningRequest(derEncoded: der)
            #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
            let ext = try #require(try csr.attributes.extensionRequest?.extensions)
            let sans = try #require(try ext.subjectAlternativeNames)
            #expect(sans.count == 2)
            let feature = ext.first { $0.oid == [1, 3, 6, 1, 5, 5, 7, 1, 24] }
            #expect((feature != nil) == staple)
            if let feature { #expect(Array(feature.value) == [0x30, 0x03, 0x02, 0x01, 0x05]) }
        }
    }

    @Test("the order rate limit lets `limit` orders through at once, then holds the next until the window moves")
    func orderRateLimit() async {
        let limiter = OrderRateLimiter(limit: 3, window: .milliseconds(600))
        let start = ContinuousClock.now
        for _ in 0..<3 { await limiter.wait() }
        let burst = ContinuousClock.now - start
        await limiter.wait()
        let fourth = ContinuousClock.now - start
        // Only lower bounds: a loaded machine may be slower, never faster.
        #expect(fourth >= .milliseconds(590), "\(fourth)")
        #expect(burst < fourth)
    }

    @Test("a slot given back (no order placed after all) goes to the next waiter, long before the window moves")
    func orderRateLimitGiveBack() async throws {
        // A window far longer than the test: a waiter can only get through by a slot given back. No upper bound
        // on time, as the whole test process shares two cores; the race below only keeps a failure from hanging.
        let limiter = OrderRateLimiter(limit: 2, window: .seconds(900))
        let first = await limiter.wait()
        await limiter.wait()
        let waiter = Task { await limiter.wait() }
        try await Task.sleep(for: .milliseconds(200))
        await limiter.giveBack(first)
        let granted = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await waiter.value
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(600))
                return false
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(granted)
        // The window is full again (the given-back slot went to the waiter): a fourth caller is held.
        final class Flag: @unchecked Sendable {
            private let lock = NSLock()
            private var value = false
            func set() { lock.withLock { value = true } }
            var isSet: Bool { lock.withLock { value } }
        }
        let done = Flag()
        _ = Task {
            await limiter.wait()
            done.set()
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!done.isSet)
    }
}
