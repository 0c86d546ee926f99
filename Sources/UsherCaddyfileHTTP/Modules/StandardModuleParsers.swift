import UsherCaddyfile
import UsherTLS

/// Parsers for standard Caddy modules configured from the Caddyfile whose Swift implementation does not live in
/// a target of its own yet; each moves next to its module when the module lands.
let standardModuleParsers: [CaddyfileSupport] = [
    otherHandlerParsers, loggingParsers, tlsModuleParsers,
    extraMatcherParsers,
]
