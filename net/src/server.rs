//! Listeners and the accept loop.
//!
//! [`bind_reuseport`] creates one SO_REUSEPORT listening socket per shard on the main thread,
//! all on the same port (port 0 is resolved once, by the first socket), after checking that no
//! other process already listens there: monoio sets SO_REUSEPORT by default, and a stale server
//! sharing the port would silently take half the connections. Each shard takes its own socket
//! ([`ListenerSet::take`]), accepts on it, and its connections never leave the shard.

use crate::conn::{serve_connection, ConnInfo, ConnSettings};
use crate::http::encode::HttpDate;
use crate::middleware::App;
use monoio::io::IntoPollIo;
use monoio::net::{TcpListener, TcpStream};
use sdsim_core::runtime::Shard;
use sdsim_core::shutdown::{ConnectionGuard, Phase, Shutdown};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Listening sockets for one address, one per shard, created before the shards start.
#[derive(Debug)]
pub struct ListenerSet {
    fds: Vec<AtomicI32>,
    local_addr: SocketAddr,
}

/// Binds `count` SO_REUSEPORT sockets to `addr` (one per shard).
pub fn bind_reuseport(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<ListenerSet> {
    use socket2::{Domain, Socket, Type};
    if addr.port() != 0 {
        // A plain bind fails if anyone listens there, with or without SO_REUSEPORT.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen on {addr}: {e}"),
            ));
        }
    }
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        }
        let listener: std::net::TcpListener = socket.into();
        fds.push(AtomicI32::new(listener.into_raw_fd()));
    }
    Ok(ListenerSet {
        fds,
        local_addr: bound,
    })
}

impl ListenerSet {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Takes shard `index`'s listener; `None` if already taken. Call on the shard's thread.
    pub fn take(&self, index: usize) -> Option<io::Result<TcpListener>> {
        let fd: RawFd = self.fds.get(index)?.swap(-1, Ordering::AcqRel);
        if fd < 0 {
            return None;
        }
        // SAFETY: the fd came from `into_raw_fd` above and the swap hands it out exactly once.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        Some(TcpListener::from_std(std_listener))
    }
}

impl Drop for ListenerSet {
    fn drop(&mut self) {
        for fd in &self.fds {
            let fd = fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: an fd never taken by a shard is still owned here.
                drop(unsafe { std::net::TcpListener::from_raw_fd(fd) });
            }
        }
    }
}

/// Process-wide connection counters shared by every listener.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused because `server.max_connections` were open.
    pub refused_over_limit: AtomicU64,
}

/// Everything one listener's accept loop needs.
pub struct ListenerContext {
    /// The application (router + middleware).
    pub app: Rc<App>,
    /// Per-connection settings.
    pub settings: Rc<ConnSettings>,
    /// TLS acceptor when TLS is on.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The shutdown state machine.
    pub shutdown: Arc<Shutdown>,
    /// Counters.
    pub stats: Arc<ConnStats>,
    /// Most connections open at once, process-wide.
    pub max_connections: usize,
}

/// The shard-local view of the shutdown phase: one forwarder per shard follows the process-wide
/// channel, so connections wait on a channel no other thread touches.
pub fn shard_phase(shard: &Shard, shutdown: &Arc<Shutdown>) -> watch::Receiver<Phase> {
    struct LocalPhase(watch::Receiver<Phase>);
    if let Some(local) = shard.get::<LocalPhase>() {
        return local.0.clone();
    }
    let (tx, rx) = watch::channel(shutdown.phase());
    let mut global = shutdown.subscribe();
    shard.spawn("phase-forwarder", async move {
        loop {
            let phase = *global.borrow_and_update();
            tx.send_replace(phase);
            if phase == Phase::Closed || global.changed().await.is_err() {
                break;
            }
        }
    });
    shard.insert(LocalPhase(rx.clone()));
    rx
}

