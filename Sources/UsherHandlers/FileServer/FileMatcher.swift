import Foundation
import Logging
public import UsherCore
public import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// `http.matchers.file`: matches when a file exists, choosing among candidates by `try_policy`; on a match sets
/// `{http.matchers.file.relative}`, `.absolute`, `.type` (`file` or `directory`) and `.remainder` (after
/// `split_path`). A `try_files` entry `=<status>` ends matching with that status as an error.
public struct FileMatcher: RequestMatcher, Provisioner, Validator {
    public static let moduleID: ModuleID = "http.matchers.file"

    /// `fs`: the name of a registered file system. Default: `{http.vars.fs}`; empty is the local disk, the only
    /// one this build has (another name does not match, with an error logged, as Caddy does for unknown names).
    public var fileSystem: String
    /// `root`: prepended to every candidate; placeholders allowed. Default: `{http.vars.root}`, else `.`.
    public var root: String
    /// `try_files`: candidates relative to the root; a trailing `/` asks for a directory, none for a regular file;
    /// placeholders and globs allowed (placeholder values cannot glob). Default: `{http.request.uri.path}`.
    public var tryFiles: [String]
    /// `try_policy`: `first_exist` (default), `first_exist_fallback`, `smallest_size`, `largest_size`,
    /// `most_recently_modified`.
    public var tryPolicy: String
    /// `split_path`: substrings (case-insensitive, each ending a path element) after which the rest of the path
    /// is not part of the file name.
    public var splitPath: [String]

    private var logger = Logger(label: "http.matchers.file")

    enum CodingKeys: String, CodingKey {
        case fileSystem = "fs", root, tryFiles = "try_files", tryPolicy = "try_policy", splitPath = "split_path"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fileSystem = try c.decodeIfPresent(String.self, forKey: .fileSystem) ?? ""
        root = try c.decodeIfPresent(String.self, forKey: .root) ?? ""
        tryFiles = try c.decodeIfPresent([String].self, forKey: .tryFiles) ?? ["{http.request.uri.path}"]
        tryPolicy = try c.decodeIfPresent(String.self, forKey: .tryPolicy) ?? ""
        splitPath = try c.decodeIfPresent([String].self, forKey: .splitPath) ?? []
        if root.isEmpty { root = "{http.vars.root}" }
        if fileSystem.isEmpty { fileSystem = "{http.vars.fs}" }
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        logger = context.logger(for: Self.moduleID)
    }

    public func validate() throws {
        let known = [
            "", "first_exist", "first_exist_fallback", "largest_size", "smallest_size", "most_recently_modified",
        ]
        guard known.contains(tryPolicy) else {
            throw ConfigError(path: "try_policy", "unknown try policy \(tryPolicy)")
        }
    }

    struct Candidate {
        var fullPath: String
        var relative: String
        var remainder: String
    }

    public func matches(_ request: Request) throws -> Bool {
        let repl = request.replacer
        let root = cleanPath(repl.replaceAll(self.root, empty: "."))
        let fsName = repl.replaceAll(fileSystem)
        guard FileSystemsApp.isLocal(fsName) else {
            logger.error("use of unregistered filesystem", metadata: ["fs": "\(fsName)"])
            return false
        }
        let files = LocalFiles()

        func candidates(_ pattern: String) -> [Candidate] {
            // Placeholder values are escaped so that only the configured pattern can glob.
            var expanded = pattern
            if Replacer.mayContainPlaceholders(pattern) {
                expanded =
                    (try? repl.replace(
                        pattern, empty: "", unknownAsEmpty: true, errorOnEmpty: false, errorOnUnknown: false,
                        transform: { _, v in v.map(Glob.escape) })) ?? pattern
            }
            var (before, after) = firstSplit(cleanPath(expanded))
            if pattern.hasSuffix("/") { before += "/" }
            let full = sanitizedPathJoin(root, before)
            return Glob.expand(full, in: files).map { result in
                Candidate(
                    fullPath: result,
                    relative: result.hasPrefix(root) ? String(result.utf8.dropFirst(root.utf8.count))! : result,
                    remainder: after)
            }
        }

        func choose(_ c: Candidate, isDirectory: Bool) -> Bool {
            repl.set("http.matchers.file.relative", c.relative)
            repl.set("http.matchers.file.absolute", c.fullPath)
            repl.set("http.matchers.file.remainder", c.remainder)
            repl.set("http.matchers.file.type", isDirectory ? "directory" : "file")
            return true
        }

        switch tryPolicy {
        case "", "first_exist", "first_exist_fallback":
            let fallback = tryPolicy == "first_exist_fallback" ? tryFiles.count - 1 : -1
            for (i, pattern) in tryFiles.enumerated() {
                if let status = Self.errorStatus(pattern) {
                    throw HandlerError(status: status, HTTPErrorMessage(String(pattern.dropFirst())))
                }
                for c in candidates(pattern) {
                    if i == fallback { return choose(c, isDirectory: false) }
                    // A trailing slash asks for a directory, none for anything else; any stat error is "absent".
                    guard let st = files.status(c.fullPath) else { continue }
                    if st.isDirectory == c.fullPath.hasSuffix("/") { return choose(c, isDirectory: st.isDirectory) }
                }
            }
            return false
        default:
            var best: (Candidate, FileStatus)?
            for pattern in tryFiles {
                for c in candidates(pattern) {
                    guard let st = files.status(c.fullPath) else { continue }
                    switch tryPolicy {
                    case "largest_size":
                        if st.size > (best?.1.size ?? 0) { best = (c, st) }
                    case "smallest_size":
                        // Caddy's comparison: a zero-size file never wins over a later one.
                        if best == nil || best!.1.size == 0 || st.size < best!.1.size { best = (c, st) }
                    default:
                        if best == nil
                            || (st.modSeconds, st.modNanoseconds) > (best!.1.modSeconds, best!.1.modNanoseconds)
                        {
                            best = (c, st)
                        }
                    }
                }
            }
            guard let best else { return false }
            return choose(best.0, isDirectory: best.1.isDirectory)
        }
    }

