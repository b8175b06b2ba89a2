//! The shard runtime: one pinned monoio runtime per CPU, each owning its connections and state.
//!
//! [`Runtime::start`] spawns one thread per shard, pins it to its CPU, builds a monoio runtime
//! with the configured driver (io_uring, epoll, or io_uring-else-epoll), connects it to the
//! [`Mesh`], and runs the caller's per-shard main future. Inside a shard, [`Shard::current`]
//! gives the typed handle: id, mesh endpoint, instrumented spawn and shard-local state
//! ([`Shard::insert`] / [`Shard::get`], one value per type, `Rc` and never shared across threads).
//! [`spawn`] is the one way to start a task: it is timed by the shard's stall detector.

use crate::blocking::BlockingPool;
use crate::config::{DriverKind, RuntimeConfig};
use crate::mesh::{Mesh, MeshEndpoint};
use crate::shard::{affinity_cpus, ShardId};
use crate::stall::{StallDetector, StallStats, Timed};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What [`Runtime::start`] needs: how many shards, on which CPUs, with which driver.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    /// CPU of each shard; `cpus.len()` is the shard count.
    pub cpus: Vec<usize>,
    /// I/O driver.
    pub driver: DriverKind,
    /// Stall threshold.
    pub stall_threshold: Duration,
    /// Capacity of each mesh ring.
    pub ring_capacity: usize,
    /// Whether to pin each shard thread to its CPU (tests may run unpinned).
    pub pin: bool,
    /// Where the shards' stall detectors count stalls.
    pub stalls: Arc<StallStats>,
    /// Give each shard thread its own descriptor table (see [`RuntimeConfig`]).
    pub private_fd_tables: bool,
    /// Threads of the blocking pool the shards share (0: one per shard).
    pub blocking_threads: usize,
    /// Jobs the blocking pool queues before it refuses more.
    pub blocking_queue: usize,
}

impl RuntimeSpec {
    /// Resolves `runtime.shards` / `runtime.cpus` against the process affinity mask.
    /// More shards than CPUs wrap around the CPU list (allowed, but logged by the caller).
    pub fn from_config(cfg: &RuntimeConfig) -> RuntimeSpec {
        let available = if cfg.cpus.is_empty() {
            affinity_cpus()
        } else {
            cfg.cpus.clone()
        };
        let shards = if cfg.shards == 0 {
            available.len().max(1)
        } else {
            cfg.shards
        };
        RuntimeSpec {
            cpus: (0..shards)
                .map(|i| available[i % available.len().max(1)])
                .collect(),
            driver: cfg.driver,
            stall_threshold: cfg.stall_threshold,
            ring_capacity: cfg.mesh_ring_capacity,
            pin: true,
            stalls: Arc::new(StallStats::default()),
            private_fd_tables: cfg.private_fd_tables,
            blocking_threads: cfg.blocking_threads,
            blocking_queue: cfg.blocking_queue,
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.cpus.len()
    }
}

struct ShardInner {
    id: ShardId,
    cpu: usize,
    driver: &'static str,
    mesh: MeshEndpoint,
    mesh_all: Arc<Mesh>,
    stall: Rc<StallDetector>,
    blocking: Arc<BlockingPool>,
    state: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
}

/// The handle to the shard the current thread runs. Cheap to clone; `!Send`.
#[derive(Clone)]
pub struct Shard {
    inner: Rc<ShardInner>,
}

thread_local! {
    static CURRENT: RefCell<Option<Shard>> = const { RefCell::new(None) };
}

impl Shard {
    /// The shard of the calling thread, or `None` outside a shard thread.
    pub fn try_current() -> Option<Shard> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The shard of the calling thread.
    ///
    /// # Panics
    /// When called outside a shard thread: that is a programming error, not an input error.
    pub fn current() -> Shard {
        Self::try_current().expect("Shard::current() called outside a shard thread")
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    /// How many shards the runtime has.
    pub fn count(&self) -> usize {
        self.inner.mesh.shards()
    }

    /// The CPU this shard is pinned to.
    pub fn cpu(&self) -> usize {
        self.inner.cpu
    }

    /// The I/O driver in use: `io_uring` or `epoll`.
    pub fn driver(&self) -> &'static str {
        self.inner.driver
    }

    /// The mesh endpoint for reaching other shards.
    pub fn mesh(&self) -> &MeshEndpoint {
        &self.inner.mesh
    }

