#if canImport(Glibc)
import Glibc
#endif

/// Supplies placeholder values by key (`http.request.host`, `env.HOME`, ...).
public protocol PlaceholderProvider {
    /// The value for `key`, or `nil` when this provider does not know the key.
    func placeholderValue(_ key: String) -> String?
}

/// Replaces `{placeholders}` in strings, as Caddy's replacer does: `\{` and `\}` are literal braces, unknown
/// placeholders are kept or emptied as the caller asks, and values come from explicit sets, then providers, then
/// the global ones (`env.*`, `system.*`, `time.*`, `file.*`).
///
/// A replacer belongs to one request (or one config operation) and is not shared across tasks.
public final class Replacer {
    private var values: [String: String] = [:]
    private var providers: [any PlaceholderProvider] = []
    private let includeGlobals: Bool

    /// A replacer; `includeGlobals: false` makes an empty one that knows only what is set or provided.
    public init(includeGlobals: Bool = true) {
        self.includeGlobals = includeGlobals
    }

    /// Adds a provider consulted after explicit values and earlier providers.
    public func add(_ provider: any PlaceholderProvider) { providers.append(provider) }

    /// Sets a value, overriding providers.
    public func set(_ key: String, _ value: String) { values[key] = value }

    /// Removes an explicit value.
    public func delete(_ key: String) { values[key] = nil }

    /// The value of `key`, or `nil` when no source knows it.
    public func get(_ key: String) -> String? {
        if let v = values[key] { return v }
        for p in providers {
            if let v = p.placeholderValue(key) { return v }
        }
        return includeGlobals ? GlobalPlaceholders.value(key) : nil
    }

    /// Replaces known placeholders and leaves unknown ones as written.
    public func replaceKnown(_ input: String, empty: String = "") -> String {
        (try? replace(input, empty: empty, unknownAsEmpty: false, errorOnEmpty: false, errorOnUnknown: false)) ?? input
    }

    /// Replaces every placeholder; unknown ones become `empty`.
    public func replaceAll(_ input: String, empty: String = "") -> String {
        (try? replace(input, empty: empty, unknownAsEmpty: true, errorOnEmpty: false, errorOnUnknown: false)) ?? input
    }

    /// Replaces every placeholder, failing on unknown ones (and, if asked, on empty values).
    public func replaceOrError(_ input: String, errorOnEmpty: Bool = false) throws -> String {
        try replace(input, empty: "", unknownAsEmpty: false, errorOnEmpty: errorOnEmpty, errorOnUnknown: true)
    }

    /// Replaces placeholders, passing each found value through `transform`.
    public func replace(
        _ input: String,
        empty: String,
        unknownAsEmpty: Bool,
        errorOnEmpty: Bool,
        errorOnUnknown: Bool,
        transform: ((String, String?) throws -> String?)? = nil
    ) throws -> String {
        let bytes = Array(input.utf8)
        guard bytes.contains(UInt8(ascii: "{")) || bytes.contains(UInt8(ascii: "}")) else { return input }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var lastWrite = 0
        var unclosed = 0
        let open = UInt8(ascii: "{"), close = UInt8(ascii: "}"), escape = UInt8(ascii: "\\")
        func find(_ b: UInt8, from: Int) -> Int? {
            var j = from
            while j < bytes.count {
                if bytes[j] == b { return j }
                j += 1
            }
            return nil
        }
        var i = 0
        scan: while i < bytes.count {
            if i > 0 && bytes[i - 1] == escape && (bytes[i] == close || bytes[i] == open) {
                out.append(contentsOf: bytes[lastWrite..<(i - 1)])
                lastWrite = i
                i += 1
                continue
            }
            if bytes[i] != open {
                i += 1
                continue
            }
            if unclosed > 100 { throw PlaceholderError("too many unclosed placeholders") }
            guard var end = find(close, from: i) else {
                unclosed += 1
                i += 1
                continue
            }
            while end > 0 && end < bytes.count - 1 && bytes[end - 1] == escape {
                guard let next = find(close, from: end + 1) else {
                    unclosed += 1
                    i += 1
                    continue scan
                }
                end = next
            }
            out.append(contentsOf: bytes[lastWrite..<i])
            let key = String(decoding: bytes[(i + 1)..<end], as: UTF8.self)
            var value = get(key)
            if value == nil {
                if errorOnUnknown { throw PlaceholderError("unrecognized placeholder {\(key)}") }
                if !unknownAsEmpty {
                    lastWrite = i
                    i += 1
                    continue
                }
            }
            if let transform { value = try transform(key, value) }
            if let v = value, !v.isEmpty {
                out.append(contentsOf: v.utf8)
            } else {
                if errorOnEmpty { throw PlaceholderError("evaluated placeholder {\(key)} is empty") }
                out.append(contentsOf: empty.utf8)
            }
            i = end + 1
            lastWrite = i
        }
        out.append(contentsOf: bytes[lastWrite...])
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `input` holds anything a replacer would act on; strings without braces can skip replacement.
    public static func mayContainPlaceholders(_ input: String) -> Bool {
        input.utf8.contains(UInt8(ascii: "{")) || input.utf8.contains(UInt8(ascii: "}"))
    }
}

/// A placeholder that could not be replaced.
public struct PlaceholderError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Placeholders available everywhere: `env.*`, `system.*`, `time.now*`, `file.*`.
public enum GlobalPlaceholders {
    public static func value(_ key: String) -> String? {
        if key.hasPrefix("env.") {
            return getenv(String(key.dropFirst(4))).map { String(cString: $0) } ?? ""
        }
        if key.hasPrefix("file.") {
            return readSmallFile(String(key.dropFirst(5)))
        }
        switch key {
        case "system.hostname":
            var buf = [CChar](repeating: 0, count: 256)
            gethostname(&buf, buf.count - 1)
            return cString(buf)
        case "system.slash": return "/"
        case "system.os": return "linux"
        case "system.arch":
            #if arch(x86_64)
            return "amd64"
            #elseif arch(arm64)
            return "arm64"
            #else
            return "unknown"
            #endif
        case "system.wd":
            var buf = [CChar](repeating: 0, count: 4096)
            return getcwd(&buf, buf.count) != nil ? cString(buf) : ""
        case "time.now":
            return GoTimeLayout.format(.now(), layout: "2006-01-02 15:04:05.999999999 -0700 MST", local: true)
        case "time.now.http": return GoTimeLayout.httpDate(.now())
        case "time.now.common_log": return GoTimeLayout.format(.now(), layout: GoTimeLayout.commonLog, local: true)
        case "time.now.year": return String(CalendarTime(.now(), local: true).year)
        case "time.now.unix": return String(WallTime.now().seconds)
        case "time.now.unix_ms":
            let t = WallTime.now()
            return String(t.seconds * 1000 + t.nanoseconds / 1_000_000)
        default:
            return nil
        }
    }

    /// A file's contents for `{file.*}` (up to 1 MiB, one trailing newline trimmed); empty if unreadable.
    static func readSmallFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < 1024 * 1024 {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        if out.count > 1024 * 1024 { return "" }
        if out.last == 0x0A { out.removeLast() }
        if out.last == 0x0D { out.removeLast() }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A NUL-terminated C string in a buffer, as a Swift string.
func cString(_ buf: [CChar]) -> String {
    let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
