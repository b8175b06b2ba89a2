//! One virtual user: its steps in order, each under its timeout, the values it captured, and
//! its connections — one HTTP/1.1 keep-alive connection per server (as a browser keeps one),
//! one HTTP/2 connection per gRPC server (its own, so a user's connect cost and failures are
//! its own, as for a separate client process), the WebSocket connections it holds.

use super::report::StepOutcome;
use super::spec::{Action, Capture, GrpcStep, HttpStep, Step};
use super::template::{self, Slots, RUN_SLOT, USER_SLOT};
use super::ws::Held;
use super::{sleep_until, Ctx, Signal};
use crate::client::{Connection, ExchangeError};
use crate::run::{build_request, grpc_error_kind};
use crate::ws::session::connect_error_kind;
use sdsim_net::grpc::client::{CallOptions, Client};
use sdsim_net::grpc::Code;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// What a user holds while it runs.
struct User {
    slots: Slots,
    http: Vec<(SocketAddr, Connection)>,
    grpc: Vec<(SocketAddr, Client)>,
    /// WebSocket connections, with the step that opened them.
    held: Vec<(usize, Held)>,
}

/// Runs user `index`, due at `intended` (`late`: started late), to its end or until stopped.
pub(super) async fn run(ctx: Rc<Ctx>, index: u64, intended: Instant, late: bool) {
    let stop = Rc::new(Signal::new());
    ctx.watch(&stop);
    let seen = stop.generation();
    let mut slots = vec![String::new(); ctx.load.flow.slots];
    slots[USER_SLOT] = index.to_string();
    slots[RUN_SLOT] = ctx.load.run_id.clone();
    let mut user = User {
        slots,
        http: Vec::new(),
        grpc: Vec::new(),
        held: Vec::new(),
    };
    let at = Cell::new(0usize);
    let outcome = monoio::select! {
        done = steps(&ctx, &mut user, index, intended, late, &at) => Some(done),
        _ = stop.changed(seen) => None,
    };
    {
        let mut tally = ctx.tally.borrow_mut();
        match outcome {
            Some(true) => {
                tally.users.completed += 1;
                let flow = ctx.load.flow.flow_type();
                tally.complete(flow, intended.elapsed());
            }
            Some(false) => tally.users.failed += 1,
            None => {
                tally.users.unfinished += 1;
                tally.unfinished_by_step[at.get()] += 1;
            }
        }
    }
    // Closes the connections (held WebSockets are told to close).
    drop(user);
    ctx.user_ended();
}

/// The steps, then the held connections' close; `false` when a step failed (counted).
async fn steps(
    ctx: &Rc<Ctx>,
    user: &mut User,
    index: u64,
    intended: Instant,
    late: bool,
    at: &Cell<usize>,
) -> bool {
    let flow = &ctx.load.flow;
    let mut issued_at = vec![intended; flow.steps.len()];
    for (i, step) in flow.steps.iter().enumerate() {
        at.set(i);
        // The first step is charged from the user's intended arrival (no coordinated omission).
        let issued = if i == 0 { intended } else { Instant::now() };
        issued_at[i] = issued;
        if let Some(t) = step.measured {
            let mut tally = ctx.tally.borrow_mut();
            tally.counters[t].sent += 1;
            tally.counters[t].late += u64::from(i == 0 && late);
        }
        let result = match &step.action {
            Action::Think(pause) => {
                sleep_until(issued + *pause).await;
                Ok(())
            }
            _ => monoio::time::timeout(step.timeout, perform(ctx, user, i, step))
                .await
                .unwrap_or(Err("timeout")),
        };
        if let Some(t) = step.measured {
            send_outcome(ctx, user, index, i, issued, result);
            if !record(ctx, i, t, result, issued) {
                return false;
            }
        }
    }
    // The connections held since their step: each closes after its hold.
    while !user.held.is_empty() {
        let (i, held) = user.held.remove(0);
        at.set(i);
        let t = held.step_type;
        let result = held.finish().await;
        if result.is_err() {
            send_outcome(ctx, user, index, i, issued_at[i], result);
        }
        if let Err(kind) = result {
            ctx.tally.borrow_mut().error(t, kind);
            ctx.tally.borrow_mut().failed_by_step[i] += 1;
            return false;
        }
    }
    true
}

/// Sends step `i`'s outcome to the load's outcome stream, when it has one.
fn send_outcome(
    ctx: &Ctx,
    user: &User,
    index: u64,
    i: usize,
    issued: Instant,
    result: Result<(), &'static str>,
) {
    let Some(outcomes) = &ctx.load.outcomes else {
        return;
    };
    let captured = match (&result, &ctx.load.flow.steps[i].action) {
        (Ok(()), Action::Http(HttpStep { captures, .. }))
        | (Ok(()), Action::Grpc(GrpcStep { captures, .. })) => captures
            .iter()
            .map(|c| (c.name.clone(), user.slots[c.slot].clone()))
            .collect(),
        _ => Vec::new(),
    };
    // The receiver may have gone (a caller that stopped listening): the run goes on.
    let _ = outcomes.send(StepOutcome {
        user: index,
        step: i,
        issued,
        ended: Instant::now(),
        error: result.err(),
        captured,
    });
}

