#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Broken-down calendar time of a ``WallTime``.
public struct CalendarTime: Sendable {
    public var year, month, day, hour, minute, second, nanosecond, weekday, yearDay: Int
    /// Offset from UTC in seconds.
    public var utcOffset: Int
    public var zoneName: String

    /// Fields computed elsewhere (a zone other than UTC or the process's, a date before 1970).
    public init(
        year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, nanosecond: Int, weekday: Int,
        yearDay: Int, utcOffset: Int, zoneName: String
    ) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (
            year, month, day, hour, minute, second
        )
        (self.nanosecond, self.weekday, self.yearDay) = (nanosecond, weekday, yearDay)
        (self.utcOffset, self.zoneName) = (utcOffset, zoneName)
    }

    public init(_ t: WallTime, local: Bool = false) {
        var secs = time_t(t.seconds)
        var tmv = tm()
        if local { localtime_r(&secs, &tmv) } else { gmtime_r(&secs, &tmv) }
        year = Int(tmv.tm_year) + 1900
        month = Int(tmv.tm_mon) + 1
        day = Int(tmv.tm_mday)
        hour = Int(tmv.tm_hour)
        minute = Int(tmv.tm_min)
        second = Int(tmv.tm_sec)
        nanosecond = t.nanoseconds
        weekday = Int(tmv.tm_wday)
        yearDay = Int(tmv.tm_yday) + 1
        if local {
            utcOffset = Int(tmv.tm_gmtoff)
            zoneName = tmv.tm_zone.map { String(cString: $0) } ?? "UTC"
        } else {
            utcOffset = 0
            zoneName = "UTC"
        }
    }
}

/// Formats times with Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), which Caddy's config uses for
/// `time_format` and time placeholders.
public enum GoTimeLayout {
    public static let rfc3339 = "2006-01-02T15:04:05Z07:00"
    public static let rfc3339Nano = "2006-01-02T15:04:05.999999999Z07:00"
    public static let rfc1123 = "Mon, 02 Jan 2006 15:04:05 MST"
    public static let commonLog = "02/Jan/2006:15:04:05 -0700"
    public static let wall = "2006/01/02 15:04:05"
    public static let wallMilli = "2006/01/02 15:04:05.000"
    public static let wallNano = "2006/01/02 15:04:05.000000000"
    public static let iso8601Zap = "2006-01-02T15:04:05.000Z0700"

