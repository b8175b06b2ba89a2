//! A server WebSocket connection after the upgrade: the reading side ([`WebSocket::recv`],
//! driven by the application's session task) and a writer task draining the connection's
//! bounded [`Outbox`].
//!
//! The reader answers pings, follows the close handshake, closes idle connections and, when the
//! server drains, sends close 1001. The writer coalesces queued frames into one write, pings
//! every `ping_interval`, and ends the connection when a write fails or times out. A client whose
//! queue passes `max_outbound_bytes` is a slow consumer: its queue is dropped and it is closed
//! with 1008, without ever blocking the code that sends to it.

use super::deflate;
use super::frame::{self, close, Decoder, Limits, Message, Opcode, Role};
use crate::transport::{AnyIo, ReadHalf, WriteHalf};
use bytes::{Bytes, BytesMut};
use sdsim_core::shutdown::Phase;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A connection handed over by the HTTP/1.1 server after a 101 response.
pub struct Upgraded {
    /// The stream.
    pub io: AnyIo,
    /// Bytes the client sent after the handshake, already read.
    pub leftover: BytesMut,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's shutdown phase.
    pub phase: watch::Receiver<Phase>,
}

/// Settings of every WebSocket connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Frame and message size limits.
    pub limits: Limits,
    /// Server ping period.
    pub ping_interval: Duration,
    /// Silence (pongs included) after which the client is closed.
    pub idle_timeout: Duration,
    /// Wait for the client's close frame after ours.
    pub close_timeout: Duration,
    /// Time one write may take.
    pub write_timeout: Duration,
    /// Queued bytes after which the client is a slow consumer.
    pub max_outbound_bytes: usize,
    /// Messages at least this long are compressed on deflate connections.
    pub compression_min_bytes: usize,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame with this code (1005 when it had none).
    PeerClosed(u16),
    /// The server closed it with this code (application, shutdown 1001, idle timeout).
    ServerClosed(u16),
    /// The client broke the protocol; closed with this code (1002, 1007, 1009).
    Protocol(u16),
    /// The client could not keep up; closed with 1008.
    SlowConsumer,
    /// A write did not finish within the write timeout.
    WriteTimeout,
    /// The socket failed or the client went away without a close frame.
    Io,
}

/// A one-waiter wake-up flag (shard-local).
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The bounded queue of frames waiting to be written to one client.
pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    queued: Cell<usize>,
    limit: usize,
    deflate: bool,
    compression_min_bytes: usize,
    closing: Cell<Option<u16>>,
    close_frame: RefCell<Option<Bytes>>,
    end: Cell<Option<End>>,
    /// The reader has finished: the writer flushes what it must and exits.
    finished: Cell<bool>,
    writer: Signal,
    reader: Signal,
}

impl Outbox {
    fn new(settings: &Settings, deflate: bool) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            limit: settings.max_outbound_bytes,
            deflate,
            compression_min_bytes: settings.compression_min_bytes,
            closing: Cell::new(None),
            close_frame: RefCell::new(None),
            end: Cell::new(None),
            finished: Cell::new(false),
            writer: Signal::default(),
            reader: Signal::default(),
        }
    }

    /// Whether permessage-deflate was negotiated on this connection.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// Whether frames are still accepted (no close started).
    pub fn is_open(&self) -> bool {
        self.closing.get().is_none()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// Queues a ready-made frame (shared, e.g. one event frame for every subscriber). Returns
    /// false when the connection is closing; a frame that takes the queue past the limit closes
    /// the client as a slow consumer instead of queueing.
    pub fn send_frame(&self, frame: Bytes) -> bool {
        if !self.is_open() {
            return false;
        }
        let queued = self.queued.get() + frame.len();
        if queued > self.limit {
            self.queue.borrow_mut().clear();
            self.queued.set(0);
            self.end.set(Some(End::SlowConsumer));
            self.close(close::POLICY, "slow consumer: outbound queue full");
            return false;
        }
        self.queued.set(queued);
        self.queue.borrow_mut().push_back(frame);
        self.writer.notify();
        true
    }

    /// Queues a text message, compressed when negotiated and large enough.
    pub fn send_text(&self, text: &[u8]) -> bool {
        self.send_frame(text_frame(text, self.deflate, self.compression_min_bytes))
    }

    /// Starts the close handshake with `code`: frames already queued are written, then the close
    /// frame; nothing more is accepted. Later calls are ignored.
    pub fn close(&self, code: u16, reason: &str) {
        if self.closing.get().is_some() {
            return;
        }
        self.closing.set(Some(code));
        *self.close_frame.borrow_mut() = Some(frame::server_frame(
            Opcode::Close,
            &frame::close_body(code, reason),
        ));
        self.writer.notify();
        self.reader.notify();
    }

    fn set_end(&self, end: End) {
        if self.end.get().is_none() {
            self.end.set(Some(end));
        }
    }
}

