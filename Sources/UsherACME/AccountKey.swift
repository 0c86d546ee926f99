public import Crypto
import Foundation
public import UsherCore
import _CryptoExtras

/// A key that signs ACME requests (an account key) as a JWS signer: ES256 (P-256, what Caddy makes), ES384 (P-384)
/// or RS256 (RSA).
///
/// `@unchecked Sendable`: the keys inside are immutable values that swift-crypto 3 does not mark `Sendable`.
public struct ACMESigningKey: @unchecked Sendable {
    enum Backing {
        case p256(P256.Signing.PrivateKey)
        case p384(P384.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
    }
    let backing: Backing

    public init(p256 key: P256.Signing.PrivateKey) { backing = .p256(key) }
    public init(p384 key: P384.Signing.PrivateKey) { backing = .p384(key) }

    /// A new P-256 key, as certmagic makes for new accounts.
    public static func generate() -> ACMESigningKey { ACMESigningKey(p256: P256.Signing.PrivateKey()) }

    /// Reads a PEM private key (`EC PRIVATE KEY`, `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    public init(pem: String) throws {
        if let k = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            backing = .p256(k)
        } else if let k = try? P384.Signing.PrivateKey(pemRepresentation: pem) {
            backing = .p384(k)
        } else if let k = try? _RSA.Signing.PrivateKey(pemRepresentation: pem) {
            backing = .rsa(k)
        } else {
            throw ACMEError.badKey("not a PEM P-256, P-384 or RSA private key")
        }
    }

    /// The key as PEM.
    public var pem: String {
        switch backing {
        case .p256(let k): return k.pemRepresentation + "\n"
        case .p384(let k): return k.pemRepresentation + "\n"
        case .rsa(let k): return k.pemRepresentation + "\n"
        }
    }

    /// The JWS `alg`.
    public var algorithm: String {
        switch backing {
        case .p256: return "ES256"
        case .p384: return "ES384"
        case .rsa: return "RS256"
        }
    }

    /// The public key as a JWK with its members in lexicographic order, which is also the form RFC 7638 hashes.
    public var jwk: JSONObject {
        switch backing {
        case .p256(let k):
            let raw = Array(k.publicKey.rawRepresentation)
            return [
                "crv": "P-256", "kty": "EC", "x": .string(Base64URL.encode(raw[0..<32])),
                "y": .string(Base64URL.encode(raw[32..<64])),
            ]
        case .p384(let k):
            let raw = Array(k.publicKey.rawRepresentation)
            return [
                "crv": "P-384", "kty": "EC", "x": .string(Base64URL.encode(raw[0..<48])),
                "y": .string(Base64URL.encode(raw[48..<96])),
            ]
        case .rsa(let k):
            let p = try? k.publicKey.getKeyPrimitives()
            return [
                "e": .string(Base64URL.encode(Array(p?.publicExponent ?? Data()))), "kty": "RSA",
                "n": .string(Base64URL.encode(Array(p?.modulus ?? Data()))),
            ]
        }
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of the canonical JWK. Key authorizations end with it.
    public var thumbprint: String { JWS.thumbprint(jwk: jwk) }

    /// Signs `data` as the JWS algorithm requires: ECDSA as the fixed-width r‖s, RSA as PKCS #1 v1.5.
    public func sign(_ data: [UInt8]) throws -> [UInt8] {
        switch backing {
        case .p256(let k): return Array(try k.signature(for: data).rawRepresentation)
        case .p384(let k): return Array(try k.signature(for: data).rawRepresentation)
        case .rsa(let k): return Array(try k.signature(for: data, padding: .insecurePKCS1v1_5).rawRepresentation)
        }
    }
}

/// Flattened JWS JSON serialization (RFC 7515 §7.2.2), the body of every ACME POST.
public enum JWS {
    /// RFC 7638: base64url SHA-256 of the JWK's required members in lexicographic order, without white space.
    public static func thumbprint(jwk: JSONObject) -> String {
        let sorted = JSONObject(jwk.members.sorted { $0.key < $1.key })
        return Base64URL.encode(SHA256.hash(data: JSONValue.object(sorted).serializedBytes(.init(escapeHTML: false))))
    }

    /// Signs `payload` (`nil` for POST-as-GET's empty payload) with `key`, identifying the key by `kid` (an
    /// account URL) or, without one, by its JWK.
    public static func sign(
        payload: JSONValue?, url: String, nonce: String?, key: ACMESigningKey, kid: String?
    ) throws -> [UInt8] {
        var protected: JSONObject = ["alg": .string(key.algorithm)]
        if let kid { protected["kid"] = .string(kid) } else { protected["jwk"] = .object(key.jwk) }
        if let nonce { protected["nonce"] = .string(nonce) }
        protected["url"] = .string(url)
        let p64 = Base64URL.encode(JSONValue.object(protected).serializedBytes())
        let body64 = payload.map { Base64URL.encode($0.serializedBytes()) } ?? ""
        let signature = try key.sign(Array((p64 + "." + body64).utf8))
        let jws: JSONObject = [
            "protected": .string(p64), "payload": .string(body64), "signature": .string(Base64URL.encode(signature)),
        ]
        return JSONValue.object(jws).serializedBytes()
    }

    /// The External Account Binding (RFC 8555 §7.3.4): the account's JWK signed with HS256 under the CA's MAC key.
    public static func externalAccountBinding(
        keyID: String, macKey: [UInt8], accountKey: ACMESigningKey, url: String
    ) -> JSONValue {
        let protected: JSONObject = ["alg": "HS256", "kid": .string(keyID), "url": .string(url)]
        let p64 = Base64URL.encode(JSONValue.object(protected).serializedBytes())
        let body64 = Base64URL.encode(JSONValue.object(accountKey.jwk).serializedBytes())
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array((p64 + "." + body64).utf8), using: SymmetricKey(data: macKey))
        return .object([
            "protected": .string(p64), "payload": .string(body64), "signature": .string(Base64URL.encode(Array(mac))),
        ])
    }
}
