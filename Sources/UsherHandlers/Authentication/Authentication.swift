import Foundation
import Logging
import NIOHTTP1
import NIOPosix
import Synchronization
public import UsherCore
public import UsherHTTP

/// Who a request authenticated as.
public struct AuthenticatedUser: Sendable {
    /// `{http.auth.user.id}`.
    public var id: String
    /// `{http.auth.user.<key>}`.
    public var metadata: [String: String] = [:]

    public init(id: String, metadata: [String: String] = [:]) {
        self.id = id
        self.metadata = metadata
    }
}

/// An authentication provider (`http.authentication.providers.*`). It may set response headers on `writer`
/// (a challenge such as `WWW-Authenticate`) when it does not authenticate the request.
public protocol Authenticator: Module {
    /// The user, or nil when the request does not authenticate.
    func authenticate(_ request: Request, _ writer: any ResponseWriter) async throws -> AuthenticatedUser?
}

/// The `http.authentication.providers` namespace, keyed by provider name.
public enum AuthenticationProviders: ModuleNamespace {
    public static let prefix = "http.authentication.providers"
    public static let inlineKey: String? = nil
    public typealias Instance = any Authenticator
}

/// `http.handlers.authentication`: lets a request on when any provider authenticates it, setting
/// `{http.auth.user.id}` (and the user's metadata); otherwise fails with 401 and the providers' challenges.
public struct AuthenticationHandler: MiddlewareHandler, Provisioner {
    public static let moduleID: ModuleID = "http.handlers.authentication"
    /// `providers`: the providers, by name, tried in order.
    public var providers: LoadedMap<AuthenticationProviders>
    private var logger = Logger(label: "http.handlers.authentication")

    enum CodingKeys: String, CodingKey { case providers }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        providers =
            try c.decodeIfPresent(LoadedMap<AuthenticationProviders>.self, forKey: .providers)
            ?? LoadedMap(entries: [])
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
        try await providers.provision(context)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        let repl = request.replacer
        for entry in providers.entries {
            let user: AuthenticatedUser?
            do {
                user = try await entry.module.authenticate(request, writer)
            } catch {
                logger.error(
                    "auth provider returned error",
                    metadata: ["provider": "\(entry.moduleID.name)", "error": "\(error)"])
                repl.set("http.auth.\(entry.moduleID.name).error", "\(error)")
                continue
            }
            guard let user else { continue }
            repl.set("http.auth.user.id", user.id)
            for (k, v) in user.metadata { repl.set("http.auth.user.\(k)", v) }
            return try await next.serve(request, writer)
        }
        throw HandlerError(status: 401, HTTPErrorMessage("not authenticated"))
    }
}

/// `http.authentication.providers.http_basic`: HTTP Basic authentication (RFC 7617) against hashed passwords.
public struct HTTPBasicAuth: Authenticator, Provisioner {
    public static let moduleID: ModuleID = "http.authentication.providers.http_basic"

    /// One `accounts` entry.
    public struct Account: Decodable, Sendable {
        /// `username`.
        public var username: String
        /// `password`: the hash, as `usher hash-password` prints it, or that string base64-encoded (older Caddy
        /// configs).
        public var password: String
    }

    /// `hash`: the algorithm of every account's hash. Default: `{"algorithm": "bcrypt"}`.
    public var hash: Loaded<PasswordHashes>?
    /// `accounts`: the users.
    public var accountList: [Account]
    /// `realm`: the realm in the challenge. Default: `restricted`.
    public var realm: String
    /// `hash_cache`: when present (`{}`), remember the result of each (hash, password) pair checked, so a client
    /// sending the same credentials again costs a lookup instead of a hash; at most 1,000 pairs.
    public var hashCache: Bool

    private var accounts: [String: [UInt8]] = [:]
    private var algorithm: (any PasswordHash)?
    private var cache: VerificationCache?

    enum CodingKeys: String, CodingKey { case hash, accounts, realm, hashCache = "hash_cache" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hash = try c.decodeIfPresent(Loaded<PasswordHashes>.self, forKey: .hash)
        accountList = try c.decodeIfPresent([Account].self, forKey: .accounts) ?? []
        realm = try c.decodeIfPresent(String.self, forKey: .realm) ?? ""
        hashCache = try c.decodeIfPresent(JSONValue.self, forKey: .hashCache).map { $0 != .null } ?? false
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        if hash == nil {
            hash = Loaded(BcryptHash(cost: 14), id: BcryptHash.moduleID, configPath: "hash")
        }
        try await hash!.provision(context)
        let algorithm = hash!.module
        self.algorithm = algorithm
        let repl = Replacer(includeGlobals: true)
        for (i, account) in accountList.enumerated() {
            let username = repl.replaceAll(account.username)
            let password = repl.replaceAll(account.password)
            guard !username.isEmpty, !password.isEmpty else {
                throw ConfigError(path: "accounts/\(i)", "account \(i): username and password are required")
            }
            guard accounts[username] == nil else {
                throw ConfigError(path: "accounts/\(i)", "account \(i): username is not unique: \(username)")
            }
            var hashed = Array(password.utf8)
            if !password.hasPrefix("$") {
                guard let data = Data(base64Encoded: password) else {
                    throw ConfigError(path: "accounts/\(i)/password", "account \(username): base64-decoding password")
                }
                hashed = [UInt8](data)
            }
            do {
                try algorithm.check(hashed: hashed)
            } catch {
                throw ConfigError(
                    path: "accounts/\(i)/password",
                    "account \(username): not a valid \(hash!.moduleID.name) hash: \(error)")
            }
            accounts[username] = hashed
        }
        accountList = []
        if hashCache { cache = VerificationCache() }
    }

