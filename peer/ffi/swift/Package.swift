// swift-tools-version:5.9
// The Swift tests of weft's bindings (peer/ffi). `Generated/` is written by
// peer/ffi/tests/swift.rs before `swift test`: the Swift file uniffi generates from
// libweft_ffi.so, its C header and a module map for that header. The library itself is found
// through the linker flags the test passes (-L and -rpath to cargo's target directory).
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
