import Foundation
import UsherCore

// CEL's standard functions and the cel-go extensions Caddy enables (strings, lists, math), by overload.

enum CELImpl {
    case unary((CELValue) -> CELValue)
    case binary((CELValue, CELValue) -> CELValue)
    case nary(([CELValue]) -> CELValue)

    func call(_ v: [CELValue]) -> CELValue {
        switch self {
        case .unary(let f): return f(v[0])
        case .binary(let f): return f(v[0], v[1])
        case .nary(let f): return f(v)
        }
    }
}

struct CELOverload {
    var member: Bool
    var params: [CELType]
    var result: ([CELType]) -> CELType
    var impl: CELImpl
}

enum CELLibrary {
    static func global(_ params: [CELType], _ result: CELType, _ impl: CELImpl) -> CELOverload {
        CELOverload(member: false, params: params, result: { _ in result }, impl: impl)
    }
    static func member(_ params: [CELType], _ result: CELType, _ impl: CELImpl) -> CELOverload {
        CELOverload(member: true, params: params, result: { _ in result }, impl: impl)
    }
    /// Both `f(x, ...)` and `x.f(...)`.
    static func both(_ params: [CELType], _ result: CELType, _ impl: CELImpl) -> [CELOverload] {
        [global(params, result, impl), member(params, result, impl)]
    }

    static func arithmetic(
        int: @escaping (Int64, Int64) -> (Int64, Bool)?, uint: @escaping (UInt64, UInt64) -> (UInt64, Bool)?,
        double: ((Double, Double) -> Double)?, name: String
    ) -> [CELOverload] {
        var out = [
            global(
                [.int, .int], .int,
                .binary { a, b in
                    guard case .int(let x) = a, case .int(let y) = b else { return .noOverload(name, [a, b]) }
                    guard let (v, overflow) = int(x, y) else {
                        return .error(name == "_%_" ? "modulus by zero" : "division by zero")
                    }
                    return overflow ? .error("integer overflow") : .int(v)
                }),
            global(
                [.uint, .uint], .uint,
                .binary { a, b in
                    guard case .uint(let x) = a, case .uint(let y) = b else { return .noOverload(name, [a, b]) }
                    guard let (v, overflow) = uint(x, y) else {
                        return .error(name == "_%_" ? "modulus by zero" : "division by zero")
                    }
                    return overflow ? .error("unsigned integer overflow") : .uint(v)
                }),
        ]
        if let double {
            out.append(
                global(
                    [.double, .double], .double,
                    .binary { a, b in
                        guard case .double(let x) = a, case .double(let y) = b else {
                            return .noOverload(name, [a, b])
                        }
                        return .double(double(x, y))
                    }))
        }
        return out
    }

    static func string(_ v: CELValue) -> String? {
        if case .string(let s) = v { return s }
        return nil
    }

    static func int(_ v: CELValue) -> Int64? {
        if case .int(let i) = v { return i }
        return nil
    }

    static func time(_ f: @escaping (Int64) -> CELValue) -> CELImpl {
        .unary { v in
            guard case .timestamp(let t) = v else { return .noOverload("time", [v]) }
            return f(t)
        }
    }

