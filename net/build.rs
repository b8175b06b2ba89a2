//! Generates the Rust types of the `.proto` files this crate serves (grpc.health.v1,
//! grpc.reflection.v1 and v1alpha) and of the OTLP trace messages its span exporter sends,
//! with prost, compiling the files with protox (pure Rust: no system protoc needed).

fn main() {
    // Read at run time, not baked in with `env!`: cargo reuses a compiled build script for an
    // identical source in another checkout sharing the target directory.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&dir).join("../proto");
    let files = [
        "grpc/health/v1/health.proto",
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root]).expect("proto/ compiles");
    // Server reflection answers from the same descriptors the types are generated from.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("file_descriptor_set.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )
    .expect("OUT_DIR is writable");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost generates the health and reflection types");
    // Compiled apart: the exporter sends these, no listener serves them, so reflection does
    // not list them.
    let otlp = ["opentelemetry/proto/collector/trace/v1/trace_service.proto"].map(|f| root.join(f));
    println!(
        "cargo:rerun-if-changed={}",
        root.join("opentelemetry").display()
    );
    let otlp = protox::compile(&otlp, [&root]).expect("proto/opentelemetry compiles");
    prost_build::Config::new()
        .compile_fds(otlp)
        .expect("prost generates the OTLP trace types");
}
