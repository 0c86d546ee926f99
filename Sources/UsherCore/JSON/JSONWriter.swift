extension JSONValue {
    /// Options for serializing JSON.
    public struct WriteOptions: Sendable {
        /// Indentation per level; `nil` writes compact JSON.
        public var indent: String?
        /// Escape `<`, `>` and `&` as `\u003c` and so on, as Go's encoder does (and so Caddy's output).
        public var escapeHTML: Bool
        /// Ends the output with a newline.
        public var trailingNewline: Bool

        public init(indent: String? = nil, escapeHTML: Bool = true, trailingNewline: Bool = false) {
            self.indent = indent
            self.escapeHTML = escapeHTML
            self.trailingNewline = trailingNewline
        }

        public static let compact = WriteOptions()
        /// Tab-indented, as `caddy adapt --pretty` prints.
        public static let pretty = WriteOptions(indent: "\t")
    }

    /// The JSON text of this value.
    public func serialized(_ options: WriteOptions = .compact) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out, options: options, level: 0)
        if options.trailingNewline { out.append(0x0A) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The JSON bytes of this value.
    public func serializedBytes(_ options: WriteOptions = .compact) -> [UInt8] {
        var out: [UInt8] = []
        write(into: &out, options: options, level: 0)
        if options.trailingNewline { out.append(0x0A) }
        return out
    }

    func write(into out: inout [UInt8], options: WriteOptions, level: Int) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.text.utf8)
        case .string(let s): JSONValue.writeString(s, into: &out, escapeHTML: options.escapeHTML)
        case .array(let elements):
            if elements.isEmpty {
                out.append(contentsOf: "[]".utf8)
                return
            }
            out.append(UInt8(ascii: "["))
            for (i, e) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, options, level + 1)
                e.write(into: &out, options: options, level: level + 1)
            }
            newline(&out, options, level)
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            if object.isEmpty {
                out.append(contentsOf: "{}".utf8)
                return
            }
            out.append(UInt8(ascii: "{"))
            for (i, m) in object.members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, options, level + 1)
                JSONValue.writeString(m.key, into: &out, escapeHTML: options.escapeHTML)
                out.append(UInt8(ascii: ":"))
                if options.indent != nil { out.append(UInt8(ascii: " ")) }
                m.value.write(into: &out, options: options, level: level + 1)
            }
            newline(&out, options, level)
            out.append(UInt8(ascii: "}"))
        }
    }

    private func newline(_ out: inout [UInt8], _ options: WriteOptions, _ level: Int) {
        guard let indent = options.indent else { return }
        out.append(0x0A)
        for _ in 0..<level { out.append(contentsOf: indent.utf8) }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Writes `s` as a quoted JSON string.
    public static func writeString(_ s: String, into out: inout [UInt8], escapeHTML: Bool = true) {
        out.append(UInt8(ascii: "\""))
        var text = s
        // Runs of bytes that need no escaping are copied whole; every escape is for an ASCII byte, or for
        // U+2028/U+2029 (E2 80 A8/A9) when escaping for HTML.
        text.withUTF8 { b in
            var run = 0
            var i = 0
            let n = b.count
            while i < n {
                let c = b[i]
                var width = 1
                switch c {
                case 0x22, 0x5C, 0..<0x20: break
                case 0x3C where escapeHTML, 0x3E where escapeHTML, 0x26 where escapeHTML: break
                case 0xE2 where escapeHTML && i + 2 < n && b[i + 1] == 0x80 && (b[i + 2] == 0xA8 || b[i + 2] == 0xA9):
                    width = 3
                default:
                    i += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<i]))
                switch c {
                case 0x22, 0x5C:
                    out.append(0x5C)
                    out.append(c)
                case 0x0A:
                    out.append(0x5C)
                    out.append(UInt8(ascii: "n"))
                case 0x0D:
                    out.append(0x5C)
                    out.append(UInt8(ascii: "r"))
                case 0x09:
                    out.append(0x5C)
                    out.append(UInt8(ascii: "t"))
                case 0xE2: unicodeEscape(b[i + 2] == 0xA8 ? 0x2028 : 0x2029, &out)
                default: unicodeEscape(UInt32(c), &out)
                }
                i += width
                run = i
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<n]))
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func unicodeEscape(_ v: UInt32, _ out: inout [UInt8]) {
        out.append(0x5C)
        out.append(UInt8(ascii: "u"))
        out.append(hex[Int((v >> 12) & 0xF)])
        out.append(hex[Int((v >> 8) & 0xF)])
        out.append(hex[Int((v >> 4) & 0xF)])
        out.append(hex[Int(v & 0xF)])
    }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { serialized() }
}
