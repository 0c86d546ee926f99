public import UsherCaddyfile
public import UsherCore
import UsherHTTP
import UsherTLS

/// A server block and the config values its directives produced.
final class ServerBlockState {
    let block: ServerBlock
    /// Index of the block in the Caddyfile, so copies made per listener stay comparable.
    let index: Int
    var pile: [String: [ConfigValue]] = [:]

    init(block: ServerBlock, index: Int) {
        self.block = block
        self.index = index
    }
}

/// A server block as seen from one listener: the keys that bind there.
struct ServerBlockView {
    let state: ServerBlockState
    var keys: [CaddyfileToken]
    var parsedKeys: [SiteAddress]

    var block: ServerBlock { state.block }
    var pile: [String: [ConfigValue]] { state.pile }

    func sameAs(_ o: ServerBlockView) -> Bool {
        state === o.state && keys == o.keys && parsedKeys == o.parsedKeys
    }

    /// Hosts named by the keys; in logger mode, a non-standard port is kept and catch-all keys are skipped.
    func hostsFromKeys(loggerMode: Bool) -> [String] {
        var hosts = Set<String>()
        for a in parsedKeys {
            if a.host.isEmpty {
                if !loggerMode { return [] }
                continue
            }
            if loggerMode && !a.port.isEmpty && a.port != "80" && a.port != "443" {
                hosts.insert(Go.joinHostPort(a.host, a.port))
            } else {
                hosts.insert(a.host)
            }
        }
        return hosts.sorted()
    }

    func hostsFromKeysNotHTTP(_ httpPort: String) -> [String] {
        var hosts = Set<String>()
        for a in parsedKeys where !a.host.isEmpty && a.scheme != "http" && a.port != httpPort {
            hosts.insert(a.host)
        }
        return hosts.sorted()
    }

    var hasHostCatchAllKey: Bool { parsedKeys.contains { $0.host.isEmpty } }
    var isAllHTTP: Bool { !parsedKeys.contains { $0.scheme != "http" } }
}

struct AddressWithProtocols {
    var address: String
    var protocols: [String]
}

/// Listener addresses and the server blocks served on them: one server.
struct ServerPairing {
    var addresses: [AddressWithProtocols]
    var serverBlocks: [ServerBlockView]
}

/// The HTTP server type: turns parsed server blocks into Caddy JSON (Caddy's `httpcaddyfile.ServerType`).
public struct HTTPServerType {
    let registry: CaddyfileRegistry

    public init(registry: CaddyfileRegistry) {
        self.registry = registry
    }

