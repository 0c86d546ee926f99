import UsherCaddyfile
import UsherCore
import UsherHTTP
import UsherTLS

extension HTTPServerType {
    /// One server per pairing of listeners and server blocks (Caddy's `serversFromPairings`).
    /// Sorting a pairing's server blocks also reorders them for the TLS app built afterwards, as in Caddy (where the
    /// sort works on the shared slice), so `pairings` is updated in place.
    func serversFromPairings(_ pairings: inout [ServerPairing], _ ctx: AdaptContext) throws -> [String: ServerConfig
        .Document]
    {
        var servers: [String: ServerConfig.Document] = [:]
        let defaultSNI = tryString(ctx.option("default_sni"), ctx)
        let fallbackSNI = tryString(ctx.option("fallback_sni"), ctx)
        let httpPort = (ctx.options["http_port"] as? Int).map(String.init) ?? "80"
        let httpsPort = (ctx.options["https_port"] as? Int).map(String.init) ?? "443"
        let autoHTTPS = ctx.options["auto_https"] as? [String] ?? []

        for pi in pairings.indices {
            var p = pairings[pi]
            for (j, b1) in p.serverBlocks.enumerated() {
                for key in b1.block.keys.map(\.text) {
                    for (k, b2) in p.serverBlocks.enumerated() where k != j {
                        if let t = b2.block.keys.first(where: { $0.text == key }) {
                            throw CaddyfileError.at(t, "ambiguous site definition: \(key)")
                        }
                    }
                }
            }

            let srv = ServerConfig.Document()
            srv.listen = p.addresses.map(\.address)
            let lp: [[String]?] = p.addresses.map { a in a.protocols.contains { !$0.isEmpty } ? a.protocols : nil }
            srv.listenProtocols = lp.contains { $0 != nil } ? lp : nil

            for v in autoHTTPS {
                switch v {
                case "off": srv.autoHTTPS = srv.autoHTTPS ?? AutoHTTPSConfig.Document(); srv.autoHTTPS!.disabled = true
                case "disable_redirects":
                    srv.autoHTTPS = srv.autoHTTPS ?? AutoHTTPSConfig.Document(); srv.autoHTTPS!.disableRedirects = true
                case "disable_certs":
                    srv.autoHTTPS = srv.autoHTTPS ?? AutoHTTPSConfig.Document(); srv.autoHTTPS!.disableCerts = true
                case "ignore_loaded_certs":
                    srv.autoHTTPS = srv.autoHTTPS ?? AutoHTTPSConfig.Document(); srv.autoHTTPS!.ignoreLoadedCerts = true
                default: break
                }
            }

            // Most specific sites first: longer hosts, then longer paths; wildcard and catch-all hosts last.
            p.serverBlocks = goStableSort(p.serverBlocks) { a, b in
                func summary(_ v: ServerBlockView) -> (path: String, host: String, wildcard: Bool) {
                    var path = ""
                    var host = ""
                    var wildcard = false
                    for addr in v.parsedKeys {
                        if addr.host.contains("*") || addr.host.isEmpty { wildcard = true }
                        if specificity(addr.host) > specificity(host) { host = addr.host }
                        if specificity(addr.path) > specificity(path) { path = addr.path }
                    }
                    return (path, host, wildcard)
                }
                let i = summary(a)
                let j = summary(b)
                if specificity(i.host) == 0 { return false }
                if specificity(j.host) == 0 { return true }
                if i.wildcard != j.wildcard { return j.wildcard && !i.wildcard }
                if specificity(i.host) == specificity(j.host) { return i.path.utf8.count > j.path.utf8.count }
                return specificity(i.host) > specificity(j.host)
            }
            pairings[pi].serverBlocks = p.serverBlocks

            var hasCatchAllTLSConnPolicy = false
            var addressQualifiesForTLS = false
            var emptyConnPolicies: [ConnectionPolicy.Document] = []
            var autoHTTPSWillAddConnPolicy = srv.autoHTTPS == nil || !srv.autoHTTPS!.disabled

            if p.serverBlocks.contains(where: { !($0.pile["custom_log"] ?? []).isEmpty }) {
                srv.logs = ServerLogConfig.Document()
            }

            let configuredNamedRoutes = ctx.options["named_routes"] as? [String: HTTPRoute] ?? [:]
            let namedRouteInvokes = ctx.options["named_route_invokes"] as? [String: [String]] ?? [:]
            for sb in p.serverBlocks {
                for v in sb.pile[namedRouteKey] ?? [] {
                    if srv.namedRoutes == nil { srv.namedRoutes = [:] }
                    var names = [v.value as! String]
                    while !names.isEmpty {
                        let name = names.removeFirst()
                        if srv.namedRoutes![name] != nil { continue }
                        guard let r = configuredNamedRoutes[name] else {
                            let message = "cannot invoke named route '\(name)', which was not defined"
                            if let t = ctx.invokeTokens[name] { throw CaddyfileError.at(t, message) }
                            throw CaddyfileError(message)
                        }
                        srv.namedRoutes![name] = r
                        names.append(contentsOf: namedRouteInvokes[name] ?? [])
                    }
                }
            }

            for sb in p.serverBlocks {
                let matcherSetsEnc = compileEncodedMatcherSets(sb)
                var hosts = sb.hostsFromKeys(loggerMode: false)

                let forceAutomated = sb.pile["tls.force_automate"] != nil ? Set(hosts) : Set<String>()

                if let cpVals = sb.pile["tls.connection_policy"] {
                    for cpVal in cpVals {
                        let cp = cpVal.value as! ConnectionPolicy.Document
                        for h in hosts {
                            if h == defaultSNI {
                                hosts.append("")
                                cp.defaultSNI = defaultSNI
                                break
                            }
                            if h == fallbackSNI {
                                hosts.append("")
                                cp.fallbackSNI = fallbackSNI
                                break
                            }
                        }
                        if !hosts.isEmpty {
                            hosts.sort(by: goLess)
                            cp.matchers = ["sni": .strings(hosts)]
                        } else {
                            cp.defaultSNI = defaultSNI
                            cp.fallbackSNI = fallbackSNI
                        }
                        if !cp.settingsEmpty || hosts.contains(where: { forceAutomated.contains($0) }) {
                            srv.tlsConnPolicies.append(cp)
                            hasCatchAllTLSConnPolicy = hosts.isEmpty
                        } else if !hosts.isEmpty {
                            emptyConnPolicies.append(cp)
                        }
                    }
                } else {
                    let specific = hosts.filter { !$0.isEmpty && !$0.contains("*") }.sorted(by: goLess)
                    if !specific.isEmpty {
                        let cp = ConnectionPolicy.Document()
                        cp.matchers = ["sni": .strings(specific)]
                        emptyConnPolicies.append(cp)
                    }
                }

                for addr in sb.parsedKeys {
                    if listenersUseAnyPortOtherThan(srv.listen, httpPort) {
                        if addr.scheme == "http" && !addr.host.isEmpty {
                            if srv.autoHTTPS == nil { srv.autoHTTPS = AutoHTTPSConfig.Document() }
                            if !srv.autoHTTPS!.skip.contains(addr.host) { srv.autoHTTPS!.skip.append(addr.host) }
                        }
                    }
                    let created = sb.pile["tls.connection_policy"] ?? []
                    let hasTLSEnabled =
                        !created.isEmpty
                        || (!addr.host.isEmpty && (srv.autoHTTPS == nil || !srv.autoHTTPS!.skip.contains(addr.host)))
                    if addr.scheme == "https" || (addr.scheme != "http" && addr.port != httpPort && hasTLSEnabled) {
                        addressQualifiesForTLS = true
                    }
                    autoHTTPSWillAddConnPolicy =
                        autoHTTPSWillAddConnPolicy
                        && (addr.port == httpsPort || (addr.port != httpPort && !addr.host.isEmpty))
                }

                for v in sb.pile["listener_wrapper"] ?? [] {
                    srv.listenerWrappers.append(v.value as! JSONObject)
                }
                for v in sb.pile["packet_conn_wrapper"] ?? [] {
                    srv.packetConnWrappers.append(v.value as! JSONObject)
                }

                let siteSubroute = try buildSubroute(sb.pile["route"] ?? [], context: ctx, needsSorting: true)
                srv.routes = appendSubrouteToRouteList(srv.routes, siteSubroute, matcherSetsEnc, p)

                if var errVals = sb.pile["error_route"] {
                    if srv.errors == nil { srv.errors = [] }
                    errVals = goStableSort(errVals) { a, b in
                        let ai = (a.value as! HTTPSubroute).routes[0].matcherSets.isEmpty
                        let bj = (b.value as! HTTPSubroute).routes[0].matcherSets.isEmpty
                        if ai && !bj { return false }
                        return true
                    }
                    var errorsSubroute = HTTPSubroute()
                    for v in errVals { errorsSubroute.routes.append(contentsOf: (v.value as! HTTPSubroute).routes) }
                    srv.errors = appendSubrouteToRouteList(srv.errors!, errorsSubroute, matcherSetsEnc, p)
                }

                let logHosts = sb.hostsFromKeys(loggerMode: true)
                for v in sb.pile["custom_log"] ?? [] {
                    let ncl = v.value as! NamedCustomLog
                    if ncl.noHostname { continue }
                    if sb.hasHostCatchAllKey && ncl.hostnames.isEmpty {
                        srv.logs!.defaultLoggerName = ncl.name
                    } else if !ncl.hostnames.isEmpty {
                        for h in ncl.hostnames { srv.logs!.addLoggerName(h, ncl.name) }
                    } else {
                        for h in logHosts {
                            let host = (try? Go.splitHostPort(h).host) ?? h
                            srv.logs!.addLoggerName(host, ncl.name)
                        }
                    }
                }
                if srv.logs != nil && (sb.pile["custom_log"] ?? []).isEmpty {
                    if hosts.isEmpty { srv.logs!.skipUnmappedHosts = true }
                    srv.logs!.skipHosts.append(contentsOf: logHosts)
                }
            }
            if srv.logs != nil { srv.logs!.skipHosts.sort(by: goLess) }

            try detectConflictingSchemes(srv, p.serverBlocks, ctx)

            // Hostnames without TLS settings of their own that a client-auth wildcard policy would cover get a
            // copy of that policy minus client authentication, hoisted above it (Caddy issue #7860).
            var clientAuthWildcards: [[String]?] = Array(repeating: nil, count: srv.tlsConnPolicies.count)
            for (i, cp) in srv.tlsConnPolicies.enumerated() where cp.clientAuthentication != nil {
                guard let names = cp.sniNames else { continue }
                clientAuthWildcards[i] = names.filter { $0.contains("*") }
            }
            var shielded: [[String]] = Array(repeating: [], count: srv.tlsConnPolicies.count)
            for ecp in emptyConnPolicies {
                guard let hostNames = ecp.sniNames else { continue }
                for host in hostNames {
                    for (i, wildcards) in clientAuthWildcards.enumerated() {
                        if let wildcards, wildcards.contains(where: { matchWildcard(host, $0) }) {
                            shielded[i].append(host)
                            break
                        }
                    }
                }
            }
            for i in shielded.indices.reversed() where !shielded[i].isEmpty {
                var hostsForShield = shielded[i].sorted(by: goLess)
                hostsForShield = hostsForShield.enumerated().filter {
                    $0.offset == 0 || hostsForShield[$0.offset - 1] != $0.element
                }.map(\.element)
                let shield = srv.tlsConnPolicies[i].copy()
                shield.clientAuthentication = nil
                shield.matchers = ["sni": .strings(hostsForShield)]
                srv.tlsConnPolicies.insert(shield, at: i)
            }

            if addressQualifiesForTLS && !hasCatchAllTLSConnPolicy
                && (!srv.tlsConnPolicies.isEmpty || !autoHTTPSWillAddConnPolicy || !defaultSNI.isEmpty
                    || !fallbackSNI.isEmpty)
            {
                let cp = ConnectionPolicy.Document()
                cp.defaultSNI = defaultSNI
                cp.fallbackSNI = fallbackSNI
                srv.tlsConnPolicies.append(cp)
            }

            do {
                srv.tlsConnPolicies = try consolidateConnPolicies(srv.tlsConnPolicies)
            } catch {
                throw CaddyfileError("consolidating TLS connection policies for server \(pi): \(error)")
            }
            srv.routes = consolidateRoutes(srv.routes)
            servers["srv\(pi)"] = srv
        }

        do {
            try applyServerOptions(&servers, ctx)
        } catch {
            throw CaddyfileError("applying global server options: \(error)")
        }
        return servers
    }