    /// `=<code>` in `try_files`: the status to fail with (100–999), else nil.
    static func errorStatus(_ pattern: String) -> Int? {
        guard pattern.utf8.count > 1, pattern.hasPrefix("="), let code = Int(pattern.dropFirst()),
            (100...999).contains(code)
        else { return nil }
        return code
    }

    /// Splits after the first `split_path` value (case-insensitive) that ends a path element.
    func firstSplit(_ path: String) -> (String, String) {
        let bytes = Array(path.utf8)
        for split in splitPath {
            let needle = Array(split.lowercased().utf8)
            guard !needle.isEmpty, needle.count < bytes.count else { continue }
            // Go's indexFold: the first occurrence strictly before the end.
            var at = -1
            for i in 0..<(bytes.count - needle.count) where asciiLowered(bytes[i..<(i + needle.count)]) == needle {
                at = i
                break
            }
            guard at >= 0 else { continue }
            let end = at + needle.count
            if end != bytes.count && bytes[end] != UInt8(ascii: "/") { continue }
            return (String(decoding: bytes[..<end], as: UTF8.self), String(decoding: bytes[end...], as: UTF8.self))
        }
        return (path, "")
    }

    private func asciiLowered(_ s: ArraySlice<UInt8>) -> [UInt8] {
        s.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
    }
}

/// Go's `fs.Glob` over a file system: patterns without metacharacters name themselves when they exist; others
/// expand element by element (`*`, `?`, `[...]`, `\` escapes), in sorted order.
enum Glob {
    static func escape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 42 || $0 == 63 || $0 == 91 || $0 == 92 }) else { return s }
        var out = ""
        for ch in s {
            if ch == "*" || ch == "[" || ch == "?" || ch == "\\" { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    static func hasMeta(_ s: Substring) -> Bool {
        s.utf8.contains(where: { $0 == 42 || $0 == 63 || $0 == 91 || $0 == 92 })
    }

    static func expand(_ pattern: String, in files: LocalFiles) -> [String] {
        guard hasMeta(Substring(pattern)) else { return files.status(pattern) == nil ? [] : [pattern] }
        let (dir, file) = PathUtil.split(pattern)
        var dirs: [String]
        let cleanedDir = dir.isEmpty ? "." : (dir == "/" ? "/" : String(dir.dropLast()))
        if hasMeta(Substring(cleanedDir)) {
            dirs = expand(cleanedDir, in: files)
        } else {
            dirs = [cleanedDir]
        }
        var out: [String] = []
        for d in dirs {
            guard let names = files.list(d) else { continue }
            for name in names.sorted() where fnmatch(file, name, 0) == 0 {
                out.append(d == "/" ? "/" + name : (d == "." && dir.isEmpty ? name : d + "/" + name))
            }
        }
        return out
    }
}

/// The local disk as the file matcher sees it.
struct LocalFiles {
    /// The status, symlinks followed; nil on any error.
    func status(_ path: String) -> FileStatus? {
        if case .success(let st) = FileStatus.of(path) { return st }
        return nil
    }

    /// The names in a directory; nil if it cannot be read.
    func list(_ dir: String) -> [String]? {
        try? FileManager.default.contentsOfDirectory(atPath: dir)
    }
}
