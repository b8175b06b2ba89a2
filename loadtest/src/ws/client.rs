//! One WebSocket connection outside a load run, for a tool that follows a few channels (a
//! benchmark waiting for lifecycle events): connect, upgrade with a bearer token, send, and
//! receive whole messages. The socket shell is the load connections' own (`session`'s upgrade
//! and reads), the protocol [`super::proto`]'s; it runs on a monoio runtime.

use super::proto::{self, Rng};
use super::session::{read_some, upgrade, write_all, Upgrade};
use bytes::BytesMut;
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use sdsim_net::ws::frame::{Decoder, Limits, Message, Opcode, ProtocolError, Role};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

/// Why a [`WsClient`] could not connect, send or receive.
#[derive(Debug, thiserror::Error)]
pub enum WsClientError {
    /// The TCP connect, a read or a write failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The server answered the upgrade with this status instead of 101.
    #[error("the upgrade was answered with status {0}")]
    Status(u16),
    /// The upgrade's answer was not a valid WebSocket upgrade (or was cut short).
    #[error("the upgrade's answer was not a valid WebSocket upgrade")]
    Handshake,
    /// The server broke the WebSocket protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server closed the TCP connection (after a close frame, or without one).
    #[error("the server closed the connection")]
    Closed,
}

/// An upgraded client connection.
pub struct WsClient {
    stream: TcpStreamPoll,
    /// Bytes received and not decoded yet.
    buf: BytesMut,
    decoder: Decoder,
    scratch: RefCell<Box<[u8]>>,
    rng: Rng,
}

impl WsClient {
    /// Connects to `addr` and upgrades `path` (`Host: host`), with `Authorization: Bearer
    /// token` when a token is given.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<WsClient, WsClientError> {
        let tcp = monoio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut stream = tcp.into_poll_io()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = Rng::new(seed ^ u64::from(addr.port()));
        let scratch = RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
        let key = rng.handshake_key();
        let request = proto::upgrade_request(path, host, &key, token);
        let buf = match upgrade(&mut stream, &scratch, &request, &key).await {
            Ok(buf) => buf,
            Err(Upgrade::Io(e)) => return Err(e.into()),
            Err(Upgrade::Status(status)) => return Err(WsClientError::Status(status)),
            Err(Upgrade::Invalid) => return Err(WsClientError::Handshake),
        };
        Ok(WsClient {
            stream,
            buf,
            decoder: Decoder::new(Role::Client, Limits::default(), false),
            scratch,
            rng,
        })
    }

    /// Sends one frame (masked, final): a text message, a pong, a close.
    pub async fn send(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), WsClientError> {
        let frame = proto::client_frame(opcode, payload, self.rng.mask());
        write_all(&mut self.stream, &frame).await?;
        Ok(())
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsClientError> {
        self.send(Opcode::Text, text.as_bytes()).await
    }

    /// The next message or control frame, reading as needed. Pings are returned, not answered:
    /// answer them with [`WsClient::send`] and [`Opcode::Pong`]. Cancel-safe: bytes read are
    /// kept, so a `recv` under a timeout loses nothing.
    pub async fn recv(&mut self) -> Result<Message, WsClientError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buf)? {
                return Ok(message);
            }
            if read_some(&mut self.stream, &self.scratch, &mut self.buf).await? == 0 {
                return Err(WsClientError::Closed);
            }
        }
    }
}
