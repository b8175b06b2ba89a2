//! One shard's pool of HTTP/2 connections to one target instance: its connections with their
//! in-flight counts, its breaker and latency average, and the background growth and shrinking
//! that [`crate::sizing::decide`] asks for.

use crate::balance::{least_loaded, Ewma};
use crate::breaker::{Breaker, BreakerPolicy, BreakerState};
use crate::config::MeshConfig;
use crate::directory::{Directory, Instance, Service};
use crate::sizing::{decide, utilisation, Decision, PoolLoad};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_net::grpc::client::{Client, Connect};
use sdsim_net::grpc::{Code, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One connection of a pool. It holds one slot of the process-wide cap until dropped.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) in_flight: Cell<u32>,
    directory: Arc<Directory>,
    service: Service,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.directory.connections().close(self.service);
    }
}

/// Where a pool's numbers are recorded.
#[derive(Clone)]
pub(crate) struct Labels {
    pub(crate) metrics: Option<Rc<Metrics>>,
    pub(crate) service: Service,
    pub(crate) instance: &'static str,
}

impl Labels {
    pub(crate) fn key(&self, name: &'static str) -> Key {
        Key::with2(
            name,
            ("service", LabelValue::Str(self.service.registry_name())),
            ("instance", LabelValue::Str(self.instance)),
        )
    }

    fn gauge(&self, name: &'static str, value: i64) {
        if let Some(m) = &self.metrics {
            m.gauge_set(self.key(name), value);
        }
    }

    pub(crate) fn inc(&self, name: &'static str) {
        if let Some(m) = &self.metrics {
            m.inc(self.key(name), 1);
        }
    }

    fn record(&self, name: &'static str, took: Duration) {
        if let Some(m) = &self.metrics {
            m.record_us(self.key(name), took.as_micros() as u64);
        }
    }

    fn transition(&self, to: BreakerState) {
        if let Some(m) = &self.metrics {
            let key = Key::with3(
                "sdsim_upstream_breaker_transitions_total",
                ("service", LabelValue::Str(self.service.registry_name())),
                ("instance", LabelValue::Str(self.instance)),
                ("to", LabelValue::Str(to.name())),
            );
            m.inc(key, 1);
            // Summed over shards: how many shards have this instance's breaker open.
            m.gauge_set(
                self.key("sdsim_upstream_breaker_open"),
                i64::from(to == BreakerState::Open),
            );
        }
    }
}

/// Opens `conn`'s connection (TCP connect, TLS and HTTP/2 handshakes) and records how long a
/// successful one took, or that it failed: a connect is part of a call's latency whenever a
/// pool is empty or short, and seed 004 asks for a new connection ready in under 500 ms.
async fn open(labels: &Labels, conn: &Conn) -> Result<(), Status> {
    let started = Instant::now();
    let opened = conn.client.connect_now().await;
    match &opened {
        Ok(()) => labels.record("sdsim_upstream_connect_seconds", started.elapsed()),
        Err(_) => labels.inc("sdsim_upstream_connect_failures_total"),
    }
    opened
}

/// A metric label for an instance id: interned once per distinct id (metric labels are
/// static strings; a process sees a bounded set of instances).
fn intern(id: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.get(id) {
        return s;
    }
    let s: &'static str = Box::leak(id.to_string().into_boxed_str());
    seen.insert(s);
    s
}

/// One shard's connections to one instance.
pub(crate) struct Pool {
    pub(crate) instance: RefCell<Instance>,
    pub(crate) addr: SocketAddr,
    /// TLS and keepalive of every connection this pool opens.
    connect: Connect,
    pub(crate) labels: Labels,
    directory: Arc<Directory>,
    config: Rc<MeshConfig>,
    bounds: (usize, usize),
    conns: RefCell<Vec<Rc<Conn>>>,
    opening: Cell<bool>,
    /// A call is opening the pool's first connection; the others wait for it.
    call_connecting: Cell<bool>,
    connected: tokio::sync::Notify,
    /// Why the last connect failed (what the calls that waited for it answer).
    connect_error: RefCell<Option<Status>>,
    pub(crate) queued: Cell<usize>,
    pub(crate) in_flight: Cell<u32>,
    pub(crate) breaker: RefCell<Breaker>,
    pub(crate) latency: Cell<Ewma>,
    low_since: Cell<Option<Instant>>,
    short: Cell<bool>,
    /// Set by a connection whose keepalive ping was late; see [`Pool::take_late_ping`].
    late_ping: Rc<Cell<bool>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.set_short(false);
        self.labels.gauge("sdsim_upstream_pool_connections", 0);
        self.labels.gauge("sdsim_upstream_in_flight", 0);
        self.labels.gauge("sdsim_upstream_breaker_open", 0);
    }
}

