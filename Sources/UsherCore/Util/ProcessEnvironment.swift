import CUsherSystem

#if canImport(Glibc)
import Glibc
#endif

/// The process environment, read from `environ`.
public enum ProcessEnvironment {
    /// A snapshot of every variable.
    public static var current: [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") {
                result[String(s[..<eq])] = String(s[s.index(after: eq)...])
            }
            p += 1
        }
        return result
    }

    /// Every variable as `KEY=value` lines in the order the OS holds them (for `usher environ`).
    public static var lines: [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    public static func get(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    public static func set(_ name: String, _ value: String) {
        setenv(name, value, 1)
    }
}

/// CPU and host facts the server sizes itself by.
public enum SystemInfo {
    /// The CPUs this process may run on (`sched_getaffinity`), which is what `taskset` and cpusets restrict;
    /// at least 1.
    public static var usableCPUCount: Int {
        let count = Int(c_usher_affinity_cpu_count())
        if count > 0 { return count }
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}
