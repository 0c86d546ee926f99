import Foundation
import UsherCore

/// Caddy's `humanize`: `size` as go-humanize's `Bytes` ("83 MB"), `time[:layout]` as its `Time` ("3 days ago").
enum Humanize {
    static func format(_ kind: String, _ data: String) throws -> String {
        let parts = kind.split(separator: ":", omittingEmptySubsequences: false)
        switch parts[0] {
        case "size":
            guard let n = UInt64(data) else {
                throw TemplateRun.Failure(
                    "humanize: size cannot be parsed: strconv.ParseUint: parsing \(Go.quote(data)): invalid syntax")
            }
            return bytes(n)
        case "time":
            let layout = parts.count > 1 ? String(parts[1]) : "Mon, 02 Jan 2006 15:04:05 -0700"
            guard let date = GoTime.parse(data, layout: layout) else {
                throw TemplateRun.Failure(
                    "humanize: time cannot be parsed: parsing time \(Go.quote(data)) as \(Go.quote(layout)): cannot parse"
                )
            }
            return relative(date, now: Date())
        default:
            throw TemplateRun.Failure("no know function was given")
        }
    }

    /// SI units, one decimal below 10.
    static func bytes(_ n: UInt64) -> String {
        if n < 10 { return "\(n) B" }
        let sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
        let e = (log(Double(n)) / log(1000)).rounded(.down)
        let value = ((Double(n) / pow(1000, e)) * 10 + 0.5).rounded(.down) / 10
        let text = value < 10 ? String(format: "%.1f", value) : String(format: "%.0f", value)
        return "\(text) \(sizes[Int(e)])"
    }

    /// go-humanize's `RelTime` magnitudes.
    static func relative(_ then: Date, now: Date) -> String {
        var diff = now.timeIntervalSince(then)
        let label = diff < 0 ? "from now" : "ago"
        diff = abs(diff)
        let second = 1.0, minute = 60.0, hour = 3600.0, day = 86400.0, week = 7 * day, month = 30 * day
        let year = 12 * month
        let magnitudes: [(limit: Double, format: String, divisor: Double)] = [
            (second, "now", second), (2 * second, "1 second %s", 1), (minute, "%d seconds %s", second),
            (2 * minute, "1 minute %s", 1), (hour, "%d minutes %s", minute), (2 * hour, "1 hour %s", 1),
            (day, "%d hours %s", hour), (2 * day, "1 day %s", 1), (week, "%d days %s", day),
            (2 * week, "1 week %s", 1), (month, "%d weeks %s", week), (2 * month, "1 month %s", 1),
            (year, "%d months %s", month), (18 * month, "1 year %s", 1), (2 * year, "2 years %s", 1),
            (37 * year, "%d years %s", year), (.infinity, "a long while %s", 1),
        ]
        let m = magnitudes.first { diff < $0.limit }!
        if m.format == "now" { return "now" }
        var s = m.format.replacingOccurrences(of: "%s", with: label)
        if s.contains("%d") { s = s.replacingOccurrences(of: "%d", with: String(Int(diff / m.divisor))) }
        return s
    }
}

/// Go's time layouts (the reference time `Mon Jan 2 15:04:05 MST 2006`): parsing by the common elements here;
/// formatting through `GoTimeLayout`, the formatter of the config's time placeholders.
enum GoTime {
    static var months: [String] { GoTimeLayout.monthsLong }
    static var days: [String] { GoTimeLayout.daysLong }
    static let elements = [
        "January", "Monday", "2006", "-07:00", "-0700", "Z07:00", "Z0700", "Jan", "Mon", "MST", "01", "02", "_2",
        "15", "03", "04", "05", "06", "PM", "pm", ".000000000", ".999999999", ".000000", ".999999", ".000", ".999",
        "1", "2", "3", "4", "5",
    ]

    static func tokens(_ layout: String) -> [(isElement: Bool, text: String)] {
        var out: [(Bool, String)] = []
        var rest = Substring(layout)
        var literal = ""
        while !rest.isEmpty {
            if let e = elements.first(where: { rest.hasPrefix($0) }) {
                if !literal.isEmpty { out.append((false, literal)) }
                literal = ""
                out.append((true, e))
                rest = rest.dropFirst(e.count)
            } else {
                literal.append(rest.removeFirst())
            }
        }
        if !literal.isEmpty { out.append((false, literal)) }
        return out
    }

