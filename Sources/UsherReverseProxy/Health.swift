import Logging
import NIOCore
import NIOHTTP1
import Synchronization
public import UsherCore
public import UsherHTTP

/// `health_checks` of `reverse_proxy`.
public struct HealthChecks: Decodable, Sendable {
    /// `active`: requests sent to each upstream on a timer.
    public var active: ActiveHealthChecks?
    /// `passive`: failures seen in proxied traffic.
    public var passive: PassiveHealthChecks?

    enum CodingKeys: String, CodingKey { case active, passive }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        active = try c.decodeIfPresent(ActiveHealthChecks.self, forKey: .active)
        passive = try c.decodeIfPresent(PassiveHealthChecks.self, forKey: .passive)
    }
}

/// `health_checks.active`: an HTTP request to every upstream each `interval`; enabled when `uri`, `path` or
/// `port` is set, as in Caddy.
public struct ActiveHealthChecks: Decodable, Sendable {
    /// `uri`: the request target (path and query). `path` is its deprecated older name.
    public var uri: String
    /// `upstream`: check this `host:port` instead of each upstream's own address.
    public var upstream: String?
    /// `port`: check each upstream's host on this port instead.
    public var port: Int
    /// `headers`: fields to send; `Host` sets the request's host.
    public var headers: [String: [String]]
    /// `method`. Default: `GET`.
    public var method: String
    /// `body`: request body to send.
    public var body: String
    /// `interval`. Default: 30s.
    public var interval: ConfigDuration
    /// `timeout`: for the whole check. Default: 5s.
    public var timeout: ConfigDuration
    /// `passes`: consecutive passes that mark a down upstream up. Default: 1.
    public var passes: Int
    /// `fails`: consecutive failures that mark an up upstream down. Default: 1.
    public var fails: Int
    /// `max_size`: most body bytes read (for `expect_body`); 0 means no limit.
    public var maxSize: Int
    /// `expect_status`: the status wanted (a one-digit class such as 2 means 2xx). Default: any 2xx.
    public var expectStatus: Int
    /// `expect_body`: a regular expression the body must match.
    public var expectBody: CompiledRegex?

    enum CodingKeys: String, CodingKey {
        case path, uri, upstream, port, headers, method, body, interval, timeout, passes, fails
        case maxSize = "max_size", expectStatus = "expect_status", expectBody = "expect_body"
        case followRedirects = "follow_redirects"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if try c.decodeIfPresent(Bool.self, forKey: .followRedirects) == true {
            throw c.error(.followRedirects, "not supported yet")
        }
        let path = try c.decodeIfPresent(String.self, forKey: .path) ?? ""
        uri = try c.decodeIfPresent(String.self, forKey: .uri) ?? path
        if !uri.isEmpty && !uri.hasPrefix("/") { throw c.error(.uri, "must start with /") }
        upstream = try c.decodeIfPresent(String.self, forKey: .upstream)
        if let upstream {
            do { _ = try NetworkAddress(parsing: upstream) } catch {
                throw c.error(.upstream, "invalid address \(upstream): \(error)")
            }
        }
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? 0
        if port < 0 || port > 65535 { throw c.error(.port, "port \(port) is out of range") }
        headers = try c.decodeIfPresent([String: [String]].self, forKey: .headers) ?? [:]
        method = try c.decodeIfPresent(String.self, forKey: .method) ?? "GET"
        if method.isEmpty { method = "GET" }
        body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
        interval = try c.decodeIfPresent(ConfigDuration.self, forKey: .interval) ?? .zero
        if interval.nanoseconds <= 0 { interval = ConfigDuration(seconds: 30) }
        timeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .timeout) ?? .zero
        if timeout.nanoseconds <= 0 { timeout = ConfigDuration(seconds: 5) }
        passes = max(1, try c.decodeIfPresent(Int.self, forKey: .passes) ?? 1)
        fails = max(1, try c.decodeIfPresent(Int.self, forKey: .fails) ?? 1)
        maxSize = try c.decodeIfPresent(Int.self, forKey: .maxSize) ?? 0
        expectStatus = try c.decodeIfPresent(Int.self, forKey: .expectStatus) ?? 0
        if let pattern = try c.decodeIfPresent(String.self, forKey: .expectBody), !pattern.isEmpty {
            do { expectBody = try CompiledRegex(pattern) } catch {
                throw c.error(.expectBody, "compiling regular expression: \(error)")
            }
        }
    }

    /// Whether checks run at all: Caddy's rule, a target (`uri`/`path`) or a `port`.
    public var isEnabled: Bool { !uri.isEmpty || port != 0 || upstream != nil }
}

