/// Decodes config from a ``JSONValue`` strictly: a member that the target type's coding keys do not name is an
/// error, as is a value of the wrong type, and every error names its JSON path.
///
/// Modules are ordinary `Decodable` types; their synthesized `CodingKeys` are the list of accepted members.
public struct ConfigDecoder: Sendable {
    public let registry: ModuleRegistry?

    public init(registry: ModuleRegistry?) {
        self.registry = registry
    }

    /// Decodes `type` from `value`; `path` names where `value` sits in the whole document.
    public func decode<T: Decodable>(
        _ type: T.Type,
        from value: JSONValue,
        path: [any CodingKey] = []
    ) throws -> T {
        let decoder = StrictJSONDecoder(value: value, codingPath: path, registry: registry, ignoredKey: nil)
        return try decoder.decodeWrapping(type)
    }
}

extension CodingUserInfoKey {
    /// The ``ModuleRegistry`` that ``Loaded`` uses to find module types.
    public static let usherModuleRegistry = CodingUserInfoKey(rawValue: "usher.moduleRegistry")!
}

/// The decoder behind ``ConfigDecoder``.
final class StrictJSONDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let registry: ModuleRegistry?
    /// A member to skip in the strict check: the inline key that named this module (`"handler"`).
    let ignoredKey: String?
    /// Whether the module looked at its value at all (a container, or the raw JSON); if not, its members were
    /// never checked.
    private(set) var requestedKeyedContainer = false

    func markInspected() { requestedKeyedContainer = true }
    var userInfo: [CodingUserInfoKey: Any] {
        guard let registry else { return [:] }
        return [.usherModuleRegistry: registry]
    }

    init(value: JSONValue, codingPath: [any CodingKey], registry: ModuleRegistry?, ignoredKey: String?) {
        self.value = value
        self.codingPath = codingPath
        self.registry = registry
        self.ignoredKey = ignoredKey
    }

    var pathString: String { jsonPathString(codingPath) }

    func error(_ message: String) -> ConfigError { ConfigError(path: pathString, message) }

    func typeError(expected: String) -> ConfigError {
        error("expected \(expected), got \(article(value.kindName))")
    }

    /// Decodes `T` here, turning any error that does not yet name a path into one that names this one.
    func decodeWrapping<T: Decodable>(_ type: T.Type) throws -> T {
        if type == JSONValue.self { return value as! T }
        do {
            return try T(from: self)
        } catch let e as ConfigError {
            throw e
        } catch let e as DecodingError {
            throw ConfigError(path: pathString, e.usherDescription)
        } catch {
            throw ConfigError(path: pathString, String(describing: error))
        }
    }

    func child(_ value: JSONValue, key: any CodingKey, ignoredKey: String? = nil) -> StrictJSONDecoder {
        StrictJSONDecoder(value: value, codingPath: codingPath + [key], registry: registry, ignoredKey: ignoredKey)
    }

    func withIgnoredKey(_ key: String) -> StrictJSONDecoder {
        StrictJSONDecoder(value: value, codingPath: codingPath, registry: registry, ignoredKey: key)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let object) = value else { throw typeError(expected: "an object") }
        requestedKeyedContainer = true
        // "@id" tags objects for the admin API's /id/ paths and may appear in any object.
        for member in object where member.key != ignoredKey && member.key != "@id" {
            if Key(stringValue: member.key) == nil {
                throw ConfigError(path: jsonPathString(codingPath + [AnyCodingKey(member.key)]), "unknown field")
            }
        }
        return KeyedDecodingContainer(StrictKeyedContainer<Key>(decoder: self, object: object))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        requestedKeyedContainer = true
        guard case .array(let array) = value else { throw typeError(expected: "an array") }
        return StrictUnkeyedContainer(decoder: self, array: array)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        requestedKeyedContainer = true
        return StrictSingleValueContainer(decoder: self)
    }
}

private func article(_ kind: String) -> String {
    switch kind {
    case "null": "null"
    case "array", "object": "an \(kind)"
    default: "a \(kind)"
    }
}

// MARK: - Primitive decoding shared by the containers

extension StrictJSONDecoder {
    func decodeBool() throws -> Bool {
        guard case .bool(let b) = value else { throw typeError(expected: "a boolean") }
        return b
    }

    func decodeString() throws -> String {
        guard case .string(let s) = value else { throw typeError(expected: "a string") }
        return s
    }

    func decodeDouble() throws -> Double {
        guard case .number(let n) = value, let d = n.double else { throw typeError(expected: "a number") }
        return d
    }

    func decodeInteger<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard case .number(let n) = value else { throw typeError(expected: "an integer") }
        guard let i = n.int, let v = T(exactly: i) else {
            throw error("\(n.text) is not an integer in the range of \(T.self)")
        }
        return v
    }

    func decodeAny<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is Bool.Type: return try decodeBool() as! T
        case is String.Type: return try decodeString() as! T
        case is Int.Type: return try decodeInteger(Int.self) as! T
        case is Double.Type: return try decodeDouble() as! T
        default: return try decodeWrapping(type)
        }
    }
}

// MARK: - Containers

