public import UsherCore

/// `caddy.logging.encoders.append`: another encoder's output with fields added to every entry. A value that is
/// one placeholder (`{system.hostname}`, `{env.REGION}`) is looked up in the global placeholders when the entry is
/// written (`null` when unknown); request placeholders are not available here, as in Caddy.
public struct AppendEncoderModule: LogEncoderModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.append"
    /// `wrap`: the encoder that writes the entry. Default: JSON (console on a terminal).
    public var wrap: Loaded<LogEncoders>?
    /// `fields`: the fields to add, by key.
    public var fields: JSONObject

    package enum CodingKeys: String, CodingKey { case wrap, fields }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        wrap = try c.decodeIfPresent(Loaded<LogEncoders>.self, forKey: .wrap)
        switch try c.decodeIfPresent(JSONValue.self, forKey: .fields) ?? .null {
        case .null: fields = JSONObject()
        case .object(let o): fields = o
        default: throw c.error(.fields, "expected an object of fields")
        }
    }

    public func makeEncoder() -> any LogEncoder { makeEncoder(for: nil) }

    public func makeEncoder(for writer: (any LogWriter)?) -> any LogEncoder {
        var appended: [AppendLogEncoder.Field] = []
        for (key, value) in fields {
            if case .string(let s) = value, s.hasPrefix("{"), s.hasSuffix("}"), s.utf8.count >= 2,
                s.utf8.filter({ $0 == UInt8(ascii: "{") }).count == 1
            {
                appended.append(.init(key: key, placeholder: String(s.dropFirst().dropLast()), value: .null))
            } else {
                appended.append(.init(key: key, placeholder: nil, value: Self.logValue(value)))
            }
        }
        return AppendLogEncoder(wrapped: wrappedEncoder(wrap, for: writer), fields: appended)
    }

    /// A config value as Caddy logs it: numbers as Go's float64 (JSON decodes them so), objects with sorted keys.
    static func logValue(_ v: JSONValue) -> LogValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        case .number(let n): return .double(Double(n.text) ?? 0)
        case .array(let items): return .array(items.map(logValue))
        case .object(let o):
            return .object(o.sortedByKey().map { LogField($0.key, logValue($0.value)) })
        }
    }
}

struct AppendLogEncoder: LogEncoder {
    struct Field: Sendable {
        var key: String
        var placeholder: String?
        var value: LogValue
    }

    let wrapped: any LogEncoder
    let fields: [Field]

    func encode(_ entry: LogEntry, into out: inout [UInt8]) {
        var e = entry
        for f in fields {
            if let p = f.placeholder {
                e.fields.append(LogField(f.key, Replacer().get(p).map(LogValue.string) ?? .null))
            } else {
                e.fields.append(LogField(f.key, f.value))
            }
        }
        wrapped.encode(e, into: &out)
    }
}
