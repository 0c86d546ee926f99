/// Where certificates, keys, ACME accounts, OCSP staples and locks are kept: certmagic's storage protocol, which
/// Caddy's `caddy.storage.*` modules provide. Keys are `/`-separated paths (`certificates/local/a.example/a.example.crt`);
/// a key that other keys extend (`certificates/local`) is a directory-like prefix, not a value.
///
/// Implementations must make ``store(_:_:)`` atomic (a reader sees the old value or the new one, never a part) and
/// make locks work across every process that shares the storage, which is what lets a fleet share certificates.
public protocol Storage: Sendable, CustomStringConvertible {
    /// Writes `value` at `key`, replacing what was there.
    func store(_ key: String, _ value: [UInt8]) async throws
    /// The value at `key`; throws ``StorageError/notFound(_:)`` when there is none.
    func load(_ key: String) async throws -> [UInt8]
    /// Removes `key` and, if it is a prefix, every key under it. Removing what does not exist is not an error.
    func delete(_ key: String) async throws
    /// Whether `key` holds a value or prefixes others.
    func exists(_ key: String) async -> Bool
    /// The keys directly under `prefix` (or all keys under it, when `recursive`), as full keys; throws
    /// ``StorageError/notFound(_:)`` when nothing is under `prefix`.
    func list(_ prefix: String, recursive: Bool) async throws -> [String]
    /// What is known about `key`.
    func stat(_ key: String) async throws -> StorageKeyInfo
    /// Takes the lock `name`, waiting while another holder (in any process sharing the storage) has it. A holder
    /// that dies without unlocking loses the lock once it goes stale. Throws `CancellationError` if the waiting
    /// task is cancelled.
    func lock(_ name: String) async throws
    /// Releases the lock `name` taken by ``lock(_:)``.
    func unlock(_ name: String) async throws
}

extension Storage {
    /// The value at `key` as UTF-8 text.
    public func loadText(_ key: String) async throws -> String { String(decoding: try await load(key), as: UTF8.self) }

    /// Stores UTF-8 text at `key`.
    public func store(_ key: String, text: String) async throws { try await store(key, Array(text.utf8)) }

    /// Runs `body` holding the lock `name`, releasing it however `body` ends. Storage that fences writes by lock
    /// (PostgreSQL) sees the lock in ``StorageLockScope/held`` while `body` runs.
    public func withLock<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        try await lock(name)
        return try await withHeldLock(name, body)
    }

    /// Runs `body` under the lock `name`, which the caller already took (``lock(_:)`` or
    /// ``TryLockingStorage/tryLock(_:)``), and releases it however `body` ends.
    public func withHeldLock<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        do {
            let result = try await StorageLockScope.$held.withValue(StorageLockScope.held + [name]) {
                try await body()
            }
            try? await unlock(name)
            return result
        } catch {
            try? await unlock(name)
            throw error
        }
    }
}

/// Storage that can try a lock without waiting (certmagic's `TryLocker`): callers that have other work to do
/// while another process holds a lock use it.
public protocol TryLockingStorage: Storage {
    /// Takes the lock `name` if no one holds it and says whether it did; never waits for a holder.
    func tryLock(_ name: String) async throws -> Bool
}

/// The storage locks the current task took through ``Storage/withLock(_:_:)``, innermost last: what lets a
/// storage refuse a write from a holder whose lock has lapsed and passed to another process (fencing).
public enum StorageLockScope {
    @TaskLocal public static var held: [String] = []
}

/// What ``Storage/stat(_:)`` reports about a key.
public struct StorageKeyInfo: Sendable, Equatable {
    public var key: String
    /// Last modification.
    public var modified: WallTime
    /// Size of the value in bytes (0 for a prefix).
    public var size: Int64
    /// `false` for a prefix of other keys (a directory).
    public var isTerminal: Bool

    public init(key: String, modified: WallTime, size: Int64, isTerminal: Bool) {
        self.key = key
        self.modified = modified
        self.size = size
        self.isTerminal = isTerminal
    }
}

