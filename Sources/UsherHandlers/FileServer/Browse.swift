import Foundation
import NIOCore
import NIOHTTP1
import UsherCore
import UsherHTTP

#if canImport(Glibc)
import Glibc
#endif

/// One entry of a directory listing, with the JSON fields Caddy's browse gives.
struct ListingItem {
    var name: String
    var size: Int
    var url: String
    var modSeconds: Int
    var modNanoseconds: Int
    var mode: UInt32
    var isDir: Bool
    var isSymlink: Bool
    var symlinkPath: String?

    /// Go's `fs.FileMode` bits: type bits high, permissions low.
    var goMode: UInt64 {
        var m = UInt64(mode & 0o777)
        if isDir { m |= 1 << 31 }
        if isSymlink { m |= 1 << 27 }
        return m
    }

    var json: JSONValue {
        var fields: [(String, JSONValue)] = [
            ("name", .string(name)), ("size", .number(JSONNumber(size))), ("url", .string(url)),
            (
                "mod_time",
                .string(
                    GoTimeLayout.format(
                        WallTime(seconds: modSeconds, nanoseconds: modNanoseconds), layout: GoTimeLayout.rfc3339Nano))
            ),
            ("mode", .number(JSONNumber(literal: String(goMode)))), ("is_dir", .bool(isDir)),
            ("is_symlink", .bool(isSymlink)),
        ]
        if let symlinkPath { fields.append(("symlink_path", .string(symlinkPath))) }
        return .object(JSONObject(fields.map { (key: $0.0, value: $0.1) }))
    }
}

extension FileServerHandler {
    func serveBrowse(
        _ browse: BrowseConfig, dir: String, hide: [HidePattern], _ request: Request, _ writer: any ResponseWriter
    ) async throws {
        let origPath = request.original.path
        if !origPath.hasSuffix("/") {
            // Relative links in the listing need the trailing slash.
            var to = URLEscaping.escapePath(origPath + "/")
            while to.hasPrefix("//") { to.removeFirst() }
            if !request.rawQuery.isEmpty { to += "?" + request.rawQuery }
            writer.headers.replaceOrAdd(name: "Location", value: to)
            try await writer.writeHead(.permanentRedirect)
            return
        }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else {
            throw HandlerError(status: 403, HTTPErrorMessage("cannot read directory"))
        }
        var items: [ListingItem] = []
        for name in names {
            let path = dir + "/" + name
            if Self.isHidden(path, hide) { continue }
            guard case .success(let st) = FileStatus.of(path) else { continue }
            var url = "./" + URLEscaping.escapePath(name)
            if st.isDirectory { url += "/" }
            var target: String?
            if st.isSymlink && browse.revealSymlinks {
                target = try? FileManager.default.destinationOfSymbolicLink(atPath: path)
            }
            items.append(
                ListingItem(
                    name: st.isDirectory ? name + "/" : name, size: st.size, url: url, modSeconds: st.modSeconds,
                    modNanoseconds: st.modNanoseconds, mode: st.mode, isDir: st.isDirectory, isSymlink: st.isSymlink,
                    symlinkPath: target
                ))
            if items.count >= browse.fileLimit { break }
        }
        var sortBy = browse.sort.first { ["name", "namedirfirst", "size", "time"].contains($0) } ?? "namedirfirst"
        var order = browse.sort.first { $0 == "asc" || $0 == "desc" } ?? "asc"
        if let s = request.queryValue("sort"), ["name", "namedirfirst", "size", "time"].contains(s) { sortBy = s }
        if let o = request.queryValue("order"), o == "asc" || o == "desc" { order = o }
        items.sort { a, b in
            let less: Bool
            switch sortBy {
            case "size": less = a.size != b.size ? a.size < b.size : a.name < b.name
            case "time":
                less =
                    (a.modSeconds, a.modNanoseconds) != (b.modSeconds, b.modNanoseconds)
                    ? (a.modSeconds, a.modNanoseconds) < (b.modSeconds, b.modNanoseconds) : a.name < b.name
            case "name": less = a.name.lowercased() < b.name.lowercased()
            default:
                less = a.isDir != b.isDir ? a.isDir : a.name.lowercased() < b.name.lowercased()
            }
            return order == "desc" ? !less : less
        }
        if let offset = request.queryValue("offset").flatMap(Int.init), offset > 0 {
            items = Array(items.dropFirst(offset))
        }
        if let limit = request.queryValue("limit").flatMap(Int.init), limit > 0 { items = Array(items.prefix(limit)) }

        writer.headers.add(name: "Vary", value: "Accept, Accept-Encoding")
        let accept = request.headers.first(name: "Accept") ?? ""
        if accept.lowercased().contains("application/json") {
            writer.headers.replaceOrAdd(name: "Content-Type", value: "application/json; charset=utf-8")
            try await writer.writeHead(.ok)
            if request.method != .HEAD {
                try await writer.write(JSONValue.array(items.map(\.json)).serialized() + "\n")
            }
            return
        }
        writer.headers.replaceOrAdd(name: "Content-Type", value: "text/html; charset=utf-8")
        try await writer.writeHead(.ok)
        if request.method != .HEAD {
            try await writer.write(Self.listingHTML(path: origPath, items: items, sortBy: sortBy, order: order))
        }
    }

    static func listingHTML(path: String, items: [ListingItem], sortBy: String, order: String) -> String {
        let title = htmlEscape(path)
        var rows = ""
        if path != "/" {
            rows += "<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n"
        }
        for item in items {
            let size = item.isDir ? "&mdash;" : formatSize(item.size)
            let time = GoTimeLayout.format(
                WallTime(seconds: item.modSeconds, nanoseconds: 0), layout: "2006-01-02 15:04:05")
            rows +=
                "<tr><td><a href=\"\(htmlEscape(item.url))\">\(htmlEscape(item.name))</a></td><td>\(size)</td><td>\(time)</td></tr>\n"
        }
        func link(_ field: String, _ label: String) -> String {
            let next = sortBy == field && order == "asc" ? "desc" : "asc"
            return "<a href=\"?sort=\(field)&amp;order=\(next)\">\(label)</a>"
        }
        return """
            <!DOCTYPE html>
            <html>
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title)</title>
            <style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em 1em;text-align:left}tr:nth-child(even){background:#f4f4f4}</style>
            </head>
            <body>
            <h1>\(title)</h1>
            <table>
            <thead><tr><th>\(link("name", "Name"))</th><th>\(link("size", "Size"))</th><th>\(link("time", "Modified"))</th></tr></thead>
            <tbody>
            \(rows)</tbody>
            </table>
            </body>
            </html>

            """
    }

    static func formatSize(_ n: Int) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(n)
        var i = 0
        while v >= 1000 && i < units.count - 1 {
            v /= 1000
            i += 1
        }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }
}