/// Counts a step's outcome against type `t`; `false` when it failed.
fn record(
    ctx: &Ctx,
    i: usize,
    t: usize,
    result: Result<(), &'static str>,
    issued: Instant,
) -> bool {
    let mut tally = ctx.tally.borrow_mut();
    match result {
        Ok(()) => {
            tally.complete(t, issued.elapsed());
            true
        }
        Err(kind) => {
            tally.error(t, kind);
            tally.failed_by_step[i] += 1;
            false
        }
    }
}

async fn perform(
    ctx: &Rc<Ctx>,
    user: &mut User,
    i: usize,
    step: &Step,
) -> Result<(), &'static str> {
    match &step.action {
        Action::Http(http) => perform_http(user, http).await,
        Action::Grpc(grpc) => perform_grpc(user, grpc, step).await,
        Action::Ws(ws) => {
            let t = step.measured.unwrap_or_default();
            let held = super::ws::open(ctx, ws, &user.slots, t, step.timeout).await?;
            user.held.push((i, held));
            Ok(())
        }
        Action::Think(_) => Ok(()),
    }
}

/// The error kind of a status no step expected: `status_404`, ... (interned per generator
/// thread, with no lock between threads: at most one string per status code and thread).
pub(super) fn status_kind(prefix: &str, status: u16) -> &'static str {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static KINDS: RefCell<HashMap<(String, u16), &'static str>> = RefCell::default();
    }
    KINDS.with(|kinds| {
        *kinds
            .borrow_mut()
            .entry((prefix.to_string(), status))
            .or_insert_with(|| Box::leak(format!("{prefix}_{status}").into_boxed_str()))
    })
}

/// Fills the captures' slots from `document`; `capture_missing` when one is not there.
fn take_captures(
    captures: &[Capture],
    document: impl FnOnce() -> Option<serde_json::Value>,
    slots: &mut Slots,
) -> Result<(), &'static str> {
    if captures.is_empty() {
        return Ok(());
    }
    let document = document().ok_or("capture_missing")?;
    for c in captures {
        slots[c.slot] = template::capture(&document, &c.pointer).ok_or("capture_missing")?;
    }
    Ok(())
}

async fn perform_http(user: &mut User, step: &HttpStep) -> Result<(), &'static str> {
    let slots = &user.slots;
    let path = step.path.render(slots);
    let headers: Vec<String> = step.headers.iter().map(|h| h.render(slots)).collect();
    let body = step
        .body
        .as_ref()
        .map(|b| b.render(slots))
        .unwrap_or_default();
    let request = build_request(
        &step.method,
        &step.authority,
        &path,
        &headers,
        body.as_bytes(),
    );
    let slot = match user.http.iter().position(|(a, _)| *a == step.addr) {
        Some(slot) => slot,
        None => {
            let conn = Connection::connect(step.addr)
                .await
                .map_err(|e| connect_error_kind(&e))?;
            user.http.push((step.addr, conn));
            user.http.len() - 1
        }
    };
    let result = user.http[slot].1.exchange_with_body(request).await;
    let (exchange, body) = match result {
        Ok(done) => done,
        Err(e) => {
            user.http.swap_remove(slot);
            return Err(match e {
                ExchangeError::Io(_) => "io",
                ExchangeError::Parse(_) => "parse",
            });
        }
    };
    if !exchange.reusable {
        user.http.swap_remove(slot);
    }
    let status = exchange.status;
    let pass = if step.expect.is_empty() {
        (200..300).contains(&status)
    } else {
        step.expect.contains(&status)
    };
    if !pass {
        return Err(status_kind("status", status));
    }
    take_captures(
        &step.captures,
        || serde_json::from_slice(&body).ok(),
        &mut user.slots,
    )
}

async fn perform_grpc(user: &mut User, grpc: &GrpcStep, step: &Step) -> Result<(), &'static str> {
    let Some((input, output)) = &grpc.messages else {
        return Err("grpc_method_unknown");
    };
    let request = grpc.request.render(&user.slots);
    let message = crate::grpc::encode_json(input, &request).map_err(|_| "request_json")?;
    let mut options = CallOptions::timeout(step.timeout);
    for (name, value) in &grpc.metadata {
        let value = value.render(&user.slots);
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            options.metadata.insert(k, v);
        }
    }
    let client = match user.grpc.iter().position(|(a, _)| *a == grpc.addr) {
        Some(slot) => &user.grpc[slot].1,
        None => {
            user.grpc.push((grpc.addr, Client::new(grpc.addr)));
            &user.grpc[user.grpc.len() - 1].1
        }
    };
    let (code, reply) = match client.unary_raw(&grpc.path, &message, options).await {
        Ok(bytes) => (Code::Ok, Some(bytes)),
        Err(status) => (status.code, None),
    };
    if !grpc.expect.contains(&code) {
        return Err(grpc_error_kind(code));
    }
    take_captures(
        &grpc.captures,
        || reply.and_then(|b| crate::grpc::decode_json(output, &b).ok()),
        &mut user.slots,
    )
}
