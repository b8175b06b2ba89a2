//! A target: one service as one shard calls it. It reads the service's instances from the
//! [`Directory`] (again only when its generation moved), keeps a [`Pool`] per instance, picks
//! an instance per call by power of two choices among those whose breaker admits calls, and
//! retries on another instance what provably did not start or is an idempotent read, within
//! the retry budget.

use crate::balance::{pick, InstanceLoad, XorShift};
use crate::breaker::Admission;
use crate::budget::RetryBudget;
use crate::config::MeshConfig;
use crate::directory::{Directory, Instance, Service, Source};
use crate::pool::{Conn, Pool};
use bytes::Bytes;
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_net::grpc::client::{CallOptions, Connect, Responses};
use sdsim_net::grpc::{Code, Status};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the method at `path` only reads, so that a call of it that failed with
/// UNAVAILABLE may be sent again to another instance: `Get*`, `List*`, `HealthCheck`,
/// `ValidateToken` (seed 004's reads), and the standard health check.
pub fn is_idempotent_read(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or("");
    method.starts_with("Get")
        || method.starts_with("List")
        || matches!(method, "HealthCheck" | "ValidateToken" | "Check")
}

/// Whether an outcome counts against the instance's breaker: it did not answer, or not in
/// time. Application errors (not found, invalid, denied) are answers.
fn is_failure(status: &Status) -> bool {
    status.unsent
        || matches!(
            status.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
        )
}

/// Opens the breaker of each instance whose ping was late, as long as another instance takes
/// calls (as Envoy's outlier detection never ejects every host): with none left, a slow but
/// living instance keeps its calls rather than every call failing at once.
fn eject_late(pools: &[Rc<Pool>], now: Instant) {
    for (i, pool) in pools.iter().enumerate() {
        if !pool.take_late_ping() {
            continue;
        }
        let others = pools.iter().enumerate().any(|(j, p)| {
            j != i && p.instance.borrow().is_healthy() && p.breaker.borrow().would_admit(now)
        });
        if others {
            pool.eject(now);
        } else {
            tracing::warn!(
                instance = pool.labels.instance,
                "mesh: a ping was late, but no other instance takes calls: kept"
            );
        }
    }
}

/// One service, as one shard calls it.
pub struct Target {
    service: Service,
    directory: Arc<Directory>,
    config: Rc<MeshConfig>,
    bounds: (usize, usize),
    report_gauges: bool,
    metrics: Option<Rc<Metrics>>,
    generation: Cell<Option<u64>>,
    pools: RefCell<Vec<Rc<Pool>>>,
    budget: RefCell<RetryBudget>,
    random: RefCell<Box<dyn FnMut() -> u64>>,
    ticking: Cell<bool>,
    connect: RefCell<Connect>,
}

impl Target {
    /// `service` as shard `shard` of `shards` calls it, its instances in `directory`; its
    /// numbers go to `metrics` (the process-wide ones, instances per service and discovery
    /// age, only from shard 0).
    pub fn new(
        service: Service,
        directory: Arc<Directory>,
        config: MeshConfig,
        shard: usize,
        shards: usize,
        metrics: Option<Rc<Metrics>>,
    ) -> Rc<Target> {
        let seed = (shard as u64 + 1).wrapping_mul(0x9E37_79B9)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = XorShift::new(seed);
        Rc::new(Target {
            service,
            directory,
            bounds: config.per_shard(shards),
            budget: RefCell::new(RetryBudget::new(
                config.retry_budget,
                config.retry_min_per_second,
                Instant::now(),
            )),
            config: Rc::new(config),
            report_gauges: shard == 0,
            metrics,
            generation: Cell::new(None),
            pools: RefCell::new(Vec::new()),
            random: RefCell::new(Box::new(move || rng.next_u64())),
            ticking: Cell::new(false),
            connect: RefCell::new(Connect::default()),
        })
    }

    /// How the connections of pools created from now on are opened: TLS (`grpc.client_tls_*`)
    /// and keepalive pings. Set it before the first call; the default is plaintext without
    /// keepalive.
    pub fn set_connect(&self, connect: Connect) {
        *self.connect.borrow_mut() = connect;
    }

