//! One load connection, the socket shell around [`super::proto`]: bind a source address,
//! connect, upgrade, subscribe, then hold — answering server pings, timing events and pongs,
//! sending its share of the pings — until the server closes it or the run stops.
//!
//! Memory: an idle connection owns no read buffer. Its socket is read only when the kernel
//! says it is readable (monoio's poll-io), into the thread's one scratch buffer; the
//! connection keeps only bytes of a frame that has not fully arrived.

use super::proto::{self, HandshakeError, Inbound, SeqTracker};
use super::report::Op;
use super::worker::{Ctx, Stage};
use bytes::{Buf, BytesMut};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use sdsim_net::ws::frame::{self, Decoder, Limits, Opcode, ProtocolError, Role};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a connection failed or ended.
#[derive(Debug)]
enum Failure {
    /// The TCP connect failed.
    Connect(io::Error),
    /// The upgrade was answered with this status.
    Status(u16),
    /// The upgrade answer was not valid (or the server closed the connection during it).
    Handshake,
    /// The server answered the subscription with an error.
    Refused,
    /// The server closed the connection with this code (1006: without a close frame).
    Closed(u16),
    /// The server broke the WebSocket protocol.
    Protocol,
    /// Another socket error.
    Io,
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(e) => connect_error_kind(e),
            Failure::Status(_) => "handshake_status",
            Failure::Handshake => "handshake",
            Failure::Refused => "subscribe_refused",
            Failure::Closed(_) => "closed",
            Failure::Protocol => "protocol",
            Failure::Io => "io",
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Failure::Closed(1006),
            _ => Failure::Io,
        }
    }
}

impl From<ProtocolError> for Failure {
    fn from(_: ProtocolError) -> Failure {
        Failure::Protocol
    }
}

/// The error kind of a failed TCP connect.
pub(crate) fn connect_error_kind(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connect_refused",
        Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => "addr_unavailable",
        Some(libc::EMFILE | libc::ENFILE) => "fd_limit",
        Some(libc::ETIMEDOUT) => "timeout",
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => "unreachable",
        _ => "connect",
    }
}

/// The boxed connect-upgrade-subscribe of one connection, under its timeout.
type Connecting<'a> = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Result<Box<Conn>, Failure>, monoio::time::error::Elapsed>,
            > + 'a,
    >,
>;

/// An open, subscribed connection.
struct Conn {
    stream: TcpStreamPoll,
    /// Bytes received and not yet decoded (empty, unallocated, when idle).
    buf: BytesMut,
    decoder: Decoder,
    seq: SeqTracker,
}

/// Connection `index` (slot `slot` of its thread), scheduled at `intended`.
pub(crate) async fn run(ctx: Rc<Ctx>, index: usize, slot: usize, intended: Instant) {
    let channel = index % ctx.load.channels.len();
    ctx.tally.borrow_mut().counters(Op::Connect).sent += 1;
    // Boxed: the connect states (and their 640-byte timer) are freed once connected, so an
    // idle connection's task holds only the hold loop.
    let connecting = connect_boxed(&ctx, index);
    let opened = connecting.await;
    let progress = &ctx.progress;
    match opened {
        Ok(Ok(mut conn)) => {
            let now = Instant::now();
            ctx.tally
                .borrow_mut()
                .complete(Op::Connect, now.saturating_duration_since(intended));
            progress.held[channel].fetch_add(1, Relaxed);
            progress.subscribed.fetch_add(1, Relaxed);
            let at = now.saturating_duration_since(ctx.start).as_nanos() as u64;
            progress.last_subscribed_ns.fetch_max(at, Relaxed);
            progress.settled.fetch_add(1, Relaxed);
            let end = hold(&ctx, &mut conn, index, slot).await;
            if let Err(failure) = end {
                progress.held[channel].fetch_sub(1, Relaxed);
                record_failure(&ctx, &failure);
            }
        }
        Ok(Err(failure)) => {
            record_failure(&ctx, &failure);
            progress.settled.fetch_add(1, Relaxed);
        }
        Err(_) => {
            ctx.tally.borrow_mut().error(Op::Connect, "timeout");
            progress.settled.fetch_add(1, Relaxed);
        }
    }
    ctx.live.set(ctx.live.get() - 1);
}

/// The connect states, on the heap and gone once connected (rustc would otherwise reserve
/// their room, a 640-byte timer included, in every connection's task for its whole life).
fn connect_boxed(ctx: &Ctx, index: usize) -> Connecting<'_> {
    Box::pin(monoio::time::timeout(
        ctx.load.connect_timeout,
        establish(ctx, index),
    ))
}

