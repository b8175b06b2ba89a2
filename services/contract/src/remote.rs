//! The client side of a contract: a service in another process, reached over gRPC from this
//! shard.
//!
//! It authenticates with a service token and forwards the user it acts for: the `user_id` of
//! each request, and the user's permissions and administrator flag as metadata
//! ([`USER_PERMISSIONS`], [`USER_ADMIN`]); the service then authorizes that user exactly as in
//! process (see [`crate::serve::caller`]).
//!
//! The calls go through a [`Target`]: the service's instances (static list or registry), a
//! pool of connections per instance, balancing, breakers, retries of what provably did not
//! start. A call's deadline is the smaller of the remote timeout and the deadline of the
//! request being served ([`sdsim_net::deadline`]).
//!
//! A call made while a request is served is a client span of that request's trace
//! ([`ClientSpan`]): its `traceparent` goes out with the call, so the callee's span is its
//! child, and it is exported (when tracing is on and the trace sampled) once the call ends
//! (for a server stream: once the stream has started).

use crate::Caller;
use http::HeaderValue;
use sdsim_mesh::{MeshConfig, Target};
use sdsim_net::grpc::client::{CallOptions, Responses};
use sdsim_net::grpc::{Code, Status};
use sdsim_net::otel::ClientSpan;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Metadata a service sets to forward the user's permissions (comma-separated).
pub const USER_PERMISSIONS: &str = "sdsim-user-permissions";
/// Metadata a service sets (`true`) when the user it acts for is an administrator.
pub const USER_ADMIN: &str = "sdsim-user-admin";

/// The service token cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the service token is not a valid header value")]
pub struct InvalidServiceToken;

/// A service in another process, as this shard calls it.
pub struct Remote {
    target: Rc<Target>,
    authorization: HeaderValue,
    timeout: Duration,
}

impl Remote {
    /// A client of the one server at `addr` (tools and tests) that authenticates with
    /// `service_token` and gives each unary call `timeout`.
    pub fn new(
        addr: SocketAddr,
        service_token: &str,
        timeout: Duration,
    ) -> Result<Remote, InvalidServiceToken> {
        let config = MeshConfig {
            pool_min: 1,
            ..MeshConfig::default()
        };
        Remote::over(Target::fixed(addr, config), service_token, timeout)
    }

    /// A client of the instances `target` reaches.
    pub fn over(
        target: Rc<Target>,
        service_token: &str,
        timeout: Duration,
    ) -> Result<Remote, InvalidServiceToken> {
        let authorization = HeaderValue::from_str(&format!("Bearer {service_token}"))
            .map_err(|_| InvalidServiceToken)?;
        Ok(Remote {
            target,
            authorization,
            timeout,
        })
    }

    /// The mesh target the calls go through.
    pub fn target(&self) -> &Rc<Target> {
        &self.target
    }

    /// The deadline of a unary call started now: the timeout, or sooner when the request
    /// being served must be answered sooner.
    fn deadline(&self) -> Instant {
        let own = Instant::now() + self.timeout;
        match sdsim_net::deadline::current() {
            Some(inbound) => own.min(inbound),
            None => own,
        }
    }

    fn options(&self, who: Option<&Caller>, mut opts: CallOptions) -> CallOptions {
        opts.metadata
            .insert("authorization", self.authorization.clone());
        if let Some(who) = who {
            if let Ok(perms) = HeaderValue::from_str(&who.perms.join(",")) {
                opts.metadata.insert(USER_PERMISSIONS, perms);
            }
            if who.is_admin() {
                opts.metadata
                    .insert(USER_ADMIN, HeaderValue::from_static("true"));
            }
        }
        opts
    }

    /// A unary call of `path`, for `who` when the method authenticates.
    pub async fn unary<M, R>(
        &self,
        path: &str,
        who: Option<&Caller>,
        message: &M,
    ) -> Result<R, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        let opts = CallOptions {
            deadline: Some(self.deadline()),
            ..CallOptions::default()
        };
        let mut opts = self.options(who, opts);
        let span = ClientSpan::start(path);
        if let Some(span) = &span {
            span.propagate(&mut opts.metadata);
        }
        let result = self.target.unary(path, message, opts).await;
        end(span, &result);
        result
    }

    /// A server-streaming call of `path`: no deadline of its own, it lasts as long as the
    /// stream (or as the request being served, when that has one).
    pub async fn server_streaming<M, R>(
        &self,
        path: &str,
        who: Option<&Caller>,
        message: &M,
    ) -> Result<Responses<R>, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        let opts = CallOptions {
            deadline: sdsim_net::deadline::current(),
            ..CallOptions::default()
        };
        let mut opts = self.options(who, opts);
        let span = ClientSpan::start(path);
        if let Some(span) = &span {
            span.propagate(&mut opts.metadata);
        }
        let result = self.target.server_streaming(path, message, opts).await;
        end(span, &result);
        result
    }
}

/// Records the client span of a call that ended with `result`.
fn end<T>(span: Option<ClientSpan>, result: &Result<T, Status>) {
    if let Some(span) = span {
        match result {
            Ok(_) => span.end(Code::Ok, ""),
            Err(status) => span.end(status.code, &status.message),
        }
    }
}