    /// A target of one fixed address with its own directory and no metrics (tools and tests
    /// that reach one server).
    pub fn fixed(addr: std::net::SocketAddr, config: MeshConfig) -> Rc<Target> {
        Target::one(Service::Gateway, Instance::fixed(addr), config)
    }

    /// A target of one instance of `service` only, with its own directory and no metrics:
    /// for a call that must reach that instance (the one that holds a run), not any.
    pub fn one(service: Service, instance: Instance, config: MeshConfig) -> Rc<Target> {
        let directory = Arc::new(Directory::new());
        directory.set(service, vec![instance], Source::Static);
        Target::new(service, directory, config, 0, 1, None)
    }

    /// Replaces the random source of the balancer (deterministic tests).
    pub fn set_random(&self, random: Box<dyn FnMut() -> u64>) {
        *self.random.borrow_mut() = random;
    }

    /// The service it calls.
    pub fn service(&self) -> Service {
        self.service
    }

    /// This shard's breaker of each instance, by instance id, after looking at late pings.
    pub fn breakers(&self) -> Vec<(String, crate::BreakerState)> {
        let now = Instant::now();
        let pools = self.pools.borrow();
        eject_late(&pools, now);
        pools
            .iter()
            .map(|p| {
                (
                    p.instance.borrow().id.clone(),
                    p.breaker.borrow().state(now),
                )
            })
            .collect()
    }

    /// Open connections of this shard per instance id (tests, health).
    pub fn pool_sizes(&self) -> Vec<(String, usize)> {
        self.pools
            .borrow()
            .iter()
            .map(|p| (p.instance.borrow().id.clone(), p.size()))
            .collect()
    }

    fn inc(&self, name: &'static str) {
        if let Some(m) = &self.metrics {
            let key = Key::with1(
                name,
                ("service", LabelValue::Str(self.service.registry_name())),
            );
            m.inc(key, 1);
        }
    }

    /// Takes a new snapshot of the instances when the directory changed: pools of instances
    /// that stay are kept (with their connections and breakers), the others are dropped.
    fn refresh(&self) {
        let generation = self.directory.generation();
        if self.generation.get() == Some(generation) {
            return;
        }
        self.generation.set(Some(generation));
        let instances = self.directory.instances(self.service);
        let mut old = std::mem::take(&mut *self.pools.borrow_mut());
        let mut pools = Vec::with_capacity(instances.len());
        for instance in instances.iter() {
            let Some(addr) = instance.grpc else { continue };
            match old.iter().position(|p| p.addr == addr) {
                Some(i) => {
                    let pool = old.swap_remove(i);
                    *pool.instance.borrow_mut() = instance.clone();
                    pools.push(pool);
                }
                None => pools.push(Rc::new(
                    Pool::new(
                        instance.clone(),
                        addr,
                        Arc::clone(&self.directory),
                        Rc::clone(&self.config),
                        self.bounds,
                        self.metrics.clone(),
                        self.service,
                    )
                    .with_connect(self.connect.borrow().clone()),
                )),
            }
        }
        *self.pools.borrow_mut() = pools;
        if self.report_gauges {
            if let Some(m) = &self.metrics {
                let key = Key::with1(
                    "sdsim_upstream_instances",
                    ("service", LabelValue::Str(self.service.registry_name())),
                );
                m.gauge_set(key, instances.len() as i64);
            }
        }
    }

