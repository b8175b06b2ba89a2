//! gRPC targets: any unary method of the `.proto` files, with the request written as JSON
//! (the proto3 JSON mapping) and encoded once with prost-reflect; the files are compiled at
//! start with protox (no protoc).

use anyhow::{bail, Context};
use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compiles every `.proto` under `dir`.
pub fn load_pool(dir: &Path) -> anyhow::Result<DescriptorPool> {
    let mut files = Vec::new();
    proto_files(dir, &mut files)?;
    if files.is_empty() {
        bail!("no .proto files under {}", dir.display());
    }
    let fds = protox::compile(&files, [dir])
        .map_err(|e| anyhow::anyhow!("compiling {}: {e}", dir.display()))?;
    DescriptorPool::from_file_descriptor_set(fds).context("building the descriptor pool")
}

/// The unary method `method` (`/package.Service/Method`) of the pool.
pub fn unary_method(pool: &DescriptorPool, method: &str) -> anyhow::Result<MethodDescriptor> {
    let trimmed = method.trim_start_matches('/');
    let (service, name) = trimmed
        .split_once('/')
        .with_context(|| format!("--method {method}: expected /package.Service/Method"))?;
    let svc = pool
        .get_service_by_name(service)
        .with_context(|| format!("service {service} is not in the .proto files"))?;
    let m = svc
        .methods()
        .find(|m| m.name() == name)
        .with_context(|| format!("{service} has no method {name}"))?;
    if m.is_client_streaming() || m.is_server_streaming() {
        bail!("{method} is a streaming method; the load generator calls unary methods");
    }
    Ok(m)
}

/// Encodes a message of type `message` written as JSON (the proto3 JSON mapping).
pub fn encode_json(message: &MessageDescriptor, json: &str) -> anyhow::Result<Bytes> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = DynamicMessage::deserialize(message.clone(), &mut de)
        .with_context(|| format!("--data does not match {}", message.full_name()))?;
    de.end().context("--data has trailing characters")?;
    Ok(value.encode_to_vec().into())
}

/// Decodes a message of type `message` into JSON (the proto3 JSON mapping, lowerCamelCase
/// names, fields at their default value included so that they can be captured).
pub fn decode_json(message: &MessageDescriptor, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let value = DynamicMessage::decode(message.clone(), bytes)
        .with_context(|| format!("the response is not a {}", message.full_name()))?;
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    value
        .serialize_with_options(serde_json::value::Serializer, &options)
        .context("the response as JSON")
}

/// Encodes the JSON request of `method` (`/package.Service/Method`); checks the method is unary.
pub fn encode_request(pool: &DescriptorPool, method: &str, json: &str) -> anyhow::Result<Bytes> {
    encode_json(&unary_method(pool, method)?.input(), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests_encode_against_the_repository_protos() {
        let pool = load_pool(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto")).unwrap();
        let bytes = encode_request(
            &pool,
            "/sdsim.auth.v1.AuthService/ValidateToken",
            r#"{"token":"abc","callingService":"loadtest"}"#,
        )
        .unwrap();
        // Field 1 "abc", field 2 "loadtest".
        assert_eq!(&bytes[..5], &[0x0a, 3, b'a', b'b', b'c']);
        let err = encode_request(&pool, "/sdsim.auth.v1.AuthService/Nope", "{}").unwrap_err();
        assert!(err.to_string().contains("no method Nope"));
        let err = encode_request(&pool, "/grpc.health.v1.Health/Watch", "{}").unwrap_err();
        assert!(err.to_string().contains("streaming"));
        let err = encode_request(
            &pool,
            "/sdsim.auth.v1.AuthService/ValidateToken",
            r#"{"tokn":1}"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("tokn"), "{err:#}");
    }
}
