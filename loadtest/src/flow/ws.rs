//! A user's WebSocket connection: connect, upgrade with the user's bearer token, subscribe to
//! the step's channels (the step's latency ends at the last `subscribed`), then a task of its
//! own holds the connection while the user's later steps run — counting events, answering
//! ping frames, sending the step's `{"op":"ping"}` and timing the pongs. Once the user's last
//! step is done the connection stays open `hold` longer, and until `min_events` events have
//! come (at most the step's timeout more), then closes with 1000 and waits for the server's
//! close. The protocol is [`crate::ws::proto`]'s (sans IO); this is the socket shell.

use super::spec::WsStep;
use super::user::status_kind;
use super::{sleep_until, Ctx, Signal};
use crate::ws::proto::{self, Inbound};
use crate::ws::session::{connect_error_kind, read_some, upgrade, write_all, Upgrade};
use bytes::BytesMut;
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use sdsim_net::ws::frame::{self, Decoder, Limits, Opcode, Role};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A held connection, as its user sees it. Dropping it (a user that failed or was stopped)
/// tells the connection to close at once.
pub(super) struct Held {
    link: Rc<Link>,
    task: Option<monoio::task::JoinHandle<Result<(), &'static str>>>,
    /// The request type of the step that opened it.
    pub(super) step_type: usize,
}

/// What the user tells the holding task.
struct Link {
    changed: Signal,
    /// The user's last step is done: hold, then close.
    finish: Cell<bool>,
    /// The user is gone: close now.
    abort: Cell<bool>,
}

impl Held {
    /// Holds for the step's `hold`, waits for its `min_events`, closes; the error kind if the
    /// connection failed at any point since it was subscribed.
    pub(super) async fn finish(mut self) -> Result<(), &'static str> {
        self.link.finish.set(true);
        self.link.changed.notify();
        match self.task.take() {
            Some(task) => task.await,
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.link.abort.set(true);
            self.link.changed.notify();
        }
    }
}

/// An upgraded connection.
struct Conn {
    stream: TcpStreamPoll,
    /// Bytes received and not decoded yet.
    buf: BytesMut,
    decoder: Decoder,
    /// Events received since the upgrade.
    events: u64,
}

/// What the holding task needs of its step.
struct HoldPlan {
    hold: Duration,
    timeout: Duration,
    min_events: u64,
    event_type: usize,
    ping_every: Option<Duration>,
    ping_type: Option<usize>,
}

/// The pings of a held connection: one every `every` from the subscription, each pong timed
/// from its ping's intended time (pongs come in order).
struct Pings {
    every: Duration,
    next: Instant,
    outstanding: VecDeque<Instant>,
}

impl Pings {
    /// Pings not answered beyond this are counted as timeouts and forgotten.
    const MAX_OUTSTANDING: usize = 64;
}

fn io_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => "closed",
        _ => "io",
    }
}

async fn send(
    ctx: &Ctx,
    conn: &mut Conn,
    opcode: Opcode,
    payload: &[u8],
) -> Result<(), &'static str> {
    let mask = ctx.rng.borrow_mut().mask();
    let bytes = proto::client_frame(opcode, payload, mask);
    write_all(&mut conn.stream, &bytes)
        .await
        .map_err(|e| io_kind(&e))
}

/// The next message, reading as needed.
async fn next_message(ctx: &Ctx, conn: &mut Conn) -> Result<Inbound, &'static str> {
    loop {
        if let Some(m) = conn.decoder.decode(&mut conn.buf).map_err(|_| "protocol")? {
            return Ok(proto::classify(m));
        }
        let n = read_some(&mut conn.stream, &ctx.scratch, &mut conn.buf)
            .await
            .map_err(|e| io_kind(&e))?;
        if n == 0 {
            return Err("closed");
        }
    }
}

