import UsherCaddyfile
import UsherCore
import UsherTLS

// Log writers, encoders and field filters (`caddy.logging.*`), as `log { output ...; format ... }` configures them.

let loggingParsers = CaddyfileSupport(modules: [
    "caddy.logging.writers.file": parseFileWriter,
    "caddy.logging.writers.net": parseNetWriter,
    "caddy.logging.encoders.console": parseEncoderConfig,
    "caddy.logging.encoders.json": parseEncoderConfig,
    "caddy.logging.encoders.filter": parseFilterEncoder,
    "caddy.logging.encoders.append": parseAppendEncoder,
    "caddy.logging.encoders.journald": parseJournaldEncoder,
    "caddy.logging.encoders.filter.delete": { _, _ in .object(JSONObject()) },
    "caddy.logging.encoders.filter.hash": { _, _ in .object(JSONObject()) },
    "caddy.logging.encoders.filter.replace": { d, _ in
        d.next()
        var o = JSONObject()
        if d.nextArg() { o.put("value", d.val) }
        return .object(o)
    },
    "caddy.logging.encoders.filter.ip_mask": parseIPMaskFilter,
    "caddy.logging.encoders.filter.query": { d, _ in try parseActionFilter(d, nameKey: "parameter") },
    "caddy.logging.encoders.filter.cookie": { d, _ in try parseActionFilter(d, nameKey: "name") },
    "caddy.logging.encoders.filter.set_cookie": { d, _ in try parseActionFilter(d, nameKey: "name") },
    "caddy.logging.encoders.filter.regexp": { d, _ in
        d.next()
        var o = JSONObject()
        if d.nextArg() { o.put("regexp", d.val) }
        if d.nextArg() { o.put("value", d.val) }
        return .object(o)
    },
    "caddy.logging.encoders.filter.multi_regexp": parseMultiRegexpFilter,
    "caddy.logging.encoders.filter.rename": { d, _ in
        d.next()
        var o = JSONObject()
        if d.nextArg() { o.put("name", d.val) }
        return .object(o)
    },
])

