import Foundation

/// A peer the tests start (a DNS server, an OCSP responder) with a scratch directory and a log file; the process
/// is stopped and the directory removed when it goes away.
class TestDaemon: @unchecked Sendable {
    let dir: URL
    let process = Process()
    let logFile: URL

    init(prefix: String) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        logFile = dir.appendingPathComponent("daemon.log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Starts `executable` in the scratch directory, its output going to the log.
    func start(_ executable: String, _ arguments: [String]) throws {
        let log = try FileHandle(forWritingTo: logFile)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = dir
        process.standardOutput = log
        process.standardError = log
        try launch(process)
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }
}
