import Foundation
import UsherCore

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %q %d %x %X %o %b %c %f %e %g %t %%`, with the flags
/// `-`, `+`, ` `, `0`, `#`, a width and a precision. A verb that does not fit its operand prints Go's
/// `%!d(string=x)` form; missing operands `%!d(MISSING)`; extra ones `%!(EXTRA type=value)`.
enum GoFormat {
    static func sprintf(_ format: String, _ args: [TemplateValue]) -> String {
        var out = ""
        let chars = Array(format.unicodeScalars)
        var i = 0
        var argIndex = 0
        while i < chars.count {
            let c = chars[i]
            guard c == "%" else {
                out.unicodeScalars.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < chars.count else {
                out += "%!(NOVERB)"
                break
            }
            var minus = false, plus = false, space = false, zero = false, sharp = false
            flags: while i < chars.count {
                switch chars[i] {
                case "-": minus = true
                case "+": plus = true
                case " ": space = true
                case "0": zero = true
                case "#": sharp = true
                default: break flags
                }
                i += 1
            }
            var width: Int?
            while i < chars.count, let d = chars[i].properties.numericType != nil ? Int(String(chars[i])) : nil {
                // As Go's parsenum: a number grown past 1e6 before another digit gives up on the rest of the
                // format (`%!(NOVERB)`), so widths stay under about 1e7.
                if (width ?? 0) > 1_000_000 {
                    width = nil
                    i = chars.count
                    break
                }
                width = (width ?? 0) * 10 + d
                i += 1
            }
            var precision: Int?
            if i < chars.count && chars[i] == "." {
                i += 1
                precision = 0
                while i < chars.count, let d = chars[i].properties.numericType != nil ? Int(String(chars[i])) : nil {
                    if precision! > 1_000_000 {
                        precision = nil
                        i = chars.count
                        break
                    }
                    precision = precision! * 10 + d
                    i += 1
                }
            }
            guard i < chars.count else {
                out += "%!(NOVERB)"
                break
            }
            let verb = chars[i]
            i += 1
            if verb == "%" {
                out += "%"
                continue
            }
            guard argIndex < args.count else {
                out += "%!\(verb)(MISSING)"
                continue
            }
            let arg = args[argIndex]
            argIndex += 1
            var body: String
            var numeric = false
            switch (verb, arg) {
            case ("v", _), ("s", .string):
                body = arg.printed
                if verb == "s" || !isNumber(arg), let p = precision { body = String(body.prefix(p)) }
                numeric = isNumber(arg)
            case ("s", _) where !isNumber(arg):
                body = arg.printed
            case ("q", .string(let s)): body = Go.quote(s)
            case ("q", .int(let n)):
                body = "'" + (Unicode.Scalar(UInt32(clamping: n)).map { String(Character($0)) } ?? "") + "'"
            case ("d", .int(let n)):
                body = String(n)
                numeric = true
            case ("x", .int(let n)), ("X", .int(let n)), ("o", .int(let n)), ("b", .int(let n)):
                let radix = verb == "o" ? 8 : verb == "b" ? 2 : 16
                body = String(n.magnitude, radix: radix, uppercase: verb == "X")
                if sharp { body = (verb == "o" ? "0" : verb == "b" ? "0b" : verb == "X" ? "0X" : "0x") + body }
                if n < 0 { body = "-" + body }
                numeric = true
            case ("x", .string(let s)), ("X", .string(let s)):
                body = s.utf8.map { String(format: verb == "X" ? "%02X" : "%02x", $0) }.joined()
            case ("c", .int(let n)):
                body = Unicode.Scalar(UInt32(clamping: n)).map { String(Character($0)) } ?? "\u{FFFD}"
            case ("t", .bool(let b)): body = b ? "true" : "false"
            case ("f", _), ("F", _), ("e", _), ("E", _), ("g", _), ("G", _):
                guard let d = double(arg) else {
                    body = "%!\(verb)(\(TemplateBuiltins.typeName(arg))=\(arg.printed))"
                    break
                }
                numeric = true
                switch verb {
                case "f", "F": body = String(format: "%.\(precision ?? 6)f", d)
                case "e", "E":
                    body = String(format: "%.\(precision ?? 6)\(verb)", d)
                default:
                    body =
                        precision.map { String(format: "%.\($0)\(verb)", d) }
                        ?? TemplateValue.formatFloat(d)
                }
            default:
                body = "%!\(verb)(\(TemplateBuiltins.typeName(arg))=\(arg.printed))"
            }
            if numeric && (plus || space) && !body.hasPrefix("-") { body = (plus ? "+" : " ") + body }
            if let width, body.count < width {
                let pad = width - body.count
                if minus {
                    body += String(repeating: " ", count: pad)
                } else if zero && numeric {
                    let sign = body.hasPrefix("-") || body.hasPrefix("+") ? String(body.removeFirst()) : ""
                    body = sign + String(repeating: "0", count: pad) + body
                } else {
                    body = String(repeating: " ", count: pad) + body
                }
            }
            out += body
        }
        if argIndex < args.count {
            out +=
                "%!(EXTRA "
                + args[argIndex...].map { "\(TemplateBuiltins.typeName($0))=\($0.printed)" }
                .joined(separator: ", ") + ")"
        }
        return out
    }

    static func isNumber(_ v: TemplateValue) -> Bool {
        switch v {
        case .int, .float: return true
        default: return false
        }
    }

    static func double(_ v: TemplateValue) -> Double? {
        switch v {
        case .float(let d): return d
        default: return nil
        }
    }
}
