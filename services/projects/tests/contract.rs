//! The contract and `proto/` agree: every RPC that `proto/` declares for the project service is
//! served, and every served method is declared there (with the same streaming shape).

use sdsim_contract::proto::{differences, rpcs};
use sdsim_contract::{Authenticate, Caller, Refusal, Remote};
use sdsim_net::grpc::Services;
use sdsim_projects::projects::{ProjectContract, RemoteProjects};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Refuses every call: registration needs an authenticator, this test makes no call.
struct NoCallers;

impl Authenticate for NoCallers {
    fn authenticate(&self, _token: Option<&str>) -> Result<Caller, Refusal> {
        Err(Refusal::Missing)
    }
}

#[test]
fn every_project_rpc_in_proto_is_served_and_nothing_else() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let declared = rpcs(&root, &root.join("sdsim/project/v1/project.proto")).unwrap();
    // Registered without storage by serving a remote client (a proxy); no call is made.
    let remote = Remote::new("127.0.0.1:9".parse().unwrap(), "t", Duration::from_secs(1)).unwrap();
    let mut services = Services::new();
    ProjectContract::register(
        &mut services,
        Rc::new(RemoteProjects(remote)),
        Arc::new(NoCallers),
    );
    let found = differences(&declared, ProjectContract::METHODS, &services);
    assert!(
        found.is_empty(),
        "proto/sdsim/project/v1/project.proto:\n{}",
        found.join("\n")
    );
}
