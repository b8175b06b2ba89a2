//! One module per role of [`crate::role::ROLES`].

pub mod auth;
pub mod gateway;
pub mod project;
pub mod simulation;
