public import UsherCaddyfile
public import UsherCore
public import UsherTLS

// Servers as Caddy JSON, built field by field: the Caddyfile adapter fills these per group of site blocks and writes
// them out. Their keys are the decoders' `CodingKeys`, so each JSON key is spelled once, beside the runtime.

extension ServerConfig {
    /// `caddyhttp.Server`, with Usher's `enable_webtransport`.
    package final class Document {
        package init() {}

        package var listen: [String] = []
        package var listenerWrappers: [JSONObject] = []
        package var packetConnWrappers: [JSONObject] = []
        package var readTimeout: Int64 = 0
        package var readHeaderTimeout: Int64 = 0
        package var readIdleTimeout: Int64 = 0
        package var readMinRate = 0
        package var writeTimeout: Int64 = 0
        package var writeIdleTimeout: Int64 = 0
        package var writeMinRate = 0
        package var maxWriteChunk = 0
        package var idleTimeout: Int64 = 0
        package var keepAliveInterval: Int64 = 0
        package var keepAliveIdle: Int64 = 0
        package var keepAliveCount = 0
        package var maxHeaderBytes = 0
        package var enableFullDuplex = false
        package var expectedUnderscoreHeaders: [String] = []
        package var expectedDotHeaders: [String] = []
        package var routes: [HTTPRoute] = []
        package var errors: [HTTPRoute]?
        package var namedRoutes: [String: HTTPRoute]?
        package var tlsConnPolicies: [ConnectionPolicy.Document] = []
        package var autoHTTPS: AutoHTTPSConfig.Document?
        package var strictSNIHost: Bool?
        package var trustedProxies: JSONObject?
        package var clientIPHeaders: [String] = []
        package var trustedProxiesStrict = 0
        package var trustedProxiesUnix = false
        package var logs: ServerLogConfig.Document?
        package var protocols: [String] = []
        package var listenProtocols: [[String]?]?
        package var allow0RTT: Bool?
        package var metrics: HTTPMetricsConfig.Document?
        package var enableWebTransport = false

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.listen, listen)
            o.put(CodingKeys.listenerWrappers, listenerWrappers)
            o.put(CodingKeys.packetConnWrappers, packetConnWrappers)
            o.putDuration(CodingKeys.readTimeout, readTimeout)
            o.putDuration(CodingKeys.readHeaderTimeout, readHeaderTimeout)
            o.putDuration(CodingKeys.readIdleTimeout, readIdleTimeout)
            o.put(CodingKeys.readMinRate, readMinRate)
            o.putDuration(CodingKeys.writeTimeout, writeTimeout)
            o.putDuration(CodingKeys.writeIdleTimeout, writeIdleTimeout)
            o.put(CodingKeys.writeMinRate, writeMinRate)
            o.put(CodingKeys.maxWriteChunk, maxWriteChunk)
            o.putDuration(CodingKeys.idleTimeout, idleTimeout)
            o.putDuration(CodingKeys.keepAliveInterval, keepAliveInterval)
            o.putDuration(CodingKeys.keepAliveIdle, keepAliveIdle)
            o.put(CodingKeys.keepAliveCount, keepAliveCount)
            o.put(CodingKeys.maxHeaderBytes, maxHeaderBytes)
            o.put(CodingKeys.enableFullDuplex, enableFullDuplex)
            o.put(CodingKeys.expectedUnderscoreHeaders, expectedUnderscoreHeaders)
            o.put(CodingKeys.expectedDotHeaders, expectedDotHeaders)
            o.put(CodingKeys.routes, routes.map(\.json))
            if let errors {
                var e = JSONObject()
                e.put(HTTPErrorConfig.CodingKeys.routes, errors.map(\.json))
                o[CodingKeys.errors] = .object(e)
            }
            if let namedRoutes, !namedRoutes.isEmpty {
                var m = JSONObject()
                for (k, v) in namedRoutes { m[k] = .object(v.json) }
                o[CodingKeys.namedRoutes] = .object(m.sortedByKey())
            }
            o.put(CodingKeys.tlsConnectionPolicies, tlsConnPolicies.map(\.json))
            o.put(CodingKeys.automaticHTTPS, autoHTTPS?.json)
            if let strictSNIHost { o[CodingKeys.strictSNIHost] = .bool(strictSNIHost) }
            o.put(CodingKeys.trustedProxies, trustedProxies)
            o.put(CodingKeys.clientIPHeaders, clientIPHeaders)
            o.put(CodingKeys.trustedProxiesStrict, trustedProxiesStrict)
            o.put(CodingKeys.trustedProxiesUnix, trustedProxiesUnix)
            o.put(CodingKeys.logs, logs?.json)
            o.put(CodingKeys.protocols, protocols)
            if let listenProtocols, !listenProtocols.isEmpty {
                o[CodingKeys.listenProtocols] = .array(
                    listenProtocols.map { $0.map { JSONValue.strings($0) } ?? .null })
            }
            if let allow0RTT { o[CodingKeys.allow0RTT] = .bool(allow0RTT) }
            o.put(CodingKeys.metrics, metrics?.json)
            o.put(CodingKeys.enableWebTransport, enableWebTransport)
            return o
        }
    }
}

extension AutoHTTPSConfig {
    /// `caddyhttp.AutoHTTPSConfig`.
    package struct Document {
        package init() {}

        package var disabled = false
        package var disableRedirects = false
        package var disableCerts = false
        package var skip: [String] = []
        package var skipCerts: [String] = []
        package var ignoreLoadedCerts = false

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.disable, disabled)
            o.put(CodingKeys.disableRedirects, disableRedirects)
            o.put(CodingKeys.disableCertificates, disableCerts)
            o.put(CodingKeys.skip, skip)
            o.put(CodingKeys.skipCertificates, skipCerts)
            o.put(CodingKeys.ignoreLoadedCertificates, ignoreLoadedCerts)
            return o
        }
    }
}

extension ServerLogConfig {
    /// `caddyhttp.ServerLogConfig`.
    package struct Document {
        package init() {}

        package var defaultLoggerName = ""
        package var loggerNames: [String: [String]] = [:]
        package var loggerNameOrder: [String] = []
        package var skipHosts: [String] = []
        package var skipUnmappedHosts = false
        package var shouldLogCredentials = false
        package var trace = false

        package mutating func addLoggerName(_ host: String, _ name: String) {
            if loggerNames[host] == nil { loggerNameOrder.append(host) }
            loggerNames[host, default: []].append(name)
        }

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.defaultLoggerName, defaultLoggerName)
            var names = JSONObject()
            for h in loggerNameOrder { names[h] = .strings(loggerNames[h] ?? []) }
            o.putMap(CodingKeys.loggerNames, names.sortedByKey())
            o.put(CodingKeys.skipHosts, skipHosts)
            o.put(CodingKeys.skipUnmappedHosts, skipUnmappedHosts)
            o.put(CodingKeys.shouldLogCredentials, shouldLogCredentials)
            o.put(CodingKeys.trace, trace)
            return o
        }
    }
}

extension HTTPMetricsConfig {
    /// `caddyhttp.Metrics`.
    package struct Document {
        package init() {}

        package var perHost = false
        package var observeCatchallHosts = false
        package var otlp = false

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.perHost, perHost)
            o.put(CodingKeys.observeCatchallHosts, observeCatchallHosts)
            o.put(CodingKeys.otlp, otlp)
            return o
        }
    }
}
