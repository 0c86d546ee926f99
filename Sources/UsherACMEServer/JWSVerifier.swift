import Crypto
import Foundation
import UsherACME
import UsherCore
import _CryptoExtras

/// A verified ACME request body: the flattened JWS a client posted, checked against its key.
struct VerifiedJWS {
    var protected: JSONObject
    /// `nil` for POST-as-GET (an empty payload).
    var payload: JSONValue?
    /// The signing key as a JWK, when the request carried one (`newAccount`).
    var jwk: JSONObject?
    /// The account URL, when the request named one.
    var kid: String?
    var nonce: String
    var url: String
}

/// Why a request is refused, as an ACME problem document (RFC 8555 §6.7).
struct ACMEServerProblem: Error {
    var type: String
    var detail: String
    var status: Int

    static func malformed(_ d: String) -> Self { .init(type: "malformed", detail: d, status: 400) }
    static func unauthorized(_ d: String) -> Self { .init(type: "unauthorized", detail: d, status: 403) }
    static func badNonce(_ d: String) -> Self { .init(type: "badNonce", detail: d, status: 400) }
    static func accountDoesNotExist(_ d: String) -> Self { .init(type: "accountDoesNotExist", detail: d, status: 400) }
    static func rejectedIdentifier(_ d: String) -> Self { .init(type: "rejectedIdentifier", detail: d, status: 400) }
    static func badCSR(_ d: String) -> Self { .init(type: "badCSR", detail: d, status: 400) }
    static func orderNotReady(_ d: String) -> Self { .init(type: "orderNotReady", detail: d, status: 403) }
    static func badSignatureAlgorithm(_ d: String) -> Self {
        .init(type: "badSignatureAlgorithm", detail: d, status: 400)
    }
    static func notFound(_ d: String) -> Self { .init(type: "malformed", detail: d, status: 404) }

    var json: JSONValue {
        [
            "type": .string("urn:ietf:params:acme:error:" + type), "detail": .string(detail),
            "status": .number(.init(status)),
        ]
    }
}

enum JWSVerifier {
    /// Parses and verifies a flattened JWS; `keyFor` supplies the JWK of a `kid`.
    static func verify(_ body: [UInt8], keyFor: (String) async throws -> JSONObject) async throws -> VerifiedJWS {
        guard case .object(let o)? = try? JSONValue.parse(body), let p64 = o["protected"]?.stringValue,
            let payload64 = o["payload"]?.stringValue, let s64 = o["signature"]?.stringValue,
            let pBytes = Base64URL.decode(p64), case .object(let protected)? = try? JSONValue.parse(pBytes),
            let signature = Base64URL.decode(s64)
        else { throw ACMEServerProblem.malformed("request body is not a flattened JWS") }
        guard let alg = protected["alg"]?.stringValue else { throw ACMEServerProblem.malformed("no alg") }
        guard let nonce = protected["nonce"]?.stringValue else { throw ACMEServerProblem.badNonce("no nonce") }
        guard let url = protected["url"]?.stringValue else { throw ACMEServerProblem.malformed("no url") }
        let jwk = protected["jwk"]?.objectValue
        let kid = protected["kid"]?.stringValue
        guard (jwk == nil) != (kid == nil) else {
            throw ACMEServerProblem.malformed("exactly one of jwk and kid is required")
        }
        let key: JSONObject
        if let jwk { key = jwk } else { key = try await keyFor(kid!) }
        let signed = Array((p64 + "." + payload64).utf8)
        guard try Self.check(alg: alg, key: key, signature: signature, data: signed) else {
            throw ACMEServerProblem.malformed("JWS signature does not verify")
        }
        var payload: JSONValue?
        if !payload64.isEmpty {
            guard let bytes = Base64URL.decode(payload64), let value = try? JSONValue.parse(bytes) else {
                throw ACMEServerProblem.malformed("payload is not JSON")
            }
            payload = value
        }
        return VerifiedJWS(protected: protected, payload: payload, jwk: jwk, kid: kid, nonce: nonce, url: url)
    }

    static func check(alg: String, key: JSONObject, signature: [UInt8], data: [UInt8]) throws -> Bool {
        func b(_ k: String) throws -> [UInt8] {
            guard let v = key[k]?.stringValue.flatMap(Base64URL.decode) else {
                throw ACMEServerProblem.malformed("JWK lacks \(k)")
            }
            return v
        }
        switch (alg, key["kty"]?.stringValue, key["crv"]?.stringValue) {
        case ("ES256", "EC", "P-256"):
            let pub = try P256.Signing.PublicKey(rawRepresentation: try b("x") + b("y"))
            guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return pub.isValidSignature(sig, for: data)
        case ("ES384", "EC", "P-384"):
            let pub = try P384.Signing.PublicKey(rawRepresentation: try b("x") + b("y"))
            guard let sig = try? P384.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return pub.isValidSignature(sig, for: data)
        case ("RS256", "RSA", _):
            let pub = try _RSA.Signing.PublicKey(n: try b("n"), e: try b("e"))
            return pub.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: data, padding: .insecurePKCS1v1_5)
        case ("EdDSA", "OKP", "Ed25519"):
            let pub = try Curve25519.Signing.PublicKey(rawRepresentation: try b("x"))
            return pub.isValidSignature(signature, for: data)
        default:
            throw ACMEServerProblem.badSignatureAlgorithm("unsupported JWS algorithm \(alg)")
        }
    }
}
