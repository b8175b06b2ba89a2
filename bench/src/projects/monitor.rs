//! Simulation lifecycle events (`simulation:events:{started,completed,stopped,failed}`) seen
//! by an admin's WebSocket client, with when each arrived; runs started from threads of their
//! own (the answer can take as long as the run).

use super::http::{agent, call};
use crate::pin_current;
use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
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
    pub(super) fn start(gateway: SocketAddr, token: &str, cpu: usize) -> anyhow::Result<Monitor> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut request = format!("ws://{gateway}/ws").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            pin_current(cpu);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
                for e in ["started", "completed", "stopped", "failed"] {
                    ws.send(Message::text(
                        json!({"op": "subscribe", "channel": format!("simulation:events:{e}")})
                            .to_string(),
                    ))
                    .await?;
                }
                // Every subscription confirmed, or the server's refusal.
                let mut confirmed = 0;
                while confirmed < 4 {
                    let Some(Ok(Message::Text(text))) = ws.next().await else {
                        bail!("the monitor's WebSocket closed while subscribing");
                    };
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    match v["op"].as_str() {
                        Some("subscribed") => confirmed += 1,
                        Some("error") => bail!("the monitor's subscription was refused: {v}"),
                        _ => {}
                    }
                }
                let _ = ready_tx.send(());
                while !sp.load(Ordering::Relaxed) {
                    let Ok(next) = tokio::time::timeout(Duration::from_millis(50), ws.next()).await
                    else {
                        continue;
                    };
                    let text = match next {
                        Some(Ok(Message::Text(text))) => text,
                        Some(_) => continue,
                        None => bail!("the monitor's WebSocket closed"),
                    };
                    let at = Instant::now();
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
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
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let why = match thread.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 10 s".into(),
            };
            bail!("the monitor did not subscribe: {why}");
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