    func detectConflictingSchemes(_ srv: ServerConfig.Document, _ blocks: [ServerBlockView], _ ctx: AdaptContext) throws
    {
        let httpPort = (ctx.options["http_port"] as? Int).map(String.init) ?? "80"
        let httpsPort = (ctx.options["https_port"] as? Int).map(String.init) ?? "443"
        var mode = ""
        let listen = Go.list(srv.listen)
        func setHTTP(_ a: SiteAddress, _ t: CaddyfileToken) throws {
            if mode == "HTTPS" {
                var msg =
                    "server listening on \(listen) is configured for HTTPS and cannot natively multiplex HTTP and HTTPS: \(a.original)"
                if a.scheme.isEmpty && a.host.isEmpty { msg += " (try specifying https:// in the address)" }
                throw CaddyfileError.at(t, msg)
            }
            if !srv.tlsConnPolicies.isEmpty {
                throw CaddyfileError.at(
                    t, "server listening on \(listen) is HTTP, but attempts to configure TLS connection policies")
            }
            mode = "HTTP"
        }
        func setHTTPS(_ a: SiteAddress, _ t: CaddyfileToken) throws {
            if mode == "HTTP" {
                throw CaddyfileError.at(
                    t,
                    "server listening on \(listen) is configured for HTTP and cannot natively multiplex HTTP and HTTPS: \(a.original)"
                )
            }
            mode = "HTTPS"
        }
        for sb in blocks {
            for (a, t) in zip(sb.parsedKeys, sb.keys) {
                if a.scheme == "http" || a.port == httpPort {
                    try setHTTP(a, t)
                } else if a.scheme == "https" || a.port == httpsPort || !srv.tlsConnPolicies.isEmpty {
                    try setHTTPS(a, t)
                } else if a.host.isEmpty {
                    try setHTTP(a, t)
                }
            }
        }
    }

