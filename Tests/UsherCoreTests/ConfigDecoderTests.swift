import Testing

@testable import UsherCore

/// Test modules: a namespace with one handler-like module that has children.
enum TestThings: ModuleNamespace {
    static let prefix = "test.things"
    static let inlineKey: String? = "thing"
    typealias Instance = any TestThing
}

protocol TestThing: Module {
    var label: String { get }
}

struct Widget: TestThing, Provisioner, Validator, CleanerUpper {
    static let moduleID: ModuleID = "test.things.widget"
    var size: Int
    var name: String?
    var children: [Loaded<TestThings>]?
    var provisioned = false
    var label: String { "widget \(size) \(provisioned)" }

    enum CodingKeys: String, CodingKey { case size, name, children }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        size = try c.decode(Int.self, forKey: .size)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        children = try c.decodeIfPresent([Loaded<TestThings>].self, forKey: .children)
    }

    mutating func provision(_ context: ProvisionContext) async throws {
        if var kids = children {
            try await kids.provision(context)
            children = kids
        }
        provisioned = true
    }

    func validate() throws {
        if size < 0 { throw ConfigError("size: must not be negative") }
    }

    func cleanup() async {}
}

/// Has no fields: its synthesized decoder never looks at the object, which must still be checked.
struct Gadget: TestThing {
    static let moduleID: ModuleID = "test.things.gadget"
    var label: String { "gadget" }
}

/// Not a TestThing: loading it where a TestThing is expected must fail.
struct Stranger: Module {
    static let moduleID: ModuleID = "test.things.stranger"
    init(from decoder: any Decoder) throws {}
}

enum TestBundle: ModuleBundle {
    static let name = "test/bundle"
    static let version = "1.0"
    static var modules: [any Module.Type] { [Widget.self, Gadget.self, Stranger.self] }
}

struct Holder: Decodable {
    var item: Loaded<TestThings>
}

@Suite("Strict config decoding")
struct ConfigDecoderTests {
    let registry = try! ModuleRegistry(bundles: [TestBundle.self])

    func decode(_ json: String) throws -> Holder {
        try ConfigDecoder(registry: registry).decode(
            Holder.self, from: try JSONValue.parse(json), path: [AnyCodingKey("apps")])
    }

    func message(_ json: String) -> String {
        do {
            _ = try decode(json)
            return "no error"
        } catch {
            return error.usherDescription
        }
    }

    @Test("loads a module by its inline key")
    func loads() throws {
        let h = try decode(#"{"item": {"thing": "widget", "size": 3, "children": [{"thing": "gadget"}]}}"#)
        #expect(h.item.moduleID == "test.things.widget")
        #expect(h.item.module.label == "widget 3 false")
        #expect(h.item.configPath == "apps.item")
    }

    @Test(
        "errors name the JSON path and the module",
        arguments: [
            (
                #"{"item": {"thing": "widget", "size": 3, "colour": 1}}"#,
                "apps.item.colour (test.things.widget): unknown field"
            ),
            (
                #"{"item": {"thing": "widget", "size": "3"}}"#,
                "apps.item.size (test.things.widget): expected an integer, got a string"
            ),
            (#"{"item": {"thing": "widget"}}"#, #"apps.item (test.things.widget): missing required field "size""#),
            (
                #"{"item": {"thing": "widget", "size": 1, "children": [{"thing": "gadget"}, {"thing": "gizmo"}]}}"#,
                "apps.item.children[1]: unknown module test.things.gizmo"
            ),
            (
                #"{"item": {"thing": "widget", "size": 1, "children": [{"thing": "gadget", "x": 1}]}}"#,
                "apps.item.children[0].x (test.things.gadget): unknown field"
            ),
            (#"{"item": {"size": 1}}"#, #"apps.item: module name missing: expected a "thing" field"#),
            (
                #"{"item": {"thing": "stranger"}}"#,
                "apps.item (test.things.stranger): module is not a member of namespace test.things"
            ),
            (
                #"{"item": {"thing": "widget", "size": 1.5}}"#,
                "apps.item.size (test.things.widget): 1.5 is not an integer in the range of Int"
            ),
            (#"{"item": []}"#, "apps.item: expected an object, got an array"),
        ])
    func pathErrors(json: String, expected: String) {
        let m = message(json)
        #expect(m.hasPrefix(expected), "got: \(m)")
    }

    @Test("@id tags are allowed anywhere")
    func idTags() throws {
        let h = try decode(#"{"item": {"@id": "w", "thing": "widget", "size": 3}}"#)
        #expect(h.item.moduleID == "test.things.widget")
    }

    @Test("provisioning recurses into children and validation failures name the module")
    func provisionAndValidate() async throws {
        let environment = RuntimeEnvironment(registry: registry, eventLoopGroup: SingletonTestLoop.group)
        let ctx = ProvisionContext(environment: environment, mode: .validate, generation: 1, apps: [])
        var h = try decode(#"{"item": {"thing": "widget", "size": 3, "children": [{"thing": "widget", "size": 2}]}}"#)
        try await h.item.provision(ctx)
        #expect(h.item.module.label == "widget 3 true")
        #expect(ctx.cleanups.count == 2)

        var bad = try decode(
            #"{"item": {"thing": "widget", "size": 1, "children": [{"thing": "widget", "size": -2}]}}"#)
        await #expect {
            try await bad.item.provision(ctx)
        } throws: { error in
            (error as? ConfigError)?.description
                == "apps.item.children[0] (test.things.widget): size: must not be negative"
        }
    }

    @Test(
        "durations accept Go syntax with days and integer nanoseconds",
        arguments: [
            ("\"1m30s\"", Int64(90_000_000_000)), ("\"1.5h\"", Int64(5_400_000_000_000)),
            ("\"2d\"", Int64(172_800_000_000_000)),
            ("\"250ms\"", Int64(250_000_000)), ("1000", Int64(1000)), ("\"-5s\"", Int64(-5_000_000_000)),
            ("\"1us\"", Int64(1000)),
        ])
    func durations(json: String, nanos: Int64) throws {
        let d = try ConfigDecoder(registry: nil).decode(ConfigDuration.self, from: try JSONValue.parse(json))
        #expect(d.nanoseconds == nanos)
    }

    @Test("malformed durations are errors naming the value")
    func badDuration() {
        #expect {
            try ConfigDecoder(registry: nil).decode(
                ConfigDuration.self, from: .string("5 minutes"), path: [AnyCodingKey("t")])
        } throws: { ($0 as? ConfigError)?.description == #"t: invalid duration "5 minutes""# }
    }

    @Test("refuses modules registered twice, naming both registrants")
    func duplicateRegistration() {
        enum Again: ModuleBundle {
            static let name = "test/again"
            static let version = "2.0"
            static var modules: [any Module.Type] { [Gadget.self] }
        }
        #expect {
            try ModuleRegistry(bundles: [TestBundle.self, Again.self])
        } throws: { error in
            "\(error)"
                == "module test.things.gadget is registered twice: by Gadget in bundle test/bundle and by Gadget in bundle test/again"
        }
    }
}
