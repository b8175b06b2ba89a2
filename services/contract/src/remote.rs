//! The client side of a contract: a service in another process, reached over gRPC from this
//! shard.
//!
//! It authenticates with a service token and forwards the user it acts for: the `user_id` of
//! each request, and the user's permissions and administrator flag as metadata
//! ([`USER_PERMISSIONS`], [`USER_ADMIN`]); the service then authorizes that user exactly as in
//! process (see [`crate::serve::caller`]).

use crate::Caller;
use http::HeaderValue;
use sdsim_net::grpc::client::{CallOptions, Client, Responses};
use sdsim_net::grpc::Status;
use std::net::SocketAddr;
use std::time::Duration;

/// Metadata a service sets to forward the user's permissions (comma-separated).
pub const USER_PERMISSIONS: &str = "sdsim-user-permissions";
/// Metadata a service sets (`true`) when the user it acts for is an administrator.
pub const USER_ADMIN: &str = "sdsim-user-admin";

/// The service token cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the service token is not a valid header value")]
pub struct InvalidServiceToken;

/// A connection to a service in another process, for this shard.
pub struct Remote {
    client: Client,
    authorization: HeaderValue,
    timeout: Duration,
}

impl Remote {
    /// A client of the service at `addr` that authenticates with `service_token` and gives
    /// each unary call `timeout`.
    pub fn new(
        addr: SocketAddr,
        service_token: &str,
        timeout: Duration,
    ) -> Result<Remote, InvalidServiceToken> {
        Remote::over(Client::new(addr), service_token, timeout)
    }

    /// Like [`Remote::new`] over a client already set up (TLS, keepalive).
    pub fn over(
        client: Client,
        service_token: &str,
        timeout: Duration,
    ) -> Result<Remote, InvalidServiceToken> {
        let authorization = HeaderValue::from_str(&format!("Bearer {service_token}"))
            .map_err(|_| InvalidServiceToken)?;
        Ok(Remote {
            client,
            authorization,
            timeout,
        })
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
        let opts = self.options(who, CallOptions::timeout(self.timeout));
        self.client.unary(path, message, opts).await
    }

    /// A server-streaming call of `path`: no deadline, it lasts as long as the stream.
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
        let opts = self.options(who, CallOptions::default());
        self.client.server_streaming(path, message, opts).await
    }
}
