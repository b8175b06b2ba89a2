//! Retries of calls the server provably did not process, end to end on real sockets through a
//! `Target` of two instances: one a raw HTTP/2 peer that refuses the stream (RST_STREAM
//! REFUSED_STREAM) or sends GOAWAY naming a last stream below the call's, the other a real
//! gRPC server that counts its handler runs. A write refused that way runs exactly once, on the
//! other instance, and spends the retry budget (so does a refused server-streaming call, and
//! both count the budget running out); a write whose stream the GOAWAY covers and that is then
//! cut, or that gets RST_STREAM with another code after the request was sent, may have run, so
//! it is not sent again.

mod support;

use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_mesh::{Directory, Instance, MeshConfig, Service, Source, Target};
use sdsim_net::grpc::client::CallOptions;
use sdsim_net::grpc::server::Stream;
use sdsim_net::grpc::{Code, Services, Status};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITE: &str = "/test.v1.Things/CreateThing";
const READ: &str = "/test.v1.Things/GetThing";
const WATCH: &str = "/test.v1.Things/WatchThings";

const RETRIES: &str = "sdsim_upstream_retries_total";
const EXHAUSTED: &str = "sdsim_upstream_retry_budget_exhausted_total";

/// A real gRPC server of WRITE, READ and WATCH that counts its handler runs and answers its
/// port.
fn serve(runs: Rc<Cell<u32>>) -> SocketAddr {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.port().to_string();
    let mut services = Services::new();
    for path in [WRITE, READ] {
        let (runs, port) = (Rc::clone(&runs), port.clone());
        services.unary(path, move |_call, _req: String| {
            runs.set(runs.get() + 1);
            let port = port.clone();
            async move { Ok(port) }
        });
    }
    services.server_streaming(
        WATCH,
        move |_call, _req: String, mut out: Stream<String>| {
            runs.set(runs.get() + 1);
            let port = port.clone();
            async move { out.send(&port).await }
        },
    );
    support::accept(listener, services);
    addr
}

// HTTP/2 frame types, flags and error codes (RFC 9113 §6, §7).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const NO_ERROR: u32 = 0x0;
const INTERNAL_ERROR: u32 = 0x2;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

/// What the raw peer does with each request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// RST_STREAM REFUSED_STREAM as soon as the request's HEADERS arrive.
    Refuse,
    /// GOAWAY naming the stream before the request's as the last one processed, then closes.
    GoAwayBelow,
    /// Takes the whole request, then GOAWAY naming the request's own stream as processed, then
    /// closes without an answer (a server that crashed mid-call after its GOAWAY).
    GoAwayCoveringThenClose,
    /// Takes the whole request, then GOAWAY naming the request's own stream, then RST_STREAM
    /// with this code on it.
    GoAwayCoveringThenReset(u32),
    /// Takes the whole request, then RST_STREAM with this code.
    ResetAfterRequest(u32),
}

/// A raw HTTP/2 peer on a real socket (one thread per connection) that does its [`Answer`] to
/// every request, counting the requests that reached it and those it took whole (its handler
/// ran, as far as the caller can know).
struct RawPeer {
    addr: SocketAddr,
    requests: Arc<AtomicU32>,
    taken: Arc<AtomicU32>,
}

impl RawPeer {
    fn start(answer: Answer) -> RawPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, taken) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let counts = (Arc::clone(&requests), Arc::clone(&taken));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (requests, taken) = (Arc::clone(&counts.0), Arc::clone(&counts.1));
                std::thread::spawn(move || converse(conn, answer, &requests, &taken));
            }
        });
        RawPeer {
            addr,
            requests,
            taken,
        }
    }

    /// (requests that reached it, requests it took whole).
    fn counts(&self) -> (u32, u32) {
        (
            self.requests.load(Ordering::SeqCst),
            self.taken.load(Ordering::SeqCst),
        )
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

/// (type, flags, stream) of the next frame, its payload skipped; `None` once the client is gone.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream))
}

/// A clean close (FIN, then reading what the client still sends), so that the client sees
/// the end of the connection rather than a TCP reset.
fn close(mut s: TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = std::io::copy(&mut s, &mut std::io::sink());
}

