import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import UsherACME
public import UsherCore

/// `caddy.config_loaders.http` (`admin.config.load`): fetches the config to run from a URL, so every instance of
/// a fleet takes its config from one place. With `admin.config.load_delay` the URL is polled; a fetched config
/// that fails to load is logged and the running one stays.
public struct HTTPConfigLoader: ConfigLoader, Provisioner {
    public static let moduleID: ModuleID = "caddy.config_loaders.http"

    /// `method`: the request method. Default: `GET`.
    public var method: String?
    /// `url`: where the config is (placeholders such as `{env.*}` are replaced). Required.
    public var url: String
    /// `header`: request headers, name → values (placeholders replaced).
    public var header: [String: [String]]
    /// `timeout`: how long one request may take. Default: 60s.
    public var timeout: ConfigDuration?
    /// `adapter`: the config adapter for the response body (`caddyfile`); else the response's `Content-Type`
    /// chooses (`text/caddyfile`), and JSON is assumed without one.
    public var adapter: String?
    /// `tls`: client certificate and trusted roots for an `https` URL.
    public var tls: TLSOptions?

    /// `tls` of the HTTP config loader.
    public struct TLSOptions: Decodable, Sendable {
        /// `client_certificate_file` / `client_certificate_key_file`: PEM files of a client certificate.
        public var clientCertificateFile: String?
        public var clientCertificateKeyFile: String?
        /// `root_ca_pem_files`: PEM files of the CAs the server's certificate must chain to. Default: the system's.
        public var rootCAPEMFiles: [String]?

        package enum CodingKeys: String, CodingKey {
            case useServerIdentity = "use_server_identity"
            case clientCertificateFile = "client_certificate_file"
            case clientCertificateKeyFile = "client_certificate_key_file"
            case rootCAPEMFiles = "root_ca_pem_files"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if try c.decodeIfPresent(Bool.self, forKey: .useServerIdentity) == true {
                throw c.error(.useServerIdentity, "not supported: Usher has no server identity (admin.identity)")
            }
            clientCertificateFile = try c.decodeIfPresent(String.self, forKey: .clientCertificateFile)
            clientCertificateKeyFile = try c.decodeIfPresent(String.self, forKey: .clientCertificateKeyFile)
            rootCAPEMFiles = try c.decodeIfPresent([String].self, forKey: .rootCAPEMFiles)
        }
    }

    private var client: ACMEHTTPClient?
    private var logger: Logger?

    package enum CodingKeys: String, CodingKey { case method, url, header, timeout, adapter, tls }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        method = try c.decodeIfPresent(String.self, forKey: .method)
        url = try c.decodeIfPresent(String.self, forKey: .url) ?? ""
        if url.isEmpty { throw c.error(.url, "required") }
        header = try c.decodeIfPresent([String: [String]].self, forKey: .header) ?? [:]
        timeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .timeout)
        adapter = try c.decodeIfPresent(String.self, forKey: .adapter)
        tls = try c.decodeIfPresent(TLSOptions.self, forKey: .tls)
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        if let adapter, !adapter.isEmpty, context.registry.adapter(named: adapter) == nil {
            throw ConfigError(path: "admin.config.load.adapter", "unrecognized config adapter '\(adapter)'")
        }
        var config = TLSConfiguration.makeClientConfiguration()
        do {
            if let roots = tls?.rootCAPEMFiles, !roots.isEmpty {
                config.trustRoots = .certificates(try roots.flatMap { try NIOSSLCertificate.fromPEMFile($0) })
            }
            if let certFile = tls?.clientCertificateFile, let keyFile = tls?.clientCertificateKeyFile {
                config.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
                config.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
        } catch {
            throw ConfigError(path: "admin.config.load.tls", "\(error)")
        }
        let seconds = timeout.map { $0.isZero ? 60 : $0.seconds } ?? 60
        client = try ACMEHTTPClient(
            group: context.eventLoopGroup, tlsConfiguration: config,
            timeout: .nanoseconds(Int64(seconds * 1e9)))
        logger = context.logger("config_loader")
    }

    public func loadConfig(_ context: ProvisionContext) async throws -> JSONValue? {
        guard let client else { throw ConfigError("the http config loader was not provisioned") }
        let repl = Replacer()
        let method = HTTPMethod(
            rawValue: repl.replaceAll(self.method ?? "").uppercased().isEmpty
                ? "GET" : repl.replaceAll(self.method ?? "").uppercased())
        let url = repl.replaceAll(self.url)
        var headers: [(name: String, value: String)] = []
        for (name, values) in header.sorted(by: { $0.key < $1.key }) {
            for v in values { headers.append((repl.replaceAll(name), repl.replaceKnown(v))) }
        }
        // As Caddy: up to 10 attempts 500ms apart while the server cannot be reached or answers 5xx.
        var response: ACMEHTTPResponse?
        var lastError: (any Error)?
        for attempt in 0..<10 {
            do {
                let r = try await client.request(method, url, headers: headers)
                if r.status >= 200 && r.status <= 499 {
                    response = r
                    break
                }
                lastError = ConfigError("bad response status code from http loader url: \(r.status)")
            } catch {
                lastError = ConfigError("problem calling http loader url: \(error)")
            }
            if attempt < 9 { try await Task.sleep(nanoseconds: 500_000_000) }
        }
        guard let response else { throw lastError ?? ConfigError("no response from \(url)") }
        if response.status >= 400 { throw ConfigError("server responded with HTTP \(response.status)") }
        let contentType = adapter.map { "text/" + $0 } ?? response.header("Content-Type") ?? ""
        if let adapter = try context.registry.adapter(forContentType: contentType) {
            let adapted: ConfigAdaptation
            do {
                adapted = try adapter.adapt(response.body, filename: url, registry: context.registry)
            } catch {
                throw ConfigError("adapting config using \(adapter.name) adapter: \(error.usherDescription)")
            }
            for w in adapted.warnings { logger?.warning("\(w)") }
            return adapted.config
        }
        do {
            return try JSONValue.parse(response.body)
        } catch {
            throw ConfigError("decoding config from \(url): \(error)")
        }
    }
}
