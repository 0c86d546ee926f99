import Foundation
import UsherCaddyfile
import UsherCaddyfileHTTP
import UsherCore
import UsherStandard
import UsherTestModules

/// The repository root (three levels up from this file).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

let grammarDir = packageRoot.appendingPathComponent("caddyfile-grammar")

/// A test vector file: the input before a `----------` line, the expectation after it.
struct Vector {
    let name: String
    let input: String
    let expected: String
}

/// The vectors in `caddyfile-grammar/<dir>` with the given extension, sorted by name.
func vectors(_ dir: String, ext: String) throws -> [Vector] {
    let url = grammarDir.appendingPathComponent(dir)
    let names = try FileManager.default.contentsOfDirectory(atPath: url.path).filter { $0.hasSuffix("." + ext) }
        .sorted()
    return try names.map { name in
        let text = try String(contentsOf: url.appendingPathComponent(name), encoding: .utf8)
        guard let r = text.range(of: "\n----------\n") else { throw VectorError("\(name): no ---------- separator") }
        return Vector(name: name, input: String(text[..<r.lowerBound]) + "\n", expected: String(text[r.upperBound...]))
    }
}

struct VectorError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Every Caddyfile parser of the test build (the standard bundle plus test-only stand-ins).
let testCaddyfileRegistry: CaddyfileRegistry = {
    let registry = try! ModuleRegistry(bundles: [CoreModules.self, StandardModules.self, TestModules.self])
    return try! CaddyfileRegistry(registry: registry)
}()

/// Adapts `text` as file `Caddyfile`, as `usher adapt` does.
func adapt(_ text: String, filename: String = "Caddyfile") throws -> ConfigAdaptation {
    try CaddyfileAdapter().adapt(Array(text.utf8), filename: filename, caddyfileRegistry: testCaddyfileRegistry)
}

/// JSON with Go-style string escapes, for comparing token texts written in vector files.
func jsonString(_ s: String) -> String { JSONValue.string(s).serialized(.init(escapeHTML: false)) }
