import CUsherSystem
import Foundation
public import UsherCore

/// A password hash algorithm (`http.authentication.hashes.*`): checks a plaintext password against a stored hash.
public protocol PasswordHash: Module {
    /// Whether `plaintext` hashes to `hashed`; throws when `hashed` is not a hash of this algorithm. Slow on purpose:
    /// call it off the event loops.
    func compare(hashed: [UInt8], plaintext: [UInt8]) throws -> Bool
    /// Throws, saying what is wrong, unless `hashed` is a well-formed hash of this algorithm.
    func check(hashed: [UInt8]) throws
    /// A valid hash of a password nobody knows, compared against for unknown users so they take as long.
    var fakeHash: [UInt8] { get }
    /// A new hash of `plaintext` (for `usher hash-password`).
    func hash(_ plaintext: [UInt8]) throws -> String
}

/// The `http.authentication.hashes` namespace (inline key `algorithm`).
public enum PasswordHashes: ModuleNamespace {
    public static let prefix = "http.authentication.hashes"
    public static let inlineKey: String? = "algorithm"
    public typealias Instance = any PasswordHash
}

/// A stored hash that cannot be used.
public struct MalformedHash: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Byte strings compared in time that depends only on their lengths.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}

/// `http.authentication.hashes.bcrypt`: bcrypt through the system's libxcrypt (`$2a$`, `$2b$`, `$2y$` hashes).
public struct BcryptHash: PasswordHash {
    public static let moduleID: ModuleID = "http.authentication.hashes.bcrypt"
    /// The cost for new hashes (`usher hash-password --bcrypt-cost`). Default: 14, as Caddy.
    public var cost = 14

    public init(from decoder: any Decoder) throws {}
    public init(cost: Int) { self.cost = cost }

    public var fakeHash: [UInt8] { Array("$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6".utf8) }

