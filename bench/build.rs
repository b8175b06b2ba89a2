//! Generates the tonic server and client of `sdsim.auth.v1.AuthService` for `peer-auth` and
//! `bench-auth`, compiling `proto/` with protox (pure Rust: no system protoc needed).

fn main() {
    // Read at run time, not baked in with `env!`: cargo reuses a compiled build script for an
    // identical source in another checkout sharing the target directory.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&dir).join("../proto");
    let file = root.join("sdsim/auth/v1/auth.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root]).expect("proto/ compiles");
    tonic_prost_build::configure()
        // Methods a server leaves out answer UNIMPLEMENTED (peer-auth serves ValidateToken only).
        .generate_default_stubs(true)
        .compile_fds(descriptors)
        .expect("tonic-prost-build generates the AuthService code");
}