impl Pool {
    pub(crate) fn new(
        instance: Instance,
        addr: SocketAddr,
        directory: Arc<Directory>,
        config: Rc<MeshConfig>,
        bounds: (usize, usize),
        metrics: Option<Rc<Metrics>>,
        service: Service,
    ) -> Pool {
        let policy = BreakerPolicy {
            failures: config.breaker_failures,
            error_rate: config.breaker_error_rate,
            window: config.breaker_window,
            min_calls: config.breaker_min_calls,
            cooldown: config.breaker_cooldown,
        };
        let labels = Labels {
            metrics,
            service,
            instance: intern(&instance.id),
        };
        // Present from the start, so `/health/services` tells a closed breaker from an instance
        // this process does not call.
        labels.gauge("sdsim_upstream_breaker_open", 0);
        Pool {
            instance: RefCell::new(instance),
            addr,
            connect: Connect::default(),
            labels,
            directory,
            config,
            bounds,
            conns: RefCell::new(Vec::new()),
            opening: Cell::new(false),
            call_connecting: Cell::new(false),
            connected: tokio::sync::Notify::new(),
            connect_error: RefCell::new(None),
            queued: Cell::new(0),
            in_flight: Cell::new(0),
            breaker: RefCell::new(Breaker::new(policy, Instant::now())),
            latency: Cell::new(Ewma::default()),
            low_since: Cell::new(None),
            short: Cell::new(false),
            late_ping: Rc::new(Cell::new(false)),
        }
    }

    /// The pool, opening its connections as `connect` says (TLS, keepalive).
    pub(crate) fn with_connect(mut self, connect: Connect) -> Pool {
        self.connect = connect;
        self
    }

    /// Open connections.
    pub(crate) fn size(&self) -> usize {
        self.conns.borrow().len()
    }

    /// A new connection of this pool, holding a cap slot; `None` when the cap is reached.
    fn new_conn(&self) -> Option<Rc<Conn>> {
        let service = self.labels.service;
        let open = self.directory.connections();
        open.try_open(service, self.config.max_connections)
            .then(|| {
                let client = Client::with_connect(self.addr, self.connect.clone());
                let late = Rc::clone(&self.late_ping);
                client.on_late_ping(Rc::new(move || late.set(true)));
                let labels = self.labels.clone();
                client.on_keepalive_drop(Rc::new(move || {
                    labels.inc("sdsim_upstream_keepalive_drops_total")
                }));
                Rc::new(Conn {
                    client,
                    in_flight: Cell::new(0),
                    directory: Arc::clone(&self.directory),
                    service,
                })
            })
    }

    /// Whether a ping of one of its connections was late since the last look (and forgets it).
    pub(crate) fn take_late_ping(&self) -> bool {
        self.late_ping.replace(false)
    }

    /// Opens the breaker now: the instance stopped answering pings (frozen or cut off), and
    /// calls sent to it would wait out their deadline.
    pub(crate) fn eject(&self, now: Instant) {
        tracing::warn!(
            service = self.labels.service.registry_name(),
            instance = self.labels.instance,
            "mesh: the instance is late answering pings; its breaker opens"
        );
        if let Some(to) = self.breaker.borrow_mut().trip(now) {
            self.transition(to);
        }
    }

    fn add(&self, conn: Rc<Conn>) {
        self.conns.borrow_mut().push(conn);
        self.labels
            .gauge("sdsim_upstream_pool_connections", self.size() as i64);
    }

    fn least_loaded(&self) -> Option<Rc<Conn>> {
        let conns = self.conns.borrow();
        let loads: Vec<u32> = conns.iter().map(|c| c.in_flight.get()).collect();
        least_loaded(&loads).map(|i| Rc::clone(&conns[i]))
    }

    /// The end of a connect: the connection joins the pool, or its failure is kept; either
    /// way the calls waiting for it go on.
    fn connected_or(&self, conn: &Rc<Conn>, opened: &Result<(), Status>) {
        match opened {
            Ok(()) => self.add(Rc::clone(conn)),
            Err(status) => *self.connect_error.borrow_mut() = Some(status.clone()),
        }
        self.connected.notify_waiters();
    }

    fn set_queued(&self, queued: usize) {
        self.queued.set(queued);
        self.labels.gauge("sdsim_upstream_waiting", queued as i64);
    }