/// `health_checks.passive`: upstreams that fail in live traffic are avoided for a while.
public struct PassiveHealthChecks: Decodable, Sendable {
    /// `fail_duration`: how long a failure is remembered; 0 disables passive checks.
    public var failDuration: ConfigDuration
    /// `max_fails`: failures within `fail_duration` that mark an upstream down. Default: 1.
    public var maxFails: Int
    /// `unhealthy_request_count`: requests in flight beyond which an upstream takes no more (the default for
    /// upstreams without `max_requests`).
    public var unhealthyRequestCount: Int
    /// `unhealthy_status`: response statuses counted as failures (one-digit classes allowed).
    public var unhealthyStatus: [Int]
    /// `unhealthy_latency`: a response head slower than this counts as a failure.
    public var unhealthyLatency: ConfigDuration?

    enum CodingKeys: String, CodingKey {
        case failDuration = "fail_duration", maxFails = "max_fails", unhealthyRequestCount = "unhealthy_request_count"
        case unhealthyStatus = "unhealthy_status", unhealthyLatency = "unhealthy_latency"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        failDuration = try c.decodeIfPresent(ConfigDuration.self, forKey: .failDuration) ?? .zero
        maxFails = try c.decodeIfPresent(Int.self, forKey: .maxFails) ?? 0
        if maxFails <= 0 { maxFails = 1 }
        unhealthyRequestCount = try c.decodeIfPresent(Int.self, forKey: .unhealthyRequestCount) ?? 0
        unhealthyStatus = try c.decodeIfPresent([Int].self, forKey: .unhealthyStatus) ?? []
        unhealthyLatency = try c.decodeIfPresent(ConfigDuration.self, forKey: .unhealthyLatency)
    }
}

/// The outcome of one active health check, for the admin API.
public struct HealthCheckRecord: Sendable {
    public var time: WallTime
    public var passed: Bool
    /// The response status, when one came.
    public var status: Int?
    /// Why the check failed.
    public var error: String?
}

/// One upstream's health as one handler sees it: the active checker's verdict and the passive failures still
/// remembered. Each handler has its own, so two sites proxying to one address judge it separately.
public final class UpstreamHealth: Sendable {
    private struct Active {
        var passes = 0
        var fails = 0
        var last: HealthCheckRecord?
    }
    private let activelyHealthy = Atomic<Bool>(true)
    private let active = Mutex<Active>(Active())
    private let passiveFails = Atomic<Int>(0)
    /// `max_fails` of the handler's passive checks; 0 when passive checks are off.
    let maxFails: Int

    init(maxFails: Int) { self.maxFails = maxFails }

    /// Up by the active checks and below the passive failure limit.
    public var healthy: Bool {
        activelyHealthy.load(ordering: .relaxed) && (maxFails == 0 || failures < maxFails)
    }

    /// Passive failures still remembered.
    public var failures: Int { passiveFails.load(ordering: .relaxed) }

    public var lastCheck: HealthCheckRecord? { active.withLock { $0.last } }

    func countFailure() { passiveFails.add(1, ordering: .relaxed) }
    func forgetFailure() { passiveFails.subtract(1, ordering: .relaxed) }

    /// Records an active check; the state flips after `needed` consecutive results the other way.
    func record(_ result: HealthCheckRecord, passesNeeded: Int, failsNeeded: Int) -> (changed: Bool, healthy: Bool) {
        active.withLock { a in
            a.last = result
            let wasHealthy = activelyHealthy.load(ordering: .relaxed)
            if result.passed {
                a.fails = 0
                a.passes += 1
                if !wasHealthy && a.passes >= passesNeeded {
                    activelyHealthy.store(true, ordering: .relaxed)
                    a.passes = 0
                    return (true, true)
                }
            } else {
                a.passes = 0
                a.fails += 1
                if wasHealthy && a.fails >= failsNeeded {
                    activelyHealthy.store(false, ordering: .relaxed)
                    a.fails = 0
                    return (true, false)
                }
            }
            return (false, wasHealthy)
        }
    }
}

/// Runs a handler's active health checks until cancelled.
struct ActiveHealthChecker: Sendable {
    let config: ActiveHealthChecks
    let pool: [Upstream]
    let connections: ConnectionPool
    let group: any EventLoopGroup
    let logger: Logger
    /// Told `healthy` and `unhealthy` (with the `host`) when an upstream changes state, as Caddy does.
    let events: (any EventEmitter)?

