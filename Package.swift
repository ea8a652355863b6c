// swift-tools-version:6.0
// The ETL system: a scheduler, workers, an operator CLI and a web server over modules named by
// their role. `Sources/Shared` holds what every program shares (support, the two clients, the broker
// protocol, the metadata store, the workflow model and orchestration), `Sources/Tasks` the pipelines.
// Only `PostgresClient` and `RedisClient` import the C libraries (libpq, hiredis); `Tasks` imports ICU's
// regular expressions (CRegex) and zlib (CZlib, to read gzipped access logs).
import PackageDescription

let log = Target.Dependency.product(name: "Logging", package: "swift-log")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
/// The lower modules every program uses, in dependency order.
let core: [Target.Dependency] = [
    "ETLSupport", "PostgresClient", "RedisClient", "Workflow", "Broker", "Metadata", "Orchestration",
]
/// The scheduler, the worker and etlctl are command-line programs over the same modules.
let commandDependencies: [Target.Dependency] =
    core + [
        "Tasks", .product(name: "ArgumentParser", package: "swift-argument-parser"), log, lifecycle,
    ]
// The Redis encoder and reply paths are per-command hot loops over class state; runtime
// exclusivity checks cost ~10% of pipelined throughput there (perf). Debug builds keep the checks,
// so tests still catch violations.
let hotLoops: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "swift-etl",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "etlctl", targets: ["etlctl"]),
        .executable(name: "scheduler", targets: ["Scheduler"]),
        .executable(name: "worker", targets: ["Worker"]),
        .executable(name: "webserver", targets: ["Webserver"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // bcrypt for the web users' passwords (its C implementation, no hand-made hashing).
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
    ],
    targets: [
        // C libraries, wrapped once: only the two client modules import them.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        // zlib (apt zlib1g-dev; its header is in the default path, and its pkg-config flags are ones SwiftPM
        // refuses), for gzipped (rotated) access logs (Tasks only).
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // ICU's regular expressions (apt libicu-dev) behind a narrow C face, for the uap-core
        // user-agent rules (Tasks only).
        .target(name: "CRegex", linkerSettings: [.linkedLibrary("icui18n"), .linkedLibrary("icuuc")]),

        // Sources/Shared: one module per role.
        // Configuration from the environment and local.env, time and text helpers, backoff, signals.
        .target(name: "ETLSupport", dependencies: [log], path: "Sources/Shared/Support"),
        // The Postgres client (libpq) and the Redis client (hiredis).
        .target(
            name: "PostgresClient", dependencies: ["CLibPQ", "ETLSupport", log], path: "Sources/Shared/Postgres",
            swiftSettings: hotLoops),
        .target(
            name: "RedisClient", dependencies: ["CHiredis", "ETLSupport", crypto, log], path: "Sources/Shared/Redis",
            swiftSettings: hotLoops),
        // DAGs, tasks, their states and schedules (cron): the model, no I/O.
        .target(name: "Workflow", dependencies: ["ETLSupport"], path: "Sources/Shared/Workflow"),
        // The broker protocol on Redis Streams: signed task messages, completion events, dead letters, heartbeats.
        .target(
            name: "Broker", dependencies: ["ETLSupport", "RedisClient", "Workflow", crypto, log],
            path: "Sources/Shared/Broker"),
        // The metadata store in Postgres: migrations, runs, task instances, attempts, the scheduler's lease.
        .target(
            name: "Metadata",
            dependencies: [
                "ETLSupport", "PostgresClient", "Workflow", log,
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            ],
            path: "Sources/Shared/Metadata"),
        // What runs tasks: the registry of DAGs and operations, a task's context.
        .target(
            name: "Orchestration",
            dependencies: [
                "ETLSupport", "PostgresClient", "RedisClient", "Workflow", "Broker", "Metadata", log, lifecycle,
            ],
            path: "Sources/Shared/Orchestration"),

        // Sources/Tasks: the pipelines, one folder each (B2B, IP2Geo, Weblog, Reports, Examples) and
        // what they share (Common).
        .target(name: "Tasks", dependencies: core + ["CRegex", "CZlib", crypto]),
        .executableTarget(name: "Worker", dependencies: commandDependencies),
        // The scheduler posts alerts over HTTP(S): only it links the HTTP client.
        .executableTarget(
            name: "Scheduler",
            dependencies: commandDependencies + [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]),
        .executableTarget(name: "etlctl", dependencies: commandDependencies),
        // The web UI and JSON API (Hummingbird): a library so that tests drive its router directly.
        .target(
            name: "Web",
            dependencies: core + [
                "Tasks",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                crypto,
            ]
        ),
        .executableTarget(
            name: "Webserver",
            dependencies: core + [
                "Web", log,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        // Benchmarks live under bench/ so that `swift test` never builds them in release mode twice.
        .executableTarget(
            name: "ClientBench", dependencies: ["ETLSupport", "PostgresClient", "RedisClient"],
            path: "bench/ClientBench"),
        // Tests: one target per module, and SystemTests for the whole system as processes. They
        // start the real executables (scheduler, worker, webserver, etlctl, ClientBench) from
        // .build/debug: the targets that do depend on them, so `swift test` builds them first and a
        // test never spawns a stale one. TestSupport holds the servers, clusters and fixtures.
        .target(name: "TestSupport", dependencies: core + ["Tasks"], path: "Tests/TestSupport"),
        .testTarget(name: "ETLSupportTests", dependencies: core + ["TestSupport"]),
        .testTarget(
            name: "PostgresClientTests", dependencies: ["ETLSupport", "PostgresClient", "TestSupport", "ClientBench"]),
        .testTarget(name: "RedisClientTests", dependencies: ["ETLSupport", "RedisClient", "TestSupport"]),
        .testTarget(name: "WorkflowTests", dependencies: ["ETLSupport", "Workflow", "TestSupport"]),
        .testTarget(name: "BrokerTests", dependencies: core + ["TestSupport"]),
        .testTarget(name: "OrchestrationTests", dependencies: ["Orchestration", "Workflow"]),
        .testTarget(name: "MetadataTests", dependencies: core + ["Tasks", "TestSupport"]),
        .testTarget(name: "TasksTests", dependencies: core + ["Tasks", "TestSupport"]),
        .testTarget(
            name: "WebTests",
            dependencies: core + [
                "Tasks", "Web", "Webserver", "Scheduler", "Worker", "etlctl", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
        // (The webserver binary it starts is built for WebTests: every test target is built by one
        // `swift build --build-tests`, and importing the webserver's module here would need its
        // whole dependency graph.)
        .testTarget(
            name: "SystemTests", dependencies: core + ["Tasks", "Scheduler", "Worker", "etlctl", "TestSupport", log]),
    ]
)