fn record_failure(ctx: &Ctx, failure: &Failure) {
    let mut tally = ctx.tally.borrow_mut();
    tally.error(Op::Connect, failure.kind());
    match failure {
        Failure::Closed(code) => *tally.close_codes.entry(*code).or_insert(0) += 1,
        Failure::Status(status) => *tally.statuses.entry(*status).or_insert(0) += 1,
        _ => {}
    }
}

/// Starts a non-blocking connect to `dst`, from `src` when given. The source port is chosen
/// at connect time (IP_BIND_ADDRESS_NO_PORT), so each source address offers the whole
/// ephemeral range to each destination.
fn start_connect(dst: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(src) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SockAddr::from(SocketAddr::from((src, 0))))?;
    }
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Connect, upgrade and subscribe.
async fn establish(ctx: &Ctx, index: usize) -> Result<Box<Conn>, Failure> {
    let load = &ctx.load;
    let src = (!load.sources.is_empty()).then(|| load.sources[index % load.sources.len()]);
    let std_stream = start_connect(load.addr, src).map_err(Failure::Connect)?;
    let stream = monoio::net::TcpStream::from_std(std_stream).map_err(Failure::Connect)?;
    stream.writable(false).await.map_err(Failure::Connect)?;
    // SAFETY: the descriptor stays open (owned by `stream`) while it is borrowed here.
    let fd =
        unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stream)) };
    if let Some(e) = socket2::SockRef::from(&fd)
        .take_error()
        .map_err(Failure::Connect)?
    {
        return Err(Failure::Connect(e));
    }
    let mut stream = stream
        .try_into_poll_io()
        .map_err(|(e, _)| Failure::Connect(e))?;
    ctx.tally.borrow_mut().counters(Op::Connect).connects += 1;

    let key = ctx.rng.borrow_mut().handshake_key();
    let token = load
        .token
        .as_ref()
        .map(|t| t.replace("{i}", &index.to_string()));
    let request = proto::upgrade_request(&load.path, &load.host, &key, token.as_deref());
    let buf = match upgrade(&mut stream, &ctx.scratch, &request, &key).await {
        Ok(buf) => buf,
        Err(Upgrade::Io(e)) => return Err(e.into()),
        Err(Upgrade::Status(s)) => return Err(Failure::Status(s)),
        Err(Upgrade::Invalid) => return Err(Failure::Handshake),
    };
    // Boxed: the task's future would otherwise keep room for it twice (moved-from locals
    // keep their slots across awaits).
    let mut conn = Box::new(Conn {
        stream,
        buf,
        decoder: Decoder::new(Role::Client, Limits::default(), false),
        seq: SeqTracker::default(),
    });
    let channel = &load.channels[index % load.channels.len()];
    send_text(ctx, &mut conn.stream, &proto::subscribe(channel)).await?;
    loop {
        let message = match conn.decoder.decode(&mut conn.buf)? {
            Some(m) => m,
            None => {
                if read_some(&mut conn.stream, &ctx.scratch, &mut conn.buf).await? == 0 {
                    return Err(Failure::Closed(1006));
                }
                continue;
            }
        };
        match proto::classify(message) {
            Inbound::Subscribed { seq } => {
                conn.seq = SeqTracker::after(seq);
                release_if_empty(&mut conn.buf);
                return Ok(conn);
            }
            Inbound::Error(_) => return Err(Failure::Refused),
            Inbound::Closed(code) => return Err(Failure::Closed(code)),
            Inbound::Ping(payload) => {
                send_frame(ctx, &mut conn.stream, Opcode::Pong, &payload).await?
            }
            _ => {}
        }
    }
}

/// This connection's share of `--send-rate`: one ping every `connections / rate`, the first
/// `index / rate` into the hold (so all connections together ping at `rate`, evenly spread),
/// pongs matched in order to the pings' intended send times. Its timer is allocated once and
/// reset for each ping (monoio's `Sleep` is 640 bytes: only pinging connections pay for one).
struct Pings {
    period: Duration,
    offset: Duration,
    next: Option<Instant>,
    outstanding: VecDeque<Instant>,
    timer: Option<Pin<Box<monoio::time::Sleep>>>,
}

impl Pings {
    /// Pings not answered beyond this are counted as timeouts and forgotten.
    const MAX_OUTSTANDING: usize = 64;

    fn new(ctx: &Ctx, index: usize) -> Option<Pings> {
        let rate = ctx.load.ping_rate?;
        Some(Pings {
            period: Duration::from_secs_f64(ctx.load.connections as f64 / rate),
            offset: Duration::from_secs_f64(index as f64 / rate),
            next: None,
            outstanding: VecDeque::new(),
            timer: None,
        })
    }