/// Waits for the next connection this shard may serve, whatever its protocol: counts it,
/// refuses it when `max_connections` are open, backs off on accept errors. `None` once the
/// server stops accepting.
pub async fn next_connection(
    shard: &Shard,
    listener: &TcpListener,
    phase: &mut watch::Receiver<Phase>,
    shutdown: &Arc<Shutdown>,
    stats: &ConnStats,
    max_connections: usize,
) -> Option<(TcpStream, SocketAddr, ConnectionGuard)> {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Accepting) => {
                stop_listening(listener);
                return None;
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors: back off instead of spinning on the same error.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if shutdown.open_connections() >= max_connections {
            stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let guard = shutdown.connection_opened(shard.id().index());
        let _ = stream.set_nodelay(true);
        return Some((stream, peer, guard));
    }
}

/// Takes `listener` out of service for good. Dropping it is not enough when shards have
/// private descriptor tables (`runtime.private_fd_tables`): every table holds a copy of every
/// listener made before the shards started, so the socket would stay open, keep its place in
/// the SO_REUSEPORT group and queue new connections nobody accepts. On Linux, shutdown(2) of a
/// listening socket closes it whatever the copies: it leaves the group (new connections go to
/// the shards still accepting) and its waiting connections are reset.
fn stop_listening(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor this listener owns; it does not close or free it.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
}

/// Accepts connections on `listener` until the server starts draining, spawning one task per
/// connection on this shard. Returns when the listener is closed.
pub async fn accept_loop(shard: &Shard, listener: TcpListener, ctx: Rc<ListenerContext>) {
    let mut phase = shard_phase(shard, &ctx.shutdown);
    let date = Rc::new(RefCell::new(HttpDate::new()));
    while let Some((stream, peer, guard)) = next_connection(
        shard,
        &listener,
        &mut phase,
        &ctx.shutdown,
        &ctx.stats,
        ctx.max_connections,
    )
    .await
    {
        let ctx = Rc::clone(&ctx);
        let phase = phase.clone();
        let date = Rc::clone(&date);
        shard.spawn("http-connection", async move {
            let open = guard;
            let mut closed = phase.clone();
            // At the shutdown deadline the connection is dropped wherever it is (mid-handler
            // included), which closes its socket.
            let handoff = monoio::select! {
                served = serve_one(stream, peer, &ctx, date, phase) => {
                    let (end, handoff) = served.unzip();
                    tracing::trace!(%peer, ?end, "connection ended");
                    handoff.flatten()
                }
                _ = closed.wait_for(|p| *p == Phase::Closed) => {
                    ctx.shutdown.record_forced(1);
                    None
                }
            };
            // An upgraded connection continues on a task of its own, still counted as open.
            if let Some(handoff) = handoff {
                let shutdown = Arc::clone(&ctx.shutdown);
                Shard::current().spawn("upgraded-connection", async move {
                    let _open = open;
                    monoio::select! {
                        _ = handoff.run() => {}
                        _ = closed.wait_for(|p| *p == Phase::Closed) => shutdown.record_forced(1),
                    }
                });
            }
        });
    }
    tracing::debug!(shard = shard.id().index(), "listener closed");
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerContext,
    date: Rc<RefCell<HttpDate>>,
    phase: watch::Receiver<Phase>,
) -> Option<(crate::conn::ConnEnd, Option<crate::conn::Handoff>)> {
    let app = Rc::clone(&ctx.app);
    let settings = Rc::clone(&ctx.settings);
    match &ctx.tls {
        None => {
            let info = ConnInfo { peer, tls: false };
            Some(serve_connection(stream, info, app, settings, date, phase).await)
        }
        Some(acceptor) => {
            let poll_io = stream.into_poll_io().ok()?;
            let handshake =
                monoio::time::timeout(settings.read_timeout, acceptor.accept(poll_io)).await;
            match handshake {
                Ok(Ok(tls)) => {
                    let info = ConnInfo { peer, tls: true };
                    Some(serve_connection(tls, info, app, settings, date, phase).await)
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => None,
            }
        }
    }
}

/// Waits until the shutdown reaches `Closed` (the coordinator closes once every shard's
/// connections have gone, or at the deadline), then gives this shard's connection tasks a moment
/// to see it: those still open drop their sockets and count themselves as forced closes.
pub async fn drain_shard(shard: &Shard, shutdown: &Arc<Shutdown>) {
    let me = shard.id().index();
    while shutdown.phase() != Phase::Closed {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..200 {
        if shutdown.open_on(me) == 0 {
            return;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!(
        shard = me,
        open = shutdown.open_on(me),
        "connections still open after close"
    );
}