    static let monthsShort = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    public static let monthsLong = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
        "November", "December",
    ]
    static let daysShort = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    public static let daysLong = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

    /// Formats `t` with a Go layout, in UTC or local time.
    public static func format(_ t: WallTime, layout: String, local: Bool = false) -> String {
        format(CalendarTime(t, local: local), layout: layout)
    }

    public static func format(_ c: CalendarTime, layout: String) -> String {
        let l = Array(layout.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(l.count + 8)
        var i = 0
        func has(_ token: String) -> Bool {
            let t = Array(token.utf8)
            guard i + t.count <= l.count else { return false }
            for j in 0..<t.count where l[i + j] != t[j] { return false }
            return true
        }
        func pad(_ v: Int, _ width: Int, _ padChar: UInt8 = UInt8(ascii: "0")) {
            var s = Array(String(v).utf8)
            while s.count < width { s.insert(padChar, at: 0) }
            out.append(contentsOf: s)
        }
        func zone(colon: Bool, seconds: Bool, zForUTC: Bool) {
            if zForUTC && c.utcOffset == 0 {
                out.append(UInt8(ascii: "Z"))
                return
            }
            var off = c.utcOffset
            out.append(off < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+"))
            off = abs(off)
            pad(off / 3600, 2)
            if colon { out.append(UInt8(ascii: ":")) }
            pad((off / 60) % 60, 2)
            if seconds {
                if colon { out.append(UInt8(ascii: ":")) }
                pad(off % 60, 2)
            }
        }
        while i < l.count {
            if has("2006") {
                pad(c.year, 4); i += 4
            } else if has("January") {
                out += Array(monthsLong[c.month - 1].utf8); i += 7
            } else if has("Jan") {
                out += Array(monthsShort[c.month - 1].utf8); i += 3
            } else if has("Monday") {
                out += Array(daysLong[c.weekday].utf8); i += 6
            } else if has("Mon") {
                out += Array(daysShort[c.weekday].utf8); i += 3
            } else if has("MST") {
                out += Array(c.zoneName.utf8); i += 3
            } else if has("Z07:00:00") {
                zone(colon: true, seconds: true, zForUTC: true); i += 9
            } else if has("-07:00:00") {
                zone(colon: true, seconds: true, zForUTC: false); i += 9
            } else if has("Z07:00") {
                zone(colon: true, seconds: false, zForUTC: true); i += 6
            } else if has("-07:00") {
                zone(colon: true, seconds: false, zForUTC: false); i += 6
            } else if has("Z0700") {
                zone(colon: false, seconds: false, zForUTC: true); i += 5
            } else if has("-0700") {
                zone(colon: false, seconds: false, zForUTC: false); i += 5
            } else if has("Z07") {
                zone(colon: false, seconds: false, zForUTC: true); out.removeLast(2); i += 3
            } else if has("-07") {
                zone(colon: false, seconds: false, zForUTC: false); out.removeLast(2); i += 3
            } else if has("002") {
                pad(c.yearDay, 3); i += 3
            } else if has("01") {
                pad(c.month, 2); i += 2
            } else if has("02") {
                pad(c.day, 2); i += 2
            } else if has("_2") {
                pad(c.day, 2, UInt8(ascii: " ")); i += 2
            } else if has("06") {
                pad(c.year % 100, 2); i += 2
            } else if has("15") {
                pad(c.hour, 2); i += 2
            } else if has("03") {
                pad(c.hour % 12 == 0 ? 12 : c.hour % 12, 2); i += 2
            } else if has("04") {
                pad(c.minute, 2); i += 2
            } else if has("05") {
                pad(c.second, 2); i += 2
            } else if has("PM") {
                out += Array((c.hour >= 12 ? "PM" : "AM").utf8); i += 2
            } else if has("pm") {
                out += Array((c.hour >= 12 ? "pm" : "am").utf8); i += 2
            } else if (has(".0") || has(".9") || has(",0") || has(",9")), i + 1 < l.count {
                // Fractional seconds: .000 (fixed width) or .999 (trailing zeros trimmed).
                let digit = l[i + 1]
                var n = 0
                while i + 1 + n < l.count, l[i + 1 + n] == digit { n += 1 }
                if i + 1 + n < l.count, l[i + 1 + n] >= UInt8(ascii: "0"), l[i + 1 + n] <= UInt8(ascii: "9") {
                    out.append(l[i])
                    i += 1
                    continue
                }
                var frac = Array(String(c.nanosecond).utf8)
                while frac.count < 9 { frac.insert(UInt8(ascii: "0"), at: 0) }
                var digits = Array(frac.prefix(min(n, 9)))
                if digit == UInt8(ascii: "9") {
                    while let last = digits.last, last == UInt8(ascii: "0") { digits.removeLast() }
                    if !digits.isEmpty { out.append(l[i]); out += digits }
                } else {
                    out.append(l[i])
                    out += digits
                }
                i += 1 + n
            } else if has("1") {
                out += Array(String(c.month).utf8); i += 1
            } else if has("2") {
                out += Array(String(c.day).utf8); i += 1
            } else if has("3") {
                out += Array(String(c.hour % 12 == 0 ? 12 : c.hour % 12).utf8); i += 1
            } else if has("4") {
                out += Array(String(c.minute).utf8); i += 1
            } else if has("5") {
                out += Array(String(c.second).utf8); i += 1
            } else {
                out.append(l[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The IMF-fixdate form HTTP uses in `Date` and `Last-Modified` (`Mon, 02 Jan 2006 15:04:05 GMT`).
    public static func httpDate(_ t: WallTime) -> String {
        let c = CalendarTime(t)
        var s = daysShort[c.weekday] + ", "
        s += (c.day < 10 ? "0" : "") + String(c.day) + " " + monthsShort[c.month - 1] + " " + String(c.year) + " "
        s += (c.hour < 10 ? "0" : "") + String(c.hour) + ":" + (c.minute < 10 ? "0" : "") + String(c.minute) + ":"
        s += (c.second < 10 ? "0" : "") + String(c.second) + " GMT"
        return s
    }
}

extension WallTime {
    /// Parses an RFC 3339 timestamp (`2026-12-07T03:50:00.123456789Z`, `…+01:00`), the form Go writes `time.Time`
    /// in JSON and ACME servers use; `nil` when `text` is not one.
    public static func parseRFC3339(_ text: String) -> WallTime? {
        let b = Array(text.utf8)
        func num(_ at: Int, _ count: Int) -> Int? {
            guard at + count <= b.count else { return nil }
            var v = 0
            for i in at..<(at + count) {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard b.count >= 20, let year = num(0, 4), b[4] == 0x2D, let month = num(5, 2), b[7] == 0x2D,
            let day = num(8, 2), b[10] == 0x54 || b[10] == 0x74 || b[10] == 0x20, let hour = num(11, 2),
            b[13] == 0x3A, let minute = num(14, 2), b[16] == 0x3A, let second = num(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var nanos = 0
        if i < b.count && b[i] == 0x2E {
            i += 1
            var digits = 0
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 {
                if digits < 9 {
                    nanos = nanos * 10 + Int(b[i] - 0x30)
                    digits += 1
                }
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<9 { nanos *= 10 }
        }
        guard i < b.count else { return nil }
        var offset = 0
        if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D, let oh = num(i + 1, 2), i + 3 < b.count, b[i + 3] == 0x3A,
            let om = num(i + 4, 2)
        {
            offset = (oh * 3600 + om * 60) * (b[i] == 0x2D ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm), so no calendar or time zone state is involved.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
        return WallTime(seconds: seconds, nanoseconds: nanos)
    }

    /// RFC 3339 with nanoseconds in UTC, as Go's `time.Time` marshals to JSON.
    public var rfc3339Nano: String { GoTimeLayout.format(self, layout: GoTimeLayout.rfc3339Nano) }
}
