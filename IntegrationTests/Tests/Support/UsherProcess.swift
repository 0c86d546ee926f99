import Foundation
import Testing

/// The package root, found from this file's path.
let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// The `usher` binary under test: `USHER_BIN`, else the debug build `swift test` just made.
var usherBinary: String {
    if let b = ProcessInfo.processInfo.environment["USHER_BIN"], !b.isEmpty { return b }
    for config in ["debug", "release"] {
        let p = packageRoot.appendingPathComponent(".build/\(config)/usher").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return packageRoot.appendingPathComponent(".build/debug/usher").path
}

/// Hands out ports below the kernel's ephemeral range, so they never collide with the local ports of outgoing
/// connections (curl, wrk) that tests make in parallel, nor with each other.
private let portAllocator = PortAllocator()

private final class PortAllocator: @unchecked Sendable {
    private let lock = NSLock()
    private var next: Int
    private let low: Int
    private let high: Int

    init() {
        var ephemeralStart = 32768
        if let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
            let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first, let v = Int(first)
        {
            ephemeralStart = v
        }
        high = max(12000, ephemeralStart - 1)
        low = 10000
        next = low + Int(getpid()) % (high - low - 100)
    }

    /// `count` consecutive ports that are free now.
    func take(_ count: Int) -> Int {
        lock.lock()
        defer { lock.unlock() }
        while true {
            if next + count > high { next = low }
            let start = next
            next += count
            if (start..<(start + count)).allSatisfy(canBind) { return start }
        }
    }

    private func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }
}

/// A TCP port on 127.0.0.1 that no other test in this run will be given.
func freePort() -> Int { portAllocator.take(1) }

/// The first of `count` consecutive free ports.
func freePorts(_ count: Int) -> Int { portAllocator.take(count) }

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func portOpen(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    } == 0
}

