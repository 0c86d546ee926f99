// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "usher",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "usher", targets: ["usher"]),
        // A third-party module package depends on these: the core alone, or the core plus the HTTP app.
        .library(name: "UsherCore", targets: ["UsherCore"]),
        .library(name: "UsherHTTP", targets: ["UsherHTTP"]),
        .library(name: "UsherTLS", targets: ["UsherTLS"]),
        .library(name: "UsherHandlers", targets: ["UsherHandlers"]),
        .library(name: "UsherCaddyfile", targets: ["UsherCaddyfile", "UsherCaddyfileHTTP"]),
        .library(name: "UsherStandard", targets: ["UsherStandard"]),
        .library(name: "UsherCLI", targets: ["UsherCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Small C helpers for system calls Swift cannot import (glibc's _GNU_SOURCE API).
        // HTTP/3: Debian 12's nghttp3 0.8.0 and ngtcp2 0.12.1 (GnuTLS crypto), wrapped where Swift cannot call them.
        .systemLibrary(name: "CNghttp3", path: "Sources/CNghttp3", pkgConfig: "libnghttp3", providers: [.apt(["libnghttp3-dev"])]),
        .systemLibrary(name: "CNgtcp2", path: "Sources/CNgtcp2", pkgConfig: "libngtcp2",
                       providers: [.apt(["libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev"])]),
        // The HTTP/3 layer: wire primitives (varints, SETTINGS, stream classification, datagrams) and nghttp3.
        .target(name: "UsherHTTP3", dependencies: [
            "CNghttp3", "CNgtcp2",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: swiftSettings),
        .target(name: "CUsherSystem", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("zstd"), .linkedLibrary("resolv"), .linkedLibrary("systemd"), .linkedLibrary("crypt"), .linkedLibrary("argon2"), .linkedLibrary("cmark-gfm-extensions"), .linkedLibrary("cmark-gfm")]),
        .target(
            name: "UsherCore",
            dependencies: [
                "CUsherSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // An ACME (RFC 8555) client, as acmez is for Caddy: JWS, accounts, orders, challenges, renewal information.
        .target(
            name: "UsherACME",
            dependencies: [
                "UsherCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The `tls` and `pki` apps: certificates in one neutral form, connection policies, the internal CA, ACME.
        .target(
            name: "UsherTLS",
            dependencies: [
                "CUsherSystem",
                "UsherCore",
                "UsherACME",
                "UsherCaddyfile",
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UsherHTTP",
            dependencies: [
                "UsherCore",
                "UsherTLS",
                "UsherHTTP3",
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                "UsherCaddyfile",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UsherHandlers",
            dependencies: [
                "CUsherSystem",
                "UsherCaddyfile",
                "UsherCore",
                "UsherHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Caddyfile syntax: tokens, parser, imports, formatter, and what a module's Caddyfile parser is written
        // against (dispenser, `Helper`, `CaddyfileSupport`). Runtime targets depend on this and nothing above it.
        .target(
            name: "UsherCaddyfile",
            dependencies: ["UsherCore"],
            swiftSettings: swiftSettings
        ),
        // The Caddyfile's HTTP server type: lowers server blocks to Caddy JSON. It sits above the runtime.
        .target(
            name: "UsherCaddyfileHTTP",
            dependencies: ["UsherCore", "UsherCaddyfile", "UsherHTTP", "UsherTLS"],
            swiftSettings: swiftSettings
        ),
        // http.handlers.reverse_proxy: upstreams, selection policies, transports.
        .target(
            name: "UsherReverseProxy",
            dependencies: [
                "CUsherSystem", "UsherCaddyfile", "UsherCore", "UsherHTTP", "UsherHTTP3", "UsherHandlers", "UsherTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // `http.handlers.acme_server`: an ACME CA for internal networks on the `pki` app.
        .target(
            name: "UsherACMEServer",
            dependencies: [
                "UsherCore", "UsherHTTP", "UsherTLS", "UsherACME",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // `dns.providers.rfc2136`: DNS records changed by RFC 2136 dynamic updates signed with TSIG.
        .target(
            name: "UsherDNS",
            dependencies: [
                "UsherCore", "UsherCaddyfile",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // `caddy.storage.postgres`: storage, locks and fencing shared by a fleet through PostgreSQL.
        .target(
            name: "UsherPostgres",
            dependencies: [
                "UsherCore", "UsherCaddyfile",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UsherStandard",
            dependencies: [
                "UsherCore", "UsherTLS", "UsherHTTP", "UsherHandlers", "UsherReverseProxy", "UsherACMEServer",
                "UsherCaddyfileHTTP", "UsherDNS", "UsherPostgres",
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UsherCLI",
            dependencies: [
                "CUsherSystem",
                "UsherCore",
                "UsherTLS",
                "UsherCaddyfile",
                "UsherHandlers",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "usher",
            dependencies: ["UsherCLI", "UsherStandard"],
            swiftSettings: swiftSettings
        ),

        // Test-only modules and the test build of the binary that includes them (never shipped).
        .target(
            name: "UsherTestModules",
            dependencies: [
                "UsherCore", "UsherHTTP", "UsherHTTP3", "UsherCaddyfile", "UsherCaddyfileHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "usher-test",
            dependencies: ["UsherCLI", "UsherStandard", "UsherTestModules"],
            swiftSettings: swiftSettings
        ),

        // The floor our HTTP/1.1 server is measured against: NIO's stock pipeline and one fixed response.
        .executableTarget(
            name: "bare-nio-baseline",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tests/Benchmarks/BareNIOBaseline",
            swiftSettings: swiftSettings
        ),

        // HTTP/3 load on Usher's QUIC client: the bench harness and interop tests use it against usher and Caddy.
        .executableTarget(
            name: "h3load",
            dependencies: [
                "UsherHTTP3",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/Benchmarks/H3Load",
            swiftSettings: swiftSettings
        ),
        // `swift package usher-build --with PATH|URL@VERSION`: a custom usher binary with extra module packages.
        .plugin(
            name: "UsherBuild",
            capability: .command(
                intent: .custom(verb: "usher-build", description: "Build an usher binary with extra module packages"),
                permissions: [.writeToPackageDirectory(reason: "The built binary is written into the package directory (--output).")]
            ),
            path: "Plugins/UsherBuild"
        ),
        // WebTransport on Usher's own client: throughput, datagram round trips and idle sessions (scripts/bench-wt).
        .executableTarget(
            name: "wtbench",
            dependencies: [
                "UsherHTTP3", "UsherHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/Benchmarks/WTBench",
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "UsherCoreTests",
            dependencies: [
                "UsherCore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherHTTP3Tests",
            dependencies: ["UsherHTTP3", "CNghttp3", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherHTTPTests",
            dependencies: [
                "UsherCore", "UsherHTTP", "UsherHandlers", "UsherStandard", "UsherReverseProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherTLSTests",
            dependencies: [
                "UsherTLS", "UsherACME", "UsherCore", "UsherCaddyfile", "UsherDNS",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherHandlersTests",
            dependencies: [
                "UsherHandlers", "UsherHTTP", "UsherCore", "UsherCaddyfile", "UsherCaddyfileHTTP", "UsherStandard",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherReverseProxyTests",
            dependencies: [
                "UsherReverseProxy", "UsherHTTP", "UsherCore", "UsherCaddyfile", "UsherCaddyfileHTTP", "UsherStandard",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UsherCaddyfileTests",
            dependencies: [
                "UsherCore", "UsherCaddyfile", "UsherCaddyfileHTTP", "UsherStandard", "UsherTestModules", "UsherPostgres",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "usher", "usher-test", "h3load", "UsherCore", "UsherStandard",
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "IntegrationTests/Tests",
            swiftSettings: swiftSettings
        ),
    ]
)
