import Foundation
import Synchronization

/// Wall-clock fields of an instant in a zone, on the proleptic Gregorian calendar as Go's `time` has it (Foundation's
/// Gregorian calendar switches to Julian before 1582, which would print Go's zero time as `0001-01-03`).
struct CivilTime {
    var year: Int
    var month: Int
    var day: Int
    var hour: Int
    var minute: Int
    var second: Int
    var nanosecond: Int
    /// 0 = Sunday.
    var weekday: Int
    /// 1 = January 1st.
    var yearDay: Int
    /// Seconds east of UTC, and the zone's abbreviation, at that instant.
    var offset: Int
    var zoneName: String

    init(_ date: Date, zone: TimeZone) {
        let t = date.timeIntervalSince1970
        var whole = t.rounded(.down)
        var nanos = Int(((t - whole) * 1e9).rounded())
        if nanos >= 1_000_000_000 {
            nanos -= 1_000_000_000
            whole += 1
        }
        let (offset, name) = ZoneInfo.lookup(zone, at: Int(whole))
        self.offset = offset
        self.zoneName = name
        let local = Int(whole) + offset
        let days = local >= 0 ? local / 86400 : (local - 86399) / 86400
        let secs = local - days * 86400
        (year, month, day) = Self.civil(fromDays: days)
        hour = secs / 3600
        minute = secs % 3600 / 60
        second = secs % 60
        nanosecond = nanos
        weekday = ((days % 7) + 7 + 4) % 7  // 1970-01-01 was a Thursday
        yearDay = days - Self.days(fromCivil: year, 1, 1) + 1
    }

    /// Howard Hinnant's `civil_from_days`.
    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    /// Howard Hinnant's `days_from_civil`.
    static func days(fromCivil y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The instant of a wall-clock time in a zone (the zone's offset at about that time).
    static func date(
        year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, nanosecond: Int, zone: TimeZone
    ) -> Date {
        let local = days(fromCivil: year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        let offset = ZoneInfo.lookup(zone, at: local).offset
        let utc = local - offset
        let corrected = ZoneInfo.lookup(zone, at: utc).offset
        return Date(timeIntervalSince1970: TimeInterval(local - corrected) + TimeInterval(nanosecond) / 1e9)
    }
}

/// Zone offsets and abbreviations from the system's tz database files (TZif, as Go reads them), so `MST` prints
/// `EST` or `JST` where Foundation would say `GMT-5`; Foundation's offset where no file is found.
enum ZoneInfo {
    struct Zone: Sendable {
        var transitions: [Int]
        var types: [UInt8]
        var infos: [(offset: Int, name: String)]
        /// The type before the first transition.
        var initial: Int
    }

    /// Zones read so far, by identifier (a handful per process).
    private static let cache = Mutex<[String: Zone?]>([:])

    static func lookup(_ zone: TimeZone, at unix: Int) -> (offset: Int, name: String) {
        let id = zone.identifier
        if id == "UTC" || id == "GMT" || id == "Etc/UTC" || id == "Etc/GMT"
            || (zone.secondsFromGMT() == 0 && id.hasPrefix("GMT"))
        {
            return (0, "UTC")
        }
        if let z = load(id), !z.infos.isEmpty {
            var type = z.initial
            if let i = z.transitions.lastIndex(where: { $0 <= unix }) { type = Int(z.types[i]) }
            if type < z.infos.count { return z.infos[type] }
        }
        let d = Date(timeIntervalSince1970: TimeInterval(unix))
        return (zone.secondsFromGMT(for: d), zone.abbreviation(for: d) ?? "UTC")
    }

    static func load(_ id: String) -> Zone? {
        if let hit = cache.withLock({ $0[id] }) { return hit }
        var zone: Zone?
        if !id.contains(".."), let data = FileManager.default.contents(atPath: "/usr/share/zoneinfo/" + id) {
            zone = parse(Array(data))
        }
        cache.withLock { if $0.count < 512 { $0[id] = .some(zone) } }
        return zone
    }

    /// TZif (RFC 8536): the version 2+ block with 64-bit times when present, else version 1's.
    static func parse(_ b: [UInt8]) -> Zone? {
        func u32(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        func s32(_ i: Int) -> Int { Int(Int32(bitPattern: UInt32(u32(i)))) }
        func s64(_ i: Int) -> Int {
            var v: UInt64 = 0
            for k in 0..<8 { v = v << 8 | UInt64(b[i + k]) }
            return Int(Int64(bitPattern: v))
        }
        func block(at start: Int, timeSize: Int) -> (Zone, Int)? {
            guard b.count >= start + 44, b[start..<start + 4] == [0x54, 0x5A, 0x69, 0x66] else { return nil }
            let isut = u32(start + 20), isstd = u32(start + 24), leap = u32(start + 28)
            let timecnt = u32(start + 32), typecnt = u32(start + 36), charcnt = u32(start + 40)
            var p = start + 44
            let need = timecnt * timeSize + timecnt + typecnt * 6 + charcnt + leap * (timeSize + 4) + isstd + isut
            guard b.count >= p + need, typecnt > 0 else { return nil }
            var transitions: [Int] = []
            for k in 0..<timecnt { transitions.append(timeSize == 8 ? s64(p + k * 8) : s32(p + k * 4)) }
            p += timecnt * timeSize
            let types = Array(b[p..<p + timecnt])
            p += timecnt
            var raw: [(Int, Int, Bool)] = []
            for k in 0..<typecnt {
                raw.append((s32(p + k * 6), Int(b[p + k * 6 + 5]), b[p + k * 6 + 4] != 0))
            }
            p += typecnt * 6
            let chars = Array(b[p..<p + charcnt])
            p += charcnt + leap * (timeSize + 4) + isstd + isut
            let infos = raw.map { info -> (offset: Int, name: String) in
                let start = min(info.1, chars.count)
                let end = chars[start...].firstIndex(of: 0) ?? chars.count
                return (info.0, String(decoding: chars[start..<end], as: UTF8.self))
            }
            // Before the first transition: the first standard-time type (Go's rule).
            let initial = raw.firstIndex { !$0.2 } ?? 0
            return (Zone(transitions: transitions, types: types, infos: infos, initial: initial), p)
        }
        guard let (v1, end) = block(at: 0, timeSize: 4) else { return nil }
        if b.count > 4, b[4] >= 0x32, let (v2, _) = block(at: end, timeSize: 8) { return v2 }
        return v1
    }
}