struct StrictKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: StrictJSONDecoder
    let object: JSONObject

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

    private func child(_ key: Key) throws -> StrictJSONDecoder {
        guard let v = object[key.stringValue] else {
            throw ConfigError(path: decoder.pathString, "missing required field \"\(key.stringValue)\"")
        }
        return decoder.child(v, key: key)
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let v = object[key.stringValue] else { return true }
        return v.isNull
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try child(key).decodeBool() }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try child(key).decodeString() }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try child(key).decodeDouble() }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try child(key).decodeDouble()) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try child(key).decodeInteger(Int.self) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try child(key).decodeInteger(Int8.self) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try child(key).decodeInteger(Int16.self) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try child(key).decodeInteger(Int32.self) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try child(key).decodeInteger(Int64.self) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try child(key).decodeInteger(UInt.self) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try child(key).decodeInteger(UInt8.self) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try child(key).decodeInteger(UInt16.self) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try child(key).decodeInteger(UInt32.self) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try child(key).decodeInteger(UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try child(key).decodeWrapping(type) }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let v = object[key.stringValue], !v.isNull else { return nil }
        return try decoder.child(v, key: key).decodeAny(type)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type,
        forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try child(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try child(key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder.child(object[key.stringValue] ?? .null, key: key)
    }
}

struct StrictUnkeyedContainer: UnkeyedDecodingContainer {
    let decoder: StrictJSONDecoder
    let array: [JSONValue]
    var currentIndex = 0

    init(decoder: StrictJSONDecoder, array: [JSONValue]) {
        self.decoder = decoder
        self.array = array
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { array.count }
    var isAtEnd: Bool { currentIndex >= array.count }

    private mutating func next() throws -> StrictJSONDecoder {
        guard !isAtEnd else { throw ConfigError(path: decoder.pathString, "unexpected end of array") }
        let d = decoder.child(array[currentIndex], key: AnyCodingKey(intValue: currentIndex))
        currentIndex += 1
        return d
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return false }
        if array[currentIndex].isNull {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next().decodeBool() }
    mutating func decode(_ type: String.Type) throws -> String { try next().decodeString() }
    mutating func decode(_ type: Double.Type) throws -> Double { try next().decodeDouble() }
    mutating func decode(_ type: Float.Type) throws -> Float { Float(try next().decodeDouble()) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next().decodeInteger(Int.self) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next().decodeInteger(Int8.self) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next().decodeInteger(Int16.self) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next().decodeInteger(Int32.self) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next().decodeInteger(Int64.self) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next().decodeInteger(UInt.self) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next().decodeInteger(UInt8.self) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next().decodeInteger(UInt16.self) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next().decodeInteger(UInt32.self) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next().decodeInteger(UInt64.self) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decodeWrapping(type) }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { try next() }
}

struct StrictSingleValueContainer: SingleValueDecodingContainer {
    let decoder: StrictJSONDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    func decodeNil() -> Bool { decoder.value.isNull }
    func decode(_ type: Bool.Type) throws -> Bool { try decoder.decodeBool() }
    func decode(_ type: String.Type) throws -> String { try decoder.decodeString() }
    func decode(_ type: Double.Type) throws -> Double { try decoder.decodeDouble() }
    func decode(_ type: Float.Type) throws -> Float { Float(try decoder.decodeDouble()) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.decodeInteger(Int.self) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.decodeInteger(Int8.self) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.decodeInteger(Int16.self) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.decodeInteger(Int32.self) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.decodeInteger(Int64.self) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.decodeInteger(UInt.self) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.decodeInteger(UInt8.self) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.decodeInteger(UInt16.self) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.decodeInteger(UInt32.self) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.decodeInteger(UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeWrapping(type) }
}

// MARK: - Raw JSON and helpers for module authors

extension JSONValue: Decodable {
    /// Takes the raw value from the config decoder; from other decoders, rebuilds it as far as they allow.
    public init(from decoder: any Decoder) throws {
        if let strict = decoder as? StrictJSONDecoder {
            strict.markInspected()
            self = strict.value
            return
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .number(JSONNumber(i))
        } else if let d = try? c.decode(Double.self) {
            self = .number(JSONNumber(d))
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            let o = try c.decode([String: JSONValue].self)
            self = .object(JSONObject(o.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }))
        }
    }
}

extension Decoder {
    /// The raw JSON this decoder reads, when it is the config decoder.
    public var rawJSON: JSONValue? {
        guard let strict = self as? StrictJSONDecoder else { return nil }
        strict.markInspected()
        return strict.value
    }

    /// The JSON path of this decoder's value, for error messages.
    public var configPath: String { jsonPathString(codingPath) }

    /// An error naming this decoder's JSON path.
    public func configError(_ message: String) -> ConfigError {
        ConfigError(path: configPath, message)
    }
}

extension KeyedDecodingContainer {
    /// Refuses members that belong to the schema but are not implemented yet, rather than ignoring them.
    public func refuseUnsupported(_ keys: [Key], note: String? = nil) throws {
        for key in keys where contains(key) {
            let path = jsonPathString(codingPath + [key])
            throw ConfigError(path: path, "not supported yet" + (note.map { ": \($0)" } ?? ""))
        }
    }

    /// An error naming the JSON path of `key`.
    public func error(_ key: Key, _ message: String) -> ConfigError {
        ConfigError(path: jsonPathString(codingPath + [key]), message)
    }
}
