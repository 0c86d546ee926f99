// swift-tools-version:6.1
// A third-party module package: one handler, `http.handlers.hello`, and a custom `usher` binary that includes it.
import PackageDescription

// The usher package: this repository by default; `USHER_PACKAGE_PATH` points elsewhere (a checkout named `usher`).
let usherPath = Context.environment["USHER_PACKAGE_PATH"] ?? "../../.."

let package = Package(
    name: "ExampleModule",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "HelloModule", targets: ["HelloModule"]),
        .executable(name: "usher-hello", targets: ["usher-hello"]),
    ],
    dependencies: [
        .package(name: "usher", path: usherPath)
    ],
    targets: [
        .target(
            name: "HelloModule",
            dependencies: [
                .product(name: "UsherCore", package: "usher"),
                .product(name: "UsherHTTP", package: "usher"),
                .product(name: "UsherCaddyfile", package: "usher"),
            ]
        ),
        .executableTarget(
            name: "usher-hello",
            dependencies: [
                "HelloModule",
                .product(name: "UsherCLI", package: "usher"),
                .product(name: "UsherStandard", package: "usher"),
            ]
        ),
    ]
)
