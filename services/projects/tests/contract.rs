//! The contract and `proto/` agree: every RPC that `proto/` declares for the project service is
//! served, and every served method is declared there (with the same streaming shape).

use sdsim_contract::proto::{rpcs, Rpc};
use sdsim_contract::{Authenticate, Caller, Kind, Method, Refusal, Remote};
use sdsim_net::grpc::Services;
use sdsim_projects::projects::{ProjectContract, RemoteProjects};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Refuses every call: registration needs an authenticator, these tests make no call.
struct NoCallers;

impl Authenticate for NoCallers {
    fn authenticate(&self, _token: Option<&str>) -> Result<Caller, Refusal> {
        Err(Refusal::Missing)
    }
}

/// A client of nothing: the contracts are registered without storage by serving a remote
/// client (a proxy); no call is made.
fn remote() -> Remote {
    Remote::new(
        "127.0.0.1:9".parse().unwrap(),
        "token",
        Duration::from_secs(1),
    )
    .unwrap()
}

fn declared(file: &str) -> Vec<Rpc> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    rpcs(&root, &root.join(file)).unwrap()
}

fn check(file: &str, methods: &[Method], services: &Services) {
    let declared = declared(file);
    for rpc in &declared {
        assert!(
            services.has(&rpc.path),
            "{} is declared in proto/{file} but not served",
            rpc.path
        );
    }
    let mut served: Vec<Rpc> = methods
        .iter()
        .map(|m| {
            assert!(
                services.has(m.path),
                "{} is in the table but not served",
                m.path
            );
            Rpc {
                path: m.path.to_string(),
                server_streaming: m.kind == Kind::Stream,
            }
        })
        .collect();
    served.sort();
    assert_eq!(
        served, declared,
        "the served methods and proto/{file} differ"
    );
}

#[test]
fn every_project_rpc_in_proto_is_served_and_nothing_else() {
    let mut services = Services::new();
    ProjectContract::register(
        &mut services,
        Rc::new(RemoteProjects(remote())),
        Arc::new(NoCallers),
    );
    check(
        "sdsim/project/v1/project.proto",
        ProjectContract::METHODS,
        &services,
    );
}