    /// Starts, once, the task that re-reads the directory and resizes idle pools (a pool
    /// that gets no call still shrinks, and an instance still gets its minimum).
    fn start_ticking(self: &Rc<Self>) {
        if self.ticking.replace(true) {
            return;
        }
        let period = (self.config.scale_down_after / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let target = Rc::downgrade(self);
        sdsim_core::runtime::spawn("mesh-target-tick", async move {
            loop {
                monoio::time::sleep(period).await;
                let Some(target) = target.upgrade() else {
                    return;
                };
                target.tick();
            }
        });
    }

    fn tick(&self) {
        self.refresh();
        let now = Instant::now();
        eject_late(&self.pools.borrow(), now);
        for pool in self.pools.borrow().iter() {
            pool.resize(now);
        }
        if self.report_gauges {
            if let (Some(m), Some(age)) = (&self.metrics, self.directory.age(self.service)) {
                let key = Key::with1(
                    "sdsim_upstream_discovery_age_ms",
                    ("service", LabelValue::Str(self.service.registry_name())),
                );
                m.gauge_set(key, age.as_millis() as i64);
            }
        }
    }

    /// The instance for the next attempt, skipping `tried`: power of two choices among the
    /// healthy ones whose breaker admits a call. UNAVAILABLE naming the service when none.
    fn choose(&self, tried: &[Rc<Pool>]) -> Result<(Rc<Pool>, bool), Status> {
        let now = Instant::now();
        let pools = self.pools.borrow();
        eject_late(&pools, now);
        let loads: Vec<InstanceLoad> = pools
            .iter()
            .map(|p| InstanceLoad {
                eligible: p.instance.borrow().is_healthy()
                    && !tried.iter().any(|t| Rc::ptr_eq(t, p))
                    && p.breaker.borrow().would_admit(now),
                in_flight: p.in_flight.get(),
                latency_us: p.latency.get().micros(now),
            })
            .collect();
        let name = self.service.registry_name();
        let Some(i) = pick(&loads, &mut *self.random.borrow_mut()) else {
            let why = if pools.is_empty() {
                "no instance is known"
            } else if pools.iter().all(|p| !p.instance.borrow().is_healthy()) {
                "every instance is draining"
            } else if tried.is_empty() {
                "every instance's circuit breaker is open"
            } else {
                "no other instance to try"
            };
            return Err(Status::new(Code::Unavailable, format!("{name}: {why}")).not_sent());
        };
        let pool = Rc::clone(&pools[i]);
        let (admission, changed) = pool.breaker.borrow_mut().admit(now);
        if let Some(to) = changed {
            pool.transition(to);
        }
        Ok((pool, admission == Admission::Probe))
    }

    /// A unary call of `path` with the encoded `message`.
    pub async fn unary_raw(
        self: &Rc<Self>,
        path: &str,
        message: &[u8],
        opts: CallOptions,
    ) -> Result<Bytes, Status> {
        self.start_ticking();
        self.refresh();
        self.budget.borrow_mut().deposit();
        let idempotent = is_idempotent_read(path);
        let mut tried: Vec<Rc<Pool>> = Vec::new();
        let mut last: Option<Status> = None;
        loop {
            let (pool, probe) = match self.choose(&tried) {
                Ok(chosen) => chosen,
                // After a failed attempt, its error says more than "no other instance".
                Err(status) => return Err(last.unwrap_or(status)),
            };
            let mut attempt = Attempt::start(&pool, probe);
            // Load rose: the pool may need to grow before this call ends.
            pool.resize(Instant::now());
            let outcome = match pool.connection().await {
                Ok(conn) => {
                    attempt.on(&conn);
                    conn.client.unary_raw(path, message, opts.clone()).await
                }
                Err(status) => Err(status),
            };
            let failed = outcome.as_ref().err().is_some_and(is_failure);
            attempt.finish(failed);
            pool.resize(Instant::now());
            let status = match outcome {
                Ok(reply) => return Ok(reply),
                Err(status) => status,
            };
            tried.push(pool);
            let retriable = status.code != Code::DeadlineExceeded
                && (status.unsent || (idempotent && status.code == Code::Unavailable));
            if !retriable || tried.len() >= self.config.max_attempts as usize {
                return Err(status);
            }
            if !self.budget.borrow_mut().withdraw(Instant::now()) {
                self.inc("sdsim_upstream_retry_budget_exhausted_total");
                return Err(status);
            }
            self.inc("sdsim_upstream_retries_total");
            tracing::debug!(service = self.service.registry_name(), path, %status, "mesh retry");
            last = Some(status);
        }
    }

    /// A unary call with typed messages.
    pub async fn unary<M, R>(
        self: &Rc<Self>,
        path: &str,
        message: &M,
        opts: CallOptions,
    ) -> Result<R, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        let bytes = self.unary_raw(path, &message.encode_to_vec(), opts).await?;
        R::decode(bytes).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("{path}: response does not decode: {e}"),
            )
        })
    }

    /// A server-streaming call: the stream starts on one instance (another one when the
    /// first provably did not start it); once started it is not moved.
    pub async fn server_streaming<M, R>(
        self: &Rc<Self>,
        path: &str,
        message: &M,
        opts: CallOptions,
    ) -> Result<Responses<R>, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        self.start_ticking();
        self.refresh();
        self.budget.borrow_mut().deposit();
        let mut tried: Vec<Rc<Pool>> = Vec::new();
        let mut last: Option<Status> = None;
        loop {
            let (pool, probe) = match self.choose(&tried) {
                Ok(chosen) => chosen,
                Err(status) => return Err(last.unwrap_or(status)),
            };
            let mut attempt = Attempt::start(&pool, probe);
            let outcome = match pool.connection().await {
                Ok(conn) => {
                    attempt.on(&conn);
                    conn.client
                        .server_streaming(path, message, opts.clone())
                        .await
                }
                Err(status) => Err(status),
            };
            let failed = outcome.as_ref().err().is_some_and(is_failure);
            attempt.finish(failed);
            let status = match outcome {
                Ok(responses) => return Ok(responses),
                Err(status) => status,
            };
            tried.push(pool);
            if !status.unsent
                || status.code == Code::DeadlineExceeded
                || tried.len() >= self.config.max_attempts as usize
            {
                return Err(status);
            }
            if !self.budget.borrow_mut().withdraw(Instant::now()) {
                self.inc("sdsim_upstream_retry_budget_exhausted_total");
                return Err(status);
            }
            self.inc("sdsim_upstream_retries_total");
            last = Some(status);
        }
    }
}

