import Foundation

/// Sprig's date functions as Caddy's templates have them: `now`, `date`, `dateInZone`, `htmlDate`,
/// `htmlDateInZone`, `unixEpoch`, `toDate`, `dateModify`, `ago` and `duration`. Times are ``TimeObject``s;
/// an integer where a time is expected is Unix seconds, as Sprig takes it. The local zone is the process's (`TZ`).
enum SprigDates {
    /// A time argument: a time, or Unix seconds.
    static func time(_ v: TemplateValue) -> TimeObject {
        switch v {
        case .object(let o as TimeObject): return o
        case .int(let n): return TimeObject(date: Date(timeIntervalSince1970: TimeInterval(n)), zone: .current)
        default: return TimeObject(date: Date(), zone: .current)
        }
    }

    static func zone(_ name: String) -> TimeZone {
        if name == "UTC" || name.isEmpty { return TimeZone(identifier: "UTC")! }
        if name == "Local" { return .current }
        return TimeZone(identifier: name) ?? TimeZone(identifier: "UTC")!
    }

    /// Go's zero time, which Sprig's `toDate` returns for text it cannot parse.
    static let zeroTime = TimeObject(
        date: Date(timeIntervalSince1970: -62_135_596_800), zone: TimeZone(identifier: "UTC")!)

    /// Go's `time.ParseDuration`: `1.5h`, `-30m`, `1h2m3.5s`, `250ms`.
    static func parseDuration(_ s: String) -> Double? {
        var rest = Substring(s)
        var negative = false
        if rest.hasPrefix("-") || rest.hasPrefix("+") {
            negative = rest.hasPrefix("-")
            rest = rest.dropFirst()
        }
        if rest == "0" { return 0 }
        guard !rest.isEmpty else { return nil }
        let units: [(String, Double)] = [
            ("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("μs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600),
        ]
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let unit = units.first(where: { rest.hasPrefix($0.0) && !(rest.hasPrefix("ms") && $0.0 == "m") })
            else { return nil }
            rest = rest.dropFirst(unit.0.count)
            total += value * unit.1
        }
        return negative ? -total : total
    }

    /// Go's `Duration.String` for whole seconds: `1h2m5s`, `4m0s`, `0s`.
    static func durationString(seconds: Int) -> String {
        if seconds == 0 { return "0s" }
        let sign = seconds < 0 ? "-" : ""
        let n = seconds.magnitude
        let h = n / 3600, m = n % 3600 / 60, s = n % 60
        if h > 0 { return "\(sign)\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(sign)\(m)m\(s)s" }
        return "\(sign)\(s)s"
    }

    static let all: [String: TemplateFunction] = {
        var f: [String: TemplateFunction] = [:]
        f["now"] = { _ in .object(TimeObject(date: Date(), zone: .current)) }
        f["date"] = { a in
            try SprigFunctions.args(a, 2, "date")
            let t = time(a[1])
            return .string(GoTime.format(t.date, layout: SprigFunctions.str(a[0]), zone: .current))
        }
        f["dateInZone"] = { a in
            try SprigFunctions.args(a, 3, "dateInZone")
            return .string(
                GoTime.format(time(a[1]).date, layout: SprigFunctions.str(a[0]), zone: zone(SprigFunctions.str(a[2]))))
        }
        f["htmlDate"] = { a in
            try SprigFunctions.args(a, 1, "htmlDate")
            return .string(GoTime.format(time(a[0]).date, layout: "2006-01-02", zone: .current))
        }
        f["htmlDateInZone"] = { a in
            try SprigFunctions.args(a, 2, "htmlDateInZone")
            return .string(GoTime.format(time(a[0]).date, layout: "2006-01-02", zone: zone(SprigFunctions.str(a[1]))))
        }
        f["unixEpoch"] = { a in
            try SprigFunctions.args(a, 1, "unixEpoch")
            return .string(String(Int(time(a[0]).date.timeIntervalSince1970.rounded(.down))))
        }
        f["toDate"] = { a in
            try SprigFunctions.args(a, 2, "toDate")
            guard let d = GoTime.parse(SprigFunctions.str(a[1]), layout: SprigFunctions.str(a[0]), zone: .current)
            else { return .object(zeroTime) }
            return .object(TimeObject(date: d, zone: .current))
        }
        f["dateModify"] = { a in
            try SprigFunctions.args(a, 2, "dateModify")
            let t = time(a[1])
            guard let seconds = parseDuration(SprigFunctions.str(a[0])) else { return .object(t) }
            return .object(TimeObject(date: t.date.addingTimeInterval(seconds), zone: t.zone))
        }
        f["ago"] = { a in
            try SprigFunctions.args(a, 1, "ago")
            let elapsed = Date().timeIntervalSince(time(a[0]).date)
            return .string(durationString(seconds: Int(elapsed.rounded())))
        }
        f["duration"] = { a in
            try SprigFunctions.args(a, 1, "duration")
            let seconds: Int
            switch a[0] {
            case .string(let s): seconds = Int(s) ?? 0
            case .int(let n): seconds = n
            default: seconds = 0
            }
            return .string(durationString(seconds: seconds))
        }
        return f
    }()
}
