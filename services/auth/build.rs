//! Generates the Rust types of `proto/sdsim/auth/v1/auth.proto` with prost, compiling the file
//! with protox (pure Rust: no system protoc needed).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("sdsim/auth/v1/auth.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root]).expect("proto/ compiles");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost generates the auth types");
}
