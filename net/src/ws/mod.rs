//! WebSocket (RFC 6455) on the HTTP/1.1 server: the handshake, a sans-IO frame codec,
//! permessage-deflate (RFC 7692), and the connection driver.
//!
//! A handler accepts a handshake with [`handshake::check`], registers what should run on the
//! connection with [`upgrade::register`], and returns [`handshake::switching_protocols`] with the
//! [`upgrade::UpgradeToken`] in its extensions; the connection loop writes the 101 and hands the
//! stream to the registered closure as an [`socket::Upgraded`].

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod socket;
pub mod upgrade;

pub use frame::{close, Message};
pub use socket::{End, Outbox, Settings, Upgraded, WebSocket};
