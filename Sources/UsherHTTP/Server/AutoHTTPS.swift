import UsherCore
import UsherTLS

/// Automatic HTTPS as Caddy does it, offline: servers that name hosts and listen on a port other than the HTTP
/// port speak TLS; names without a loaded certificate get a managed one (from the internal CA, since no ACME
/// issuer exists here); and the HTTP port redirects to HTTPS for those names.
struct AutomaticHTTPS {
    var httpPort: Int
    var httpsPort: Int

    /// What automatic HTTPS decided for one config.
    struct Plan {
        /// Names to obtain certificates for.
        var managedNames: [String] = []
        /// Redirect routes to serve on the HTTP port, as JSON (one per server that gets redirects).
        var redirectRoutes: [JSONValue] = []
    }

    /// Whether any server will speak TLS (the same conditions ``apply(to:store:)`` turns TLS on by), so a config of
    /// plain HTTP servers provisions no `tls` or `pki` app.
    func needsTLS(_ servers: [String: ServerConfig]) -> Bool {
        servers.values.contains { s in
            if s.usesTLS { return true }
            guard s.automaticHTTPS?.disable != true, listensOnOtherThan(s, httpPort) else { return false }
            return !listensOnOtherThan(s, httpsPort) || !domains(s).isEmpty
        }
    }

    func listensOnOtherThan(_ server: ServerConfig, _ port: Int) -> Bool {
        server.listen.contains { a in !a.isUnixNetwork && !a.isFDNetwork && (port < a.startPort || port > a.endPort) }
    }

    /// Hosts named by the server's top-level host matchers that could get a certificate, minus `skip`.
    func domains(_ server: ServerConfig) -> [String] {
        let skip = Set(server.automaticHTTPS?.skip ?? [])
        var hosts: [String] = []
        for route in server.routes.routes {
            for set in route.match {
                for entry in set.entries {
                    guard let hm = entry.module as? HostMatcher else { continue }
                    for h in hm.hosts where !skip.contains(h) && qualifiesForCertificate(h) && !hosts.contains(h) {
                        hosts.append(h)
                    }
                }
            }
        }
        return hosts
    }

    /// Turns TLS on where it applies and collects names and redirects. Mutates `servers`' TLS policies.
    func apply(to servers: inout [String: ServerConfig], store: CertificateStore?) -> Plan {
        var plan = Plan()
        for name in servers.keys.sorted() {
            var server = servers[name]!
            let auto = server.automaticHTTPS
            if auto?.disable == true { continue }
            if !listensOnOtherThan(server, httpPort) { continue }
            if server.tlsConnectionPolicies == nil && !listensOnOtherThan(server, httpsPort) {
                server.tlsConnectionPolicies = [ConnectionPolicy()]
            }
            let domains = self.domains(server)
            if domains.isEmpty && server.tlsConnectionPolicies == nil { continue }
            if auto?.disableCertificates != true {
                let skipCerts = Set(auto?.skipCertificates ?? [])
                for d in domains where !skipCerts.contains(d) {
                    if auto?.ignoreLoadedCertificates != true,
                        let store, store.candidates(for: d).contains(where: { !$0.managed })
                    {
                        continue
                    }
                    if !plan.managedNames.contains(d) { plan.managedNames.append(d) }
                }
            }
            if server.tlsConnectionPolicies == nil { server.tlsConnectionPolicies = [ConnectionPolicy()] }
            servers[name] = server
            if auto?.disableRedirects == true || domains.isEmpty { continue }
            let ports = Set(server.listen.filter { !$0.isUnixNetwork && !$0.isFDNetwork }.map(\.startPort))
            for port in ports.sorted() where port != httpPort {
                let location =
                    port == 443
                    ? "https://{http.request.host}{http.request.uri}"
                    : "https://{http.request.host}:\(port){http.request.uri}"
                plan.redirectRoutes.append(
                    .object([
                        "match": .array([.object(["host": .array(domains.map { .string($0) })])]),
                        "handle": .array([
                            .object([
                                "handler": .string("static_response"),
                                "headers": .object(["Location": .array([.string(location)])]),
                                "status_code": .number(JSONNumber(308)),
                            ])
                        ]),
                        "terminal": .bool(true),
                    ]))
            }
        }
        return plan
    }
}
