import ArgumentParser
import Foundation
import UsherCore
import UsherTLS

#if canImport(Glibc)
import Glibc
#endif

/// `usher file-server`: serves a directory with no config file (Caddy's `file-server` command).
struct FileServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "file-server",
        abstract: "Spins up a production-ready file server.",
        discussion: """
            Serves the current directory (or --root) with compression on. With --domain, the site gets HTTPS with
            a certificate from the internal CA and HTTP redirects to it; otherwise it listens on --listen (:80).
            """
    )

    @Option(name: [.short, .long], help: "The directory to serve.") var root = "."
    @Option(name: [.short, .long], help: "The address to listen on (default :80, or :443 with --domain).") var listen:
        String?
    @Option(name: [.short, .long], help: "A domain name to serve, with automatic HTTPS.") var domain: String?
    @Flag(name: [.short, .long], help: "List directories without an index file.") var browse = false
    @Flag(help: "Reveal symlink targets in listings.") var revealSymlinks = false
    @Option(help: "Serve precompressed sidecar files for these encodings (gzip, zstd, br).") var precompressed:
        [String] = []
    @Flag(help: "Do not compress responses.") var noCompress = false
    @Flag(name: [.short, .long], help: "Log each request.") var accessLog = false
    @Flag(name: [.customShort("v"), .customLong("debug")], help: "Log at debug level.") var debug = false

    func run() async throws {
        var fileServer: JSONObject = ["handler": "file_server", "root": .string(root)]
        if browse {
            fileServer["browse"] = revealSymlinks ? ["reveal_symlinks": true] : .object([:])
        }
        if !precompressed.isEmpty {
            var p = JSONObject()
            for name in precompressed {
                guard ["gzip", "zstd", "br"].contains(name) else {
                    fail(CLIError("unknown precompressed encoding '\(name)'"))
                }
                p[name] = .object([:])
            }
            fileServer["precompressed"] = .object(p)
            fileServer["precompressed_order"] = .array(precompressed.map { .string($0) })
        }
        var handlers: [JSONValue] = []
        if !noCompress {
            handlers.append([
                "handler": "encode", "encodings": ["gzip": .object([:]), "zstd": .object([:])],
                "prefer": ["zstd", "gzip"],
            ])
        }
        handlers.append(.object(fileServer))
        var route: JSONObject = ["handle": .array(handlers)]
        var address = listen ?? (domain == nil ? ":80" : ":443")
        if !address.contains(":") { address = ":" + address }
        if let domain {
            route["match"] = [["host": [.string(domain)]]]
        }
        var server: JSONObject = ["listen": [.string(address)], "routes": [.object(route)]]
        if accessLog { server["logs"] = .object([:]) }
        if domain == nil { server["automatic_https"] = ["disable": true] }
        var config: JSONObject = [
            "admin": ["disabled": true], "apps": ["http": ["servers": ["static": .object(server)]]],
        ]
        if debug { config["logging"] = ["logs": ["default": ["level": "DEBUG"]]] }
        try await runUntilStopped(config: .object(config), banner: "Serving \(root) on \(address)")
    }
}

/// Loads a config built by a command and serves until a signal stops it.
func runUntilStopped(config: JSONValue, banner: String) async throws {
    let registry: ModuleRegistry
    do { registry = try CLIState.registry() } catch { fail(error) }
    let group = makeEventLoopGroup()
    let runtime = ServerRuntime(environment: RuntimeEnvironment(registry: registry, eventLoopGroup: group))
    do {
        try await runtime.load(config, force: true)
    } catch {
        fail(error)
    }
    printErr(banner)
    let signals = SignalHandling(
        runtime: runtime, logger: runtime.environment.logRouter.logger(""), configPath: nil, adapter: nil,
        registry: registry)
    signals.install()
    await runtime.waitForStop()
    Glibc.exit(0)
}

/// `usher trust`: prints where the internal CA's root certificate is, creating the CA if needed, and with
/// `--install` adds it to the system trust store.
struct TrustCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trust",
        abstract: "Shows (and with --install, installs) the root certificate of an internal CA.",
        discussion:
            "The CA lives under the data directory: $USHER_DATA, else $XDG_DATA_HOME/usher, else ~/.local/share/usher."
    )

    @Option(help: "The CA's ID in the pki app.") var ca = "local"
    @Option(help: "The data directory (overrides USHER_DATA).") var dataDir: String?
    @Flag(help: "Install the root into the system trust store (needs root; runs update-ca-certificates).") var install =
        false

    func run() async throws {
        if let dataDir { ProcessEnvironment.set("USHER_DATA", dataDir) }
        let authority = CertificateAuthority.stored(id: ca, dataDirectory: StoragePaths.fromEnvironment().dataDirectory)
        do {
            try await authority.prepare()
        } catch {
            fail(CLIError("preparing CA \(ca): \(error)"))
        }
        printOut(authority.rootCertificatePath ?? "")
        guard install else { return }
        do {
            let path = try await authority.installRootInSystemTrust()
            printErr("installed \(path) into the system trust store")
        } catch {
            fail(CLIError("installing root certificate: \(error)"))
        }
    }
}