/// A text frame for `text`: compressed (RSV1) when `deflate` and at least `min` bytes long.
pub fn text_frame(text: &[u8], deflate: bool, min: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 10);
    if deflate && text.len() >= min {
        let packed = deflate::deflate(text);
        frame::encode(&mut out, Opcode::Text, true, true, &packed, None);
    } else {
        frame::encode(&mut out, Opcode::Text, true, false, text, None);
    }
    out.freeze()
}

const READ_MIN: usize = 512;
const READ_KEEP: usize = 16 * 1024;
const WRITE_BATCH: usize = 256 * 1024;

/// The reading side of a server WebSocket connection.
pub struct WebSocket {
    read: ReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    outbox: Rc<Outbox>,
    settings: Rc<Settings>,
    phase: watch::Receiver<Phase>,
    peer: SocketAddr,
}

impl WebSocket {
    /// Takes over an upgraded connection and starts its writer task on this shard.
    pub fn start(conn: Upgraded, settings: Rc<Settings>, deflate: bool) -> WebSocket {
        let (read, write) = conn.io.split();
        let outbox = Rc::new(Outbox::new(&settings, deflate));
        monoio::spawn(write_loop(write, Rc::clone(&outbox), Rc::clone(&settings)));
        WebSocket {
            read,
            buf: conn.leftover,
            decoder: Decoder::new(Role::Server, settings.limits, deflate),
            outbox,
            settings,
            phase: conn.phase,
            peer: conn.peer,
        }
    }

