/// A duration in config: an integer of nanoseconds or a string in Go's duration syntax with Caddy's `d` (days)
/// unit, e.g. `"1m30s"`, `"1.5h"`, `"2d"`, `"250ms"`.
public struct ConfigDuration: Decodable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public init(seconds: Double) { self.nanoseconds = Int64(seconds * 1e9) }

    public static let zero = ConfigDuration(nanoseconds: 0)

    public var duration: Duration { .nanoseconds(nanoseconds) }
    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var isZero: Bool { nanoseconds == 0 }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int64.self) {
            nanoseconds = n
            return
        }
        let s: String
        do {
            s = try c.decode(String.self)
        } catch {
            throw decoder.configError("expected a duration (a string such as \"30s\" or integer nanoseconds)")
        }
        guard let d = ConfigDuration(parsing: s) else {
            throw decoder.configError("invalid duration \"\(s)\"")
        }
        self = d
    }

    /// Parses Go duration syntax plus `d` for days (Caddy's `ParseDuration`, exactly); `nil` when malformed.
    public init?(parsing input: String) {
        guard let n = try? Go.caddyDuration(input) else { return nil }
        self.nanoseconds = n
    }

    public var description: String { formatGoDuration(seconds) }
    public static func < (a: ConfigDuration, b: ConfigDuration) -> Bool { a.nanoseconds < b.nanoseconds }
}
