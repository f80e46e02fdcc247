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
        .target(
            name: "FanSync",
            dependencies: ["CLinux", "CLua"]
        ),
        .executableTarget(
            name: "fansync",
            dependencies: ["FanSync"]
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
