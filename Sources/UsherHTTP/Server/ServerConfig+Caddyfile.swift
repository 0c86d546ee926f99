public import UsherCaddyfile
import UsherCore

/// The Caddyfile syntax of the server-level modules in this target (`http.ip_sources.static`).
public enum ServerCaddyfile {
    public static let support = CaddyfileSupport(modules: [
        "http.ip_sources.static": { d, _ in
            var ranges: [String] = []
            if d.next() {
                while d.nextArg() {
                    if d.val == "private_ranges" {
                        ranges += ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1"]
                    } else {
                        ranges.append(d.val)
                    }
                }
            }
            var o = JSONObject()
            o.put("ranges", ranges)
            return .object(o)
        }
    ])
}