    public func authenticate(_ request: Request, _ writer: any ResponseWriter) async throws -> AuthenticatedUser? {
        guard let (username, password) = Self.credentials(request.headers.first(name: "authorization")) else {
            challenge(writer)
            return nil
        }
        let known = accounts[username]
        // An unknown user costs the same hash as a known one.
        let same = try await verify(known ?? algorithm!.fakeHash, password)
        guard same, known != nil else {
            challenge(writer)
            return nil
        }
        return AuthenticatedUser(id: username)
    }

    private func challenge(_ writer: any ResponseWriter) {
        writer.headers.replaceOrAdd(
            name: "Www-Authenticate", value: "Basic realm=\"\(realm.isEmpty ? "restricted" : realm)\"")
    }

    private func verify(_ hashed: [UInt8], _ password: [UInt8]) async throws -> Bool {
        let algorithm = self.algorithm!
        guard let cache else {
            return try await NIOThreadPool.singleton.runIfActive {
                try algorithm.compare(hashed: hashed, plaintext: password)
            }
        }
        let key = VerificationCache.Key(hashed, password)
        // A known pair costs a lookup: no task, no closure, no thread hop.
        if let known = cache.known(key) { return known }
        return try await cache.result(for: key) {
            try await NIOThreadPool.singleton.runIfActive { try algorithm.compare(hashed: hashed, plaintext: password) }
        }
    }

    /// The user name and password of an `Authorization: Basic` field (Go's `Request.BasicAuth`: the scheme in any
    /// case, standard padded base 64, split at the first colon).
    static func credentials(_ field: String?) -> (String, [UInt8])? {
        guard var field else { return nil }
        return field.withUTF8 { bytes -> (String, [UInt8])? in
            guard bytes.count > 6 else { return nil }
            let scheme: [UInt8] = Array("basic ".utf8)
            for i in 0..<6 where (bytes[i] | (i < 5 ? 0x20 : 0)) != scheme[i] { return nil }
            guard let decoded = Base64.decode(UnsafeBufferPointer(rebasing: bytes[6...])),
                let colon = decoded.firstIndex(of: UInt8(ascii: ":"))
            else { return nil }
            return (String(decoding: decoded[..<colon], as: UTF8.self), Array(decoded[(colon + 1)...]))
        }
    }
}

/// Standard base 64 with padding (RFC 4648 §4), strict as Go's `StdEncoding`.
enum Base64 {
    private static let values: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            t[Int(c)] = UInt8(i)
        }
        return t
    }()

    static func decode(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard input.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(input.count / 4 * 3)
        var i = 0
        while i < input.count {
            let last = i + 4 == input.count
            let a = values[Int(input[i])], b = values[Int(input[i + 1])]
            let c3 = input[i + 2], c4 = input[i + 3]
            guard a != 0xFF, b != 0xFF else { return nil }
            out.append(a << 2 | b >> 4)
            if last && c3 == UInt8(ascii: "=") {
                guard c4 == UInt8(ascii: "="), b & 0x0F == 0 else { return nil }
                break
            }
            let c = values[Int(c3)]
            guard c != 0xFF else { return nil }
            out.append(b << 4 | c >> 2)
            if last && c4 == UInt8(ascii: "=") {
                guard c & 0x03 == 0 else { return nil }
                break
            }
            let d = values[Int(c4)]
            guard d != 0xFF else { return nil }
            out.append(c << 6 | d)
            i += 4
        }
        return out
    }
}

/// Results of slow hash comparisons by (hash, password), computed once however many requests ask at the same time;
/// at most 1,000 kept, a tenth dropped at random when full (Caddy's `Cache`).
final class VerificationCache: Sendable {
    /// A (hash, password) pair, hashed in one pass over its bytes.
    struct Key: Hashable, Sendable {
        let bytes: [UInt8]
        let split: Int

        init(_ hashed: [UInt8], _ password: [UInt8]) {
            bytes = hashed + password
            split = hashed.count
        }

        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    private struct State {
        var results: [Key: Bool] = [:]
        var inFlight: [Key: Task<Bool, any Error>] = [:]
    }
    private let state = Mutex(State())

    /// The result for a pair already checked.
    func known(_ key: Key) -> Bool? { state.withLock { $0.results[key] } }

    func result(for key: Key, compute: @escaping @Sendable () async throws -> Bool) async throws -> Bool {
        enum Found {
            case known(Bool)
            case running(Task<Bool, any Error>)
        }
        let found: Found = state.withLock { s in
            if let known = s.results[key] { return .known(known) }
            if let running = s.inFlight[key] { return .running(running) }
            let t = Task { try await compute() }
            s.inFlight[key] = t
            return .running(t)
        }
        guard case .running(let task) = found else {
            if case .known(let same) = found { return same }
            return false
        }
        do {
            let same = try await task.value
            state.withLock { s in
                s.inFlight[key] = nil
                if s.results[key] == nil {
                    if s.results.count >= 1000 {
                        for _ in 0...max(s.results.count / 10, 1) {
                            if let k = s.results.keys.randomElement() { s.results[k] = nil }
                        }
                    }
                    s.results[key] = same
                }
            }
            return same
        } catch {
            state.withLock { $0.inFlight[key] = nil }
            throw error
        }
    }
}
