//! The service-caller layer: an exchange whose bearer token is a service token is marked
//! [`Unlimited`], so the rate-limit layer after it does not count it against the caller's IP.
//! A gateway forwards all its users' calls from one address; they were limited at the gateway
//! by each user's own address, and counting them again would cap the whole deployment at one
//! client's budget.
//!
//! The check itself comes from the wiring (which knows the configured tokens); an
//! authentication layer, once there is one, can set the same mark from its caller instead.

use super::client_limit::Unlimited;
use super::layer::{Check, Exchange, Layer};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use std::rc::Rc;

/// Whether a bearer token is a service token.
pub type IsServiceToken = Rc<dyn Fn(&str) -> bool>;

/// The layer; see the module documentation.
pub struct ServiceCallers {
    is_service: IsServiceToken,
}

impl ServiceCallers {
    /// Marks exchanges whose bearer token `is_service` accepts.
    pub fn new(is_service: IsServiceToken) -> ServiceCallers {
        ServiceCallers { is_service }
    }
}

/// The token of an `authorization: Bearer …` header.
fn bearer(metadata: &HeaderMap) -> Option<&str> {
    let value = metadata.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Layer for ServiceCallers {
    fn request<'a>(&'a self, ex: &'a mut Exchange, metadata: &'a HeaderMap) -> Check<'a> {
        if bearer(metadata).is_some_and(|token| (self.is_service)(token)) {
            ex.extensions.insert(Unlimited);
        }
        Check::Pass
    }
}
