//! The role list, [`ROLES`], and one module per role.

pub mod auth;
pub mod gateway;
pub mod project;
pub mod simulation;

use crate::error::StartError;
use crate::role::{Parts, Role};

/// Starts one role of the list for this process (whether or not `server.roles` names it: a
/// role that does not run here may still serve its routes through a remote client).
pub type Start = fn(&mut Parts<'_>) -> Result<Box<dyn Role>, StartError>;

/// Every role a process can run, in the order `/health/services` lists them. Adding a
/// service is its crate plus one line here (and its module beside this one).
pub const ROLES: &[Start] = &[
    gateway::GatewayRole::start,
    auth::AuthRole::start,
    project::ProjectRole::start,
    simulation::SimulationRole::start,
];

#[cfg(test)]
mod tests {
    use crate::config::{Config, ROLES as ROLE_NAMES};
    use crate::role::Parts;

    /// `server.roles` accepts exactly the roles of the list, in its order (a role added to
    /// one and not the other fails here).
    #[test]
    fn the_role_list_and_the_role_names_agree() {
        let dir = std::env::temp_dir().join(format!("sdsim-roles-{}", std::process::id()));
        let mut config = Config {
            // No role runs: nothing is started or bound, each role only says who it is.
            roles: Vec::new(),
            ..Config::default()
        };
        config.storage.url = format!("sqlite://{}/sdsim.db", dir.display());
        let store = config.storage.open().expect("a SQLite store opens");
        let mut parts = Parts::new(&config, store, 1);
        let names: Vec<&str> = super::ROLES
            .iter()
            .map(|start| start(&mut parts).expect("starts").name())
            .collect();
        assert_eq!(names, ROLE_NAMES);
        let _ = std::fs::remove_dir_all(dir);
    }
}