    /// Builds the config; returns it with any warnings.
    public func setup(_ input: [ServerBlock]) throws -> (JSONObject, [AdapterWarning]) {
        let ctx = AdaptContext(registry: registry)
        let state = StateMap()

        var blocks: [ServerBlockState] = []
        for (i, sb) in input.enumerated() {
            for (j, k) in sb.keys.enumerated() {
                if j == 0 && k.text.hasPrefix("@") {
                    throw CaddyfileError(
                        "\(k.file):\(k.line): cannot define a matcher outside of a site block: '\(k.text)'")
                }
                if registry.directives[k.text] != nil {
                    throw CaddyfileError(
                        "\(k.file):\(k.line): parsed '\(k.text)' as a site address, but it is a known directive; directives must appear in a site block"
                    )
                }
            }
            blocks.append(ServerBlockState(block: sb, index: i))
        }

        blocks = try evaluateGlobalOptionsBlock(blocks, ctx)
        let replacer = ShorthandReplacer()
        blocks = try extractNamedRoutes(blocks, ctx, replacer)

        for sb in blocks {
            var segments = sb.block.segments
            for i in segments.indices { replacer.apply(&segments[i]) }
            guard !sb.block.keys.isEmpty else {
                let message = "server block without any key is global configuration, and if used, it must be first"
                if let t = sb.block.segments.first?.first { throw CaddyfileError.at(t, message) }
                throw CaddyfileError(message)
            }
            var block = sb.block
            block.segments = segments
            let sbState = ServerBlockState(block: block, index: sb.index)

            var matcherDefs: [String: JSONObject] = [:]
            for seg in segments where seg.first?.text.hasPrefix("@") == true {
                try parseMatcherDefinitions(Dispenser(seg), &matcherDefs, registry: registry)
            }
            for seg in segments {
                let dir = seg.first?.text ?? ""
                if dir.hasPrefix("@") { continue }
                guard let parser = registry.directives[dir] else {
                    let t = seg[0]
                    var message = "\(t.file):\(t.line): unrecognized directive: \(dir)"
                    if !block.hasBraces {
                        message +=
                            "\nDid you mean to define a second site? If so, you must use curly braces around each site to separate their configurations."
                    }
                    throw CaddyfileError(message)
                }
                let h = Helper(
                    d: Dispenser(seg), context: ctx, state: state, blockState: state,
                    matcherDefs: matcherDefs, parentBlock: block)
                let results: [ConfigValue]
                do {
                    results = try parser(h)
                } catch {
                    throw CaddyfileError("parsing caddyfile tokens for '\(dir)': \(error)")
                }
                let name = normalizeDirectiveName(dir)
                for var r in results {
                    r.directive = name
                    r.token = seg.first
                    sbState.pile[r.className, default: []].append(r)
                }
                if let invoked = state[namedRouteKey] as? [String] {
                    for n in invoked { sbState.pile[namedRouteKey, default: []].append(ConfigValue(namedRouteKey, n)) }
                    state[namedRouteKey] = nil
                }
            }
            replace(&blocks, sb, with: sbState)
        }

        let sbmap = try mapAddressToProtocolToServerBlocks(blocks, ctx)
        var pairings = consolidateAddrMappings(sbmap)
        var servers = try serversFromPairings(&pairings, ctx)

        // Per-server metrics settings are hoisted into the app.
        var metrics = ctx.options["metrics"] as? HTTPMetricsConfig.Document
        for key in servers.keys {
            if let m = servers[key]!.metrics {
                // Caddy keeps only `per_host` when hoisting.
                var hoisted = HTTPMetricsConfig.Document()
                hoisted.perHost = (metrics?.perHost ?? false) || m.perHost
                metrics = hoisted
                servers[key]!.metrics = nil
            }
        }

        var httpApp = JSONObject()
        typealias Keys = HTTPApp.CodingKeys
        httpApp.put(Keys.httpPort, tryInt(ctx.option("http_port"), ctx))
        httpApp.put(Keys.httpsPort, tryInt(ctx.option("https_port"), ctx))
        httpApp.putDuration(Keys.gracePeriod, tryDuration(ctx.option("grace_period"), ctx))
        httpApp.putDuration(Keys.shutdownDelay, tryDuration(ctx.option("shutdown_delay"), ctx))
        var serversJSON = JSONObject()
        for (k, s) in servers { serversJSON[k] = .object(s.json) }
        httpApp.putMap(Keys.servers, serversJSON.sortedByKey())
        httpApp.put(Keys.metrics, metrics?.json)

        let tlsApp = try buildTLSApp(pairings, ctx)
        let pkiApp = buildPKIApp(pairings, ctx)

        // Custom logs, with levels enforced by `debug`.
        var customLogs: [NamedCustomLog] = []
        var hasDefaultLog = false
        func addCustomLog(_ ncl: NamedCustomLog) {
            guard !ncl.name.isEmpty else { return }
            if ncl.name == "default" { hasDefaultLog = true }
            if ctx.options.keys.contains("debug"), let log = ncl.log, log.level.isEmpty { log.level = "DEBUG" }
            customLogs.append(ncl)
        }
        if let logs = ctx.options["log"] as? [ConfigValue] {
            for v in logs { addCustomLog(v.value as! NamedCustomLog) }
        }
        if !hasDefaultLog && ctx.options.keys.contains("debug") {
            let l = CustomLogConfig.Document()
            l.level = "DEBUG"
            customLogs.append(NamedCustomLog(name: "default", log: l))
        }
        for p in pairings {
            for sb in p.serverBlocks {
                for v in sb.pile["custom_log"] ?? [] { addCustomLog(v.value as! NamedCustomLog) }
            }
        }

        var cfg = JSONObject()
        var admin: JSONObject?
        if let a = ctx.options["admin"] as? JSONObject { admin = a }
        if let pc = ctx.options["persist_config"] as? String, pc == "off" {
            var a = admin ?? JSONObject()
            var c = a[AdminConfig.CodingKeys.config]?.objectValue ?? JSONObject()
            c[AdminConfig.SettingsKeys.persist] = .bool(false)
            a[AdminConfig.CodingKeys.config] = .object(c)
            admin = a
        }
        cfg.put(UsherConfig.CodingKeys.admin, admin)

        if !customLogs.isEmpty {
            var logs: [String: CustomLogConfig.Document] = [:]
            var order: [String] = []
            func set(_ name: String, _ l: CustomLogConfig.Document) {
                if logs[name] == nil { order.append(name) }
                logs[name] = l
            }
            for ncl in customLogs where ncl.name == "default" && ncl.log != nil {
                set("default", ncl.log!)
                break
            }
            for ncl in customLogs {
                guard let log = ncl.log, ncl.name != "default" else { continue }
                if !ncl.name.isEmpty { set(ncl.name, log) }
                // Access logs directed elsewhere stay out of the default log.
                if !log.include.isEmpty {
                    let def: CustomLogConfig.Document
                    if let d = logs["default"] {
                        def = d
                    } else {
                        def = CustomLogConfig.Document(); set("default", def)
                    }
                    def.exclude.append(contentsOf: log.include)
                    def.exclude = Array(Set(def.exclude)).sorted {
                        Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8))
                    }
                }
            }
            if !logs.isEmpty {
                var m = JSONObject()
                for name in order { m[name] = .object(logs[name]!.json) }
                cfg[UsherConfig.CodingKeys.logging] = .object([
                    LoggingConfig.CodingKeys.logs.stringValue: .object(m.sortedByKey())
                ])
            }
        }

        if let storage = ctx.options["storage"] as? JSONObject {
            cfg[UsherConfig.CodingKeys.storage] = .object(storage)
        }

        var apps = JSONObject()
        for (_, v) in ctx.options {
            if let app = v as? CaddyfileApp { apps[app.name] = app.value }
        }
        if !servers.isEmpty { apps[HTTPApp.moduleID.name] = .object(httpApp) }
        if let tlsApp { apps[TLSApp.moduleID.name] = .object(tlsApp) }
        if let pkiApp { apps[PKIApp.moduleID.name] = .object(pkiApp) }
        if let fs = ctx.options["filesystem"] as? JSONObject { apps["caddy.filesystems"] = .object(fs) }
        cfg.putMap(UsherConfig.CodingKeys.apps, apps.sortedByKey())
        return (cfg, ctx.warnings)
    }

    private func replace(_ blocks: inout [ServerBlockState], _ old: ServerBlockState, with new: ServerBlockState) {
        if let i = blocks.firstIndex(where: { $0 === old }) { blocks[i] = new }
    }

    // MARK: - Global options

    func evaluateGlobalOptionsBlock(_ blocks: [ServerBlockState], _ ctx: AdaptContext) throws -> [ServerBlockState] {
        guard let first = blocks.first, first.block.keys.isEmpty else { return blocks }
        for seg in first.block.segments {
            let opt = seg.first?.text ?? ""
            guard let parser = registry.globalOptions[opt] else {
                let t = seg[0]
                throw CaddyfileError("\(t.file):\(t.line): unrecognized global option: \(opt)")
            }
            let value: Any?
            do {
                value = try parser(GlobalOptionInput(d: Dispenser(seg), existing: ctx.option(opt), context: ctx))
            } catch {
                throw CaddyfileError("parsing caddyfile tokens for '\(opt)': \(error)")
            }
            switch opt {
            case "servers":
                var existing = ctx.options[opt] as? [ServerOptions] ?? []
                existing.append(value as! ServerOptions)
                ctx.options[opt] = existing
            case "log", "default_bind":
                var existing = ctx.options[opt] as? [ConfigValue] ?? []
                existing.append(contentsOf: value as! [ConfigValue])
                ctx.options[opt] = existing
            default:
                if let value { ctx.options[opt] = value } else { ctx.options[opt] = NilOptionValue() }
            }
        }
        if var opts = ctx.options["servers"] as? [ServerOptions] {
            // Longest listener address first; a stable sort keeps the order of equal lengths.
            opts = goStableSort(opts) { $0.listenerAddress.utf8.count > $1.listenerAddress.utf8.count }
            var seen = Set<String>()
            for o in opts {
                if seen.contains(o.listenerAddress) {
                    throw CaddyfileError(
                        "cannot have 'servers' global options with duplicate listener addresses: \(o.listenerAddress)")
                }
                seen.insert(o.listenerAddress)
            }
            ctx.options["servers"] = opts
        }
        return Array(blocks.dropFirst())
    }

    // MARK: - Named routes

    func extractNamedRoutes(_ blocks: [ServerBlockState], _ ctx: AdaptContext, _ replacer: ShorthandReplacer) throws
        -> [ServerBlockState]
    {
        var namedRoutes: [String: HTTPRoute] = [:]
        var invokes: [String: [String]] = [:]
        let state = StateMap()
        var filtered: [ServerBlockState] = []
        for sb in blocks {
            guard sb.block.isNamedRoute else {
                filtered.append(sb)
                continue
            }
            if sb.block.segments.isEmpty { continue }
            var whole: [CaddyfileToken] = []
            for var seg in sb.block.segments {
                replacer.apply(&seg)
                whole.append(contentsOf: seg)
            }
            let h = Helper(
                d: Dispenser(whole), context: ctx, state: state, blockState: state, matcherDefs: [:],
                parentBlock: sb.block)
            let subroute = try h.parseSegmentAsSubroute()
            var route = HTTPRoute()
            if subroute.routes.count == 1 && subroute.routes[0].matcherSets.isEmpty {
                route.handlers.append(subroute.routes[0].handlers[0])
            } else {
                route.handlers = [subroute.handler]
            }
            let key = sb.block.keys[0].text
            if namedRoutes[key] != nil {
                throw CaddyfileError.at(sb.block.keys[0], "cannot have duplicate named_routes: \(key)")
            }
            namedRoutes[key] = route
            if let invoked = state[namedRouteKey] as? [String] {
                invokes[key, default: []].append(contentsOf: invoked)
                state[namedRouteKey] = nil
            }
        }
        ctx.options["named_routes"] = namedRoutes
        ctx.options["named_route_invokes"] = invokes
        return filtered
    }

    // MARK: - Listeners

    func listenersForServerBlockAddress(_ sb: ServerBlockState, _ addr: SiteAddress, _ ctx: AdaptContext) throws -> [(
        String, [String]
    )] {
        switch addr.scheme {
        case "wss": throw CaddyfileError("the scheme wss:// is only supported in browsers; use https:// instead")
        case "ws": throw CaddyfileError("the scheme ws:// is only supported in browsers; use http:// instead")
        case "https", "http", "": break
        default: throw CaddyfileError("unsupported URL scheme \(addr.scheme)://")
        }
        let httpPort = (ctx.options["http_port"] as? Int).map(String.init) ?? "80"
        let httpsPort = (ctx.options["https_port"] as? Int).map(String.init) ?? "443"
        var lnPort = httpsPort
        if !addr.port.isEmpty {
            lnPort = addr.port
        } else if addr.scheme == "http" {
            lnPort = httpPort
        }
        if (addr.scheme == "http" && lnPort == httpsPort) || (addr.scheme == "https" && lnPort == httpPort) {
            throw CaddyfileError("[\(addr.description)] scheme and port violate convention")
        }
        var cfgVals: [AddressesWithProtocols] = (sb.pile["bind"] ?? []).compactMap {
            $0.value as? AddressesWithProtocols
        }
        if cfgVals.isEmpty {
            if let defaults = ctx.options["default_bind"] as? [ConfigValue] {
                cfgVals = defaults.map { $0.value as! AddressesWithProtocols }
            } else {
                cfgVals = [AddressesWithProtocols(addresses: [""], protocols: nil)]
            }
        }
        var listeners: [(String, [String])] = []
        func index(_ k: String) -> Int? { listeners.firstIndex { $0.0 == k } }
        for v in cfgVals {
            for ln in v.addresses {
                let (netw, host, _): (String, String, String)
                do { (netw, host, _) = try CaddyNetworkAddress.split(ln) } catch {
                    throw CaddyfileError("splitting listener address: \(error)")
                }
                let na: CaddyNetworkAddress
                do { na = try CaddyNetworkAddress(parsing: CaddyNetworkAddress.join(netw, host, lnPort)) } catch {
                    throw CaddyfileError("parsing network address: \(error)")
                }
                let key = na.description
                if index(addr.description) == nil {
                    // Caddy resets the protocol set here whenever the site address itself is not a listener key.
                    if let i = index(key) { listeners[i].1 = [] } else { listeners.append((key, [])) }
                }
                let i = index(key)!
                for p in v.protocols ?? [] where !listeners[i].1.contains(p) { listeners[i].1.append(p) }
            }
        }
        return listeners
    }

    func mapAddressToProtocolToServerBlocks(_ blocks: [ServerBlockState], _ ctx: AdaptContext) throws -> [String:
        [String: [ServerBlockView]]]
    {
        var result: [String: [String: [ServerBlockView]]] = [:]
        for (i, sb) in blocks.enumerated() {
            var perAddr: [String: [String: [(CaddyfileToken, SiteAddress)]]] = [:]
            for (j, key) in sb.block.keys.enumerated() {
                var parsed: SiteAddress
                do { parsed = try SiteAddress(parsing: key.text) } catch {
                    throw CaddyfileError.at(key, "parsing key: \(error)")
                }
                parsed = parsed.normalized()
                let listeners: [(String, [String])]
                do { listeners = try listenersForServerBlockAddress(sb, parsed, ctx) } catch {
                    throw CaddyfileError.at(
                        key, "server block \(i), key \(j) (\(key.text)): determining listener address: \(error)")
                }
                for (addr, protocols) in listeners {
                    let prots = protocols.isEmpty ? [""] : protocols
                    for p in prots { perAddr[addr, default: [:]][p, default: []].append((key, parsed)) }
                }
            }
            for addr in perAddr.keys.sorted(by: goLess) {
                let byProt = perAddr[addr]!
                for prot in byProt.keys.sorted(by: goLess) {
                    let kw = byProt[prot]!
                    let view = ServerBlockView(state: sb, keys: kw.map(\.0), parsedKeys: kw.map(\.1))
                    result[addr, default: [:]][prot, default: []].append(view)
                }
            }
        }
        return result
    }

    func consolidateAddrMappings(_ input: [String: [String: [ServerBlockView]]]) -> [ServerPairing] {
        var map = input
        var out: [ServerPairing] = []
        for addr in input.keys.sorted(by: goLess) {
            // Protocols are listed when the address is reached, after earlier merges removed some.
            for prot in (map[addr] ?? [:]).keys.sorted(by: goLess) {
                // Entries merged into an earlier pairing are gone; Caddy still emits an (empty) server for them.
                let blocks = map[addr]?[prot] ?? []
                var listeners: [String: Set<String>] = [:]
                for (otherAddr, otherProts) in map {
                    for (otherProt, otherBlocks) in otherProts {
                        let same =
                            !blocks.isEmpty && otherBlocks.count == blocks.count
                            && zip(otherBlocks, blocks).allSatisfy { $0.sameAs($1) }
                        if (addr == otherAddr && prot == otherProt) || same {
                            listeners[otherAddr, default: []].insert(otherProt)
                            map[otherAddr]![otherProt] = nil
                        }
                    }
                }
                var awp: [AddressWithProtocols] = []
                for a in listeners.keys.sorted(by: goLess) {
                    awp.append(AddressWithProtocols(address: a, protocols: listeners[a]!.sorted(by: goLess)))
                }
                out.append(ServerPairing(addresses: awp, serverBlocks: blocks))
            }
        }
        return out
    }
}