private func parseFileWriter(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var o = JSONObject()
    o[Key.filename] = .string(d.val)
    if d.nextArg() { throw d.argErr() }
    typealias Key = FileWriterModule.CodingKeys
    var fields: [Key: JSONValue] = [:]
    func parseMode(_ s: String) throws -> UInt64 {
        let padded = String(repeating: "0", count: max(0, 4 - s.count)) + s
        guard let m = UInt64(padded, radix: 8), m <= UInt64(UInt32.max) else {
            throw Go.Failure("strconv.ParseUint: parsing \(Go.quote(padded)): invalid syntax")
        }
        return m
    }
    while d.nextBlock(0) {
        switch d.val {
        case "mode":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let m: UInt64
            do { m = try parseMode(a[0]) } catch { throw d.err("parsing mode: \(error)") }
            if m != 0 {
                let octal = String(m, radix: 8)
                fields[Key.mode] = .string(String(repeating: "0", count: max(0, 4 - octal.count)) + octal)
            }
        case "dir_mode":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let v = a[0].trimmingWhitespace()
            if !["inherit", "from_file"].contains(v.lowercased()) {
                do { _ = try parseMode(v) } catch { throw d.err("parsing dir_mode: \(error)") }
            }
            fields[Key.dirMode] = .string(v)
        case "roll_disabled":
            fields[Key.roll] = .bool(false)
            if d.nextArg() { throw d.argErr() }
        case "roll_size":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let size: UInt64
            do { size = try Go.parseBytes(a[0]) } catch { throw d.err("parsing size: \(error)") }
            let mb = Int((Double(size) / 1_048_576).rounded(.up))
            fields[Key.rollSizeMB] = mb == 0 ? nil : .number(JSONNumber(mb))
        case "roll_uncompressed":
            fields[Key.rollGzip] = .bool(false)
            if d.nextArg() { throw d.argErr() }
        case "roll_compression":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let c = a[0].trimmingWhitespace().lowercased()
            guard ["none", "gzip", "zstd"].contains(c) else {
                throw d.err("parsing roll_compression: must be 'none', 'gzip' or 'zstd'")
            }
            fields[Key.rollCompression] = .string(c)
        case "roll_local_time":
            fields[Key.rollLocalTime] = .bool(true)
            if d.nextArg() { throw d.argErr() }
        case "roll_keep":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let n: Int
            do { n = try Go.atoi(a[0]) } catch { throw d.err("parsing roll_keep number: \(error)") }
            fields[Key.rollKeep] = n == 0 ? nil : .number(JSONNumber(n))
        case "roll_keep_for":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let v: Int64
            do { v = try Go.caddyDuration(a[0]) } catch { throw d.err("parsing roll_keep_for duration: \(error)") }
            if v < 0 { throw d.err("negative roll_keep_for duration: \(formatGoDuration(Double(v) / 1e9))") }
            let days = Int((Double(v) / 3.6e12 / 24).rounded(.up))
            fields[Key.rollKeepDays] = days == 0 ? nil : .number(JSONNumber(days))
        case "roll_interval":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            let v: Int64
            do { v = try Go.caddyDuration(a[0]) } catch { throw d.err("parsing roll_interval duration: \(error)") }
            fields[Key.rollInterval] = v == 0 ? nil : .number(JSONNumber(literal: String(v)))
        case "roll_minutes":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            var minutes: [JSONValue] = []
            for arg in args {
                for p in arg.split(separator: ",", omittingEmptySubsequences: false) {
                    let s = String(p).trimmingWhitespace()
                    if s.isEmpty { throw d.err("parsing roll_minutes: empty value") }
                    do { minutes.append(.number(JSONNumber(try Go.atoi(s)))) } catch {
                        throw d.err("parsing roll_minutes number: \(error)")
                    }
                }
            }
            fields[Key.rollMinutes] = .array(minutes)
        case "roll_at":
            let args = d.remainingArgs()
            if args.isEmpty { throw d.argErr() }
            var times: [String] = []
            for arg in args {
                for p in arg.split(separator: ",", omittingEmptySubsequences: false) {
                    let s = String(p).trimmingWhitespace()
                    if s.isEmpty { throw d.err("parsing roll_at: empty value") }
                    times.append(s)
                }
            }
            fields[Key.rollAt] = .strings(times)
        case "backup_time_format":
            guard let a = d.allArgs(1) else { throw d.argErr() }
            fields[Key.backupTimeFormat] = a[0].isEmpty ? nil : .string(a[0])
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    // Caddy's field order, which is not the decoder's.
    let order: [Key] = [
        .mode, .dirMode, .roll, .rollSizeMB, .rollInterval, .rollMinutes, .rollAt, .rollGzip, .rollCompression,
        .rollLocalTime, .rollKeep, .rollKeepDays, .backupTimeFormat,
    ]
    for k in order {
        if let v = fields[k] { o[k] = v }
    }
    return .object(o)
}

private func parseNetWriter(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    guard d.nextArg() else { throw d.argErr() }
    var o = JSONObject()
    o.put("address", d.val)
    if d.nextArg() { throw d.argErr() }
    var timeout: Int64 = 0
    var softStart = false
    while d.nextBlock(0) {
        switch d.val {
        case "dial_timeout":
            guard d.nextArg() else { throw d.argErr() }
            guard let v = try? Go.caddyDuration(d.val) else { throw d.err("invalid duration: \(d.val)") }
            if d.nextArg() { throw d.argErr() }
            timeout = v
        case "soft_start":
            if d.nextArg() { throw d.argErr() }
            softStart = true
        default:
            throw d.err("unrecognized subdirective '\(d.val)'")
        }
    }
    o.putDuration("dial_timeout", timeout)
    o.put("soft_start", softStart)
    return .object(o)
}

/// console and json encoders (Caddy's `LogEncoderConfig`).
private func parseEncoderConfig(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.nextArg() { throw d.argErr() }
    // The subdirectives are the JSON keys, as in Caddy.
    typealias Key = LogEncoderConfig.CodingKeys
    var fields: [String: JSONValue] = [:]
    while d.nextBlock(0) {
        let sub = d.val
        if sub == Key.timeLocal.stringValue {
            fields[sub] = .bool(true)
            if d.nextArg() { throw d.argErr() }
            continue
        }
        guard let a = d.allArgs(1) else { throw d.argErr() }
        guard let key = Key(stringValue: sub) else { throw d.err("unrecognized subdirective \(sub)") }
        switch key {
        case .timeFormat, .durationFormat, .levelFormat: fields[sub] = a[0].isEmpty ? nil : .string(a[0])
        default: fields[sub] = .string(a[0])
        }
    }
    var o = JSONObject()
    for key in Key.allCases { if let v = fields[key.stringValue] { o[key] = v } }
    return .object(o)
}

private func wrappedEncoder(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONObject {
    guard d.nextArg() else { throw d.argErr() }
    let name = d.val
    let fields = try registry.unmarshalModuleObject(d, "caddy.logging.encoders." + name)
    return moduleObject(fields, key: "format", name: name)
}

/// Reads the block shared by the `filter` and `append` encoders: `wrap <encoder>`, and fields given either inside
/// a `fields { }` block or directly; returns the wrapped encoder, if any.
private func encoderBlock(_ d: Dispenser, _ registry: CaddyfileRegistry, field: () throws -> Void) throws -> JSONObject?
{
    var wrap: JSONObject?
    while d.nextBlock(0) {
        switch d.val {
        case "wrap":
            wrap = try wrappedEncoder(d, registry)
        case "fields":
            let nesting = d.nesting
            while d.nextBlock(nesting) { try field() }
        default:
            try field()
        }
    }
    return wrap
}

private func parseFilterEncoder(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var fields = JSONObject()
    var regexpFilters: [(String, [JSONObject])] = []

    func parseField() throws {
        let field = d.val
        guard d.nextArg() else { throw d.argErr() }
        let filterName = d.val
        let filter = try registry.unmarshalModuleObject(d, "caddy.logging.encoders.filter." + filterName)
        if filterName == "regexp" {
            if let i = regexpFilters.firstIndex(where: { $0.0 == field }) {
                regexpFilters[i].1.append(filter)
            } else {
                regexpFilters.append((field, [filter]))
            }
            return
        }
        if regexpFilters.contains(where: { $0.0 == field }) {
            throw d.err("cannot mix regexp filters with other filter types for field \(field)")
        }
        if fields[field] != nil {
            throw d.err("field \(field) already has a filter; multiple non-regexp filters per field are not supported")
        }
        fields[field] = .object(moduleObject(filter, key: "filter", name: filterName))
    }

    let wrap = try encoderBlock(d, registry, field: parseField)
    for (field, filters) in regexpFilters {
        if filters.count == 1 {
            fields[field] = .object(moduleObject(filters[0], key: "filter", name: "regexp"))
        } else {
            var ops: [JSONValue] = []
            for f in filters {
                let re = f["regexp"]?.stringValue ?? ""
                if ops.count >= 50 {
                    throw CaddyfileError(
                        "adding regexp operation for field \(field): cannot add operation: maximum 50 operations allowed"
                    )
                }
                if re.isEmpty {
                    throw CaddyfileError("adding regexp operation for field \(field): regexp pattern cannot be empty")
                }
                var op = JSONObject()
                op.put("regexp", re)
                op.put("value", f["value"]?.stringValue ?? "")
                ops.append(.object(op))
            }
            fields[field] = .object(moduleObject(["operations": .array(ops)], key: "filter", name: "multi_regexp"))
        }
    }
    var o = JSONObject()
    o.put(JournaldLogEncoderModule.CodingKeys.wrap, wrap)
    o.putMap("fields", fields.sortedByKey())
    return .object(o)
}

private func parseAppendEncoder(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var fields = JSONObject()
    func parseField() throws {
        let field = d.val
        guard d.nextArg() else { throw d.argErr() }
        fields[field] = scalarJSON(d.scalarVal)
        if d.nextArg() { throw d.argErr() }
    }
    let wrap = try encoderBlock(d, registry, field: parseField)
    var o = JSONObject()
    o.put(JournaldLogEncoderModule.CodingKeys.wrap, wrap)
    o.putMap("fields", fields.sortedByKey())
    return .object(o)
}

private func parseJournaldEncoder(_ d: Dispenser, _ registry: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    if d.nextArg() { throw d.argErr() }
    var o = JSONObject()
    while d.nextBlock(0) {
        guard d.val == "wrap" else { throw d.err("unrecognized subdirective \(d.val)") }
        o[JournaldLogEncoderModule.CodingKeys.wrap] = .object(try wrappedEncoder(d, registry))
    }
    return .object(o)
}

private func parseIPMaskFilter(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var v4 = 0
    var v6 = 0
    func int(_ s: String) throws -> Int {
        do { return try Go.atoi(s) } catch { throw d.err("error parsing \(s): \(error)") }
    }
    let args = d.remainingArgs()
    if args.count > 2 { throw d.err("too many arguments") }
    if !args.isEmpty { v4 = try int(args[0]) }
    if args.count > 1 { v6 = try int(args[1]) }
    while d.nextBlock(0) {
        switch d.val {
        case "ipv4":
            guard d.nextArg() else { throw d.argErr() }
            v4 = try int(d.val)
        case "ipv6":
            guard d.nextArg() else { throw d.argErr() }
            v6 = try int(d.val)
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
    }
    var o = JSONObject()
    o.put("ipv4_cidr", v4)
    o.put("ipv6_cidr", v6)
    return .object(o)
}

/// query, cookie and set_cookie filters: `replace <name> <value>`, `hash <name>`, `delete <name>`.
private func parseActionFilter(_ d: Dispenser, nameKey: String) throws -> JSONValue {
    d.next()
    var actions: [JSONValue] = []
    while d.nextBlock(0) {
        var a = JSONObject()
        switch d.val {
        case "replace":
            guard d.nextArg() else { throw d.argErr() }
            a["type"] = "replace"
            a[nameKey] = .string(d.val)
            guard d.nextArg() else { throw d.argErr() }
            a.put("value", d.val)
        case "hash", "delete":
            let kind = d.val
            guard d.nextArg() else { throw d.argErr() }
            a["type"] = .string(kind)
            a[nameKey] = .string(d.val)
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
        actions.append(.object(a))
    }
    return .object(["actions": actions.isEmpty ? .null : .array(actions)])
}

private func parseMultiRegexpFilter(_ d: Dispenser, _: CaddyfileRegistry) throws -> JSONValue {
    d.next()
    var ops: [JSONValue] = []
    while d.nextBlock(0) {
        switch d.val {
        case "regexp":
            if ops.count >= 50 { throw d.err("too many regexp operations (maximum 50 allowed)") }
            guard d.nextArg() else { throw d.argErr() }
            let re = d.val
            if re.utf8.count > 1000 { throw d.err("regexp pattern too long (maximum 1000 characters)") }
            if re.isEmpty { throw d.err("regexp pattern cannot be empty") }
            guard d.nextArg() else { throw d.argErr() }
            var op = JSONObject()
            op.put("regexp", re)
            op.put("value", d.val)
            ops.append(.object(op))
        default:
            throw d.err("unrecognized subdirective \(d.val)")
        }
    }
    if ops.isEmpty { throw d.err("multi_regexp filter requires at least one regexp operation") }
    return .object(["operations": .array(ops)])
}