/// Errors storage reports in a form callers can act on.
public enum StorageError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Nothing is stored at the key.
    case notFound(String)
    /// The backend failed (I/O, network); the text says what and where.
    case failed(String)
    /// A write was refused because the lock it was made under lapsed and another process holds it now (fencing):
    /// that process's result is in storage, so the caller should re-read rather than retry later.
    case lockLost(String)

    public var description: String {
        switch self {
        case .notFound(let key): return "\(key): not found in storage"
        case .failed(let why), .lockLost(let why): return why
        }
    }
}

/// A module under `caddy.storage` (the top-level `storage` member and per-policy `storage`): it makes the storage
/// it configures, as Caddy's `StorageConverter` does.
public protocol StorageModule: Module {
    /// The storage this module configures, made once per config load.
    func makeStorage(_ context: ProvisionContext) throws -> any Storage
}

public enum StorageModules: ModuleNamespace {
    public static let prefix = "caddy.storage"
    public static let inlineKey: String? = "module"
    public typealias Instance = any StorageModule
}

/// Storage keys in certmagic's layout, so a data directory can move between Caddy and Usher.
public enum StorageKeys {
    /// `str` made safe as one key component, as certmagic's `KeyBuilder.Safe` does: lower case, trimmed, `*`
    /// spelled `wildcard_`, `+` spelled `_plus_`, `:` spelled `-`, `..` removed, then anything but letters, digits,
    /// `_`, `@`, `.` and `-` dropped.
    public static func safe(_ str: String) -> String {
        var s = str.lowercased()
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s.removeLast() }
        var out = ""
        var chars = Array(s)
        var i = 0
        // Replacements apply left to right, as Go's strings.Replacer does, and are not rescanned.
        var replaced: [Character] = []
        while i < chars.count {
            let c = chars[i]
            if c == "." && i + 1 < chars.count && chars[i + 1] == "." {
                i += 2
                continue
            }
            switch c {
            case " ": replaced.append("_")
            case "+": replaced.append(contentsOf: "_plus_")
            case "*": replaced.append(contentsOf: "wildcard_")
            case ":": replaced.append("-")
            default: replaced.append(c)
            }
            i += 1
        }
        chars = replaced
        for c in chars {
            // Go's \w is ASCII only.
            if let a = c.asciiValue,
                (a >= 0x30 && a <= 0x39) || (a >= 0x41 && a <= 0x5A) || (a >= 0x61 && a <= 0x7A) || a == 0x5F
                    || a == 0x40 || a == 0x2E || a == 0x2D
            {
                out.append(c)
            }
        }
        return out
    }

    /// `certificates/<issuer>`.
    public static func certificatesPrefix(issuerKey: String) -> String { "certificates/" + safe(issuerKey) }

    /// `certificates/<issuer>/<name>`.
    public static func sitePrefix(issuerKey: String, name: String) -> String {
        certificatesPrefix(issuerKey: issuerKey) + "/" + safe(name)
    }

    /// `certificates/<issuer>/<name>/<name>.crt`: the PEM chain.
    public static func siteCertificate(issuerKey: String, name: String) -> String {
        sitePrefix(issuerKey: issuerKey, name: name) + "/" + safe(name) + ".crt"
    }

    /// `certificates/<issuer>/<name>/<name>.key`: the PEM private key.
    public static func sitePrivateKey(issuerKey: String, name: String) -> String {
        sitePrefix(issuerKey: issuerKey, name: name) + "/" + safe(name) + ".key"
    }

    /// `certificates/<issuer>/<name>/<name>.json`: the certificate's metadata (`sans`, `issuer_data`).
    public static func siteMetadata(issuerKey: String, name: String) -> String {
        sitePrefix(issuerKey: issuerKey, name: name) + "/" + safe(name) + ".json"
    }

    /// `ocsp/<first name>-<hash>`: a stapled OCSP response.
    public static func ocspStaple(firstName: String?, hash: String) -> String {
        "ocsp/" + (firstName.map { safe($0) + "-" } ?? "") + hash
    }

    /// The lock name certmagic takes while obtaining or renewing a certificate for `name`.
    public static func issueLock(_ name: String) -> String { "issue_cert_" + name }
}
