public import UsherCaddyfile
import UsherCore

/// The Caddyfile syntax of this target's modules, each kept beside its module (`CAPool+Caddyfile.swift`,
/// `Automation+Caddyfile.swift`); `StandardModules` lists it.
public enum TLSCaddyfile {
    public static let support = CaddyfileSupport(merging: [
        caPoolParsers,
        CaddyfileSupport(modules: ["tls.issuance.internal": { d, _ in .object(try parseInternalIssuer(d)) }]),
    ])
}
