//! Generates the Rust types of the simulation contract in `proto/` with prost, compiling the
//! file with protox (pure Rust: no system protoc needed).

fn main() {
    // Read at run time, not baked in with `env!`: cargo reuses a compiled build script for an
    // identical source in another checkout sharing the target directory.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&dir).join("../../proto");
    let file = root.join("sdsim/simulation/v1/simulation.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root]).expect("proto/ compiles");
    // Server reflection answers from the same descriptors the types are generated from.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("file_descriptor_set.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )
    .expect("OUT_DIR is writable");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost generates the simulation types");
}
