import Foundation
import Testing

@testable import UsherCore

@Suite("file_system storage: certmagic's keys, atomic writes, locks across holders")
struct StorageTests {
    func tempRoot() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("usher-storage-\(UUID().uuidString)").path
    }

    @Test("Safe() as certmagic: lower case, wildcard_, _plus_, colons to dashes, no traversal, odd characters dropped")
    func safeKeys() {
        #expect(StorageKeys.safe("*.Example.COM") == "wildcard_.example.com")
        #expect(StorageKeys.safe(" a+b@x.y ") == "a_plus_b@x.y")
        #expect(StorageKeys.safe("127.0.0.1:14000-dir") == "127.0.0.1-14000-dir")
        #expect(StorageKeys.safe("../../etc/passwd") == "etcpasswd")
        #expect(StorageKeys.safe("a b/c?d") == "a_bcd")
        #expect(
            StorageKeys.siteCertificate(issuerKey: "acme-v02.api.letsencrypt.org-directory", name: "*.a.test")
                == "certificates/acme-v02.api.letsencrypt.org-directory/wildcard_.a.test/wildcard_.a.test.crt")
    }

    @Test("store, load, exists, stat, list (flat and recursive) and delete of a prefix")
    func basicOperations() async throws {
        let root = tempRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let s = FileStorage(root: root)
        try await s.store("certificates/local/a.test/a.test.crt", Array("one".utf8))
        try await s.store("certificates/local/a.test/a.test.key", Array("two".utf8))
        try await s.store("certificates/local/b.test/b.test.crt", Array("three".utf8))
        #expect(try await s.loadText("certificates/local/a.test/a.test.key") == "two")
        #expect(await s.exists("certificates/local"))
        #expect(!(await s.exists("certificates/other")))
        let info = try await s.stat("certificates/local/a.test/a.test.crt")
        #expect(info.size == 3 && info.isTerminal)
        #expect(try await s.stat("certificates/local").isTerminal == false)
        #expect(
            try await s.list("certificates/local", recursive: false) == [
                "certificates/local/a.test", "certificates/local/b.test",
            ])
        #expect(try await s.list("certificates", recursive: true).count == 6)
        // Values are files with private permissions, as certmagic writes them.
        let attrs = try FileManager.default.attributesOfItem(atPath: root + "/certificates/local/a.test/a.test.key")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        try await s.delete("certificates/local/a.test")
        #expect(!(await s.exists("certificates/local/a.test/a.test.crt")))
        await #expect(throws: StorageError.notFound("certificates/local/a.test/a.test.crt")) {
            try await s.load("certificates/local/a.test/a.test.crt")
        }
        try await s.delete("nothing/here")
    }

    @Test("a write replaces the whole value or nothing: no temporary files stay behind")
    func atomicWrites() async throws {
        let root = tempRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let s = FileStorage(root: root)
        let big = [UInt8](repeating: 0x41, count: 1 << 20)
        try await s.store("k", Array("old".utf8))
        try await s.store("k", big)
        #expect(try await s.load("k") == big)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["k"])
        // A write into a folder that cannot be written fails and leaves the old value.
        try FileManager.default.setAttributes([.posixPermissions: 0o500], ofItemAtPath: root)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: root) }
        if getuid() != 0 {
            await #expect(throws: StorageError.self) { try await s.store("k", Array("new".utf8)) }
            #expect(try await s.load("k") == big)
        }
    }

    @Test("locks exclude a second holder until unlocked; the lock file holds certmagic's created/updated times")
    func locks() async throws {
        let root = tempRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let a = FileStorage(root: root)
        let b = FileStorage(root: root)
        try await a.lock("issue_cert_a.test")
        let file = root + "/locks/issue_cert_a.test.lock"
        let meta = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
        #expect(meta.objectValue?["created"]?.stringValue.flatMap(WallTime.parseRFC3339) != nil)
        #expect(meta.objectValue?["updated"] != nil)
        let start = Date()
        let waiter = Task { try await b.lock("issue_cert_a.test") }
        try await Task.sleep(nanoseconds: 1_500_000_000)
        try await a.unlock("issue_cert_a.test")
        try await waiter.value
        #expect(Date().timeIntervalSince(start) >= 1.4)
        try await b.unlock("issue_cert_a.test")
        #expect(!FileManager.default.fileExists(atPath: file))
        // A waiter that is cancelled stops waiting.
        try await a.lock("x")
        let cancelled = Task { try await b.lock("x") }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        try await a.unlock("x")
    }

    @Test("a lock whose holder stopped refreshing it (or left it empty) is taken over")
    func staleLocks() async throws {
        let root = tempRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/locks", withIntermediateDirectories: true)
        let old = WallTime(seconds: WallTime.now().seconds - 60, nanoseconds: 0).rfc3339Nano
        try #"{"created":"\#(old)","updated":"\#(old)"}"#.write(
            toFile: root + "/locks/stale.lock", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: root + "/locks/empty.lock", contents: Data())
        // What a waiter sees: an unrefreshed lock is stale, an empty one may be mid-write, a fresh one is held.
        #expect(FileStorage.lockState(root + "/locks/stale.lock") == .stale)
        #expect(FileStorage.lockState(root + "/locks/empty.lock") == .empty)
        #expect(FileStorage.lockState(root + "/locks/none.lock") == .gone)
        let s = FileStorage(root: root)
        try await s.lock("stale")
        #expect(FileStorage.lockState(root + "/locks/stale.lock") == .held)
        try await s.lock("empty")
        try await s.unlock("stale")
        try await s.unlock("empty")
        #expect(FileStorage.lockState(root + "/locks/stale.lock") == .gone)
    }

    @Test("RFC 3339 times as Go writes and ACME servers send them")
    func rfc3339() {
        #expect(WallTime.parseRFC3339("1970-01-01T00:00:00Z") == WallTime(seconds: 0, nanoseconds: 0))
        #expect(
            WallTime.parseRFC3339("2026-12-07T03:50:00.123456789Z")
                == WallTime(seconds: 1_796_615_400, nanoseconds: 123_456_789))
        #expect(WallTime.parseRFC3339("2026-12-07T04:50:00.5+01:00")?.seconds == 1_796_615_400)
        #expect(WallTime.parseRFC3339("2026-12-07T03:50:00") == nil)
        #expect(WallTime.parseRFC3339("not a time") == nil)
        let now = WallTime.now()
        #expect(WallTime.parseRFC3339(now.rfc3339Nano) == now)
    }
}

@Suite("storage tarballs: ustar with long keys, read back as written")
struct StorageTarTests {
    @Test("entries round-trip, including keys longer than ustar's 100-byte name and 155-byte prefix")
    func roundTrip() throws {
        let long = "certificates/" + String(repeating: "a", count: 90) + "/" + String(repeating: "b", count: 90)
        let longer = String(repeating: "c", count: 300)
        let entries = [
            StorageTar.Entry(
                key: "acme/ca/users/x@y/x.json", value: Array("{}".utf8),
                modified: WallTime(seconds: 1_700_000_000, nanoseconds: 0)),
            StorageTar.Entry(
                key: long, value: [UInt8](repeating: 7, count: 1000), modified: WallTime(seconds: 5, nanoseconds: 0)),
            StorageTar.Entry(key: longer, value: [], modified: WallTime(seconds: 6, nanoseconds: 0)),
        ]
        let tar = StorageTar.write(entries)
        #expect(tar.count % 512 == 0)
        #expect(try StorageTar.read(tar) == entries)
        // A truncated archive is an error, not a short import.
        #expect(throws: StorageTar.FormatError.self) { try StorageTar.read(Array(tar.prefix(1100))) }
    }
}
