//! uniffi's binding generator, built from the same uniffi version as the library:
//! `cargo run -p weft-ffi --bin uniffi-bindgen -- generate --library target/debug/libweft_ffi.so
//! --language kotlin --out-dir OUT`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
