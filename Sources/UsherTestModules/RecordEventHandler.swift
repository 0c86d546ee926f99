import Foundation
public import UsherCore

/// `events.handlers.test_record` (test builds only): appends each event it is given to `file` as a JSON line
/// (`name`, `origin`, `data` keys sorted), and aborts it when `abort` is set, to exercise subscriptions and
/// aborting from outside.
public struct RecordEventHandler: EventHandler {
    public static let moduleID: ModuleID = "events.handlers.test_record"
    /// `file`: where the lines go.
    public var file: String
    /// `abort`: abort every event handled. Default: false.
    public var abort: Bool?

    public func handle(_ event: Event) async throws {
        let line: JSONValue = [
            "name": .string(event.name), "origin": .string(event.origin?.rawValue ?? ""),
            "data": .array(event.data.keys.sorted().map { .string($0) }),
        ]
        let bytes = Data((line.serialized() + "\n").utf8)
        if let h = FileHandle(forWritingAtPath: file) {
            h.seekToEndOfFile()
            h.write(bytes)
            try? h.close()
        } else {
            FileManager.default.createFile(atPath: file, contents: bytes)
        }
        if abort == true { throw EventAborted() }
    }
}
