// swift-tools-version:6.0
// The ETL system: a scheduler, workers, an operator CLI and (later) a web server around one
// library, `Shared`, which alone talks to the C clients (libpq for Postgres, hiredis for Redis).
import PackageDescription

/// The scheduler, the worker and etlctl are command-line programs over the same libraries.
let commandDependencies: [Target.Dependency] = [
    "Shared", "Tasks",
    .product(name: "ArgumentParser", package: "swift-argument-parser"),
    .product(name: "Logging", package: "swift-log"),
]

let package = Package(
    name: "swift-etl",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "etlctl", targets: ["etlctl"]),
        .executable(name: "scheduler", targets: ["Scheduler"]),
        .executable(name: "worker", targets: ["Worker"]),
        .executable(name: "webserver", targets: ["Webserver"]),
        .library(name: "Shared", targets: ["Shared"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries, wrapped once: only `Shared` imports these two modules.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // ICU's regular expressions (apt libicu-dev) behind a narrow C face, for the uap-core
        // user-agent rules (Tasks only).
        .target(
            name: "CRegex",
            linkerSettings: [.linkedLibrary("icui18n"), .linkedLibrary("icuuc")]
        ),
        .target(
            name: "Shared",
            dependencies: [
                "CLibPQ",
                "CHiredis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [
                // The Redis encoder and reply paths are per-command hot loops over class state;
                // runtime exclusivity checks cost ~10% of pipelined throughput there (perf).
                // Debug builds keep the checks, so tests still catch violations.
                .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
            ]
        ),
        .target(
            name: "Tasks",
            dependencies: ["Shared", "CRegex", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .executableTarget(name: "Worker", dependencies: commandDependencies),
        .executableTarget(name: "Scheduler", dependencies: commandDependencies),
        .executableTarget(name: "etlctl", dependencies: commandDependencies),
        // The web UI and JSON API (Hummingbird): a library so that tests drive its router directly.
        .target(
            name: "Web",
            dependencies: [
                "Shared", "Tasks",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(name: "Webserver", dependencies: [
            "Web", "Shared", .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        // Benchmarks live under bench/ so that `swift test` never builds them in release mode twice.
        .executableTarget(
            name: "ClientBench",
            dependencies: ["Shared"],
            path: "bench/ClientBench"
        ),
        // The tests start the real executables (scheduler, worker, webserver, etlctl) from
        // .build/debug: depending on all four makes `swift test` build them first, so a test never
        // spawns a stale one.
        .testTarget(
            name: "SharedTests",
            dependencies: ["Shared", "Tasks", "Scheduler", "Worker", "Web", "Webserver", "etlctl", "ClientBench",
                           .product(name: "HummingbirdTesting", package: "hummingbird")]
        ),
    ]
)
