#if canImport(Glibc)
import Glibc
#endif

/// Why a whole-file read failed: the step (`open` or `read`) and the system's reason.
public struct FileReadError: Error, CustomStringConvertible, Sendable {
    /// `open` or `read`.
    public let operation: String
    public let path: String
    /// `strerror` of the failure, as the C library words it ("No such file or directory").
    public let reason: String

    public var description: String { "\(operation) \(path): \(reason)" }
}

/// Reads all of a file, retrying interrupted reads. `fd` reads an open descriptor instead (standard input is 0),
/// which is left open.
public func readWholeFile(_ path: String, fd given: Int32? = nil) throws(FileReadError) -> [UInt8] {
    let fd = given ?? open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(operation: "open", path: path, reason: String(cString: strerror(errno))) }
    defer { if given == nil { close(fd) } }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 {
            if errno == EINTR { continue }
            throw FileReadError(operation: "read", path: path, reason: String(cString: strerror(errno)))
        }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}
