import Logging
import NIOCore
import NIOHTTP1
import UsherCore
import UsherTLS

/// The writer a protocol's connection hands to the server: a ``ResponseWriter`` the server can complete.
protocol RootResponseWriter: ResponseWriter, ResponseAccounting {
    /// Completes the response.
    func finish() async throws
    /// Gives up on the response: the connection closes after what was sent.
    func abandon()
}

extension HTTP1ResponseWriter: RootResponseWriter {}

/// A provisioned server: the compiled chains and settings that listeners dispatch requests to. Immutable; a
/// reload makes a new one and swaps it into the listener slots.
public final class HTTPServerInstance: Sendable {
    public let name: String
    let info: ServerInfo
    let listen: [NetworkAddress]
    let primary: any HTTPHandler
    let errorChain: (any HTTPHandler)?
    let settings: ConnectionSettings
    let logs: ServerLogConfig?
    let router: LogRouter
    let errorLogger: Logger
    /// TLS policies and certificates, when the server speaks TLS.
    let tls: ServerTLS?
    /// `h1`, `h2`, `h2c`: what connections may speak.
    let protocols: Set<String>
    /// Requests over TLS must name the host the handshake named.
    let strictSNIHost: Bool
    /// HTTP/3 on the UDP ports of the listen addresses: the server has TLS and `h3` among its protocols. Not
    /// when a policy asks for client certificates, which the QUIC stack cannot verify yet.
    let servesHTTP3: Bool
    /// ACME HTTP-01 challenges this process presents, answered ahead of routes as Caddy does.
    let challenges: ACMEChallengeBoard?

    init(
        name: String, config: ServerConfig, router: LogRouter, tls: ServerTLS?, challenges: ACMEChallengeBoard? = nil
    ) {
        self.name = name
        self.challenges = challenges
        self.tls = tls
        self.protocols = Set(config.protocols)
        self.strictSNIHost =
            config.strictSNIHost
            ?? (config.tlsConnectionPolicies ?? []).contains { $0.clientAuthentication != nil }
        self.servesHTTP3 = tls != nil && protocols.contains("h3") && tls?.requestsClientCertificates != true
        self.listen = config.listen
        self.primary = config.routes.compile(next: EmptyHandler())
        if let errors = config.errors, !errors.routes.isEmpty {
            self.errorChain = errors.routes.compile(next: ErrorEmptyHandler())
        } else {
            self.errorChain = nil
        }
        var settings = config.connectionSettings
        if tls != nil {
            settings.scheme = "https"
            settings.zeroCopy = false
        }
        self.settings = settings
        self.logs = config.logs
        var named: [String: any HTTPHandler] = [:]
        for (n, r) in config.namedRoutes {
            named[n] = RouteList([r]).compile(next: EmptyHandler())
        }
        self.info = ServerInfo(
            name: name,
            namedRoutes: named,
            clientIP: ClientIPResolver(
                trustedProxies: config.trustedProxies?.module, headers: config.clientIPHeaders,
                strict: config.trustedProxiesStrict > 0, trustUnix: config.trustedProxiesUnix
            ),
            primary: primary
        )
        self.router = router
        self.errorLogger = router.logger("http.log.error")
    }

    /// Serves one request to completion: client IP, the handler chain, error routes, the access log.
    func serve(_ request: Request, _ writer: some RootResponseWriter) async {
        writer.headers.add(name: "Server", value: "Usher")
        if servesHTTP3, request.version.major < 3, request.tls != nil, let port = request.localAddress?.port {
            // Clients that see this may come back over QUIC (quic-go's value, which Caddy sends).
            writer.headers.add(name: "Alt-Svc", value: "h3=\":\(port)\"; ma=2592000")
        }
        request.topWriter = writer
        if let challenges, challenges.mayAnswerHTTP(path: request.escapedPath), request.method == .GET,
            let (answer, distributed) = await challenges.httpAnswer(
                host: request.hostWithoutPort, path: request.escapedPath)
        {
            writer.headers.replaceOrAdd(name: "Content-Type", value: "text/plain")
            writer.headers.replaceOrAdd(name: "Content-Length", value: String(answer.utf8.count))
            try? await writer.writeHead(.ok)
            try? await writer.write(answer)
            await finish(request, writer)
            router.log(
                LogEntry(
                    level: .info, logger: "tls.issuance.acme", message: "served key authentication",
                    fields: [
                        LogField("identifier", .string(request.hostWithoutPort)), LogField("challenge", "http-01"),
                        LogField("distributed", .bool(distributed)),
                        LogField("remote", .string(request.remoteAddress?.description ?? "")),
                    ]))
            return
        }
        do {
            if strictSNIHost, let tls = request.tls, request.hostWithoutPort.lowercased() != tls.serverName {
                throw HandlerError(
                    status: 421,
                    HTTPErrorMessage(
                        "strict host matching: TLS ServerName (\(tls.serverName)) and HTTP Host (\(request.hostWithoutPort)) values differ"
                    ))
            }
            try await primary.serve(request, writer)
        } catch {
            await handleError(error, request, writer)
        }
        await finish(request, writer)
    }

