//! The contracts in `proto/` compile without a system protoc (protox) and declare every
//! method seed 004 lists, with server streaming where live data flows.

use prost_reflect::DescriptorPool;
use std::path::Path;

fn pool() -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "sdsim/auth/v1/auth.proto",
        "sdsim/project/v1/project.proto",
        "sdsim/simulation/v1/simulation.proto",
        "grpc/health/v1/health.proto",
    ];
    let fds =
        protox::compile(files.iter().map(|f| root.join(f)), [&root]).expect("proto/ compiles");
    DescriptorPool::from_file_descriptor_set(fds).unwrap()
}

fn methods(pool: &DescriptorPool, service: &str) -> Vec<(String, bool)> {
    pool.get_service_by_name(service)
        .unwrap_or_else(|| panic!("{service} is declared"))
        .methods()
        .map(|m| (m.name().to_string(), m.is_server_streaming()))
        .collect()
}

#[test]
fn every_seed_method_is_declared() {
    let pool = pool();
    let auth = methods(&pool, "sdsim.auth.v1.AuthService");
    for m in [
        "ValidateToken",
        "GetUserContext",
        "CheckPermission",
        "ValidateSession",
        "GetUserPermissions",
        "HealthCheck",
    ] {
        assert!(auth.iter().any(|(n, _)| n == m), "AuthService.{m}");
    }
    let project = methods(&pool, "sdsim.project.v1.ProjectService");
    for m in [
        "CreateProject",
        "GetProject",
        "UpdateProject",
        "DeleteProject",
        "ListProjects",
        "ShareProject",
        "GetProjectPermissions",
        "GetTemplate",
        "ListTemplates",
        "HealthCheck",
    ] {
        assert!(project.iter().any(|(n, _)| n == m), "ProjectService.{m}");
    }
    let sim = methods(&pool, "sdsim.simulation.v1.SimulationService");
    for m in [
        "StartSimulation",
        "StopSimulation",
        "GetSimulationStatus",
        "GetSimulationResults",
        "GetLiveMetrics",
        "GetPerformanceAnalysis",
        "ValidateConfiguration",
        "GetSimulationHistory",
        "HealthCheck",
    ] {
        assert!(sim.iter().any(|(n, _)| n == m), "SimulationService.{m}");
    }
    assert!(
        sim.contains(&("GetLiveMetrics".to_string(), true)),
        "live metrics stream"
    );
    let health = methods(&pool, "grpc.health.v1.Health");
    assert!(health.contains(&("Watch".to_string(), true)));
    // The seed's field numbers are kept.
    let req = pool
        .get_message_by_name("sdsim.auth.v1.ValidateTokenResponse")
        .unwrap();
    for (name, number) in [
        ("valid", 1),
        ("user_id", 2),
        ("email", 3),
        ("is_admin", 4),
        ("session_id", 5),
        ("permissions", 6),
    ] {
        assert_eq!(
            req.get_field_by_name(name).map(|f| f.number()),
            Some(number),
            "{name}"
        );
    }
}