/// `usher untrust`: removes an internal CA's root from the system trust store.
struct UntrustCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "untrust", abstract: "Removes an internal CA's root from the system trust store.")

    @Option(help: "The CA's ID in the pki app.") var ca = "local"

    func run() async throws {
        let authority = CertificateAuthority.stored(id: ca, dataDirectory: StoragePaths.fromEnvironment().dataDirectory)
        do {
            if try authority.removeRootFromSystemTrust() {
                printErr("removed \(authority.systemTrustPath) from the system trust store")
            } else {
                printErr("\(authority.systemTrustPath) is not installed; nothing to do")
            }
        } catch {
            fail(CLIError("removing root certificate: \(error)"))
        }
    }
}

/// `usher reverse-proxy`: proxies one address to one or more upstreams with no config file (Caddy's command).
struct ReverseProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reverse-proxy",
        abstract: "A quick reverse proxy.",
        discussion: """
            Proxies --from (default :80; a host name there gets HTTPS from the internal CA, as automatic HTTPS gives
            any site) to each --to, round robin.
            """
    )

    @Option(name: [.short, .long], help: "The address to listen on: [host][:port].") var from = ":80"
    @Option(name: [.short, .long], help: "An upstream address (repeatable).") var to: [String] = []
    @Option(
        name: [.customShort("H"), .customLong("header-up")],
        help: "A request header to set, \"Field: value\" (repeatable).")
    var headerUp: [String] = []
    @Option(
        name: [.customShort("d"), .customLong("header-down")],
        help: "A response header to set, \"Field: value\" (repeatable).")
    var headerDown: [String] = []
    @Flag(name: [.short, .customLong("change-host-header")], help: "Send the upstream's address as Host.")
    var changeHostHeader = false
    @Flag(name: [.customLong("access-log")], help: "Log each request.") var accessLog = false
    @Flag(name: [.customShort("v"), .customLong("debug")], help: "Log at debug level.") var debug = false

    func run() async throws {
        guard !to.isEmpty else { fail(CLIError("at least one --to address is required")) }
        var listen = from
        var host = ""
        if let colon = from.lastIndex(of: ":"), !from.hasSuffix("]") {
            host = String(from[..<colon])
        } else {
            host = from
            listen = ":" + (host.isEmpty ? "80" : "443")
        }
        if !host.isEmpty { listen = ":" + (listen.split(separator: ":").last.map(String.init) ?? "443") }
        func ops(_ pairs: [String]) -> JSONValue {
            var set = JSONObject()
            for h in pairs {
                guard let colon = h.firstIndex(of: ":") else {
                    fail(CLIError("header '\(h)' must be \"Field: value\""))
                }
                let name = String(h[..<colon]).trimmingCharacters(in: .whitespaces)
                let value = String(h[h.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                set[name] = .array((set[name]?.arrayValue ?? []) + [.string(value)])
            }
            return .object(["set": .object(set)])
        }
        var request = ops(headerUp)
        if changeHostHeader, case .object(var o) = request, case .object(var set)? = o["set"] {
            set["Host"] = ["{http.reverse_proxy.upstream.hostport}"]
            o["set"] = .object(set)
            request = .object(o)
        }
        var handler: JSONObject = [
            "handler": "reverse_proxy",
            "upstreams": .array(to.map { .object(["dial": .string($0)]) }),
            "load_balancing": ["selection_policy": ["policy": "round_robin"]],
        ]
        var headers = JSONObject()
        if !headerUp.isEmpty || changeHostHeader { headers["request"] = request }
        if !headerDown.isEmpty { headers["response"] = ops(headerDown) }
        if !headers.isEmpty { handler["headers"] = .object(headers) }
        var route: JSONObject = ["handle": [.object(handler)]]
        if !host.isEmpty { route["match"] = [["host": [.string(host)]]] }
        var server: JSONObject = ["listen": [.string(listen)], "routes": [.object(route)]]
        if host.isEmpty { server["automatic_https"] = ["disable": true] }
        if accessLog { server["logs"] = .object([:]) }
        var config: JSONObject = [
            "admin": ["disabled": true], "apps": ["http": ["servers": ["proxy": .object(server)]]],
        ]
        if debug { config["logging"] = ["logs": ["default": ["level": "DEBUG"]]] }
        try await runUntilStopped(config: .object(config), banner: "Proxying \(from) to \(to.joined(separator: ", "))")
    }
}
