//! Simulation lifecycle events (`simulation:events:{started,completed,stopped,failed}`) seen
//! by an admin's WebSocket client, with when each arrived; runs started from threads of their
//! own (the answer can take as long as the run).

use super::http::{agent, call};
use crate::pin_current;
use anyhow::bail;
use sdsim_loadtest::ws::WsClient;
use sdsim_net::ws::frame::{Message, Opcode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub(super) struct SimEvent {
    pub(super) event: String,
    pub(super) id: String,
    pub(super) user: String,
    pub(super) at: Instant,
}

#[derive(Default)]
pub(super) struct MonitorState {
    pub(super) events: Vec<SimEvent>,
    /// Ended runs are announced to their user's submitter.
    pub(super) routes: HashMap<String, mpsc::Sender<()>>,
}

/// A WebSocket client subscribed to `simulation:events:{started,completed,stopped,failed}`.
pub(super) struct Monitor {
    pub(super) state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Monitor {
    /// Connects from a monoio thread pinned to `cpu` with the admin `token` and subscribes;
    /// returns once every subscription is confirmed.
    pub(super) fn start(gateway: SocketAddr, token: &str, cpu: usize) -> anyhow::Result<Monitor> {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (st, sp, token) = (Arc::clone(&state), Arc::clone(&stop), token.to_string());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            pin_current(cpu);
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()?;
            rt.block_on(async move {
                let host = gateway.to_string();
                let mut ws = WsClient::connect(gateway, &host, "/ws", Some(&token)).await?;
                for e in ["started", "completed", "stopped", "failed"] {
                    let subscribe =
                        json!({"op": "subscribe", "channel": format!("simulation:events:{e}")});
                    ws.send_text(&subscribe.to_string()).await?;
                }
                // Every subscription confirmed, or the server's refusal.
                let mut confirmed = 0;
                while confirmed < 4 {
                    let text = match ws.recv().await {
                        Ok(Message::Text(text)) => text,
                        Ok(Message::Ping(payload)) => {
                            ws.send(Opcode::Pong, &payload).await?;
                            continue;
                        }
                        Ok(Message::Binary(_) | Message::Pong(_)) => continue,
                        Ok(Message::Close(..)) | Err(_) => {
                            bail!("the monitor's WebSocket closed while subscribing")
                        }
                    };
                    let v: Value = serde_json::from_slice(&text).unwrap_or_default();
                    match v["op"].as_str() {
                        Some("subscribed") => confirmed += 1,
                        Some("error") => bail!("the monitor's subscription was refused: {v}"),
                        _ => {}
                    }
                }
                let _ = ready_tx.send(());
                while !sp.load(Ordering::Relaxed) {
                    // `recv` is cancel-safe: a timeout only looks at the stop flag again.
                    let Ok(next) =
                        monoio::time::timeout(Duration::from_millis(50), ws.recv()).await
                    else {
                        continue;
                    };
                    let text = match next {
                        Ok(Message::Text(text)) => text,
                        Ok(Message::Ping(payload)) => {
                            ws.send(Opcode::Pong, &payload).await?;
                            continue;
                        }
                        Ok(Message::Binary(_) | Message::Pong(_)) => continue,
                        Ok(Message::Close(..)) | Err(_) => bail!("the monitor's WebSocket closed"),
                    };
                    let at = Instant::now();
                    let v: Value = serde_json::from_slice(&text).unwrap_or_default();
                    if v["op"] != "event" {
                        continue;
                    }
                    let d = &v["data"];
                    let e = SimEvent {
                        event: d["event"].as_str().unwrap_or("").into(),
                        id: d["simulation_id"].as_str().unwrap_or("").into(),
                        user: d["user_id"].as_str().unwrap_or("").into(),
                        at,
                    };
                    let mut s = st.lock().unwrap();
                    if e.event != "started" {
                        if let Some(tx) = s.routes.get(&e.user) {
                            let _ = tx.send(());
                        }
                    }
                    s.events.push(e);
                }
                Ok::<(), anyhow::Error>(())
            })
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread may be waiting on the server: tell it to stop, do not wait for it.
                stop.store(true, Ordering::Relaxed);
                bail!("the monitor did not subscribe: no answer within 10 s");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let why = match thread.join() {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "it stopped".into(),
                    Err(_) => "its thread panicked".into(),
                };
                bail!("the monitor did not subscribe: {why}");
            }
        }
        Ok(Monitor {
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn events(&self) -> Vec<SimEvent> {
        self.state.lock().unwrap().events.clone()
    }

    /// Waits until `done(events)` or `timeout`; whether it happened.
    pub(super) fn wait(&self, timeout: Duration, done: impl Fn(&[SimEvent]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.state.lock().unwrap().events) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn ended(e: &SimEvent) -> bool {
    matches!(e.event.as_str(), "completed" | "stopped" | "failed")
}

/// Starts a run from its own thread (the answer can take as long as the run: see the report).
pub(super) fn submit_async(
    gateway: SocketAddr,
    token: &str,
    body: Value,
) -> std::thread::JoinHandle<anyhow::Result<(u16, Value)>> {
    let token = token.to_string();
    std::thread::spawn(move || {
        call(
            &agent(),
            "POST",
            &format!("http://{gateway}/api/simulations"),
            Some(&token),
            Some(&body),
        )
    })
}
