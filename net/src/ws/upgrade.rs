//! Hand-off of a connection from the HTTP/1.1 loop to an upgraded protocol.
//!
//! Response extensions must be `Send + Sync`, a session is shard-local, so the handler parks its
//! session starter in this shard's table and puts only the [`UpgradeToken`] on the response.

use super::socket::Upgraded;
use futures_util::future::LocalBoxFuture;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// What runs an upgraded connection.
pub type Start = Box<dyn FnOnce(Upgraded) -> LocalBoxFuture<'static, ()>>;

thread_local! {
    static PENDING: RefCell<HashMap<u64, Start>> = RefCell::new(HashMap::new());
    static NEXT: Cell<u64> = const { Cell::new(1) };
}

/// Names a parked session starter; put it in the 101 response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeToken(u64);

/// Parks `start` on this shard until the connection loop has written the 101 response.
pub fn register<F>(start: F) -> UpgradeToken
where
    F: FnOnce(Upgraded) -> LocalBoxFuture<'static, ()> + 'static,
{
    let id = NEXT.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    PENDING.with(|p| p.borrow_mut().insert(id, Box::new(start)));
    UpgradeToken(id)
}

/// Takes the starter back (the connection loop calls this; a dropped token frees it).
pub fn take(token: UpgradeToken) -> Option<Start> {
    PENDING.with(|p| p.borrow_mut().remove(&token.0))
}