fn converse(mut s: TcpStream, answer: Answer, requests: &AtomicU32, taken: &AtomicU32) {
    let mut preface = [0u8; 24];
    if s.read_exact(&mut preface).is_err() || s.write_all(&frame(SETTINGS, 0, 0, &[])).is_err() {
        return;
    }
    while let Some((kind, flags, stream)) = read_frame(&mut s) {
        let reply = match (kind, answer) {
            (SETTINGS, _) if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
            (HEADERS, _) => {
                requests.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Answer::Refuse => frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()),
                    Answer::GoAwayBelow => {
                        // Client streams are odd: the one before is two below (none before 1).
                        let _ = s.write_all(&goaway(stream.saturating_sub(2), NO_ERROR));
                        return close(s);
                    }
                    _ => continue,
                }
            }
            // A refused stream's DATA still arrives (sent before the refusal): not taken.
            (DATA, Answer::Refuse | Answer::GoAwayBelow) => continue,
            (DATA, _) if flags & END_STREAM != 0 => {
                taken.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Answer::GoAwayCoveringThenClose => {
                        let _ = s.write_all(&goaway(stream, NO_ERROR));
                        return close(s);
                    }
                    Answer::GoAwayCoveringThenReset(code) => {
                        let mut both = goaway(stream, NO_ERROR);
                        both.extend(frame(RST_STREAM, 0, stream, &code.to_be_bytes()));
                        both
                    }
                    Answer::ResetAfterRequest(code) => {
                        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
                    }
                    Answer::Refuse | Answer::GoAwayBelow => unreachable!("not taken"),
                }
            }
            _ => continue,
        };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A target of `addrs` whose balancer draws `first` first (the directory sorts instances by
/// id, their address), its counters in `metrics`.
fn target(
    addrs: &[SocketAddr],
    first: SocketAddr,
    config: MeshConfig,
    metrics: &Rc<Metrics>,
) -> Rc<Target> {
    let directory = Arc::new(Directory::new());
    let instances = addrs.iter().map(|a| Instance::fixed(*a)).collect();
    directory.set(Service::Project, instances, Source::Static);
    let index = directory
        .instances(Service::Project)
        .iter()
        .position(|i| i.grpc == Some(first))
        .unwrap() as u64;
    let t = Target::new(
        Service::Project,
        directory,
        config,
        0,
        1,
        Some(Rc::clone(metrics)),
    );
    t.set_random(Box::new(move || index));
    t
}

/// The target's counter `name` (0 before its first increment).
fn counter(metrics: &Metrics, name: &'static str) -> u64 {
    let key = Key::with1(
        name,
        ("service", LabelValue::Str(Service::Project.registry_name())),
    );
    metrics.snapshot().counters.get(&key).copied().unwrap_or(0)
}

/// One retry in reserve, none earned per call nor with time; a breaker that never opens (the
/// refusing instance stays the first choice: failed calls give it no latency, so it wins the
/// draw against the one that answers).
fn one_retry() -> MeshConfig {
    MeshConfig {
        retry_budget: 0.0,
        retry_min_per_second: 0.0,
        breaker_failures: 1000,
        breaker_min_calls: 1000,
        ..MeshConfig::default()
    }
}

fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(5))
}

fn run(f: impl std::future::Future<Output = ()>) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(f);
}

#[test]
fn a_refused_write_runs_once_on_the_other_instance_and_spends_the_budget() {
    run(async {
        let refusing = RawPeer::start(Answer::Refuse);
        let runs = Rc::new(Cell::new(0));
        let good = serve(Rc::clone(&runs));
        let metrics = Rc::new(Metrics::new());
        let t = target(&[refusing.addr, good], refusing.addr, one_retry(), &metrics);

        let write: String = t.unary(WRITE, &String::new(), opts()).await.unwrap();
        assert_eq!(write, good.port().to_string(), "answered by the other one");
        assert_eq!(refusing.counts(), (1, 0), "sent there first, refused");
        assert_eq!(runs.get(), 1, "exactly one handler run");
        assert_eq!(counter(&metrics, RETRIES), 1);

        // The only retry is spent: the next refused write fails, as not sent, and runs nowhere.
        let second: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
        let second = second.unwrap_err();
        assert!(
            second.code == Code::Unavailable && second.unsent,
            "{second:?}"
        );
        assert_eq!(refusing.counts(), (2, 0));
        assert_eq!(runs.get(), 1);
        assert_eq!(
            (counter(&metrics, RETRIES), counter(&metrics, EXHAUSTED)),
            (1, 1)
        );
    });
}