    /// Host and path matchers from a block's keys.
    func compileEncodedMatcherSets(_ sb: ServerBlockView) -> [JSONObject] {
        var pairs: [(hosts: [String], paths: [String])] = []
        var catchAllHosts = false
        for addr in sb.parsedKeys {
            var chosen = pairs.firstIndex {
                ($0.paths.isEmpty && addr.path.isEmpty) || ($0.paths.count == 1 && $0.paths[0] == addr.path)
            }
            if chosen == nil {
                pairs.append(([], addr.path.isEmpty ? [] : [addr.path]))
                chosen = pairs.count - 1
            }
            let c = chosen!
            if addr.host.isEmpty && !catchAllHosts {
                pairs[c].hosts = []
                catchAllHosts = true
            }
            if catchAllHosts { continue }
            if !addr.host.isEmpty && !pairs[c].hosts.contains(addr.host) { pairs[c].hosts.append(addr.host) }
        }
        var sets: [JSONObject] = []
        for p in pairs {
            var m = JSONObject()
            if !p.hosts.isEmpty { m["host"] = .strings(p.hosts) }
            if !p.paths.isEmpty { m["path"] = .strings(p.paths) }
            if !m.isEmpty { sets.append(m) }
        }
        return sets
    }

    /// Adds a site's routes to a server's, wrapped in a terminal subroute unless it is the only site and has no
    /// host matchers inside.
    func appendSubrouteToRouteList(
        _ list: [HTTPRoute], _ sub: HTTPSubroute, _ matcherSets: [JSONObject], _ p: ServerPairing
    ) -> [HTTPRoute] {
        if matcherSets.isEmpty && sub.routes.isEmpty && sub.errors == nil { return list }
        var wrap = true
        if matcherSets.isEmpty && p.serverBlocks.count == 1 {
            wrap = sub.routes.contains { r in r.matcherSets.contains { $0["host"] != nil } }
        }
        var out = list
        if wrap {
            var route = HTTPRoute(terminal: true)
            if !matcherSets.isEmpty { route.matcherSets = matcherSets }
            if !sub.routes.isEmpty || sub.errors != nil { route.handlers = [sub.handler] }
            if !route.matcherSets.isEmpty || !route.handlers.isEmpty { out.append(route) }
        } else {
            out.append(contentsOf: sub.routes)
        }
        return out
    }