    /// The connection's outgoing queue (hand clones to whatever sends to this client).
    pub fn outbox(&self) -> &Rc<Outbox> {
        &self.outbox
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Why the connection ended, once [`WebSocket::recv`] has returned `None`.
    pub fn end(&self) -> Option<End> {
        self.outbox.end.get()
    }

    /// The next text or binary message; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Message> {
        let mut last_seen = Instant::now();
        loop {
            if matches!(
                self.outbox.end.get(),
                Some(End::PeerClosed(_) | End::Io | End::WriteTimeout)
            ) {
                return None;
            }
            // We started the close: read (and drop) until the client's close frame, so unread
            // client data does not turn our close into a reset that loses the close frame.
            if self.outbox.closing.get().is_some() {
                self.await_peer_close().await;
                return None;
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Message::Ping(payload))) => {
                    self.outbox
                        .send_frame(frame::server_frame(Opcode::Pong, &payload));
                    continue;
                }
                Ok(Some(Message::Pong(_))) => continue,
                Ok(Some(Message::Close(code, _))) => {
                    self.outbox.set_end(End::PeerClosed(code));
                    let reply = if code == close::NO_STATUS {
                        close::NORMAL
                    } else {
                        code
                    };
                    self.outbox.close(reply, "");
                    return None;
                }
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "WebSocket protocol error");
                    self.outbox.set_end(End::Protocol(e.code));
                    self.outbox.close(e.code, e.reason);
                    continue;
                }
            }
            self.shrink_buffer();
            let idle_deadline = last_seen + self.settings.idle_timeout;
            let read = self.read.read_into(std::mem::take(&mut self.buf));
            let outcome = monoio::select! {
                r = read => Some(r),
                _ = monoio::time::sleep_until(idle_deadline.into()) => {
                    self.outbox.set_end(End::ServerClosed(close::NORMAL));
                    self.outbox.close(close::NORMAL, "idle timeout");
                    None
                }
                _ = self.outbox.reader.wait() => None,
                _ = self.phase.wait_for(|p| *p != Phase::Accepting) => {
                    self.outbox.set_end(End::ServerClosed(close::GOING_AWAY));
                    self.outbox.close(close::GOING_AWAY, "server shutting down");
                    None
                }
            };
            // A read cut short above loses its buffer; the connection is closing then anyway.
            let Some((result, buf)) = outcome else {
                continue;
            };
            self.buf = buf;
            match result {
                Ok(0) | Err(_) => {
                    self.outbox.set_end(End::Io);
                    return None;
                }
                Ok(_) => last_seen = Instant::now(),
            }
        }
    }

    /// After our close frame: reads (discarding data) until the client's close frame, EOF or
    /// the close timeout.
    async fn await_peer_close(&mut self) {
        let deadline = Instant::now() + self.settings.close_timeout;
        self.buf = BytesMut::with_capacity(READ_MIN);
        let mut decoder = Decoder::new(Role::Server, self.settings.limits, self.outbox.deflate);
        loop {
            let read = self.read.read_into(std::mem::take(&mut self.buf));
            let Ok((Ok(n), buf)) = monoio::time::timeout_at(deadline.into(), read).await else {
                break;
            };
            if n == 0 {
                break;
            }
            self.buf = buf;
            loop {
                match decoder.decode(&mut self.buf) {
                    Ok(Some(Message::Close(code, _))) => {
                        self.outbox.set_end(End::PeerClosed(code));
                        return;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_MIN / 2 {
                self.buf.reserve(READ_MIN);
            }
        }
        let code = self.outbox.closing.get().unwrap_or(close::NORMAL);
        self.outbox.set_end(End::ServerClosed(code));
    }

    fn shrink_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > READ_KEEP {
            self.buf = BytesMut::with_capacity(READ_MIN);
        } else if self.buf.capacity() - self.buf.len() < READ_MIN / 2 {
            self.buf.reserve(READ_MIN.max(self.buf.len()));
        }
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        // The session is over: make sure a close frame goes out and the writer exits.
        self.outbox.close(close::NORMAL, "");
        self.outbox.finished.set(true);
        self.outbox.writer.notify();
    }
}

async fn write_loop(mut io: WriteHalf, outbox: Rc<Outbox>, settings: Rc<Settings>) {
    let ping = frame::server_frame(Opcode::Ping, b"");
    let mut next_ping = Instant::now() + settings.ping_interval;
    let mut out = BytesMut::new();
    loop {
        let idle = outbox.queue.borrow().is_empty() && outbox.close_frame.borrow().is_none();
        if idle && !outbox.finished.get() {
            monoio::select! {
                _ = outbox.writer.wait() => {}
                _ = monoio::time::sleep_until(next_ping.into()) => {}
            }
        }
        let close_frame = outbox.close_frame.borrow().clone();
        if Instant::now() >= next_ping {
            out.extend_from_slice(&ping);
            next_ping = Instant::now() + settings.ping_interval;
        }
        {
            let mut queue = outbox.queue.borrow_mut();
            while let Some(f) = queue.pop_front() {
                outbox.queued.set(outbox.queued.get() - f.len());
                out.extend_from_slice(&f);
                if out.len() >= WRITE_BATCH {
                    break;
                }
            }
        }
        let closing = outbox.queue.borrow().is_empty() && close_frame.is_some();
        if closing {
            out.extend_from_slice(close_frame.as_deref().unwrap_or_default());
        }
        if !out.is_empty() {
            match monoio::time::timeout(settings.write_timeout, io.write_all_from(out)).await {
                Ok((Ok(()), mut written)) => {
                    written.clear();
                    out = if written.capacity() > READ_KEEP {
                        BytesMut::new()
                    } else {
                        written
                    };
                }
                Ok((Err(_), _)) => {
                    outbox.set_end(End::Io);
                    outbox.close(close::NORMAL, "");
                    outbox.reader.notify();
                    return;
                }
                Err(_) => {
                    outbox.set_end(End::WriteTimeout);
                    outbox.close(close::POLICY, "write timeout");
                    outbox.reader.notify();
                    return;
                }
            }
        }
        if closing {
            // Wait for the reader to see the client's close (or give up), then close our side.
            while !outbox.finished.get() && outbox.end.get().is_none() {
                outbox.writer.wait().await;
            }
            io.close().await;
            return;
        }
        if outbox.finished.get() && outbox.queue.borrow().is_empty() {
            io.close().await;
            return;
        }
    }
}
