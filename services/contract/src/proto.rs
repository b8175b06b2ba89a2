//! The RPCs a `.proto` file declares, read with protox (no system protoc), and how a contract's
//! served methods differ from them.

use crate::wire::{Kind, Method};
use sdsim_net::grpc::Services;
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

/// How a contract's method table and the services it registered differ from what its `.proto`
/// declares (`declared`, from [`rpcs`]): one line per difference (an RPC declared but not
/// served, a method in the table but not served, one served but not declared, or served with
/// the other streaming shape); empty when they agree.
pub fn differences(declared: &[Rpc], methods: &[Method], services: &Services) -> Vec<String> {
    let mut out = Vec::new();
    for rpc in declared {
        if !services.has(&rpc.path) {
            out.push(format!("{} is declared but not served", rpc.path));
        }
    }
    for m in methods {
        if !services.has(m.path) {
            out.push(format!("{} is in the table but not served", m.path));
        }
        let streaming = m.kind == Kind::Stream;
        match declared.iter().find(|rpc| rpc.path == m.path) {
            None => out.push(format!("{} is served but not declared", m.path)),
            Some(rpc) if rpc.server_streaming != streaming => out.push(format!(
                "{} is served {} but declared {}",
                m.path,
                shape(streaming),
                shape(rpc.server_streaming)
            )),
            Some(_) => {}
        }
    }
    out
}

fn shape(server_streaming: bool) -> &'static str {
    if server_streaming {
        "server-streaming"
    } else {
        "unary"
    }
}
