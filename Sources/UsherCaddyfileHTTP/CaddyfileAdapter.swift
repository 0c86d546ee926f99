public import UsherCaddyfile
public import UsherCore
import UsherTLS

/// The `caddyfile` config adapter: parses a Caddyfile and lowers it to Caddy JSON with the HTTP server type, using
/// the Caddyfile parsers of every bundle in the binary.
public struct CaddyfileAdapter: ConfigAdapter {
    public let name = "caddyfile"

    public init() {}

    public func adapt(_ body: [UInt8], filename: String, registry: ModuleRegistry) throws -> ConfigAdaptation {
        try adapt(body, filename: filename, caddyfileRegistry: try CaddyfileRegistry(registry: registry))
    }

    /// Adapts with an explicit set of parsers.
    public func adapt(_ body: [UInt8], filename: String, caddyfileRegistry: CaddyfileRegistry) throws
        -> ConfigAdaptation
    {
        let file = filename.isEmpty ? "Caddyfile" : filename
        let text = String(decoding: body, as: UTF8.self)
        let blocks = try CaddyfileParser.parse(filename: file, input: text)
        var (config, warnings) = try HTTPServerType(registry: caddyfileRegistry).setup(blocks)
        if let diff = CaddyfileFormatter.formattingDifference(filename: file, input: text) {
            warnings.append(AdapterWarning(file: file, line: diff.line, message: diff.message))
        }
        return ConfigAdaptation(config: .object(config), warnings: warnings)
    }
}

/// The HTTP server type's own Caddyfile support: built-in directives and global options, and parsers for the
/// standard modules whose runtime lives elsewhere or is not in this build yet.
public enum HTTPCaddyfile {
    public static var support: [CaddyfileSupport] {
        [builtinDirectives, builtinGlobalOptions] + standardModuleParsers
    }
}