    private func finish(_ request: Request, _ writer: some RootResponseWriter) async {
        do {
            try await writer.finish()
        } catch {
            writer.abandon()
        }
        if let logs, logs.shouldLog(host: request.hostWithoutPort) {
            logAccess(request, writer, logs)
        }
    }

    private func handleError(_ error: any Error, _ request: Request, _ writer: some RootResponseWriter) async {
        if error is ClientDisconnectedError || error is CancellationError || error is AbortConnectionError {
            writer.abandon()
            return
        }
        let he = HandlerError.from(error)
        // Error routes see the request as it arrived, before rewrites.
        request.method = request.original.method
        request.escapedPath = request.original.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        request.rawQuery = request.original.rawQuery
        let fields: [LogField] = [
            LogField("request", requestLogObject(request, credentials: false)),
            LogField("duration", .duration(request.elapsedSeconds)),
            LogField("status", .int(he.status)),
            LogField("err_id", .string(he.id)),
            LogField("err_trace", .string(he.trace)),
        ]
        if let errorChain {
            HTTPErrorConfig.prepare(request, for: error)
            do {
                try await errorChain.serve(request, writer)
                router.log(LogEntry(level: .debug, logger: "http.log.error", message: he.message, fields: fields))
            } catch {
                router.log(
                    LogEntry(
                        level: .error, logger: "http.log.error", message: "error handling handler error",
                        fields: [LogField("error", .string("\(error)"))] + fields))
                await writeStatus(he.status, writer)
            }
            return
        }
        router.log(
            LogEntry(
                level: he.status >= 500 ? .error : .debug, logger: "http.log.error", message: he.message, fields: fields
            ))
        await writeStatus(he.status, writer)
    }

    private func writeStatus(_ status: Int, _ writer: some RootResponseWriter) async {
        if writer.status != nil {
            // Part of a response is out already; the client can only learn of the failure by the connection closing.
            writer.abandon()
            return
        }
        // The error replaces whatever body a handler announced (a template that failed after file_server set
        // the file's length): the status goes out with no body.
        writer.headers.remove(name: "Content-Length")
        try? await writer.writeHead(HTTPResponseStatus(statusCode: status))
    }

    // MARK: - Access log

    private func logAccess(_ request: Request, _ writer: some RootResponseWriter, _ logs: ServerLogConfig) {
        if case .bool(true) = request.vars["log_skip"] ?? .null { return }
        let status = Int(writer.status?.code ?? 0)
        let duration = request.elapsedSeconds
        var names: [String]
        if case .array(let override) = request.vars["access_logger_names"] ?? .null {
            names = override.compactMap(\.stringValue)
        } else {
            names = logs.loggerNames(forHost: request.hostWithoutPort)
        }
        if names.isEmpty { names = [""] }
        let level: LogLevel = status >= 500 ? .error : .info
        let loggerNames = names.map { $0.isEmpty ? "http.log.access" : "http.log.access." + $0 }
        guard loggerNames.contains(where: { router.enabled(level, for: $0) }) else { return }
        if request.hasReplacer {
            let r = request.replacer
            r.set("http.response.status", String(status))
            r.set("http.response.size", String(writer.bodyBytesWritten))
            r.set("http.response.duration", formatGoDuration(duration))
            r.set("http.response.duration_ms", String(duration * 1000))
        }
        let userID = request.hasReplacer ? (request.replacer.get("http.auth.user.id") ?? "") : ""
        var fields: [LogField] = [
            LogField("request", requestLogObject(request, credentials: logs.shouldLogCredentials)),
            LogField("bytes_read", .int(request.bodyBytesRead)),
            LogField("user_id", .string(userID)),
            LogField("duration", .duration(duration)),
            LogField("size", .int(writer.bodyBytesWritten)),
            LogField("status", .int(status)),
            LogField("resp_headers", headersLogObject(writer.headers, credentials: logs.shouldLogCredentials)),
        ]
        fields += request.extraLogFields
        let message: String
        if case .bool(true) = request.vars["unhandled"] ?? .null {
            message = "NOP"
        } else {
            message = "handled request"
        }
        for name in loggerNames {
            router.log(LogEntry(level: level, time: .now(), logger: name, message: message, fields: fields))
        }
    }