/// Go's string ordering (by bytes).

let namedRouteKey = "named_route"

/// A non-standard app configured from a global option (Caddy's `httpcaddyfile.App`).
public struct CaddyfileApp {
    public var name: String
    public var value: JSONValue
    public init(name: String, value: JSONValue) {
        self.name = name
        self.value = value
    }
}

func tryInt(_ v: Any?, _ ctx: AdaptContext) -> Int {
    guard let v else { return 0 }
    if let i = v as? Int { return i }
    ctx.warnings.append(AdapterWarning(message: "not an integer type"))
    return 0
}

func tryString(_ v: Any?, _ ctx: AdaptContext) -> String {
    guard let v else { return "" }
    if let s = v as? String { return s }
    ctx.warnings.append(AdapterWarning(message: "not a string type"))
    return ""
}

func tryDuration(_ v: Any?, _ ctx: AdaptContext) -> Int64 {
    guard let v else { return 0 }
    if let d = v as? CaddyDurationValue { return d.nanoseconds }
    ctx.warnings.append(AdapterWarning(message: "not a duration type"))
    return 0
}

/// A `caddy.Duration` option value.
public struct CaddyDurationValue: Equatable {
    public var nanoseconds: Int64
    public init(_ ns: Int64) { nanoseconds = ns }
}
