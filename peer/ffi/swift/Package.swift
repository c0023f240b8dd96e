// swift-tools-version:5.9
// The Swift tests of weft's bindings (peer/ffi). peer/ffi/tests/swift.rs copies this package
// beside cargo's build and writes its `Generated/` there: the Swift file uniffi generates from
// libweft_ffi.so (module `Weft`), its C header and a module map for that header (module
// `weft_ffiFFI`). The library is found through the linker flags the test passes (-L and
// -rpath). By hand: generate into `Generated/` here the same way and `swift test`.
import PackageDescription

let package = Package(
    name: "WeftSwiftTests",
    targets: [
        // The C side of the bindings: the header uniffi generates, as a Clang module.
        .systemLibrary(name: "weft_ffiFFI", path: "Generated/weft_ffiFFI"),
        // The generated Swift API (module `Weft`).
        .target(
            name: "Weft",
            dependencies: ["weft_ffiFFI"],
            path: "Generated/Weft",
            linkerSettings: [.linkedLibrary("weft_ffi")]
        ),
        .testTarget(name: "WeftTests", dependencies: ["Weft"], path: "Tests/WeftTests"),
    ]
)
