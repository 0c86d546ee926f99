/// The tar archives `storage export` writes and `storage import` reads (Caddy's format: one regular file per
/// storage key, mode 0600). Writes POSIX ustar, with a PAX `path` record for keys longer than ustar holds; reads
/// ustar, PAX and GNU long names.
public enum StorageTar {
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: [UInt8]
        public var modified: WallTime

        public init(key: String, value: [UInt8], modified: WallTime) {
            self.key = key
            self.value = value
            self.modified = modified
        }
    }

    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func write(_ entries: [Entry]) -> [UInt8] {
        var out: [UInt8] = []
        for e in entries {
            let name = Array(e.key.utf8)
            var ustarName = name
            var prefix: [UInt8] = []
            if name.count > 100 {
                // Split at a slash into prefix (≤155) and name (≤100) if possible; else a PAX record carries it.
                if let cut = (0..<name.count).last(where: {
                    name[$0] == 0x2F && $0 <= 155 && name.count - $0 - 1 <= 100
                }) {
                    prefix = Array(name[..<cut])
                    ustarName = Array(name[(cut + 1)...])
                } else {
                    let record = paxRecord("path", e.key)
                    out += header(
                        name: Array("PaxHeaders/entry".utf8), prefix: [], size: record.count,
                        modified: e.modified, type: 0x78)
                    out += padded(record)
                    ustarName = Array(name.suffix(100))
                }
            }
            out += header(name: ustarName, prefix: prefix, size: e.value.count, modified: e.modified, type: 0x30)
            out += padded(e.value)
        }
        out += [UInt8](repeating: 0, count: 1024)
        return out
    }

    public static func read(_ bytes: [UInt8]) throws -> [Entry] {
        var entries: [Entry] = []
        var i = 0
        var longName: String?
        while i + 512 <= bytes.count {
            let h = Array(bytes[i..<(i + 512)])
            if h.allSatisfy({ $0 == 0 }) { break }
            guard verifyChecksum(h) else { throw FormatError(description: "tar header at offset \(i): bad checksum") }
            let size = octal(h[124..<136])
            let type = h[156]
            let dataStart = i + 512
            guard size >= 0, dataStart + size <= bytes.count else {
                throw FormatError(description: "tar entry at offset \(i): truncated")
            }
            let data = Array(bytes[dataStart..<(dataStart + size)])
            i = dataStart + (size + 511) / 512 * 512
            switch type {
            case 0x78:  // PAX extended header for the next entry
                longName = paxPath(data) ?? longName
            case 0x4C:  // GNU long name
                longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case 0x30, 0:
                var name = cString(h[0..<100])
                let prefix = cString(h[345..<500])
                if !prefix.isEmpty && h[257..<262].elementsEqual(Array("ustar".utf8)) { name = prefix + "/" + name }
                if let longName { name = longName }
                longName = nil
                let mtime = octal(h[136..<148])
                entries.append(Entry(key: name, value: data, modified: WallTime(seconds: mtime, nanoseconds: 0)))
            default:
                // Directories, links and global headers carry no storage value.
                longName = nil
            }
        }
        // Bytes after the last whole entry that are not the zero blocks ending an archive: cut short, or not tar.
        if i < bytes.count && bytes.count - i < 512 && bytes[i...].contains(where: { $0 != 0 }) {
            throw FormatError(description: "tar archive ends inside a header at offset \(i)")
        }
        return entries
    }

    // MARK: - Pieces

    static func header(name: [UInt8], prefix: [UInt8], size: Int, modified: WallTime, type: UInt8) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, max: Int) {
            for (k, b) in bytes.prefix(max).enumerated() { h[offset + k] = b }
        }
        func putOctal(_ value: Int, at offset: Int, width: Int) {
            let digits = Array(String(value, radix: 8).utf8)
            let padded = [UInt8](repeating: 0x30, count: max(0, width - 1 - digits.count)) + digits
            put(padded, at: offset, max: width - 1)
        }
        put(name, at: 0, max: 100)
        putOctal(0o600, at: 100, width: 8)
        putOctal(0, at: 108, width: 8)
        putOctal(0, at: 116, width: 8)
        putOctal(size, at: 124, width: 12)
        putOctal(max(0, modified.seconds), at: 136, width: 12)
        h[156] = type
        put(Array("ustar\u{0}00".utf8), at: 257, max: 8)
        put(prefix, at: 345, max: 155)
        for k in 148..<156 { h[k] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        putOctal(sum, at: 148, width: 7)
        h[155] = 0x20
        return h
    }

    static func padded(_ data: [UInt8]) -> [UInt8] {
        data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    /// `"<len> path=<value>\n"`, where the length counts itself.
    static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n"
        var n = body.utf8.count + 1
        while String(n).count + body.utf8.count != n { n = String(n).count + body.utf8.count }
        return Array("\(n)\(body)".utf8)
    }

    static func paxPath(_ data: [UInt8]) -> String? {
        var i = 0
        var path: String?
        while i < data.count {
            guard let space = data[i...].firstIndex(of: 0x20),
                let len = Int(String(decoding: data[i..<space], as: UTF8.self)),
                len > 0, i + len <= data.count
            else { break }
            let record = String(decoding: data[(space + 1)..<(i + len - 1)], as: UTF8.self)
            if record.hasPrefix("path=") { path = String(record.dropFirst(5)) }
            i += len
        }
        return path
    }

    static func octal(_ field: ArraySlice<UInt8>) -> Int {
        var v = 0
        for b in field {
            if b == 0 || b == 0x20 { if v > 0 { break } else { continue } }
            guard b >= 0x30 && b <= 0x37 else { return -1 }
            v = v * 8 + Int(b - 0x30)
        }
        return v
    }

    static func cString(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func verifyChecksum(_ h: [UInt8]) -> Bool {
        let stored = octal(h[148..<156])
        var sum = 0
        for (k, b) in h.enumerated() { sum += (148..<156).contains(k) ? 0x20 : Int(b) }
        return stored == sum
    }
}
