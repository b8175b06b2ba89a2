//! The RPCs a `.proto` file declares, read with protox (no system protoc).

use std::path::Path;

/// One RPC of a `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rpc {
    /// The gRPC path, `/package.Service/Method`.
    pub path: String,
    /// Whether the server streams its responses.
    pub server_streaming: bool,
}

/// Why a `.proto` file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ProtoError {
    /// The file.
    pub file: String,
    /// What went wrong.
    pub message: String,
}

/// Every RPC of every service that `file` (under the include root `root`) declares.
pub fn rpcs(root: &Path, file: &Path) -> Result<Vec<Rpc>, ProtoError> {
    let descriptors = protox::compile([file], [root]).map_err(|e| ProtoError {
        file: file.display().to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for f in descriptors.file {
        let package = f.package.unwrap_or_default();
        for service in f.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                out.push(Rpc {
                    path: format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    ),
                    server_streaming: method.server_streaming.unwrap_or(false),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}