    fn due(&mut self, stage: Stage) -> Option<Instant> {
        let Stage::Holding { start, end } = stage else {
            return None;
        };
        let next = *self.next.get_or_insert(start + self.offset);
        (next < end).then_some(next)
    }
}

/// Completes when the next ping is due; never when none is.
async fn ping_due(pings: &mut Option<Pings>, stage: Stage) {
    let Some(p) = pings.as_mut() else {
        return std::future::pending().await;
    };
    let Some(due) = p.due(stage) else {
        return std::future::pending().await;
    };
    let deadline = monoio::time::Instant::from_std(due);
    match p.timer.as_mut() {
        Some(timer) => {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
        }
        None => p.timer = Some(Box::pin(monoio::time::sleep_until(deadline))),
    }
    if let Some(timer) = p.timer.as_mut() {
        timer.as_mut().await;
    }
}

/// Sends one frame. Boxed: writes are rare on a held connection, so their state lives on the
/// heap only while one runs instead of in every connection's task.
async fn send_boxed(
    ctx: &Ctx,
    conn: &mut Conn,
    opcode: Opcode,
    payload: &[u8],
) -> Result<(), Failure> {
    Box::pin(send_frame(ctx, &mut conn.stream, opcode, payload)).await
}

/// Best effort: a close frame, given at most 200 ms (boxed: see `run`).
async fn send_close(ctx: &Ctx, stream: &mut TcpStreamPoll, body: &[u8]) {
    let send = send_frame(ctx, stream, Opcode::Close, body);
    let _ = Box::pin(monoio::time::timeout(Duration::from_millis(200), send)).await;
}

/// Holds a subscribed connection until the run stops (`Ok`) or the connection ends (`Err`).
async fn hold(ctx: &Ctx, conn: &mut Conn, index: usize, slot: usize) -> Result<(), Failure> {
    let mut pings = Pings::new(ctx, index);
    let result = hold_loop(ctx, conn, slot, &mut pings).await;
    if let Some(p) = &pings {
        // Pings never answered: at the end of the run, or lost with the connection.
        let lost = p.outstanding.len();
        if lost > 0 {
            ctx.progress
                .pings_outstanding
                .fetch_sub(lost as i64, Relaxed);
            let mut tally = ctx.tally.borrow_mut();
            for _ in 0..lost {
                tally.error(Op::Ping, "timeout");
            }
        }
    }
    result
}

