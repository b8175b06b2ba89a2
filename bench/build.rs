//! Generates the tonic servers and clients of `sdsim.auth.v1.AuthService` (for `peer-auth` and
//! `bench-auth`) and `sdsim.project.v1.ProjectService` (for the split peer of `bench-hop`:
//! `peer-projects-front` calls `peer-projects-back` with sdsim's own messages), compiling
//! `proto/` with protox (pure Rust: no system protoc needed).

fn main() {
    // Read at run time, not baked in with `env!`: cargo reuses a compiled build script for an
    // identical source in another checkout sharing the target directory.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&dir).join("../proto");
    let files = [
        root.join("sdsim/auth/v1/auth.proto"),
        root.join("sdsim/project/v1/project.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root]).expect("proto/ compiles");
    tonic_prost_build::configure()
        // Methods a server leaves out answer UNIMPLEMENTED (peer-auth serves ValidateToken only,
        // peer-projects-back GetProject only).
        .generate_default_stubs(true)
        .compile_fds(descriptors)
        .expect("tonic-prost-build generates the AuthService and ProjectService code");
}