/// Connects, upgrades and subscribes (the step), then leaves the connection to its holding
/// task. `t`: the step's request type.
pub(super) async fn open(
    ctx: &Rc<Ctx>,
    step: &WsStep,
    slots: &[String],
    t: usize,
    timeout: Duration,
) -> Result<Held, &'static str> {
    let tcp = monoio::net::TcpStream::connect(step.addr)
        .await
        .map_err(|e| connect_error_kind(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = tcp.into_poll_io().map_err(|e| io_kind(&e))?;
    let key = ctx.rng.borrow_mut().handshake_key();
    let token = step.bearer.as_ref().map(|b| b.render(slots));
    let path = step.path.render(slots);
    let request = proto::upgrade_request(&path, &step.host, &key, token.as_deref());
    let buf = match upgrade(&mut stream, &ctx.scratch, &request, &key).await {
        Ok(buf) => buf,
        Err(Upgrade::Io(e)) => return Err(io_kind(&e)),
        Err(Upgrade::Status(s)) => return Err(status_kind("handshake", s)),
        Err(Upgrade::Invalid) => return Err("handshake"),
    };
    let mut conn = Conn {
        stream,
        buf,
        decoder: Decoder::new(Role::Client, Limits::default(), false),
        events: 0,
    };
    for channel in &step.subscribe {
        let text = proto::subscribe(&channel.render(slots));
        send(ctx, &mut conn, Opcode::Text, text.as_bytes()).await?;
    }
    let mut acks = 0;
    while acks < step.subscribe.len() {
        match next_message(ctx, &mut conn).await? {
            Inbound::Subscribed { .. } => acks += 1,
            Inbound::Error(_) => return Err("subscribe_refused"),
            Inbound::Closed(_) => return Err("closed"),
            Inbound::Ping(payload) => send(ctx, &mut conn, Opcode::Pong, &payload).await?,
            Inbound::Event { .. } => {
                conn.events += 1;
                ctx.tally.borrow_mut().events[t] += 1;
            }
            _ => {}
        }
    }
    let link = Rc::new(Link {
        changed: Signal::new(),
        finish: Cell::new(false),
        abort: Cell::new(false),
    });
    let plan = HoldPlan {
        hold: step.hold,
        timeout,
        min_events: step.min_events,
        event_type: t,
        ping_every: step.ping_every,
        ping_type: step.ping_type,
    };
    let task = monoio::spawn(hold(Rc::clone(ctx), conn, Rc::clone(&link), plan));
    Ok(Held {
        link,
        task: Some(task),
        step_type: t,
    })
}

/// The holding task: until the user finishes (then hold, events, close) or goes away.
async fn hold(
    ctx: Rc<Ctx>,
    mut conn: Conn,
    link: Rc<Link>,
    plan: HoldPlan,
) -> Result<(), &'static str> {
    let mut pings = plan.ping_every.map(|every| Pings {
        every,
        next: Instant::now() + every,
        outstanding: VecDeque::new(),
    });
    let result = hold_loop(&ctx, &mut conn, &link, &plan, &mut pings).await;
    if let (Some(p), Some(t)) = (&pings, plan.ping_type) {
        let mut tally = ctx.tally.borrow_mut();
        for _ in &p.outstanding {
            tally.error(t, "timeout");
        }
    }
    if result.is_ok() {
        close(&ctx, &mut conn).await;
    }
    result
}

async fn hold_loop(
    ctx: &Ctx,
    conn: &mut Conn,
    link: &Link,
    plan: &HoldPlan,
    pings: &mut Option<Pings>,
) -> Result<(), &'static str> {
    let mut finish_from: Option<Instant> = None;
    loop {
        let seen = link.changed.generation();
        while let Some(m) = conn.decoder.decode(&mut conn.buf).map_err(|_| "protocol")? {
            match proto::classify(m) {
                Inbound::Event { .. } => {
                    conn.events += 1;
                    ctx.tally.borrow_mut().events[plan.event_type] += 1;
                }
                Inbound::Pong => {
                    let due = pings.as_mut().and_then(|p| p.outstanding.pop_front());
                    if let (Some(due), Some(t)) = (due, plan.ping_type) {
                        ctx.tally.borrow_mut().complete(t, due.elapsed());
                    }
                }
                Inbound::Ping(payload) => send(ctx, conn, Opcode::Pong, &payload).await?,
                Inbound::Closed(_) => return Err("closed"),
                Inbound::Error(_) => return Err("server_error"),
                _ => {}
            }
        }
        if link.abort.get() {
            return Ok(());
        }
        let now = Instant::now();
        if link.finish.get() && finish_from.is_none() {
            finish_from = Some(now);
        }
        let mut wake_at = None;
        let mut pinging = true;
        if let Some(from) = finish_from {
            let held_enough = now >= from + plan.hold;
            let events = conn.events >= plan.min_events;
            let answered = pings.as_ref().is_none_or(|p| p.outstanding.is_empty());
            if held_enough && events && answered {
                return Ok(());
            }
            if now >= from + plan.hold + plan.timeout {
                // Pings still unanswered are counted as timeouts by the caller.
                return if events {
                    Ok(())
                } else {
                    Err("events_missing")
                };
            }
            wake_at = Some(if held_enough {
                from + plan.hold + plan.timeout
            } else {
                from + plan.hold
            });
            // No new pings once the hold is over: only the answers are awaited.
            pinging = !held_enough;
        }
        if let (Some(p), Some(t), true) = (pings.as_mut(), plan.ping_type, pinging) {
            if now >= p.next {
                let due = p.next;
                p.next += p.every;
                {
                    let mut tally = ctx.tally.borrow_mut();
                    tally.counters[t].sent += 1;
                    tally.counters[t].late += u64::from(now - due > p.every);
                    if p.outstanding.len() >= Pings::MAX_OUTSTANDING {
                        p.outstanding.pop_front();
                        tally.error(t, "timeout");
                    }
                }
                p.outstanding.push_back(due);
                send(ctx, conn, Opcode::Text, proto::PING.as_bytes()).await?;
                continue;
            }
            wake_at = Some(wake_at.map_or(p.next, |w: Instant| w.min(p.next)));
        }
        let mut read = None;
        monoio::select! {
            n = read_some(&mut conn.stream, &ctx.scratch, &mut conn.buf) => read = Some(n),
            _ = wake(wake_at) => {}
            _ = link.changed.changed(seen) => {}
        }
        match read {
            Some(Ok(0)) => return Err("closed"),
            Some(Err(e)) => return Err(io_kind(&e)),
            _ => {}
        }
    }
}

/// Completes at `at`; never without one.
async fn wake(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends a close (1000) and waits, briefly, for the server's.
async fn close(ctx: &Ctx, conn: &mut Conn) {
    let body = frame::close_body(1000, "flow done");
    let sent = monoio::time::timeout(
        Duration::from_millis(200),
        send(ctx, conn, Opcode::Close, &body),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let answer = async {
        while !matches!(
            next_message(ctx, conn).await,
            Ok(Inbound::Closed(_)) | Err(_)
        ) {}
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), answer).await;
}