async fn hold_loop(
    ctx: &Ctx,
    conn: &mut Conn,
    slot: usize,
    pings: &mut Option<Pings>,
) -> Result<(), Failure> {
    loop {
        while let Some(message) = conn.decoder.decode(&mut conn.buf)? {
            match on_message(ctx, conn, pings, proto::classify(message)) {
                Reply::Nothing => {}
                Reply::Pong(payload) => send_boxed(ctx, conn, Opcode::Pong, &payload).await?,
                Reply::Close(code) => {
                    // Answer the close (best effort), as RFC 6455 asks: with its code, if any.
                    let body = if code == 1005 {
                        Vec::new()
                    } else {
                        frame::close_body(code, "")
                    };
                    send_close(ctx, &mut conn.stream, &body).await;
                    return Err(Failure::Closed(code));
                }
            }
        }
        release_if_empty(&mut conn.buf);
        let (generation, stage) = ctx.stage.get();
        if stage == Stage::Stopping {
            let close = frame::close_body(1000, "load test done");
            send_close(ctx, &mut conn.stream, &close).await;
            return Ok(());
        }
        let due = pings.as_mut().and_then(|p| p.due(stage));
        let mut read = None;
        monoio::select! {
            biased;
            _ = ctx.stage.changed(slot, generation) => {}
            _ = ping_due(pings, stage) => {}
            n = read_some(&mut conn.stream, &ctx.scratch, &mut conn.buf) => read = Some(n),
        }
        match read {
            Some(Ok(0)) => return Err(Failure::Closed(1006)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
        if let (Some(p), Some(due)) = (pings.as_mut(), due) {
            if Instant::now() >= due {
                ping_sent(ctx, p, due);
                send_boxed(ctx, conn, Opcode::Text, proto::PING.as_bytes()).await?;
            }
        }
    }
}

/// Counts the ping due at `due` as sent and schedules the next.
fn ping_sent(ctx: &Ctx, p: &mut Pings, due: Instant) {
    let mut tally = ctx.tally.borrow_mut();
    let c = tally.counters(Op::Ping);
    c.sent += 1;
    if Instant::now().saturating_duration_since(due) > p.period {
        c.late += 1;
    }
    if p.outstanding.len() >= Pings::MAX_OUTSTANDING {
        p.outstanding.pop_front();
        ctx.progress.pings_outstanding.fetch_sub(1, Relaxed);
        tally.error(Op::Ping, "timeout");
    }
    p.outstanding.push_back(due);
    p.next = Some(due + p.period);
    ctx.progress.pings_outstanding.fetch_add(1, Relaxed);
}

/// What a held connection must send after a message.
enum Reply {
    Nothing,
    /// A pong frame with the ping's payload.
    Pong(bytes::Bytes),
    /// Answer the server's close and end with this code.
    Close(u16),
}

/// Records what a message means; says what to answer.
fn on_message(ctx: &Ctx, conn: &mut Conn, pings: &mut Option<Pings>, inbound: Inbound) -> Reply {
    match inbound {
        Inbound::Event { seq, sent_ns } => {
            let mut tally = ctx.tally.borrow_mut();
            if let Some(seq) = seq {
                let step = conn.seq.observe(seq);
                tally.seq_gaps += step.skipped;
                tally.seq_out_of_order += u64::from(step.out_of_order);
            }
            if let Some(sent) = sent_ns {
                let at = Instant::now();
                let now = ctx.clock.ns(at);
                tally.complete(Op::Deliver, Duration::from_nanos(now.saturating_sub(sent)));
                tally.last_delivery = Some(at);
                ctx.progress.delivered.fetch_add(1, Relaxed);
            }
        }
        Inbound::Pong => {
            if let Some(sent) = pings.as_mut().and_then(|p| p.outstanding.pop_front()) {
                ctx.tally
                    .borrow_mut()
                    .complete(Op::Ping, Instant::now().saturating_duration_since(sent));
                ctx.progress.pings_outstanding.fetch_sub(1, Relaxed);
            }
        }
        Inbound::Ping(payload) => return Reply::Pong(payload),
        Inbound::Closed(code) => return Reply::Close(code),
        Inbound::Error(_) => ctx.tally.borrow_mut().error(Op::Connect, "server_error"),
        Inbound::Unparsed => ctx.tally.borrow_mut().error(Op::Deliver, "unparsed"),
        Inbound::Subscribed { .. } | Inbound::Other => {}
    }
    Reply::Nothing
}

/// Drops the buffer's allocation once everything in it was consumed.
fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Waits until the socket is readable, reads into the thread's scratch buffer and appends what
/// came to `buf`. Cancel-safe: bytes are moved in the same poll that reads them. `Ok(0)`: EOF.
/// Why a WebSocket upgrade failed.
pub(crate) enum Upgrade {
    /// A socket error while sending the request or reading the answer.
    Io(io::Error),
    /// The server answered with this status instead of 101.
    Status(u16),
    /// The answer was not a valid upgrade, too long, or cut short by the server.
    Invalid,
}

/// Sends the upgrade `request` made with `key` and reads the answer; returns what followed
/// the answer's head (frames the server sent at once).
pub(crate) async fn upgrade(
    stream: &mut TcpStreamPoll,
    scratch: &RefCell<Box<[u8]>>,
    request: &[u8],
    key: &str,
) -> Result<BytesMut, Upgrade> {
    write_all(stream, request).await.map_err(Upgrade::Io)?;
    let mut buf = BytesMut::new();
    loop {
        match proto::parse_upgrade_response(&buf, key) {
            Ok(Some(head)) => {
                buf.advance(head);
                return Ok(buf);
            }
            Ok(None) if buf.len() > 64 * 1024 => return Err(Upgrade::Invalid),
            Ok(None) => {}
            Err(HandshakeError::Status(s)) => return Err(Upgrade::Status(s)),
            Err(HandshakeError::Invalid(_)) => return Err(Upgrade::Invalid),
        }
        let n = read_some(stream, scratch, &mut buf)
            .await
            .map_err(Upgrade::Io)?;
        if n == 0 {
            return Err(Upgrade::Invalid);
        }
    }
}

pub(crate) async fn read_some(
    stream: &mut TcpStreamPoll,
    scratch: &RefCell<Box<[u8]>>,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    poll_fn(|cx| {
        let mut scratch = scratch.borrow_mut();
        let mut read = ReadBuf::new(&mut scratch[..]);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

pub(crate) async fn write_all(stream: &mut TcpStreamPoll, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

async fn send_frame(
    ctx: &Ctx,
    stream: &mut TcpStreamPoll,
    opcode: Opcode,
    payload: &[u8],
) -> Result<(), Failure> {
    let mask = ctx.rng.borrow_mut().mask();
    let bytes = proto::client_frame(opcode, payload, mask);
    write_all(stream, &bytes).await.map_err(Failure::from)
}

async fn send_text(ctx: &Ctx, stream: &mut TcpStreamPoll, text: &str) -> Result<(), Failure> {
    send_frame(ctx, stream, Opcode::Text, text.as_bytes()).await
}