    /// The least-loaded open connection. With none open, the first call opens one (unless
    /// the pool is opening one already) and the calls behind it wait for that connect (a call waits for one connect at most, and a
    /// burst on an empty pool opens one connection, not one per call); they count as queued.
    pub(crate) async fn connection(&self) -> Result<Rc<Conn>, Status> {
        if let Some(conn) = self.least_loaded() {
            return Ok(conn);
        }
        if self.call_connecting.get() || self.opening.get() {
            let connected = self.connected.notified();
            self.set_queued(self.queued.get() + 1);
            connected.await;
            self.set_queued(self.queued.get() - 1);
            return self.least_loaded().ok_or_else(|| {
                let why = self.connect_error.borrow().clone();
                why.unwrap_or_else(|| {
                    Status::new(
                        Code::Unavailable,
                        format!("{}: no connection could be opened", self.addr),
                    )
                })
                .not_sent()
            });
        }
        let conn = self.new_conn().ok_or_else(|| {
            // Lower-priority services see this pool short and give connections back.
            self.set_short(true);
            Status::new(
                Code::Unavailable,
                format!(
                    "{}: mesh.max_connections ({}) reached",
                    self.addr, self.config.max_connections
                ),
            )
            .not_sent()
        })?;
        self.call_connecting.set(true);
        self.set_queued(self.queued.get() + 1);
        let opened = open(&self.labels, &conn).await;
        self.set_queued(self.queued.get() - 1);
        self.call_connecting.set(false);
        self.connected_or(&conn, &opened);
        // No connection: the call never left.
        opened.map_err(Status::not_sent)?;
        Ok(conn)
    }

    /// A call's outcome: latency average, breaker; then whether the pool resizes.
    pub(crate) fn record(&self, now: Instant, latency: Duration, failed: bool) {
        if !failed {
            let mut l = self.latency.get();
            l.observe(latency, now);
            self.latency.set(l);
        }
        if let Some(to) = self.breaker.borrow_mut().record(now, !failed) {
            self.transition(to);
        }
    }

    pub(crate) fn transition(&self, to: BreakerState) {
        tracing::info!(
            service = self.labels.service.registry_name(),
            instance = self.labels.instance,
            state = to.name(),
            "mesh circuit breaker"
        );
        self.labels.transition(to);
    }

    pub(crate) fn in_flight_changed(&self) {
        self.labels
            .gauge("sdsim_upstream_in_flight", i64::from(self.in_flight.get()));
    }

    fn set_short(&self, short: bool) {
        if self.short.replace(short) != short {
            self.directory
                .connections()
                .set_short(self.labels.service, short);
        }
    }

    /// The load [`decide`] reads, at `now` (updating how long utilisation has been low).
    fn load(&self, now: Instant) -> PoolLoad {
        let mut load = PoolLoad {
            connections: self.size(),
            opening: self.opening.get(),
            in_flight: self.in_flight.get() as usize,
            queued: self.queued.get(),
            mean_latency: Some(Duration::from_micros(self.latency.get().micros(now) as u64))
                .filter(|d| !d.is_zero()),
            low_for: Duration::ZERO,
        };
        let low = utilisation(&load, self.config.streams_per_connection)
            < self.config.scale_down_utilisation;
        let since = match (low, self.low_since.get()) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, Some(t)) => Some(t),
        };
        self.low_since.set(since);
        load.low_for = since.map_or(Duration::ZERO, |t| now.duration_since(t));
        load
    }

    /// Applies the sizing decision once: opens a connection in the background, closes an
    /// idle one, or records that the pool is short. An instance whose breaker is open gets no
    /// new connection (they would only fail).
    pub(crate) fn resize(self: &Rc<Self>, now: Instant) {
        let load = self.load(now);
        let cap = self
            .directory
            .connections()
            .view(self.labels.service, self.config.max_connections);
        let decision = decide(&self.config, self.bounds, &load, &cap);
        self.set_short(decision == Decision::Short);
        match decision {
            Decision::Grow if self.breaker.borrow().state(now) == BreakerState::Closed => {
                self.grow()
            }
            Decision::Shrink => self.shrink(now),
            _ => {}
        }
    }

    fn grow(self: &Rc<Self>) {
        let Some(conn) = self.new_conn() else {
            self.set_short(true);
            return;
        };
        self.opening.set(true);
        let pool = Rc::downgrade(self);
        let labels = self.labels.clone();
        sdsim_core::runtime::spawn("mesh-pool-grow", async move {
            let opened = open(&labels, &conn).await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.opening.set(false);
            pool.connected_or(&conn, &opened);
            match opened {
                Ok(()) => {
                    // Keep going until the decision says enough (one connect at a time).
                    pool.resize(Instant::now());
                }
                Err(status) => {
                    tracing::debug!(addr = %pool.addr, %status, "mesh connection not opened");
                }
            }
        });
    }

    /// Closes one idle connection (the newest; none when every connection is busy).
    fn shrink(&self, now: Instant) {
        let mut conns = self.conns.borrow_mut();
        if let Some(i) = conns.iter().rposition(|c| c.in_flight.get() == 0) {
            conns.remove(i);
            drop(conns);
            // The next shrink waits for another quiet period.
            self.low_since.set(Some(now));
            self.labels
                .gauge("sdsim_upstream_pool_connections", self.size() as i64);
        }
    }
}