#[test]
fn a_refused_stream_starts_on_the_other_instance_within_the_budget() {
    run(async {
        let refusing = RawPeer::start(Answer::Refuse);
        let runs = Rc::new(Cell::new(0));
        let good = serve(Rc::clone(&runs));
        let metrics = Rc::new(Metrics::new());
        let t = target(&[refusing.addr, good], refusing.addr, one_retry(), &metrics);

        let mut watch = t
            .server_streaming::<String, String>(WATCH, &String::new(), opts())
            .await
            .unwrap();
        assert_eq!(
            watch.message().await.unwrap(),
            Some(good.port().to_string())
        );
        assert_eq!((refusing.counts(), runs.get()), ((1, 0), 1));
        assert_eq!(counter(&metrics, RETRIES), 1);

        let second = t
            .server_streaming::<String, String>(WATCH, &String::new(), opts())
            .await;
        let second = second.err().expect("the budget is spent");
        assert!(second.unsent, "{second:?}");
        assert_eq!((refusing.counts(), runs.get()), ((2, 0), 1));
        assert_eq!(
            (counter(&metrics, RETRIES), counter(&metrics, EXHAUSTED)),
            (1, 1),
            "(retries, budget exhausted)"
        );
    });
}

#[test]
fn a_write_above_the_goaway_last_stream_runs_once_on_the_other_instance() {
    run(async {
        let leaving = RawPeer::start(Answer::GoAwayBelow);
        let runs = Rc::new(Cell::new(0));
        let good = serve(Rc::clone(&runs));
        let metrics = Rc::new(Metrics::new());
        let t = target(&[leaving.addr, good], leaving.addr, one_retry(), &metrics);

        let write: String = t.unary(WRITE, &String::new(), opts()).await.unwrap();
        assert_eq!(write, good.port().to_string());
        assert_eq!(leaving.counts(), (1, 0), "sent there first, not processed");
        assert_eq!(runs.get(), 1, "exactly one handler run");
        assert_eq!(counter(&metrics, RETRIES), 1);
    });
}

#[test]
fn a_write_the_goaway_covers_is_not_retried_when_then_cut_a_read_is() {
    for (answer, cut) in [
        (Answer::GoAwayCoveringThenClose, "closed"),
        (Answer::GoAwayCoveringThenReset(INTERNAL_ERROR), "reset"),
    ] {
        run(async {
            let leaving = RawPeer::start(answer);
            let runs = Rc::new(Cell::new(0));
            let good = serve(Rc::clone(&runs));
            let metrics = Rc::new(Metrics::new());
            let t = target(&[leaving.addr, good], leaving.addr, one_retry(), &metrics);

            let write: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
            let write = write.unwrap_err();
            assert!(
                write.code == Code::Unavailable && !write.unsent,
                "{cut}: {write:?}"
            );
            assert_eq!(leaving.counts(), (1, 1), "{cut}: it may have run there");
            assert_eq!(runs.get(), 0, "{cut}: not sent again");
            assert_eq!(counter(&metrics, RETRIES), 0, "{cut}");

            // The same failure of a read is sent to the other instance.
            let read: String = t.unary(READ, &String::new(), opts()).await.unwrap();
            assert_eq!(read, good.port().to_string(), "{cut}");
            assert_eq!((leaving.counts(), runs.get()), ((2, 2), 1), "{cut}");
            assert_eq!(counter(&metrics, RETRIES), 1, "{cut}");
        });
    }
}

#[test]
fn a_write_reset_after_its_request_was_sent_is_not_retried() {
    for (code, name) in [(INTERNAL_ERROR, "INTERNAL_ERROR"), (CANCEL, "CANCEL")] {
        run(async {
            let resetting = RawPeer::start(Answer::ResetAfterRequest(code));
            let runs = Rc::new(Cell::new(0));
            let good = serve(Rc::clone(&runs));
            let metrics = Rc::new(Metrics::new());
            let t = target(
                &[resetting.addr, good],
                resetting.addr,
                one_retry(),
                &metrics,
            );

            let write: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
            let write = write.unwrap_err();
            assert!(!write.unsent, "{name}: {write:?}");
            assert_eq!(resetting.counts(), (1, 1), "{name}");
            assert_eq!(runs.get(), 0, "{name}: not sent again");
            assert_eq!(
                (counter(&metrics, RETRIES), counter(&metrics, EXHAUSTED)),
                (0, 0),
                "{name}"
            );
        });
    }
}
