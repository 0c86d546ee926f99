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

    /// Parses Go duration syntax plus `d` for days; `nil` when malformed.
    public init?(parsing input: String) {
        guard input.utf8.count <= 1024 else { return nil }
        var s = Substring(input)
        var negative = false
        if s.first == "-" || s.first == "+" {
            negative = s.first == "-"
            s = s.dropFirst()
        }
        if s == "0" {
            self.nanoseconds = 0
            return
        }
        guard !s.isEmpty else { return nil }
        var total: Double = 0
        while !s.isEmpty {
            var number = ""
            while let ch = s.first, ch.isASCII, ch.isNumber || ch == "." {
                number.append(ch)
                s = s.dropFirst()
            }
            guard !number.isEmpty, number != ".", let value = Double(number) else { return nil }
            var unit = ""
            while let ch = s.first, !(ch.isASCII && (ch.isNumber || ch == ".")) {
                unit.append(ch)
                s = s.dropFirst()
            }
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs", "μs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            case "d": scale = 86400e9
            default: return nil
            }
            total += value * scale
        }
        guard total < 9.2e18 else { return nil }
        self.nanoseconds = Int64(total.rounded()) * (negative ? -1 : 1)
    }

    public var description: String { formatGoDuration(seconds) }
    public static func < (a: ConfigDuration, b: ConfigDuration) -> Bool { a.nanoseconds < b.nanoseconds }
}