    /// Sorts catch-all policies last, drops duplicates and merges compatible ones.
    func consolidateConnPolicies(_ input: [ConnectionPolicy.Document]) throws -> [ConnectionPolicy.Document] {
        var cps = goStableSort(input) { a, b in b.matchers == nil && a.matchers != nil }
        var i = 0
        outer: while i < cps.count {
            var j = 0
            while j < cps.count {
                if j == i {
                    j += 1
                    continue
                }
                if cps[i].deepEquals(cps[j]) {
                    cps.remove(at: j)
                    continue outer
                }
                if i == j - 1, cps[i].matchers?.count == 1, cps[j].matchers?.count == 1,
                    let isni = cps[i].sniNames, let jsni = cps[j].sniNames, cps[i].settingsEqual(cps[j])
                {
                    cps[i].matchers!["sni"] = .strings(isni + jsni)
                    cps.remove(at: j)
                    continue outer
                }
                if optionalSame(cps[i].matchers, cps[j].matchers) {
                    let a = cps[i]
                    let b = cps[j]
                    if let x = a.alpn, let y = b.alpn, !x.isEmpty, !y.isEmpty, x != y {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting ALPN: \(Go.list(x)) vs. \(Go.list(y))"
                        )
                    }
                    if let x = a.cipherSuites, let y = b.cipherSuites, !x.isEmpty, !y.isEmpty, x != y {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting cipher suites: \(Go.list(x)) vs. \(Go.list(y))"
                        )
                    }
                    if a.clientAuthentication == nil && b.clientAuthentication != nil {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting client auth configuration")
                    }
                    if let x = a.curves, let y = b.curves, !x.isEmpty, !y.isEmpty, x != y {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting curves: \(Go.list(x)) vs. \(Go.list(y))"
                        )
                    }
                    if !a.defaultSNI.isEmpty && !b.defaultSNI.isEmpty && a.defaultSNI != b.defaultSNI {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting default SNI: \(a.defaultSNI) vs. \(b.defaultSNI)"
                        )
                    }
                    if !a.fallbackSNI.isEmpty && !b.fallbackSNI.isEmpty && a.fallbackSNI != b.fallbackSNI {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting fallback SNI: \(a.fallbackSNI) vs. \(b.fallbackSNI)"
                        )
                    }
                    if !a.protocolMin.isEmpty && !b.protocolMin.isEmpty && a.protocolMin != b.protocolMin {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting min protocol: \(a.protocolMin) vs. \(b.protocolMin)"
                        )
                    }
                    if !a.protocolMax.isEmpty && !b.protocolMax.isEmpty && a.protocolMax != b.protocolMax {
                        throw CaddyfileError(
                            "two policies with same match criteria have conflicting max protocol: \(a.protocolMax) vs. \(b.protocolMax)"
                        )
                    }
                    if let x = a.certSelection, let y = b.certSelection {
                        if x.serialNumber != y.serialNumber || x.subjectOrganization != y.subjectOrganization
                            || x.publicKeyAlgorithm != y.publicKeyAlgorithm || x.allTags != y.allTags
                        {
                            throw CaddyfileError(
                                "two policies with same match criteria have conflicting cert selections")
                        }
                    }
                    if (a.alpn ?? []).isEmpty && !(b.alpn ?? []).isEmpty { a.alpn = b.alpn }
                    if (a.cipherSuites ?? []).isEmpty && !(b.cipherSuites ?? []).isEmpty {
                        a.cipherSuites = b.cipherSuites
                    }
                    if a.clientAuthentication == nil && b.clientAuthentication != nil {
                        a.clientAuthentication = b.clientAuthentication
                    }
                    if (a.curves ?? []).isEmpty && !(b.curves ?? []).isEmpty { a.curves = b.curves }
                    if a.defaultSNI.isEmpty { a.defaultSNI = b.defaultSNI }
                    if a.fallbackSNI.isEmpty { a.fallbackSNI = b.fallbackSNI }
                    if a.protocolMin.isEmpty { a.protocolMin = b.protocolMin }
                    if a.protocolMax.isEmpty { a.protocolMax = b.protocolMax }
                    if a.certSelection == nil, let y = b.certSelection {
                        a.certSelection = y
                    } else if a.certSelection != nil, let y = b.certSelection {
                        for tag in y.anyTag where !a.certSelection!.anyTag.contains(tag) {
                            a.certSelection!.anyTag.append(tag)
                        }
                    }
                    cps.remove(at: j)
                    continue outer
                }
                j += 1
            }
            i += 1
        }
        return cps
    }
}

/// Length minus wildcards and placeholders: how specific a host or path is.
func specificity(_ input: String) -> Int {
    var s = Array(input.utf8)[...]
    var l = s.count - s.filter { $0 == UInt8(ascii: "*") }.count
    while !s.isEmpty {
        guard let start = s.firstIndex(of: UInt8(ascii: "{")) else { return l }
        guard let close = s[start...].firstIndex(of: UInt8(ascii: "}")) else { return l }
        let end = close + 1
        l -= end - start
        s = s[end...]
    }
    return l
}

/// Whether any listener's port range excludes `otherPort`.
func listenersUseAnyPortOtherThan(_ addresses: [String], _ otherPort: String) -> Bool {
    guard let other = Int(otherPort) else { return false }
    for a in addresses {
        guard let na = try? CaddyNetworkAddress(parsing: a) else { continue }
        if UInt64(other) > na.endPort || UInt64(other) < na.startPort { return true }
    }
    return false
}