    public func check(hashed: [UInt8]) throws {
        // $2?$cc$ then 22 characters of salt and 31 of hash, in bcrypt's base-64 alphabet.
        let text = String(decoding: hashed, as: UTF8.self)
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].isEmpty, ["2a", "2b", "2y"].contains(parts[1]) else {
            throw MalformedHash("not a bcrypt hash (expected $2a$, $2b$ or $2y$, a cost and 53 characters)")
        }
        guard let cost = Int(parts[2]), parts[2].count == 2, (4...31).contains(cost) else {
            throw MalformedHash("bcrypt cost must be two digits from 04 to 31")
        }
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        guard parts[3].utf8.count == 53, parts[3].utf8.allSatisfy(alphabet.contains) else {
            throw MalformedHash("bcrypt salt and hash must be 53 characters of bcrypt's base 64")
        }
    }

    public func compare(hashed: [UInt8], plaintext: [UInt8]) throws -> Bool {
        try check(hashed: hashed)
        // crypt(3) stops at a NUL and bcrypt at 72 bytes, so such passwords would match a shorter one: refuse them
        // (Go's bcrypt, which Caddy uses, refuses passwords over 72 bytes too).
        if plaintext.contains(0) || plaintext.count > 72 { return false }
        let setting = String(decoding: hashed, as: UTF8.self)
        var out = [CChar](repeating: 0, count: 128)
        let status = plaintext.withUnsafeBufferPointer { p -> Int32 in
            var password = Array(p) + [0]
            return password.withUnsafeMutableBufferPointer { pw in
                pw.baseAddress!.withMemoryRebound(to: CChar.self, capacity: pw.count) { c in
                    c_usher_crypt(c, setting, &out, out.count)
                }
            }
        }
        guard status == 0 else { throw MalformedHash("bcrypt could not use this hash") }
        let computed = Array(out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) })
        return constantTimeEqual(computed, hashed)
    }

    public func hash(_ plaintext: [UInt8]) throws -> String {
        guard !plaintext.contains(0), plaintext.count <= 72 else {
            throw MalformedHash("bcrypt passwords must be at most 72 bytes, without NUL")
        }
        var salt = [CChar](repeating: 0, count: 64)
        guard c_usher_bcrypt_salt("$2a$", UInt(cost < 4 || cost > 31 ? 14 : cost), &salt, salt.count) == 0 else {
            throw MalformedHash("making a bcrypt salt failed")
        }
        var out = [CChar](repeating: 0, count: 128)
        var password = plaintext.map { CChar(bitPattern: $0) } + [0]
        guard c_usher_crypt(&password, salt, &out, out.count) == 0 else {
            throw MalformedHash("bcrypt hashing failed")
        }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// `http.authentication.hashes.argon2id`: Argon2id through the system's libargon2, in the PHC string format
/// `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>` (unpadded base 64), as Caddy writes it.
public struct Argon2idHash: PasswordHash {
    public static let moduleID: ModuleID = "http.authentication.hashes.argon2id"
    /// Parameters for new hashes; Caddy's defaults.
    public var time: UInt32 = 1
    public var memory: UInt32 = 46 * 1024
    public var threads: UInt32 = 1
    public var keyLength = 32

    public init(from decoder: any Decoder) throws {}
    public init(time: UInt32, memory: UInt32, threads: UInt32, keyLength: Int) {
        (self.time, self.memory, self.threads, self.keyLength) = (time, memory, threads, keyLength)
    }

    public var fakeHash: [UInt8] {
        Array("$argon2id$v=19$m=47104,t=1,p=1$P2nzckEdTZ3bxCiBCkRTyA$xQL3Z32eo5jKl7u5tcIsnEKObYiyNZQQf5/4sAau6Pg".utf8)
    }

    struct Decoded {
        var time: UInt32, memory: UInt32, threads: UInt32
        var salt: [UInt8], key: [UInt8]
    }

    /// Caddy's `DecodeHash`, with libargon2's own limits checked here rather than at the first login.
    func decode(_ hashed: [UInt8]) throws -> Decoded {
        let parts = String(decoding: hashed, as: UTF8.self).split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0].isEmpty else { throw MalformedHash("invalid hash format") }
        guard parts[1] == "argon2id" else { throw MalformedHash("unsupported variant: \(parts[1])") }
        guard parts[2].hasPrefix("v="), let version = Int(parts[2].dropFirst(2)) else {
            throw MalformedHash("invalid version: \(parts[2])")
        }
        guard version == 19 else { throw MalformedHash("incompatible version: \(version)") }
        let params = parts[3].split(separator: ",", omittingEmptySubsequences: false)
        guard params.count == 3 else { throw MalformedHash("invalid parameters") }
        func number(_ s: Substring, _ prefix: String, _ what: String, max: UInt32) throws -> UInt32 {
            guard s.hasPrefix(prefix), let v = UInt32(s.dropFirst(prefix.count)), v <= max else {
                throw MalformedHash("invalid \(what) parameter: \(s)")
            }
            return v
        }
        let memory = try number(params[0], "m=", "memory", max: .max)
        let time = try number(params[1], "t=", "iterations", max: .max)
        let threads = try number(params[2], "p=", "parallelism", max: 255)
        guard let salt = Self.rawBase64(parts[4]) else { throw MalformedHash("decode salt: illegal base64 data") }
        guard let key = Self.rawBase64(parts[5]) else { throw MalformedHash("decode key: illegal base64 data") }
        guard time >= 1, threads >= 1, memory >= 8 * threads else {
            throw MalformedHash("parameters out of range: t and p at least 1, m at least 8×p KiB")
        }
        guard salt.count >= 8, key.count >= 4 else { throw MalformedHash("salt under 8 bytes or key under 4") }
        return Decoded(time: time, memory: memory, threads: threads, salt: salt, key: key)
    }

    /// Go's `base64.RawStdEncoding.Strict()`: no padding, and no stray bits in the last character.
    static func rawBase64(_ s: Substring) -> [UInt8]? {
        guard !s.contains("=") else { return nil }
        let padded = String(s) + String(repeating: "=", count: (4 - s.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: padded) else { return nil }
        let bytes = [UInt8](data)
        guard Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "") == s else { return nil }
        return bytes
    }

    public func check(hashed: [UInt8]) throws { _ = try decode(hashed) }

    public func compare(hashed: [UInt8], plaintext: [UInt8]) throws -> Bool {
        let d = try decode(hashed)
        let computed = try Self.key(plaintext, d.salt, d.time, d.memory, d.threads, d.key.count)
        return constantTimeEqual(computed, d.key)
    }

    static func key(
        _ password: [UInt8], _ salt: [UInt8], _ time: UInt32, _ memory: UInt32, _ threads: UInt32, _ length: Int
    ) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let status = c_usher_argon2id(
            password, password.count, salt, salt.count, time, memory, threads, &out, length)
        guard status == 0 else { throw MalformedHash("argon2id: \(String(cString: c_usher_argon2_error(status)))") }
        return out
    }

    public func hash(_ plaintext: [UInt8]) throws -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = rng.next() }
        let key = try Self.key(plaintext, salt, time, memory, threads, keyLength)
        func raw(_ b: [UInt8]) -> String { Data(b).base64EncodedString().replacingOccurrences(of: "=", with: "") }
        return "$argon2id$v=19$m=\(memory),t=\(time),p=\(threads)$\(raw(salt))$\(raw(key))"
    }
}
