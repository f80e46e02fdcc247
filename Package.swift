// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "fansync",
    products: [
        .executable(name: "fansync", targets: ["fansync"]),
        .library(name: "FanSync", targets: ["FanSync"]),
    ],
    targets: [
        // C shims: fanotify, inotify, file handles, statx, ioprio, libcap.
        .target(
            name: "CLinux",
            linkerSettings: [.linkedLibrary("cap")]
        ),
        // Lua 5.4 from Debian (liblua5.4-dev) and shims for its macros.
        .target(
            name: "CLua",
            cSettings: [.unsafeFlags(["-I/usr/include/lua5.4"])],
            linkerSettings: [.linkedLibrary("lua5.4")]
        ),
        // SQLite from Debian (libsqlite3-dev): the index.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3"
        ),
        // liburing and libxxhash from Debian: the content hasher's reads and XXH3-128.
        .target(
            name: "CURing",
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("xxhash")]
        ),
        .target(
            name: "FanSync",
            dependencies: ["CLinux", "CLua", "CSQLite", "CURing"]
        ),
        .executableTarget(
            name: "fansync",
            dependencies: ["FanSync"]
        ),
        // Hash throughput: io_uring reader vs plain read loop vs xxhsum (Perf/hash).
        .executableTarget(
            name: "fansync-hashbench",
            dependencies: ["FanSync"],
            path: "Perf/hash/Sources"
        ),
        .testTarget(
            name: "FanSyncTests",
            dependencies: ["FanSync"]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["FanSync", "fansync"]
        ),
    ]
)