    /// A time zone argument: `UTC`, a fixed offset `±HH:MM`, or an IANA name the system knows.
    static func offset(_ zone: String, at t: Int64) -> Int? {
        if zone == "UTC" || zone == "Z" { return 0 }
        let b = Array(zone.utf8)
        if b.count == 6, b[0] == 43 || b[0] == 45, b[3] == 58, let h = Int(zone.dropFirst().prefix(2)),
            let m = Int(zone.suffix(2))
        {
            return (h * 60 + m) * 60 * (b[0] == 45 ? -1 : 1)
        }
        guard let tz = TimeZone(identifier: zone) else { return nil }
        return tz.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t / 1_000_000_000)))
    }

    static func timeGetter(_ name: String, _ field: @escaping (Int64, Int) -> Int) -> [CELOverload] {
        [
            member(
                [.timestamp], .int,
                .unary { v in
                    guard case .timestamp(let t) = v else { return .noOverload(name, [v]) }
                    return .int(Int64(field(t, 0)))
                }),
            member(
                [.timestamp, .string], .int,
                .binary { v, z in
                    guard case .timestamp(let t) = v, case .string(let zone) = z else {
                        return .noOverload(name, [v, z])
                    }
                    guard let off = offset(zone, at: t) else { return .error("unknown time zone: \(zone)") }
                    return .int(Int64(field(t, off)))
                }),
        ]
    }

    static func durationGetter(_ name: String, _ unit: Int64) -> CELOverload {
        member(
            [.duration], .int,
            .unary { v in
                guard case .duration(let d) = v else { return .noOverload(name, [v]) }
                return .int(d / unit)
            })
    }

    static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    static func fromScalars<S: Sequence>(_ s: S) -> String where S.Element == Unicode.Scalar {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s)
        return String(v)
    }

    static func indexOf(_ text: [Unicode.Scalar], _ sub: [Unicode.Scalar], from: Int, last: Bool) -> Int {
        if sub.isEmpty { return from }
        guard sub.count <= text.count else { return -1 }
        let positions =
            last
            ? Array(stride(from: min(from, text.count - sub.count), through: 0, by: -1))
            : Array(from...max(from, text.count - sub.count))
        for i in positions where i + sub.count <= text.count && Array(text[i..<i + sub.count]) == sub { return i }
        return -1
    }

    static let listOfStrings = CELType.list(.string)

    // Immutable once built.
    nonisolated(unsafe) static let functions: [String: [CELOverload]] = {
        var f: [String: [CELOverload]] = [:]
        f["_+_"] =
            arithmetic(
                int: { $0.addingReportingOverflow($1) }, uint: { $0.addingReportingOverflow($1) }, double: (+),
                name: "_+_")
            + [
                global(
                    [.string, .string], .string,
                    .binary { a, b in
                        guard case .string(let x) = a, case .string(let y) = b else {
                            return .noOverload("_+_", [a, b])
                        }
                        return .string(x + y)
                    }),
                global(
                    [.bytes, .bytes], .bytes,
                    .binary { a, b in
                        guard case .bytes(let x) = a, case .bytes(let y) = b else { return .noOverload("_+_", [a, b]) }
                        return .bytes(x + y)
                    }),
                CELOverload(
                    member: false, params: [.list(.dyn), .list(.dyn)],
                    result: { t in t[0] == t[1] ? t[0] : .list(.dyn) },
                    impl: .binary { a, b in
                        guard case .list(let x) = a, case .list(let y) = b else { return .noOverload("_+_", [a, b]) }
                        return .list(x + y)
                    }),
                global(
                    [.timestamp, .duration], .timestamp,
                    .binary { a, b in
                        guard case .timestamp(let x) = a, case .duration(let y) = b else {
                            return .noOverload("_+_", [a, b])
                        }
                        return .timestamp(x &+ y)
                    }),
                global(
                    [.duration, .timestamp], .timestamp,
                    .binary { a, b in
                        guard case .duration(let x) = a, case .timestamp(let y) = b else {
                            return .noOverload("_+_", [a, b])
                        }
                        return .timestamp(x &+ y)
                    }),
                global(
                    [.duration, .duration], .duration,
                    .binary { a, b in
                        guard case .duration(let x) = a, case .duration(let y) = b else {
                            return .noOverload("_+_", [a, b])
                        }
                        return .duration(x &+ y)
                    }),
            ]
        f["_-_"] =
            arithmetic(
                int: { $0.subtractingReportingOverflow($1) }, uint: { $0.subtractingReportingOverflow($1) },
                double: (-), name: "_-_")
            + [
                global(
                    [.timestamp, .timestamp], .duration,
                    .binary { a, b in
                        guard case .timestamp(let x) = a, case .timestamp(let y) = b else {
                            return .noOverload("_-_", [a, b])
                        }
                        return .duration(x &- y)
                    }),
                global(
                    [.timestamp, .duration], .timestamp,
                    .binary { a, b in
                        guard case .timestamp(let x) = a, case .duration(let y) = b else {
                            return .noOverload("_-_", [a, b])
                        }
                        return .timestamp(x &- y)
                    }),
                global(
                    [.duration, .duration], .duration,
                    .binary { a, b in
                        guard case .duration(let x) = a, case .duration(let y) = b else {
                            return .noOverload("_-_", [a, b])
                        }
                        return .duration(x &- y)
                    }),
            ]
        f["_*_"] = arithmetic(
            int: { $0.multipliedReportingOverflow(by: $1) }, uint: { $0.multipliedReportingOverflow(by: $1) },
            double: (*), name: "_*_")
        f["_/_"] = arithmetic(
            int: { $1 == 0 ? nil : $0.dividedReportingOverflow(by: $1) },
            uint: { $1 == 0 ? nil : $0.dividedReportingOverflow(by: $1) },
            double: (/), name: "_/_")
        f["_%_"] = arithmetic(
            int: { $1 == 0 ? nil : $0.remainderReportingOverflow(dividingBy: $1) },
            uint: { $1 == 0 ? nil : $0.remainderReportingOverflow(dividingBy: $1) }, double: nil, name: "_%_")
        f["-_"] = [
            global(
                [.int], .int,
                .unary { v in
                    guard case .int(let x) = v else { return .noOverload("-_", [v]) }
                    return x == .min ? .error("integer overflow") : .int(-x)
                }),
            global(
                [.double], .double,
                .unary { v in
                    guard case .double(let x) = v else { return .noOverload("-_", [v]) }
                    return .double(-x)
                }),
        ]
        f["!_"] = [
            global(
                [.bool], .bool,
                .unary { v in
                    guard case .bool(let b) = v else { return .noOverload("!_", [v]) }
                    return .bool(!b)
                })
        ]
        for op in ["_<_", "_<=_", "_>_", "_>=_"] {
            f[op] = [CELType.bool, .int, .uint, .double, .string, .bytes, .timestamp, .duration].map { t in
                global([t, t], .bool, .binary { a, b in CELValue.compare(a, b, op) })
            }
        }
        let size = CELImpl.unary { v in
            switch v {
            case .string(let s): return .int(Int64(s.unicodeScalars.count))
            case .bytes(let b): return .int(Int64(b.count))
            case .list(let l): return .int(Int64(l.count))
            case .map(let m): return .int(Int64(m.keys.count))
            default: return .noOverload("size", [v])
            }
        }
        f["size"] = [CELType.string, .bytes, .list(.dyn), .map(.dyn, .dyn)].flatMap { both([$0], .int, size) }
        for (name, test) in [
            ("contains", { (a: String, b: String) in a.contains(b) || b.isEmpty }),
            ("startsWith", { (a: String, b: String) in a.unicodeScalars.starts(with: b.unicodeScalars) }),
            (
                "endsWith",
                { (a: String, b: String) in a.unicodeScalars.reversed().starts(with: b.unicodeScalars.reversed()) }
            ),
        ] {
            f[name] = [
                member(
                    [.string, .string], .bool,
                    .binary { a, b in
                        guard case .string(let x) = a, case .string(let y) = b else {
                            return .noOverload(name, [a, b])
                        }
                        return .bool(test(x, y))
                    })
            ]
        }
        // Type conversions.
        f["int"] = [CELType.int, .uint, .double, .string, .timestamp].map { t in
            global(
                [t], .int,
                .unary { v in
                    switch v {
                    case .int: return v
                    case .uint(let u): return Int64(exactly: u).map { .int($0) } ?? .error("integer overflow")
                    case .double(let d):
                        guard d.isFinite, d > -9.223372036854775808e18, d < 9.223372036854775808e18 else {
                            return .error("integer overflow")
                        }
                        return .int(Int64(d))
                    case .string(let s): return Int64(s).map { .int($0) } ?? .error("cannot convert \"\(s)\" to int")
                    case .timestamp(let t): return .int(t >= 0 ? t / 1_000_000_000 : (t - 999_999_999) / 1_000_000_000)
                    default: return .noOverload("int", [v])
                    }
                })
        }
        f["uint"] = [CELType.int, .uint, .double, .string].map { t in
            global(
                [t], .uint,
                .unary { v in
                    switch v {
                    case .uint: return v
                    case .int(let i): return UInt64(exactly: i).map { .uint($0) } ?? .error("unsigned integer overflow")
                    case .double(let d):
                        guard d.isFinite, d > -1, d < 1.8446744073709552e19 else {
                            return .error("unsigned integer overflow")
                        }
                        return .uint(UInt64(d))
                    case .string(let s): return UInt64(s).map { .uint($0) } ?? .error("cannot convert \"\(s)\" to uint")
                    default: return .noOverload("uint", [v])
                    }
                })
        }
        f["double"] = [CELType.int, .uint, .double, .string].map { t in
            global(
                [t], .double,
                .unary { v in
                    if case .string(let s) = v {
                        return Double(s).map { .double($0) } ?? .error("cannot convert \"\(s)\" to double")
                    }
                    return v.asDouble.map { .double($0) } ?? .noOverload("double", [v])
                })
        }
        f["string"] = [CELType.string, .int, .uint, .double, .bool, .bytes, .timestamp, .duration].map { t in
            global([t], .string, .unary { v in v.stringForm.map { .string($0) } ?? .error("invalid UTF-8 in bytes") })
        }
        f["bytes"] = [CELType.bytes, .string].map { t in
            global(
                [t], .bytes,
                .unary { v in
                    switch v {
                    case .bytes: return v
                    case .string(let s): return .bytes(Array(s.utf8))
                    default: return .noOverload("bytes", [v])
                    }
                })
        }
        f["bool"] = [CELType.bool, .string].map { t in
            global(
                [t], .bool,
                .unary { v in
                    switch v {
                    case .bool: return v
                    case .string(let s):
                        switch s {
                        case "1", "t", "true", "TRUE", "True": return .bool(true)
                        case "0", "f", "false", "FALSE", "False": return .bool(false)
                        default: return .error("type conversion error from 'string' to 'bool'")
                        }
                    default: return .noOverload("bool", [v])
                    }
                })
        }
        f["dyn"] = [global([.dyn], .dyn, .unary { $0 })]
        f["type"] = [
            global(
                [.dyn], .type,
                .unary { v in
                    switch v {
                    case .list: return .type(.list(.dyn))
                    case .map: return .type(.map(.dyn, .dyn))
                    default: return .type(v.runtimeType)
                    }
                })
        ]
        f["timestamp"] = [
            global(
                [.string], .timestamp,
                .unary { v in
                    guard case .string(let s) = v else { return .noOverload("timestamp", [v]) }
                    return CELTime.parse(s).map { .timestamp($0) } ?? .error("timestamp conversion error: \(s)")
                }),
            global([.timestamp], .timestamp, .unary { $0 }),
            global(
                [.int], .timestamp,
                .unary { v in
                    guard case .int(let s) = v else { return .noOverload("timestamp", [v]) }
                    return .timestamp(s &* 1_000_000_000)
                }),
        ]
        f["duration"] = [
            global(
                [.string], .duration,
                .unary { v in
                    guard case .string(let s) = v else { return .noOverload("duration", [v]) }
                    return CELTime.parseDuration(s).map { .duration($0) } ?? .error("invalid duration: \(s)")
                }),
            global([.duration], .duration, .unary { $0 }),
        ]
        f["getFullYear"] = timeGetter("getFullYear") { CELTime.fields($0, offset: $1).year }
        f["getMonth"] = timeGetter("getMonth") { CELTime.fields($0, offset: $1).month - 1 }
        f["getDayOfYear"] = timeGetter("getDayOfYear") { CELTime.fields($0, offset: $1).yearDay - 1 }
        f["getDayOfMonth"] = timeGetter("getDayOfMonth") { CELTime.fields($0, offset: $1).day - 1 }
        f["getDate"] = timeGetter("getDate") { CELTime.fields($0, offset: $1).day }
        f["getDayOfWeek"] = timeGetter("getDayOfWeek") { CELTime.fields($0, offset: $1).weekday }
        f["getHours"] =
            timeGetter("getHours") { CELTime.fields($0, offset: $1).hour } + [
                durationGetter("getHours", 3_600_000_000_000)
            ]
        f["getMinutes"] =
            timeGetter("getMinutes") { CELTime.fields($0, offset: $1).minute } + [
                durationGetter("getMinutes", 60_000_000_000)
            ]
        f["getSeconds"] =
            timeGetter("getSeconds") { CELTime.fields($0, offset: $1).second } + [
                durationGetter("getSeconds", 1_000_000_000)
            ]
        f["getMilliseconds"] =
            timeGetter("getMilliseconds") { CELTime.fields($0, offset: $1).nanosecond / 1_000_000 } + [
                durationGetter("getMilliseconds", 1_000_000)
            ]

        // cel-go's ext.Strings().
        f["charAt"] = [
            member(
                [.string, .int], .string,
                .binary { a, b in
                    guard let s = string(a), let i = int(b) else { return .noOverload("charAt", [a, b]) }
                    let u = scalars(s)
                    guard i >= 0, i <= u.count else { return .error("index out of range: \(i)") }
                    return .string(i == u.count ? "" : fromScalars([u[Int(i)]]))
                })
        ]
        for (name, last) in [("indexOf", false), ("lastIndexOf", true)] {
            f[name] = [
                member(
                    [.string, .string], .int,
                    .binary { a, b in
                        guard let s = string(a), let sub = string(b) else { return .noOverload(name, [a, b]) }
                        let u = scalars(s)
                        return .int(Int64(indexOf(u, scalars(sub), from: last ? u.count : 0, last: last)))
                    }),
                member(
                    [.string, .string, .int], .int,
                    .nary { v in
                        guard let s = string(v[0]), let sub = string(v[1]), let from = int(v[2]) else {
                            return .noOverload(name, v)
                        }
                        let u = scalars(s)
                        guard from >= 0, from <= u.count else { return .error("index out of range: \(from)") }
                        return .int(Int64(indexOf(u, scalars(sub), from: Int(from), last: last)))
                    }),
            ]
        }
        for (name, upper) in [("lowerAscii", false), ("upperAscii", true)] {
            f[name] = [
                member(
                    [.string], .string,
                    .unary { v in
                        guard let s = string(v) else { return .noOverload(name, [v]) }
                        var out = String.UnicodeScalarView()
                        for c in s.unicodeScalars {
                            if upper && c >= "a" && c <= "z" || !upper && c >= "A" && c <= "Z" {
                                out.append(Unicode.Scalar(upper ? c.value - 32 : c.value + 32)!)
                            } else {
                                out.append(c)
                            }
                        }
                        return .string(String(out))
                    })
            ]
        }
        let replace = CELImpl.nary { v in
            guard let s = string(v[0]), let old = string(v[1]), let new = string(v[2]) else {
                return .noOverload("replace", v)
            }
            var limit = v.count > 3 ? int(v[3]) ?? -1 : -1
            if limit == 0 { return .string(s) }
            var out = ""
            var rest = Substring(s)
            if old.isEmpty {
                // Go's strings.Replace with an empty old string inserts before every character and at the end.
                var result = ""
                for c in s.unicodeScalars {
                    if limit != 0 {
                        result += new
                        limit -= 1
                    }
                    result.unicodeScalars.append(c)
                }
                if limit != 0 { result += new }
                return .string(result)
            }
            while limit != 0, let r = rest.range(of: old) {
                out += rest[..<r.lowerBound] + new
                rest = rest[r.upperBound...]
                limit -= 1
            }
            return .string(out + rest)
        }
        f["replace"] = [
            member([.string, .string, .string], .string, replace),
            member([.string, .string, .string, .int], .string, replace),
        ]
        let split = CELImpl.nary { v in
            guard let s = string(v[0]), let sep = string(v[1]) else { return .noOverload("split", v) }
            let limit = v.count > 2 ? int(v[2]) ?? -1 : -1
            if limit == 0 { return .list([]) }
            var parts: [String]
            if sep.isEmpty {
                parts = s.unicodeScalars.map { fromScalars([$0]) }
            } else {
                parts = s.components(separatedBy: sep)
            }
            if limit > 0 && parts.count > limit {
                let head = parts.prefix(Int(limit) - 1)
                let tail = parts.dropFirst(Int(limit) - 1).joined(separator: sep)
                parts = Array(head) + [tail]
            }
            return .list(parts.map { .string($0) })
        }
        f["split"] = [
            member([.string, .string], listOfStrings, split), member([.string, .string, .int], listOfStrings, split),
        ]
        let substring = CELImpl.nary { v in
            guard let s = string(v[0]), let start = int(v[1]) else { return .noOverload("substring", v) }
            let u = scalars(s)
            let end = v.count > 2 ? int(v[2]) ?? -1 : Int64(u.count)
            guard start >= 0, start <= u.count else { return .error("index out of range: \(start)") }
            guard end >= 0, end <= u.count else { return .error("index out of range: \(end)") }
            guard start <= end else { return .error("invalid substring range. start: \(start), end: \(end)") }
            return .string(fromScalars(u[Int(start)..<Int(end)]))
        }
        f["substring"] = [
            member([.string, .int], .string, substring), member([.string, .int, .int], .string, substring),
        ]
        f["trim"] = [
            member(
                [.string], .string,
                .unary { v in
                    guard let s = string(v) else { return .noOverload("trim", [v]) }
                    let u = scalars(s)
                    guard let a = u.firstIndex(where: { !$0.properties.isWhitespace }),
                        let b = u.lastIndex(where: { !$0.properties.isWhitespace })
                    else { return .string("") }
                    return .string(fromScalars(u[a...b]))
                })
        ]
        let join = CELImpl.nary { v in
            guard case .list(let items) = v[0] else { return .noOverload("join", v) }
            let sep = v.count > 1 ? string(v[1]) ?? "" : ""
            var parts: [String] = []
            for i in items {
                guard let s = string(i) else { return .noOverload("join", [i]) }
                parts.append(s)
            }
            return .string(parts.joined(separator: sep))
        }
        f["join"] = [member([listOfStrings], .string, join), member([listOfStrings, .string], .string, join)]
        f["reverse"] = [
            member(
                [.string], .string,
                .unary { v in
                    guard let s = string(v) else { return .noOverload("reverse", [v]) }
                    return .string(fromScalars(s.unicodeScalars.reversed()))
                }),
            CELOverload(
                member: true, params: [.list(.dyn)], result: { $0[0] },
                impl: .unary { v in
                    guard case .list(let l) = v else { return .noOverload("reverse", [v]) }
                    return .list(l.reversed())
                }),
        ]

        // cel-go's ext.Lists().
        f["slice"] = [
            CELOverload(
                member: true, params: [.list(.dyn), .int, .int], result: { $0[0] },
                impl: .nary { v in
                    guard case .list(let l) = v[0], let a = int(v[1]), let b = int(v[2]) else {
                        return .noOverload("slice", v)
                    }
                    guard a >= 0, b >= 0 else {
                        return .error("cannot slice(\(a), \(b)), negative indexes not supported")
                    }
                    guard a <= b else {
                        return .error("cannot slice(\(a), \(b)), start index must be less than or equal to end index")
                    }
                    guard b <= l.count else { return .error("cannot slice(\(a), \(b)), list is length \(l.count)") }
                    return .list(Array(l[Int(a)..<Int(b)]))
                })
        ]
        f["flatten"] = [
            CELOverload(
                member: true, params: [.list(.dyn)],
                result: { t in if case .list(.list(let e)) = t[0] { return .list(e) } else { return .list(.dyn) } },
                impl: .unary { v in
                    guard case .list(let l) = v else { return .noOverload("flatten", [v]) }
                    var out: [CELValue] = []
                    for e in l {
                        if case .list(let inner) = e { out += inner } else { out.append(e) }
                    }
                    return .list(out)
                })
        ]
        f["lists.range"] = [
            global(
                [.int], .list(.int),
                .unary { v in
                    guard let n = int(v), n >= 0, n <= 100_000 else { return .error("lists.range() invalid argument") }
                    return .list((0..<n).map { .int($0) })
                })
        ]
        f["distinct"] = [
            CELOverload(
                member: true, params: [.list(.dyn)], result: { $0[0] },
                impl: .unary { v in
                    guard case .list(let l) = v else { return .noOverload("distinct", [v]) }
                    var out: [CELValue] = []
                    for e in l where !out.contains(where: { CELValue.equal($0, e) == true }) { out.append(e) }
                    return .list(out)
                })
        ]
        f["sort"] = [
            CELOverload(
                member: true, params: [.list(.dyn)], result: { $0[0] },
                impl: .unary { v in
                    guard case .list(let l) = v else { return .noOverload("sort", [v]) }
                    var failed = false
                    let sorted = l.sorted { a, b in
                        if case .bool(let lt) = CELValue.compare(a, b, "_<_") { return lt }
                        failed = true
                        return false
                    }
                    return failed ? .error("list elements must have the same type") : .list(sorted)
                })
        ]

        // cel-go's ext.Math().
        f["math.abs"] = [
            global(
                [.int], .int,
                .unary { v in
                    int(v).map { $0 == .min ? .error("integer overflow") : .int(Swift.abs($0)) }
                        ?? .noOverload("math.abs", [v])
                }),
            global([.uint], .uint, .unary { $0 }),
            global(
                [.double], .double,
                .unary { v in v.asDouble.map { .double(Swift.abs($0)) } ?? .noOverload("math.abs", [v]) }),
        ]
        for (name, fn) in [
            ("math.ceil", { (d: Double) in d.rounded(.up) }), ("math.floor", { (d: Double) in d.rounded(.down) }),
            ("math.round", { (d: Double) in d.rounded(.toNearestOrAwayFromZero) }),
            ("math.trunc", { (d: Double) in d.rounded(.towardZero) }),
        ] {
            f[name] = [
                global(
                    [.double], .double,
                    .unary { v in
                        guard case .double(let d) = v else { return .noOverload(name, [v]) }
                        return .double(fn(d))
                    })
            ]
        }
        f["math.sign"] = [
            global([.int], .int, .unary { v in int(v).map { .int($0.signum()) } ?? .noOverload("math.sign", [v]) }),
            global(
                [.uint], .uint,
                .unary { v in
                    if case .uint(let u) = v {
                        return .uint(u == 0 ? 0 : 1)
                    } else {
                        return .noOverload("math.sign", [v])
                    }
                }),
            global(
                [.double], .double,
                .unary { v in
                    guard case .double(let d) = v else { return .noOverload("math.sign", [v]) }
                    return .double(d.isNaN ? d : d > 0 ? 1 : d < 0 ? -1 : 0)
                }),
        ]
        for (name, fn) in [
            ("math.isNaN", { (d: Double) in d.isNaN }), ("math.isInf", { (d: Double) in d.isInfinite }),
            ("math.isFinite", { (d: Double) in d.isFinite }),
        ] {
            f[name] = [
                global(
                    [.double], .bool,
                    .unary { v in
                        guard case .double(let d) = v else { return .noOverload(name, [v]) }
                        return .bool(fn(d))
                    })
            ]
        }
        return f
    }()
}