    /// Parses `value` by `layout`; a time without a zone is in `zone` (Go's `ParseInLocation`).
    static func parse(_ value: String, layout: String, zone: TimeZone = TimeZone(secondsFromGMT: 0)!) -> Date? {
        var year = 1, month = 1, day = 1, hour = 0, minute = 0, second = 0, nanosecond = 0
        var offset: Int?
        var pm: Bool?
        var s = Substring(value)
        func number(_ min: Int, _ max: Int) -> Int? {
            let digits = s.prefix(max).prefix { $0.isASCII && $0.isNumber }
            guard digits.count >= min else { return nil }
            s = s.dropFirst(digits.count)
            return Int(digits)
        }
        for (isElement, text) in tokens(layout) {
            guard isElement else {
                guard s.hasPrefix(text) else { return nil }
                s = s.dropFirst(text.count)
                continue
            }
            switch text {
            case "2006": guard let v = number(4, 4) else { return nil }; year = v
            case "06": guard let v = number(2, 2) else { return nil }; year = 2000 + v - (v >= 69 ? 100 : 0)
            case "01": guard let v = number(2, 2) else { return nil }; month = v
            case "1": guard let v = number(1, 2) else { return nil }; month = v
            case "January", "Jan":
                guard let i = months.firstIndex(where: { s.hasPrefix(text == "Jan" ? String($0.prefix(3)) : $0) })
                else { return nil }
                s = s.dropFirst(text == "Jan" ? 3 : months[i].count)
                month = i + 1
            case "Monday", "Mon":
                guard let d = days.first(where: { s.hasPrefix(text == "Mon" ? String($0.prefix(3)) : $0) }) else {
                    return nil
                }
                s = s.dropFirst(text == "Mon" ? 3 : d.count)
            case "02": guard let v = number(2, 2) else { return nil }; day = v
            case "_2":
                if s.hasPrefix(" ") { s = s.dropFirst() }
                guard let v = number(1, 2) else { return nil }; day = v
            case "2": guard let v = number(1, 2) else { return nil }; day = v
            case "15": guard let v = number(1, 2) else { return nil }; hour = v
            case "03", "3": guard let v = number(text == "3" ? 1 : 2, 2) else { return nil }; hour = v
            case "04", "4": guard let v = number(text == "4" ? 1 : 2, 2) else { return nil }; minute = v
            case "05", "5": guard let v = number(text == "5" ? 1 : 2, 2) else { return nil }; second = v
            case "PM", "pm":
                let p = s.prefix(2).uppercased()
                guard p == "AM" || p == "PM" else { return nil }
                pm = p == "PM"
                s = s.dropFirst(2)
            case "MST":
                let z = s.prefix { $0.isLetter }
                guard z.count >= 3 else { return nil }
                s = s.dropFirst(z.count)
                // Go: the local zone's offset if the abbreviation is the local zone's, else zero.
                let local = TimeZone.current
                offset = local.abbreviation() == String(z) ? local.secondsFromGMT() : 0
            case ".000", ".000000", ".000000000", ".999", ".999999", ".999999999":
                guard s.hasPrefix(".") else {
                    if text.hasPrefix(".0") { return nil }
                    continue
                }
                s = s.dropFirst()
                let digits = s.prefix { $0.isASCII && $0.isNumber }
                guard !digits.isEmpty, digits.count <= 9 else { return nil }
                nanosecond = Int(digits)! * Int(pow(10, Double(9 - digits.count)))
                s = s.dropFirst(digits.count)
            default:  // numeric zones
                if text.hasPrefix("Z"), s.hasPrefix("Z") {
                    s = s.dropFirst()
                    offset = 0
                    continue
                }
                guard let sign = s.first, sign == "+" || sign == "-" else { return nil }
                s = s.dropFirst()
                guard let h = number(2, 2) else { return nil }
                if text.contains(":") {
                    guard s.hasPrefix(":") else { return nil }
                    s = s.dropFirst()
                }
                guard let m = number(2, 2) else { return nil }
                offset = (sign == "-" ? -1 : 1) * (h * 3600 + m * 60)
            }
        }
        guard s.isEmpty else { return nil }
        if let pm { hour = hour % 12 + (pm ? 12 : 0) }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 60 else { return nil }
        // A zone in the text fixes the offset; otherwise the wall time is `zone`'s.
        return CivilTime.date(
            year: year, month: month, day: day, hour: hour, minute: minute, second: second, nanosecond: nanosecond,
            zone: offset.map { TimeZone(secondsFromGMT: $0) ?? zone } ?? zone)
    }

    /// Formats with the layout formatter the config's time placeholders use, from proleptic Gregorian fields.
    static func format(_ date: Date, layout: String, zone: TimeZone = TimeZone(secondsFromGMT: 0)!) -> String {
        let t = CivilTime(date, zone: zone)
        let c = CalendarTime(
            year: t.year, month: t.month, day: t.day, hour: t.hour, minute: t.minute, second: t.second,
            nanosecond: t.nanosecond, weekday: t.weekday, yearDay: t.yearDay, utcOffset: t.offset, zoneName: t.zoneName)
        return GoTimeLayout.format(c, layout: layout)
    }

    /// Go's `Time.String` (without the monotonic clock reading).
    static func string(_ date: Date, zone: TimeZone) -> String {
        format(date, layout: "2006-01-02 15:04:05.999999999 -0700 MST", zone: zone)
    }

}
