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

        extensions(into: &f)
        return f
    }()
}
