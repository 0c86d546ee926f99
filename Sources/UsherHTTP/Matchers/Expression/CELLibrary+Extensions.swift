import Foundation

// cel-go's extensions that Caddy turns on: strings, lists and math.

extension CELLibrary {
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

    static func extensions(into f: inout [String: [CELOverload]]) {
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
    }
}
