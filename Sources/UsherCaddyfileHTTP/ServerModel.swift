import UsherTLS
import UsherCaddyfile
import UsherCore

/// `caddyhttp.AutoHTTPSConfig`.
struct AutoHTTPSConfig {
    var disabled = false
    var disableRedirects = false
    var disableCerts = false
    var skip: [String] = []
    var skipCerts: [String] = []
    var ignoreLoadedCerts = false

    var json: JSONObject {
        var o = JSONObject()
        o.put("disable", disabled)
        o.put("disable_redirects", disableRedirects)
        o.put("disable_certificates", disableCerts)
        o.put("skip", skip)
        o.put("skip_certificates", skipCerts)
        o.put("ignore_loaded_certificates", ignoreLoadedCerts)
        return o
    }
}

/// `caddyhttp.ServerLogConfig`.
struct ServerLogConfig {
    var defaultLoggerName = ""
    var loggerNames: [String: [String]] = [:]
    var loggerNameOrder: [String] = []
    var skipHosts: [String] = []
    var skipUnmappedHosts = false
    var shouldLogCredentials = false
    var trace = false

    mutating func addLoggerName(_ host: String, _ name: String) {
        if loggerNames[host] == nil { loggerNameOrder.append(host) }
        loggerNames[host, default: []].append(name)
    }

    var json: JSONObject {
        var o = JSONObject()
        o.put("default_logger_name", defaultLoggerName)
        var names = JSONObject()
        for h in loggerNameOrder { names[h] = .strings(loggerNames[h] ?? []) }
        o.putMap("logger_names", names.sortedByKey())
        o.put("skip_hosts", skipHosts)
        o.put("skip_unmapped_hosts", skipUnmappedHosts)
        o.put("should_log_credentials", shouldLogCredentials)
        o.put("trace", trace)
        return o
    }
}

/// `caddyhttp.Metrics`.
struct HTTPMetricsConfig {
    var perHost = false
    var observeCatchallHosts = false
    var otlp = false

    var json: JSONObject {
        var o = JSONObject()
        o.put("per_host", perHost)
        o.put("observe_catchall_hosts", observeCatchallHosts)
        o.put("otlp", otlp)
        return o
    }
}

/// `caddyhttp.Server`, with Usher's `enable_webtransport`.
final class ServerModel {
    var listen: [String] = []
    var listenerWrappers: [JSONObject] = []
    var packetConnWrappers: [JSONObject] = []
    var readTimeout: Int64 = 0
    var readHeaderTimeout: Int64 = 0
    var readIdleTimeout: Int64 = 0
    var readMinRate = 0
    var writeTimeout: Int64 = 0
    var writeIdleTimeout: Int64 = 0
    var writeMinRate = 0
    var maxWriteChunk = 0
    var idleTimeout: Int64 = 0
    var keepAliveInterval: Int64 = 0
    var keepAliveIdle: Int64 = 0
    var keepAliveCount = 0
    var maxHeaderBytes = 0
    var enableFullDuplex = false
    var expectedUnderscoreHeaders: [String] = []
    var expectedDotHeaders: [String] = []
    var routes: [HTTPRoute] = []
    var errors: [HTTPRoute]?
    var namedRoutes: [String: HTTPRoute]?
    var tlsConnPolicies: [ConnectionPolicy.Document] = []
    var autoHTTPS: AutoHTTPSConfig?
    var strictSNIHost: Bool?
    var trustedProxies: JSONObject?
    var clientIPHeaders: [String] = []
    var trustedProxiesStrict = 0
    var trustedProxiesUnix = false
    var logs: ServerLogConfig?
    var protocols: [String] = []
    var listenProtocols: [[String]?]?
    var allow0RTT: Bool?
    var metrics: HTTPMetricsConfig?
    var enableWebTransport = false

    var json: JSONObject {
        var o = JSONObject()
        o.put("listen", listen)
        o.put("listener_wrappers", listenerWrappers)
        o.put("packet_conn_wrappers", packetConnWrappers)
        o.putDuration("read_timeout", readTimeout)
        o.putDuration("read_header_timeout", readHeaderTimeout)
        o.putDuration("read_idle_timeout", readIdleTimeout)
        o.put("read_min_rate", readMinRate)
        o.putDuration("write_timeout", writeTimeout)
        o.putDuration("write_idle_timeout", writeIdleTimeout)
        o.put("write_min_rate", writeMinRate)
        o.put("max_write_chunk", maxWriteChunk)
        o.putDuration("idle_timeout", idleTimeout)
        o.putDuration("keepalive_interval", keepAliveInterval)
        o.putDuration("keepalive_idle", keepAliveIdle)
        o.put("keepalive_count", keepAliveCount)
        o.put("max_header_bytes", maxHeaderBytes)
        o.put("enable_full_duplex", enableFullDuplex)
        o.put("expected_underscore_headers", expectedUnderscoreHeaders)
        o.put("expected_dot_headers", expectedDotHeaders)
        o.put("routes", routes.map(\.json))
        if let errors {
            var e = JSONObject()
            e.put("routes", errors.map(\.json))
            o["errors"] = .object(e)
        }
        if let namedRoutes, !namedRoutes.isEmpty {
            var m = JSONObject()
            for (k, v) in namedRoutes { m[k] = .object(v.json) }
            o["named_routes"] = .object(m.sortedByKey())
        }
        o.put("tls_connection_policies", tlsConnPolicies.map(\.json))
        o.put("automatic_https", autoHTTPS?.json)
        if let strictSNIHost { o["strict_sni_host"] = .bool(strictSNIHost) }
        o.put("trusted_proxies", trustedProxies)
        o.put("client_ip_headers", clientIPHeaders)
        o.put("trusted_proxies_strict", trustedProxiesStrict)
        o.put("trusted_proxies_unix", trustedProxiesUnix)
        o.put("logs", logs?.json)
        o.put("protocols", protocols)
        if let listenProtocols, !listenProtocols.isEmpty {
            o["listen_protocols"] = .array(listenProtocols.map { $0.map { JSONValue.strings($0) } ?? .null })
        }
        if let allow0RTT { o["allow_0rtt"] = .bool(allow0RTT) }
        o.put("metrics", metrics?.json)
        o.put("enable_webtransport", enableWebTransport)
        return o
    }
}

/// `caddy.CustomLog`.
final class CustomLog {
    var writer: JSONObject?
    var encoder: JSONObject?
    var core: JSONObject?
    var level = ""
    var sampling: JSONObject?
    var include: [String] = []
    var exclude: [String] = []

    var isEmpty: Bool {
        writer == nil && encoder == nil && core == nil && level.isEmpty && sampling == nil && include.isEmpty
            && exclude.isEmpty
    }

    var json: JSONObject {
        var o = JSONObject()
        o.put("writer", writer)
        o.put("encoder", encoder)
        o.put("core", core)
        o.put("level", level)
        o.put("sampling", sampling)
        o.put("include", include)
        o.put("exclude", exclude)
        return o
    }
}

/// A logger a `log` directive or option defines (Caddy's `namedCustomLog`).
struct NamedCustomLog {
    var name = ""
    var hostnames: [String] = []
    var log: CustomLog?
    var noHostname = false
}

/// `bind` addresses and protocols.
struct AddressesWithProtocols: Equatable {
    var addresses: [String]
    var protocols: [String]?
}
