import Foundation
import NIOPosix
import Testing
import UsherCore
import UsherStandard

/// The storage protocol's semantics, differentially: the same operations on `file_system` (the reference,
/// certmagic's layout on disk) and on `postgres` must give the same answers; then what only a shared database
/// must add — mutual exclusion across processes' worth of tasks and cancellable waiting.
@Suite("Storage semantics: postgres answers as file_system does", .serialized)
struct StorageSemanticsTests {
    let pg: Postgres

    init() throws { pg = try Postgres.shared.get() }

    /// In this process the storage's tasks share two cooperative threads with every other test, some of which
    /// block them for seconds: the deadline is set far beyond any real answer.
    func postgresStorage(_ extra: String = "") async throws -> any Storage {
        let env = RuntimeEnvironment(
            registry: try ModuleRegistry(bundles: [CoreModules.self, StandardModules.self]),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let json = try JSONValue.parse(
            Array(#"{"storage": \#(pg.storage(try pg.newDatabase(), queryTimeout: "300s", extra: extra))}"#.utf8))
        return try await ServerRuntime.storage(for: json, environment: env)
    }

    /// Runs one script of operations and describes every answer.
    func script(_ s: any Storage) async -> [String] {
        var out: [String] = []
        let started = Date().timeIntervalSince1970
        func note(_ what: String, _ body: () async throws -> String) async {
            do { out.append("\(what) → \(try await body())") } catch { out.append("\(what) → error \(kind(error))") }
        }
        func kind(_ e: any Error) -> String {
            if case StorageError.notFound = e { return "notFound" }
            return "\(e)"
        }
        await note("store") {
            for (k, v) in [
                ("certificates/ca/a.test/a.test.crt", "chain"), ("certificates/ca/a.test/a.test.key", "key"),
                ("certificates/ca/b_x.test/b_x.test.crt", "b"), ("certificates/ca%/c.test/c.crt", "pct"),
                ("acme/ca/users/me/me.json", "{}"), ("top", "t"),
            ] {
                try await s.store(k, Array(v.utf8))
            }
            return "ok"
        }
        await note("load crt") {
            String(decoding: try await s.load("certificates/ca/a.test/a.test.crt"), as: UTF8.self)
        }
        await note("overwrite") {
            try await s.store("top", Array("t2".utf8))
            return String(decoding: try await s.load("top"), as: UTF8.self)
        }
        await note("load missing") { String(decoding: try await s.load("certificates/ca"), as: UTF8.self) }
        await note("list root") { try await s.list("", recursive: false).sorted().description }
        await note("list ca") { try await s.list("certificates/ca", recursive: false).sorted().description }
        // `_` and `%` in a prefix are literal, not LIKE wildcards.
        await note("list b_x") { try await s.list("certificates/ca/b_x.test", recursive: false).sorted().description }
        await note("list bax") { try await s.list("certificates/ca/bax.test", recursive: false).sorted().description }
        await note("list ca%") { try await s.list("certificates/ca%", recursive: true).sorted().description }
        await note("list recursive") { try await s.list("certificates", recursive: true).sorted().description }
        await note("list missing") { try await s.list("nope", recursive: false).description }
        await note("stat file") {
            let i = try await s.stat("certificates/ca/a.test/a.test.crt")
            // Written after the script started and before now (the test process may stall for minutes between).
            let written = i.modified.secondsSinceEpoch
            let plausible = written >= started - 2 && written <= Date().timeIntervalSince1970 + 2
            return "\(i.key) \(i.size) \(i.isTerminal) \(plausible)"
        }
        await note("stat dir") {
            let i = try await s.stat("certificates/ca/a.test")
            return "\(i.key) \(i.isTerminal)"
        }
        await note("stat missing") { "\(try await s.stat("nope").key)" }
        await note("exists") {
            var r: [Bool] = []
            for k in ["top", "certificates", "certificates/ca/a.test", "certificates/ca/a.tes", "nope"] {
                r.append(await s.exists(k))
            }
            return r.description
        }
        await note("delete dir") {
            try await s.delete("certificates/ca/a.test")
            return try await s.list("certificates/ca", recursive: true).sorted().description
        }
        await note("delete missing") {
            try await s.delete("nothing/here")
            return "ok"
        }
        return out
    }

    @Test(
        "store, load, list (recursive or not, literal _ and %), stat, exists, delete: the same answers as file_system")
    func sameAnswers() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-sem-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = await script(FileStorage(root: dir.path))
        let postgres = await script(try await postgresStorage())
        #expect(reference.count == 17)
        for (r, p) in zip(reference, postgres) { #expect(r == p) }
        #expect(reference.contains("list b_x → [\"certificates/ca/b_x.test/b_x.test.crt\"]"), "\(reference)")
        #expect(reference.contains("list bax → error notFound"))
    }

    @Test(
        "locks exclude: 4 tasks × 10 read-modify-write increments under one lock lose none; a waiter's cancellation ends its wait"
    )
    func mutualExclusionAndCancellation() async throws {
        let s = try await postgresStorage(#", "lock_timeout": "120s""#)
        try await s.store("counter", Array("0".utf8))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<10 {
                        try await s.withLock("count") {
                            let n = Int(String(decoding: try await s.load("counter"), as: UTF8.self))!
                            try await Task.sleep(nanoseconds: 2_000_000)
                            try await s.store("counter", Array(String(n + 1).utf8))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(String(decoding: try await s.load("counter"), as: UTF8.self) == "40")

        try await s.lock("busy")
        let waiter = Task { try await s.lock("busy") }
        try await Task.sleep(nanoseconds: 800_000_000)
        waiter.cancel()
        // The lock stays held (and renewed) throughout, so only the cancellation can end the wait; the race only
        // keeps a failure from hanging the run.
        let ended = await withTaskGroup(of: Result<Void, any Error>?.self) { group in
            group.addTask { await waiter.result }
            group.addTask {
                try? await Task.sleep(for: .seconds(300))
                if Task.isCancelled { return nil }
                try? await s.unlock("busy")  // a failure: let the waiter through so the group can end
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(throws: CancellationError.self) { try #require(ended).get() }
        try await s.unlock("busy")
    }
}
