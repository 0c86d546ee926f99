import UsherCaddyfile
import UsherCore
import UsherHTTP

/// `http.handlers.hello`: answers `Hello, <name>!`, where `name` may hold placeholders.
public struct HelloHandler: MiddlewareHandler, Provisioner, Validator {
    public static let moduleID: ModuleID = "http.handlers.hello"

    /// `name`: whom to greet. Default: `world`.
    public var name: String
    /// `status`: the status code. Default: 200.
    public var status: Int
    private var greetings = 0

    enum CodingKeys: String, CodingKey { case name, status }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? "world"
        status = try c.decodeIfPresent(Int.self, forKey: .status) ?? 200
    }

    public mutating func provision(_ context: ProvisionContext) async throws {
        context.logger(for: Self.moduleID).debug("hello handler ready", metadata: ["name": "\(name)"])
    }

    public func validate() throws {
        guard (200...599).contains(status) else { throw ConfigError("status: \(status) is not a final status code") }
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        writer.headers.replaceOrAdd(name: "Content-Type", value: "text/plain; charset=utf-8")
        try await writer.writeHead(.init(statusCode: status))
        try await writer.write("Hello, \(request.replacer.replaceAll(name))!")
    }
}

/// The modules this package adds to a binary.
public enum HelloModules: ModuleBundle {
    public static let name = "example.com/hello"
    public static let version = "1.0.0"
    public static var modules: [any Module.Type] { [HelloHandler.self] }
    public static var extensions: [any BundleExtension] { [helloCaddyfile] }
}

/// The `hello [<matcher>] [<name>] [<status>]` Caddyfile directive, run just before `respond`.
let helloCaddyfile = CaddyfileSupport(
    handlerDirectives: [
        "hello": { h in
            let d = h.d
            d.next()  // the directive name
            var fields = JSONObject()
            if d.nextArg() { fields["name"] = .string(d.val) }
            if d.nextArg() {
                guard let status = Int(d.val) else { throw d.err("status must be a number, not '\(d.val)'") }
                fields["status"] = .number(JSONNumber(status))
            }
            if d.nextArg() { throw d.argErr() }
            return handlerObject("hello", fields)
        }
    ],
    order: [(directive: "hello", position: .before, relativeTo: "respond")]
)
