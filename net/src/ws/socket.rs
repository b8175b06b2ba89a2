//! A server WebSocket connection after the upgrade: the reading side ([`WebSocket::recv`],
//! driven by the application's session task) and a writer task draining the connection's
//! bounded [`Outbox`].
//!
//! The reader answers pings and follows the close handshake. The writer coalesces queued frames
//! into one write and ends the connection when a write fails or times out. One keeper task per
//! shard pings every connection each `ping_interval`, closes those silent for `idle_timeout`,
//! and sends close 1001 to all of them when the server drains — no per-connection timer, so an
//! idle connection costs two small parked tasks and its buffers. A client whose
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

/// [`WebSocket::recv_by`]'s deadline passed before a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

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
    /// When the client last sent anything (pongs included).
    last_seen: Cell<Instant>,
    /// When the keeper last pinged this client.
    last_ping: Cell<Instant>,
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
            last_seen: Cell::new(Instant::now()),
            last_ping: Cell::new(Instant::now()),
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
    peer: SocketAddr,
}

impl WebSocket {
    /// Takes over an upgraded connection and starts its writer task on this shard.
    pub fn start(conn: Upgraded, settings: Rc<Settings>, deflate: bool) -> WebSocket {
        let (read, write) = conn.io.split();
        let outbox = Rc::new(Outbox::new(&settings, deflate));
        sdsim_core::runtime::spawn(
            "ws-writer",
            write_loop(write, Rc::clone(&outbox), Rc::clone(&settings)),
        );
        keeper::register(&outbox, &settings, conn.phase);
        WebSocket {
            read,
            buf: conn.leftover,
            decoder: Decoder::new(Role::Server, settings.limits, deflate),
            outbox,
            settings,
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
        self.recv_by(None).await.unwrap_or(None)
    }

    /// Like [`WebSocket::recv`], but gives up at `deadline` with `Err(DeadlinePassed)`. A read
    /// in flight at the deadline is abandoned, so close the connection afterwards (that is what
    /// the authentication deadline does). One future type serves both calls, which keeps an
    /// idle connection's task small.
    pub async fn recv_by(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Message>, DeadlinePassed> {
        loop {
            if matches!(
                self.outbox.end.get(),
                Some(End::PeerClosed(_) | End::Io | End::WriteTimeout)
            ) {
                return Ok(None);
            }
            // We started the close: read (and drop) until the client's close frame, so unread
            // client data does not turn our close into a reset that loses the close frame.
            if self.outbox.closing.get().is_some() {
                Box::pin(self.await_peer_close()).await;
                return Ok(None);
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
                    return Ok(None);
                }
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "WebSocket protocol error");
                    self.outbox.set_end(End::Protocol(e.code));
                    self.outbox.close(e.code, e.reason);
                    continue;
                }
            }
            self.shrink_buffer();
            let read = self.read.read_into(std::mem::take(&mut self.buf));
            // Boxed only when there is a deadline: an idle connection carries no timer.
            let deadline_passed = async {
                match deadline {
                    Some(d) => Box::pin(monoio::time::sleep_until(d.into())).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = monoio::select! {
                r = read => Some(r),
                _ = deadline_passed => {
                    // The read was cut short: nothing was read (its buffer is gone).
                    self.buf = BytesMut::with_capacity(READ_MIN);
                    return Err(DeadlinePassed);
                }
                _ = self.outbox.reader.wait() => None,
            };
            // A read cut short above loses its buffer; the connection is closing then anyway.
            let Some((result, buf)) = outcome else {
                continue;
            };
            self.buf = buf;
            match result {
                Ok(0) | Err(_) => {
                    self.outbox.set_end(End::Io);
                    return Ok(None);
                }
                Ok(_) => self.outbox.last_seen.set(Instant::now()),
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
    let mut out = BytesMut::new();
    loop {
        let idle = outbox.queue.borrow().is_empty() && outbox.close_frame.borrow().is_none();
        if idle && !outbox.finished.get() {
            outbox.writer.wait().await;
        }
        let close_frame = outbox.close_frame.borrow().clone();
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
            // Boxed: an idle connection's writer then holds no room for a write in flight.
            let write = Box::pin(monoio::time::timeout(
                settings.write_timeout,
                io.write_all_from(out),
            ));
            match write.await {
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
            Box::pin(io.close()).await;
            return;
        }
        if outbox.finished.get() && outbox.queue.borrow().is_empty() {
            Box::pin(io.close()).await;
            return;
        }
    }
}

/// The per-shard keeper of WebSocket connections: pings, idle timeouts, shutdown closes.
mod keeper {
    use super::{close, frame, End, Opcode, Outbox, Settings};
    use sdsim_core::shutdown::Phase;
    use std::cell::{Cell, RefCell};
    use std::rc::{Rc, Weak};
    use std::time::{Duration, Instant};
    use tokio::sync::watch;

    #[derive(Default)]
    struct Keeper {
        conns: RefCell<Vec<Weak<Outbox>>>,
        running: Cell<bool>,
        draining: Cell<bool>,
    }

    thread_local! {
        static KEEPER: Rc<Keeper> = Rc::new(Keeper::default());
    }

    /// Keeps `outbox` pinged and timed; starts this shard's keeper task with the first one.
    pub(super) fn register(
        outbox: &Rc<Outbox>,
        settings: &Settings,
        phase: watch::Receiver<Phase>,
    ) {
        KEEPER.with(|k| {
            if k.draining.get() {
                outbox.set_end(End::ServerClosed(close::GOING_AWAY));
                outbox.close(close::GOING_AWAY, "server shutting down");
            }
            k.conns.borrow_mut().push(Rc::downgrade(outbox));
            if !k.running.replace(true) {
                let tick = (settings.ping_interval.min(settings.idle_timeout) / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(1));
                sdsim_core::runtime::spawn(
                    "ws-keeper",
                    run(
                        Rc::clone(k),
                        tick,
                        settings.ping_interval,
                        settings.idle_timeout,
                        phase,
                    ),
                );
            }
        });
    }

    async fn run(
        k: Rc<Keeper>,
        tick: Duration,
        ping_interval: Duration,
        idle_timeout: Duration,
        mut phase: watch::Receiver<Phase>,
    ) {
        let ping = frame::server_frame(Opcode::Ping, b"");
        loop {
            let draining = monoio::select! {
                _ = monoio::time::sleep(tick) => false,
                _ = phase.wait_for(|p| *p != Phase::Accepting), if !k.draining.get() => true,
            };
            if draining {
                k.draining.set(true);
            }
            let now = Instant::now();
            let mut conns = k.conns.borrow_mut();
            conns.retain(|weak| {
                let Some(outbox) = weak.upgrade() else {
                    return false;
                };
                if !outbox.is_open() {
                    return true;
                }
                if k.draining.get() {
                    outbox.set_end(End::ServerClosed(close::GOING_AWAY));
                    outbox.close(close::GOING_AWAY, "server shutting down");
                } else if now.duration_since(outbox.last_seen.get()) >= idle_timeout {
                    outbox.set_end(End::ServerClosed(close::NORMAL));
                    outbox.close(close::NORMAL, "idle timeout");
                } else if now.duration_since(outbox.last_ping.get()) >= ping_interval {
                    outbox.last_ping.set(now);
                    outbox.send_frame(ping.clone());
                }
                true
            });
        }
    }
}
