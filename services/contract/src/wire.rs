//! The typed requests and responses of a contract and the messages that carry them.
//!
//! A contract method takes a request type and answers a response type of the service's own
//! (a project, a run, a filter): what its HTTP handlers and in-process callers use. Each such
//! type says once how it travels in its `proto/` message — [`RequestWire`] and
//! [`ResponseWire`] — and the generated gRPC server and remote client use those conversions.

use std::future::Future;
use std::pin::Pin;

/// The answer of a contract method: a future on the calling shard (not `Send`: services are
/// called where the request is served).
pub type Pending<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + 'a>>;

/// A request type and the message `M` that carries it.
pub trait RequestWire<M>: Sized {
    /// Why a received message is not a valid request (names the field).
    type Error;
    /// The message the remote client sends, acting for `user_id` ("" for methods that do not
    /// authenticate).
    fn into_message(self, user_id: &str) -> M;
    /// The request a received message carries.
    fn from_message(message: M) -> Result<Self, Self::Error>;
}

/// A response type and the message `M` that carries it.
pub trait ResponseWire<M>: Sized {
    /// Why a received message is not a valid response.
    type Error;
    /// The message the server sends.
    fn into_message(self) -> M;
    /// The response a received message carries.
    fn from_message(message: M) -> Result<Self, Self::Error>;
}

/// A request message that names the user a service acts for (`user_id`).
pub trait ActsFor {
    /// The `user_id` field ("" when not set).
    fn user_id(&self) -> &str;
}

/// Implements [`ActsFor`] for messages with a `user_id: String` field.
#[macro_export]
macro_rules! acts_for {
    ($($message:ty),* $(,)?) => {
        $(impl $crate::ActsFor for $message {
            fn user_id(&self) -> &str {
                &self.user_id
            }
        })*
    };
}

/// The receiver of a server stream went away: stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the receiver of the stream went away")]
pub struct Gone;

/// Where a streaming method sends its items.
pub trait Emit<T> {
    /// Sends one item; waits while the receiver is not ready.
    fn emit(&mut self, item: T) -> Pin<Box<dyn Future<Output = Result<(), Gone>> + '_>>;
}

/// How a method is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unary, authenticated: the method gets the [`crate::Caller`].
    Caller,
    /// Unary, not authenticated.
    Open,
    /// Server streaming, authenticated.
    Stream,
}

/// One method of a contract as the server serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The RPC name, e.g. `CreateProject`.
    pub name: &'static str,
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    /// How it is called.
    pub kind: Kind,
}