/// One attempt on one instance: counts it in flight (instance and connection) while it
/// lasts, and gives the breaker its outcome, or gives a half-open breaker's probe back when
/// the call is dropped before it ended.
struct Attempt {
    pool: Rc<Pool>,
    conn: Option<Rc<Conn>>,
    probe: bool,
    started: Instant,
    finished: bool,
}

impl Attempt {
    fn start(pool: &Rc<Pool>, probe: bool) -> Attempt {
        pool.in_flight.set(pool.in_flight.get() + 1);
        pool.in_flight_changed();
        pool.labels.inc("sdsim_upstream_calls_total");
        Attempt {
            pool: Rc::clone(pool),
            conn: None,
            probe,
            started: Instant::now(),
            finished: false,
        }
    }

    fn on(&mut self, conn: &Rc<Conn>) {
        conn.in_flight.set(conn.in_flight.get() + 1);
        self.conn = Some(Rc::clone(conn));
    }

    fn finish(&mut self, failed: bool) {
        self.finished = true;
        let now = Instant::now();
        self.pool
            .record(now, now.duration_since(self.started), failed);
        if failed {
            self.pool.labels.inc("sdsim_upstream_call_failures_total");
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.pool.in_flight.set(self.pool.in_flight.get() - 1);
        self.pool.in_flight_changed();
        if let Some(conn) = &self.conn {
            conn.in_flight.set(conn.in_flight.get() - 1);
        }
        if self.probe && !self.finished {
            self.pool.breaker.borrow_mut().abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_known_by_their_method_name() {
        for (path, read) in [
            ("/sdsim.project.v1.ProjectService/GetProject", true),
            ("/sdsim.project.v1.ProjectService/ListProjects", true),
            ("/sdsim.auth.v1.AuthService/ValidateToken", true),
            ("/sdsim.project.v1.ProjectService/HealthCheck", true),
            ("/grpc.health.v1.Health/Check", true),
            ("/sdsim.project.v1.ProjectService/CreateProject", false),
            (
                "/sdsim.simulation.v1.SimulationService/StartSimulation",
                false,
            ),
            ("/sdsim.project.v1.ProjectService/DeleteProject", false),
        ] {
            assert_eq!(is_idempotent_read(path), read, "{path}");
        }
    }
}
