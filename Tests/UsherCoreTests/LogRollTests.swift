import Foundation
import Testing

@testable import UsherCore

/// The file log writer rolls its file at `roll_size_mb` and compresses rolled files as Caddy does: gzip by
/// default, zstd with `roll_compression zstd`, none with `roll_gzip: false` or `roll_compression none`.
@Suite("Log file rolling")
struct LogRollTests {
    func writer(_ json: String) throws -> FileWriterModule {
        try ConfigDecoder(registry: nil).decode(FileWriterModule.self, from: try JSONValue.parse(json), path: [])
    }

    /// Writes 2.5 MiB in 8 KiB entries to a writer rolling at 1 MiB, then waits for compression to finish.
    func roll(_ extra: String) throws -> (dir: URL, files: [String]) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-roll-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("access.log").path
        let w = try writer(#"{"filename": "\#(path)", "roll_size_mb": 1\#(extra)}"#).openWriter()
        let entry = [UInt8](repeating: UInt8(ascii: "x"), count: 8191) + [UInt8(ascii: "\n")]
        for _ in 0..<320 { w.write(entry) }
        w.close()
        var files: [String] = []
        for _ in 0..<200 {
            files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            let compressing = !extra.contains("none") && !extra.contains("false")
            if !compressing || !files.contains(where: { $0.hasPrefix("access-") && $0.hasSuffix(".log") }) { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return (dir, files)
    }

    func magic(_ url: URL) throws -> [UInt8] { Array(try Data(contentsOf: url).prefix(4)) }

    @Test("rolled files are gzip by default")
    func gzipDefault() throws {
        let (dir, files) = try roll("")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rolled = files.filter { $0.hasPrefix("access-") }
        #expect(rolled.count == 2, "\(files)")
        for f in rolled {
            #expect(f.hasSuffix(".log.gz"))
            #expect(try magic(dir.appendingPathComponent(f)).prefix(2) == [0x1f, 0x8b])
        }
        // The live file holds what came after the last roll.
        let live = try Data(contentsOf: dir.appendingPathComponent("access.log"))
        #expect(live.count == 320 * 8192 - 2 * 128 * 8192)
    }

    @Test("roll_compression zstd gives zstd files")
    func zstd() throws {
        let (dir, files) = try roll(#", "roll_compression": "zstd""#)
        defer { try? FileManager.default.removeItem(at: dir) }
        let rolled = files.filter { $0.hasPrefix("access-") }
        #expect(rolled.count == 2, "\(files)")
        for f in rolled {
            #expect(f.hasSuffix(".log.zst"))
            #expect(try magic(dir.appendingPathComponent(f)) == [0x28, 0xb5, 0x2f, 0xfd])
        }
    }

    @Test("roll_gzip false and roll_compression none keep rolled files as written")
    func uncompressed() throws {
        for extra in [#", "roll_gzip": false"#, #", "roll_compression": "none""#] {
            let (dir, files) = try roll(extra)
            defer { try? FileManager.default.removeItem(at: dir) }
            let rolled = files.filter { $0.hasPrefix("access-") }
            #expect(rolled.count == 2 && rolled.allSatisfy { $0.hasSuffix(".log") }, "\(files)")
            for f in rolled {
                #expect(try Data(contentsOf: dir.appendingPathComponent(f)).count == 128 * 8192)
            }
        }
    }

    @Test("an unknown compression, a minute past 59 and a time of day past 23:59 are refused by name")
    func refused() {
        #expect(throws: ConfigError.self) { try writer(#"{"filename": "/tmp/x.log", "roll_compression": "brotli"}"#) }
        for (json, key) in [
            (#"{"filename": "/tmp/x.log", "roll_minutes": [0, 60]}"#, "roll_minutes"),
            (#"{"filename": "/tmp/x.log", "roll_at": ["25:00"]}"#, "roll_at"),
            (#"{"filename": "/tmp/x.log", "dir_mode": "rwx"}"#, "dir_mode"),
        ] {
            do {
                _ = try writer(json)
                Issue.record("\(json) was accepted")
            } catch {
                #expect("\(error)".contains(key), "\(error)")
            }
        }
    }

    @Test("size rolls are named with the reason, as timberjack names them")
    func sizeReason() throws {
        let (dir, files) = try roll(#", "roll_compression": "none""#)
        defer { try? FileManager.default.removeItem(at: dir) }
        let rolled = files.filter { $0.hasPrefix("access-") }
        // Two rolls within one millisecond get a counter after the reason rather than overwriting each other.
        #expect(
            rolled.count == 2
                && rolled.allSatisfy { $0.range(of: #"-size(-\d+)?\.log$"#, options: .regularExpression) != nil },
            "\(files)")
    }

    @Test("roll_minutes and roll_at: the slot a write crosses, and the next slot the scheduler sleeps to")
    func slots() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-slots-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let module = try writer(
            #"{"filename": "\#(dir.path)/a.log", "roll_minutes": [15, 45], "roll_at": ["06:30", "6:30"]}"#)
        #expect(module.rollSlots.count == 49)
        #expect(module.rollSlots.contains(6 * 60 + 30) && module.rollSlots.contains(23 * 60 + 45))
        let w = try #require(try module.openWriter() as? RollingFileLogWriter)
        defer { w.close() }
        let day = 20_000 * 86400  // a UTC midnight
        func at(_ h: Int, _ m: Int, _ s: Int = 0) -> WallTime {
            WallTime(seconds: day + h * 3600 + m * 60 + s, nanoseconds: 0)
        }
        #expect(w.crossedSlot(since: at(6, 29), now: at(6, 30, 5)) == at(6, 15).advanced(minutes: 15))
        #expect(w.crossedSlot(since: at(6, 30), now: at(6, 44, 59)) == nil)
        #expect(w.crossedSlot(since: at(6, 40), now: at(6, 45)) == at(6, 45))
        #expect(w.nextSlot(after: at(6, 30)) == at(6, 45))
        #expect(w.nextSlot(after: at(23, 50)) == WallTime(seconds: day + 86400 + 15 * 60, nanoseconds: 0))
    }
}

extension WallTime {
    func advanced(minutes: Int) -> WallTime { WallTime(seconds: seconds + minutes * 60, nanoseconds: nanoseconds) }
}
