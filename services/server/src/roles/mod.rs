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