    private func requestLogObject(_ request: Request, credentials: Bool) -> LogValue {
        var fields: [LogField] = []
        if let remote = request.remoteAddress {
            if case .unixDomainSocket = remote {
                fields.append(LogField("remote_ip", .string("@")))
                fields.append(LogField("remote_port", .string("")))
            } else {
                fields.append(LogField("remote_ip", .string(remote.ip?.description ?? "")))
                fields.append(LogField("remote_port", .string(remote.port.map(String.init) ?? "")))
            }
        }
        if !request.clientIP.isEmpty { fields.append(LogField("client_ip", .string(request.clientIP))) }
        fields.append(LogField("proto", .string(request.protocolString)))
        fields.append(LogField("method", .string(request.original.method.rawValue)))
        fields.append(LogField("host", .string(request.host)))
        fields.append(LogField("uri", .string(request.original.uri)))
        // Go keeps Host out of the header map; so do the logs.
        var headers = request.headers
        headers.remove(name: "Host")
        fields.append(LogField("headers", headersLogObject(headers, credentials: credentials)))
        if let tls = request.tls {
            // Caddy also logs `resumed` and `cipher_suite`; swift-nio-ssl does not expose them.
            var t: [LogField] = [
                LogField("version", .int(Int(tls.version))),
                LogField("proto", .string(tls.negotiatedProtocol)),
                LogField("server_name", .string(tls.serverName)),
            ]
            if let cert = tls.clientCertificate {
                t.append(LogField("client_common_name", .string(cert.commonName)))
                t.append(LogField("client_serial", .string(cert.serial)))
            }
            fields.append(LogField("tls", .object(t)))
        }
        return .object(fields)
    }

    private func headersLogObject(_ headers: HTTPHeaders, credentials: Bool) -> LogValue {
        var order: [String] = []
        var values: [String: [LogValue]] = [:]
        for (name, value) in headers {
            let key = canonicalHeaderName(name)
            if values[key] == nil { order.append(key) }
            var v = value
            if !credentials {
                switch key.lowercased() {
                case "cookie", "set-cookie", "authorization", "proxy-authorization": v = "REDACTED"
                default: break
                }
            }
            values[key, default: []].append(.string(v))
        }
        return .object(order.map { LogField($0, .array(values[$0]!)) })
    }
}

extension Request {
    /// Seconds since the request arrived.
    public var elapsedSeconds: Double {
        Double((NIODeadline.now() - startTime).nanoseconds) / 1e9
    }

    /// Request body bytes read so far.
    var bodyBytesRead: Int { body.stream?.consumedBytes ?? 0 }
}

/// A header name in Go's canonical form (`content-type` → `Content-Type`).
public func canonicalHeaderName(_ name: String) -> String {
    var out: [UInt8] = []
    out.reserveCapacity(name.utf8.count)
    var upper = true
    for b in name.utf8 {
        if b == UInt8(ascii: " ") || b >= 0x80 { return name }
        if upper && b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") {
            out.append(b - 32)
        } else if !upper && b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") {
            out.append(b + 32)
        } else {
            out.append(b)
        }
        upper = b == UInt8(ascii: "-")
    }
    return String(decoding: out, as: UTF8.self)
}