    /// The whole mesh (queue depths and totals for metrics).
    pub fn mesh_all(&self) -> &Arc<Mesh> {
        &self.inner.mesh_all
    }

    /// The blocking pool the shards share, for work longer than a slice (rule 5 of docs/architecture.md).
    pub fn blocking(&self) -> &Arc<BlockingPool> {
        &self.inner.blocking
    }

    /// Stores a shard-local value of type `T` (replacing any earlier one) and returns it.
    pub fn insert<T: 'static>(&self, value: T) -> Rc<T> {
        let value = Rc::new(value);
        self.inner
            .state
            .borrow_mut()
            .insert(TypeId::of::<T>(), value.clone() as Rc<dyn Any>);
        value
    }

    /// The shard-local value of type `T`, if one was inserted.
    pub fn get<T: 'static>(&self) -> Option<Rc<T>> {
        let any = self.inner.state.borrow().get(&TypeId::of::<T>())?.clone();
        any.downcast::<T>().ok()
    }

    /// Spawns a task on this shard, timed by the stall detector under `name`.
    pub fn spawn<F>(&self, name: &'static str, future: F) -> monoio::task::JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        #[allow(clippy::disallowed_methods)] // The one place tasks start: timed.
        monoio::spawn(Timed::new(name, Rc::clone(&self.inner.stall), future))
    }
}

/// Spawns `future` as a task of the calling thread's runtime, timed under `name` by the stall
/// detector of the shard running on this thread.
///
/// Every task in sdsim starts here or through [`Shard::spawn`] (clippy's `disallowed-methods`
/// refuses `monoio::spawn` elsewhere), so no task can hold a shard without being seen. On a
/// thread that is not a shard (a test's own monoio runtime) there is no detector to report to
/// and the task runs untimed.
pub fn spawn<F>(name: &'static str, future: F) -> monoio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match Shard::try_current() {
        Some(shard) => shard.spawn(name, future),
        #[allow(clippy::disallowed_methods)] // No shard, no detector.
        None => monoio::spawn(future),
    }
}

/// The running shards; [`Runtime::join`] waits for them.
pub struct Runtime {
    threads: Vec<JoinHandle<io::Result<()>>>,
    mesh: Arc<Mesh>,
    stalls: Arc<StallStats>,
    blocking: Arc<BlockingPool>,
}

