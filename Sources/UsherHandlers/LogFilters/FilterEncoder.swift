public import UsherCore

/// A filter for one log field (`caddy.logging.encoders.filter.*`), as Caddy's `LogFieldFilter`.
public protocol LogFieldFilterModule: Module {
    /// The field as it should be logged, or `nil` to leave it out. Filters that rewrite text act on strings and on
    /// arrays of strings (header values); other values pass unchanged, as in Caddy, where such a filter rewrites
    /// a string the field does not carry.
    func filter(_ field: LogField) -> LogField?
}

/// The namespace of field filters (inline key `filter`).
public enum LogFieldFilters: ModuleNamespace {
    public static let prefix = "caddy.logging.encoders.filter"
    public static let inlineKey: String? = "filter"
    public typealias Instance = any LogFieldFilterModule
}

/// `caddy.logging.encoders.filter`: another encoder's output with chosen fields deleted, renamed or rewritten.
/// Nested fields are named by their path with `>` between keys, e.g. `request>headers>Authorization`.
public struct FilterEncoderModule: LogEncoderModule {
    public static let moduleID: ModuleID = "caddy.logging.encoders.filter"
    /// `wrap`: the encoder that writes the filtered entry. Default: JSON (console on a terminal).
    public var wrap: Loaded<LogEncoders>?
    /// `fields`: a filter per field path.
    public var fields: [String: Loaded<LogFieldFilters>]

    package enum CodingKeys: String, CodingKey { case wrap, fields }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        wrap = try c.decodeIfPresent(Loaded<LogEncoders>.self, forKey: .wrap)
        fields = try c.decodeIfPresent([String: Loaded<LogFieldFilters>].self, forKey: .fields) ?? [:]
    }

    public func makeEncoder() -> any LogEncoder { makeEncoder(for: nil) }

    public func makeEncoder(for writer: (any LogWriter)?) -> any LogEncoder {
        let tree = FilterTree()
        for (path, filter) in fields {
            tree.insert(
                path.split(separator: ">", omittingEmptySubsequences: false).map(String.init)[...], filter.module)
        }
        return FilterLogEncoder(wrapped: wrappedEncoder(wrap, for: writer), filters: tree.frozen())
    }
}

/// The encoder an encoder-wrapping module writes with: its `wrap`, else console on a terminal and JSON otherwise.
func wrappedEncoder(_ wrap: Loaded<LogEncoders>?, for writer: (any LogWriter)?) -> any LogEncoder {
    if let w = wrap?.module { return w.makeEncoder(for: writer) }
    return writer.map(LoggingConfig.defaultEncoder) ?? JSONLogEncoderModule().makeEncoder()
}

/// Filters by field path, as a tree walked beside the entry's fields, so an entry's unfiltered parts are neither
/// copied nor named by joined paths. Nodes have few children: a linear scan beats hashing the key.
final class FieldFilterNode: Sendable {
    let filter: (any LogFieldFilterModule)?
    let children: [(key: String, node: FieldFilterNode)]

    init(filter: (any LogFieldFilterModule)?, children: [(key: String, node: FieldFilterNode)]) {
        self.filter = filter
        self.children = children
    }

    func child(_ key: String) -> FieldFilterNode? {
        for c in children where c.key == key { return c.node }
        return nil
    }
}

/// The mutable tree the encoder's config is read into, frozen into ``FieldFilterNode``s.
private final class FilterTree {
    var filter: (any LogFieldFilterModule)?
    var children: [String: FilterTree] = [:]

    func insert(_ path: ArraySlice<String>, _ f: any LogFieldFilterModule) {
        guard let first = path.first else {
            filter = f
            return
        }
        let child = children[first] ?? FilterTree()
        children[first] = child
        child.insert(path.dropFirst(), f)
    }

    func frozen() -> FieldFilterNode {
        FieldFilterNode(
            filter: filter, children: children.sorted { $0.key < $1.key }.map { (key: $0.key, node: $0.value.frozen()) }
        )
    }
}

struct FilterLogEncoder: LogEncoder {
    let wrapped: any LogEncoder
    let filters: FieldFilterNode

    func encode(_ entry: LogEntry, into out: inout [UInt8]) {
        // The wrapped encoder applies the filters as it writes each field: no filtered copy of the entry is made.
        wrapped.encode(entry, rewriting: filters, into: &out)
    }

}

extension FieldFilterNode: LogFieldRewriter {
    /// A filter on an object takes the object whole: its own fields are not filtered further, as in Caddy, where
    /// the filtered value goes straight to the wrapped encoder.
    func rewrite(_ field: LogField) -> LogFieldRewrite {
        guard let child = child(field.key) else { return .keep }
        if let filter = child.filter { return .replace(filter.filter(field)) }
        if !child.children.isEmpty, case .object = field.value { return .descend(child) }
        return .keep
    }
}
