import ArgumentParser
import UsherCore
import UsherTLS

/// `usher revoke`: revokes a managed certificate at the ACME CA that issued it and removes it from storage, so the
/// server obtains a new one at its next start or reload (what certmagic's `RevokeCert` does).
struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revokes a managed certificate at its ACME CA and removes it from storage.",
        discussion: """
            The config decides which issuer and storage hold the certificate, as when the server runs it; the CA is \
            asked with the account that ordered it. A running server keeps serving the revoked certificate until it \
            is reloaded or restarted.
            """)

    @Option(name: [.short, .long], help: "Configuration file (required).") var config: String
    @Option(name: [.short, .long], help: "Name of the config adapter to apply.") var adapter: String?
    @Option(
        help:
            "Why (RFC 5280): unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation, or a code."
    ) var reason = "unspecified"
    @Argument(help: "The name the certificate was obtained for.") var name: String

    static let reasons = [
        "unspecified": 0, "key-compromise": 1, "affiliation-changed": 3, "superseded": 4,
        "cessation-of-operation": 5,
    ]

    func run() async throws {
        do {
            guard let code = Self.reasons[reason] ?? Int(reason), (0...10).contains(code), code != 7 else {
                throw CLIError("unknown revocation reason \(reason)")
            }
            let registry = try CLIState.registry()
            guard let loaded = try ConfigFiles.load(path: config, adapter: adapter, registry: registry) else {
                throw CLIError("--config is required")
            }
            let runtime = ServerRuntime(
                environment: RuntimeEnvironment(registry: registry, eventLoopGroup: makeEventLoopGroup()))
            let issuer = try await runtime.withProvisionedApps(loaded.config) { context in
                guard let tls = try await context.app("tls") as? TLSApp else {
                    throw CLIError("the config has no tls app")
                }
                return try await tls.revoke(name.lowercased(), reason: code)
            }
            printErr("revoked the certificate for \(name) (issuer \(issuer)) and removed it from storage")
        } catch {
            fail(error)
        }
    }
}