    func run() async {
        while !Task.isCancelled {
            await withTaskGroup(of: Void.self) { g in
                for upstream in pool {
                    g.addTask { await check(upstream) }
                }
            }
            try? await Task.sleep(for: config.interval.duration)
        }
    }

    /// Where to send the check for `upstream`, and the Host it names.
    func target(for upstream: Upstream) -> (dial: String, host: String) {
        if let other = config.upstream { return (other, other) }
        let address = upstream.address
        guard config.port != 0 else {
            return (address, address.hasPrefix("unix/") ? "localhost" : address)
        }
        let host = (try? NetworkAddress(parsing: address)).map { $0.isUnixNetwork ? "localhost" : $0.host } ?? address
        let hostPort = host.contains(":") ? "[\(host)]:\(config.port)" : "\(host):\(config.port)"
        return (hostPort, hostPort)
    }

    func check(_ upstream: Upstream) async {
        let (dial, host) = target(for: upstream)
        var record = HealthCheckRecord(time: .now(), passed: false)
        do {
            let (status, body) = try await exchange(dial: dial, host: host)
            record.status = status
            if config.expectStatus > 0
                ? !ResponseMatcher.statusMatches(status, config.expectStatus)
                : !(200..<300).contains(status)
            {
                record.error = "unexpected status \(status)"
            } else if let re = config.expectBody, re.firstMatch(in: String(decoding: body, as: UTF8.self)) == nil {
                record.error = "response body failed expectations"
            } else {
                record.passed = true
            }
        } catch {
            record.error = "\(error)"
        }
        let (changed, healthy) = upstream.health.record(record, passesNeeded: config.passes, failsNeeded: config.fails)
        if changed {
            logger.info(
                healthy ? "host is up" : "host is down",
                metadata: [
                    "host": .string(upstream.address), "error": .string(record.error ?? ""),
                ])
            await events?.emit(
                healthy ? "healthy" : "unhealthy", origin: ReverseProxyHandler.moduleID,
                data: ["host": .string(upstream.address)])
        }
    }

    /// One request on a fresh connection; the status and (up to `max_size`) the body.
    private func exchange(dial: String, host: String) async throws -> (Int, [UInt8]) {
        let loop = group.next()
        // The connection lives on its loop; the whole exchange runs there.
        return try await withTaskExecutorPreference(EventLoopTaskExecutor.forLoop(loop)) {
            let timeout = TimeAmount.nanoseconds(config.timeout.nanoseconds)
            let conn = try await connections.dial(dial, on: loop, timeout: timeout)
            let bound = NIOLoopBound(conn, eventLoop: loop)
            let timer = loop.scheduleTask(in: timeout) { bound.value.timeOut() }
            defer {
                timer.cancel()
                conn.close()
            }
            return try await request(on: conn, host: host)
        }
    }

    private func request(on conn: UpstreamConnection, host: String) async throws -> (Int, [UInt8]) {
        var h = HTTPHeaders()
        h.add(name: "Host", value: host)
        h.add(name: "User-Agent", value: "Usher health checker")
        for (name, values) in config.headers.sorted(by: { $0.key < $1.key }) {
            if name.lowercased() == "host" {
                if let v = values.first { h.replaceOrAdd(name: "Host", value: v) }
                continue
            }
            for v in values { h.add(name: name, value: v) }
        }
        h.add(name: "Connection", value: "close")
        if !config.body.isEmpty { h.add(name: "Content-Length", value: String(config.body.utf8.count)) }
        let head = HTTPRequestHead(
            version: .http1_1, method: HTTPMethod(rawValue: config.method),
            uri: config.uri.isEmpty ? "/" : config.uri, headers: h)
        try await conn.write(.head(head), flush: false)
        if !config.body.isEmpty {
            try await conn.write(.body(.byteBuffer(ByteBuffer(string: config.body))), flush: false)
        }
        try await conn.write(.end(nil), flush: true)
        var status: Int?
        var body: [UInt8] = []
        let wantBody = config.expectBody != nil
        while let part = try await conn.next() {
            switch part {
            case .head(let head):
                if head.status.code >= 100 && head.status.code < 200 { continue }
                status = Int(head.status.code)
                if !wantBody { return (Int(head.status.code), []) }
            case .body(let chunk):
                if config.maxSize <= 0 || body.count < config.maxSize {
                    let room = config.maxSize > 0 ? config.maxSize - body.count : chunk.readableBytes
                    body += chunk.readableBytesView.prefix(room)
                }
            case .end:
                if let status { return (status, body) }
            }
        }
        throw UpstreamError(description: "connection closed before the response ended", retryable: false)
    }
}