/// Starts `process` with no signal blocked (a child inherits the mask of the thread that spawns it, and a test
/// thread may have signals blocked, which left children deaf to SIGTERM), and records it so that whatever is still
/// running when the test process exits is killed then, even after a failed test or from a suite-wide static.
func launch(_ process: Process) throws {
    var empty = sigset_t(), saved = sigset_t()
    sigemptyset(&empty)
    pthread_sigmask(SIG_SETMASK, &empty, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    try process.run()
    children.add(process.processIdentifier)
}

/// The processes tests started, killed at exit if still running.
private let children = ChildRegistry()

private final class ChildRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var pids: [Int32] = []
    private var installed = false

    func add(_ pid: Int32) {
        lock.lock()
        defer { lock.unlock() }
        pids.append(pid)
        if !installed {
            installed = true
            atexit { children.killSurvivors() }
        }
    }

    /// SIGKILLs every recorded process that is still this process's child (a reaped pid may have been reused).
    func killSurvivors() {
        lock.lock()
        let all = pids
        lock.unlock()
        let me = getpid()
        for pid in all {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 2,
                Int32(fields[1]) == me, fields[0] != "Z"
            else { continue }
            kill(pid, SIGKILL)
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A running `usher` process with its own temporary directory, config directory and log file.
final class UsherProcess: @unchecked Sendable {
    let process = Process()
    let dir: URL
    let logFile: URL
    let adminPort: Int

    /// Starts `usher run` with `config` (a JSON document; `{{ADMIN}}` is replaced by the admin address) and waits
    /// until the admin endpoint answers, or `waitPort` accepts connections.
    init(
        config: String, args: [String] = [], configName: String = "config.json", waitPort: Int? = nil,
        environment: [String: String] = [:], binary: String = usherBinary
    ) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-it-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        adminPort = freePort()
        let text = config.replacingOccurrences(of: "{{ADMIN}}", with: "127.0.0.1:\(adminPort)")
        let configURL = dir.appendingPathComponent(configName)
        try text.write(to: configURL, atomically: true, encoding: .utf8)
        logFile = dir.appendingPathComponent("usher.log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["run", "--config", configURL.path] + args
        process.currentDirectoryURL = dir
        var env = ProcessInfo.processInfo.environment
        env["XDG_CONFIG_HOME"] = dir.appendingPathComponent("xdg-config").path
        env["XDG_DATA_HOME"] = dir.appendingPathComponent("xdg-data").path
        env["USHER_ADMIN"] = "127.0.0.1:\(adminPort)"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = log
        process.standardError = log
        try launch(process)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if !process.isRunning {
                process.waitUntilExit()
                Thread.sleep(forTimeInterval: 0.05)
                let how = process.terminationReason == .uncaughtSignal ? "signal" : "status"
                throw TestFailure("usher exited early (\(how) \(process.terminationStatus)): \(self.log)")
            }
            if portOpen(waitPort ?? adminPort) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        stop()
        throw TestFailure("usher did not start within 20s: \(self.log)")
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }
    var pid: Int32 { process.processIdentifier }
    var adminAddress: String { "127.0.0.1:\(adminPort)" }

    /// Sends SIGTERM and waits for the process to exit (killing it after `timeout`).
    @discardableResult
    func stop(timeout: TimeInterval = 10) -> Int32 {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { stop() }
        try? FileManager.default.removeItem(at: dir)
    }
}

/// The result of running a command.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion.
@discardableResult
func runCommand(
    _ executable: String, _ args: [String], input: Data? = nil, environment: [String: String]? = nil,
    cwd: URL? = nil, timeout: TimeInterval = 120
) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if let environment {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
    }
    if let cwd { p.currentDirectoryURL = cwd }
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try launch(p)
    if let input { inp.fileHandleForWriting.write(input) }
    try? inp.fileHandleForWriting.close()
    // Read both pipes concurrently so neither fills up.
    nonisolated(unsafe) var outData = Data()
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave()
    }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        p.terminate()
        throw TestFailure("\(executable) \(args.joined(separator: " ")) timed out after \(timeout)s")
    }
    p.waitUntilExit()
    return CommandResult(
        status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// An HTTP response as curl saw it.
struct CurlResponse {
    var status: Int
    /// Header fields of the final response, names lowercased.
    var headers: [(name: String, value: String)]
    var body: String
    var httpVersion: String

    func header(_ name: String) -> String? { headers.first { $0.name == name.lowercased() }?.value }
    func headerValues(_ name: String) -> [String] { headers.filter { $0.name == name.lowercased() }.map(\.value) }
}

/// Runs curl (`-s -i` plus `args`) and parses the last response.
func curl(_ args: [String], timeout: TimeInterval = 30) throws -> CurlResponse {
    let r = try runCommand(
        "/usr/bin/curl", ["-s", "-i", "--max-time", String(Int(timeout))] + args, timeout: timeout + 5)
    guard r.status == 0 else {
        throw TestFailure("curl \(args.joined(separator: " ")) failed with exit \(r.status): \(r.stderr)")
    }
    return try parseHTTPResponse(r.stdout)
}

func parseHTTPResponse(_ raw: String) throws -> CurlResponse {
    var text = Substring(raw)
    // Skip interim responses (100 Continue and the like).
    while true {
        guard let end = text.range(of: "\r\n\r\n") else {
            throw TestFailure("no complete response in: \(raw.prefix(500))")
        }
        let head = text[..<end.lowerBound]
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        let status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        let rest = text[end.upperBound...]
        if status >= 100 && status < 200 && status != 101 {
            text = rest
            continue
        }
        var headers: [(String, String)] = []
        for line in head.split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append(
                (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return CurlResponse(
            status: status, headers: headers, body: String(rest), httpVersion: String(parts.first ?? ""))
    }
}

/// Sends raw bytes to 127.0.0.1:`port` and returns everything read until the server closes or `timeout` passes.
func rawExchange(port: Int, _ data: [UInt8], timeout: TimeInterval = 3, chunks: [([UInt8], TimeInterval)] = []) throws
    -> (response: String, closed: Bool)
{
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard rc == 0 else { throw TestFailure("connect to \(port) failed") }
    _ = data.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    for (chunk, delay) in chunks {
        Thread.sleep(forTimeInterval: delay)
        _ = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    let deadline = Date().addingTimeInterval(timeout)
    var closed = false
    while Date() < deadline {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
        if poll(&pfd, 1, ms) <= 0 { break }
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 {
            closed = true
            break
        }
        out.append(contentsOf: buf[0..<n])
    }
    return (String(decoding: out, as: UTF8.self), closed)
}

/// Issues an admin API request with curl.
func admin(_ server: UsherProcess, _ method: String, _ path: String, body: String? = nil, headers: [String] = []) throws
    -> CurlResponse
{
    var args = ["-X", method, "http://\(server.adminAddress)\(path)"]
    for h in headers { args += ["-H", h] }
    if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
    return try curl(args)
}

/// Runs a suite with a server started before its tests and stopped after them; tests reach it through
/// ``SharedServer/current``.
struct SharedServer: SuiteTrait, TestScoping {
    @TaskLocal static var current: UsherProcess?

    let start: @Sendable () throws -> UsherProcess

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void)
        async throws
    {
        let server = try start()
        defer { server.stop() }
        try await SharedServer.$current.withValue(server) {
            try await function()
        }
    }

    /// The suite's server.
    static func get() throws -> UsherProcess {
        guard let s = current else { throw TestFailure("no shared server in scope") }
        return s
    }
}

/// The test build of usher (standard modules plus test-only ones such as `http.handlers.test_stream`).
var usherTestBinary: String {
    if let b = ProcessInfo.processInfo.environment["USHER_TEST_BIN"], !b.isEmpty { return b }
    return URL(fileURLWithPath: usherBinary).deletingLastPathComponent().appendingPathComponent("usher-test").path
}

/// Samples a process's resident memory every 50 ms in the background and keeps the peak.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peakKiB = 0
    private var running = true
    private let thread: Thread

    init(pid: Int32) {
        let box = Box()
        thread = Thread {
            while box.sampler?.isRunning ?? true {
                box.sampler?.record(residentKiB(pid: pid))
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        box.sampler = self
        thread.start()
    }

    private final class Box: @unchecked Sendable { weak var sampler: RSSSampler? }

    private var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }
    private func record(_ kib: Int) { lock.lock(); peakKiB = max(peakKiB, kib); lock.unlock() }

    /// Stops sampling and returns the peak in KiB.
    func stop() -> Int {
        lock.lock()
        running = false
        let p = peakKiB
        lock.unlock()
        return p
    }
}

/// Runs the openssl CLI in `dir`, failing with what it printed.
func runOpenSSL(_ args: [String], in dir: URL) throws {
    let r = try runCommand("/usr/bin/openssl", args, cwd: dir)
    guard r.status == 0 else { throw TestFailure("openssl \(args.joined(separator: " ")): \(r.stderr)") }
}

/// openssl `req` arguments for a new P-256 key without a passphrase.
let opensslNewP256Key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