impl Runtime {
    /// Starts one thread per shard and runs `main(shard)` on each. When every shard's main has
    /// returned, the mesh closes and the threads end.
    pub fn start<F, Fut>(spec: RuntimeSpec, main: F) -> io::Result<Runtime>
    where
        F: Fn(Shard) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let shards = spec.shards();
        let mesh = Mesh::new(shards, spec.ring_capacity);
        let stalls = Arc::clone(&spec.stalls);
        let blocking_threads = match spec.blocking_threads {
            0 => shards,
            n => n,
        };
        let blocking = BlockingPool::start(blocking_threads, spec.blocking_queue)?;
        let main = Arc::new(main);
        let running = Arc::new(AtomicUsize::new(shards));
        let mut threads = Vec::with_capacity(shards);
        // With private descriptor tables every shard's runtime (its wake-up eventfd above all)
        // must exist before any shard leaves the shared table: other threads wake a shard by
        // writing to that eventfd's number, which must mean the same file in every table.
        let built = Arc::new(std::sync::Barrier::new(shards));
        for (index, &cpu) in spec.cpus.iter().enumerate() {
            let mesh = Arc::clone(&mesh);
            let main = Arc::clone(&main);
            let running = Arc::clone(&running);
            let stalls = Arc::clone(&stalls);
            let blocking = Arc::clone(&blocking);
            let built = Arc::clone(&built);
            let spec = spec.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sdsim-shard-{index}"))
                .spawn(move || {
                    let pinned = if spec.pin {
                        monoio::utils::bind_to_cpu_set(Some(cpu)).map_err(|e| {
                            io::Error::other(format!("pinning shard {index} to CPU {cpu}: {e}"))
                        })
                    } else {
                        Ok(())
                    };
                    let links = ShardLinks {
                        mesh,
                        stalls,
                        blocking,
                        running,
                    };
                    let body = shard_body(ShardId(index), cpu, &spec, links, main);
                    let private = spec.private_fd_tables;
                    run_on_driver(spec.driver, body, move |runtime_built| {
                        if !private {
                            return pinned.and(runtime_built);
                        }
                        // Every shard reaches the barrier, failed or not, so none waits forever.
                        built.wait();
                        pinned.and(runtime_built)?;
                        unshare_fd_table().map_err(|e| {
                            io::Error::other(format!(
                                "shard {index}: unshare(CLONE_FILES) for a private descriptor table: {e}"
                            ))
                        })
                    })
                })?;
            threads.push(thread);
        }
        Ok(Runtime {
            threads,
            mesh,
            stalls,
            blocking,
        })
    }

    /// The mesh connecting the shards.
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Stall totals of all shards.
    pub fn stalls(&self) -> &Arc<StallStats> {
        &self.stalls
    }

    /// The blocking pool the shards share.
    pub fn blocking(&self) -> &Arc<BlockingPool> {
        &self.blocking
    }

    /// Waits for every shard thread; returns the first error (a driver that failed to start).
    pub fn join(self) -> io::Result<()> {
        let mut first = Ok(());
        for thread in self.threads {
            let result = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a shard thread panicked")));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// What every shard shares with the others.
struct ShardLinks {
    mesh: Arc<Mesh>,
    stalls: Arc<StallStats>,
    blocking: Arc<BlockingPool>,
    /// Shards whose main future has not returned yet.
    running: Arc<AtomicUsize>,
}

fn shard_body<F, Fut>(
    id: ShardId,
    cpu: usize,
    spec: &RuntimeSpec,
    links: ShardLinks,
    main: Arc<F>,
) -> impl FnOnce(&'static str) -> std::pin::Pin<Box<dyn Future<Output = ()>>>
where
    F: Fn(Shard) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let threshold = spec.stall_threshold;
    let ShardLinks {
        mesh,
        stalls,
        blocking,
        running,
    } = links;
    move |driver| {
        Box::pin(async move {
            let endpoint = mesh.endpoint(id);
            let shard = Shard {
                inner: Rc::new(ShardInner {
                    id,
                    cpu,
                    driver,
                    mesh: endpoint.clone(),
                    mesh_all: Arc::clone(&mesh),
                    stall: StallDetector::new(id.index(), threshold, stalls),
                    blocking,
                    state: RefCell::new(HashMap::new()),
                }),
            };
            CURRENT.with(|c| *c.borrow_mut() = Some(shard.clone()));
            // The receiver runs every job other shards send: timing it times those jobs.
            let receiver = shard.spawn("mesh-receiver", endpoint.run_receiver());
            tracing::debug!(shard = id.index(), cpu, driver, "shard started");
            let stall = Rc::clone(&shard.inner.stall);
            Timed::new("shard-main", stall, main(shard)).await;
            // The last shard to finish closes the mesh; until then this shard keeps answering
            // its peers' messages.
            if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                mesh.close();
            }
            receiver.await;
            CURRENT.with(|c| c.borrow_mut().take());
            tracing::debug!(shard = id.index(), "shard stopped");
        })
    }
}

/// Builds the shard's runtime on `driver`, lets `ready` decide whether to go on (it gets
/// whether the build worked), then runs `body` on it.
fn run_on_driver<B>(
    driver: DriverKind,
    body: B,
    ready: impl FnOnce(io::Result<()>) -> io::Result<()>,
) -> io::Result<()>
where
    B: FnOnce(&'static str) -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
{
    use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};
    /// Build, check, run: the same for every driver type.
    macro_rules! run {
        ($driver:ty, $name:expr) => {{
            let (rt, built) = match RuntimeBuilder::<$driver>::new().enable_timer().build() {
                Ok(rt) => (Some(rt), Ok(())),
                Err(e) => (None, Err(e)),
            };
            // `ready` passes a failed build on as its error.
            ready(built)?;
            if let Some(mut rt) = rt {
                rt.block_on(body($name));
            }
        }};
    }
    match driver {
        DriverKind::Auto => {
            let name = if monoio::utils::detect_uring() {
                "io_uring"
            } else {
                "epoll"
            };
            run!(FusionDriver, name)
        }
        DriverKind::IoUring => run!(IoUringDriver, "io_uring"),
        DriverKind::Epoll => run!(LegacyDriver, "epoll"),
    }
    Ok(())
}

/// Moves the calling thread to a copy of the process's descriptor table: descriptors it opens
/// from now on count against RLIMIT_NOFILE in its table only, and are invisible to others.
fn unshare_fd_table() -> io::Result<()> {
    // SAFETY: unshare(2) with CLONE_FILES only affects the calling thread's descriptor table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
