//! Retries on real sockets: an instance that answers UNAVAILABLE after the call started gets
//! exactly one attempt of a call that writes, while a read is sent again to another instance;
//! an instance that is gone before the call (connection refused) costs no call, whatever the
//! method; with every breaker open the service fails fast, naming itself; an instance that
//! stops answering (a proxy in front of it stops forwarding, as a SIGSTOPped process does) gets
//! no new call once a keepalive ping to it is late.

mod support;

use sdsim_mesh::{Directory, Instance, MeshConfig, Service, Source, Target};
use sdsim_net::grpc::client::CallOptions;
use sdsim_net::grpc::{Code, Services, Status};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const WRITE: &str = "/test.v1.Things/CreateThing";
const READ: &str = "/test.v1.Things/GetThing";

/// A server of WRITE and READ that counts the calls it started; it answers its port, or
/// UNAVAILABLE when `failing`.
fn serve(failing: bool, started: Rc<Cell<u32>>) -> SocketAddr {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut services = Services::new();
    for path in [WRITE, READ] {
        let started = Rc::clone(&started);
        services.unary(path, move |_call, _req: String| {
            started.set(started.get() + 1);
            async move {
                if failing {
                    Err(Status::new(Code::Unavailable, "failing on purpose"))
                } else {
                    Ok(addr.port().to_string())
                }
            }
        });
    }
    support::accept(listener, services);
    addr
}

/// A target of `addrs` whose balancer always draws `first` first (the directory sorts
/// instances by id, their address).
fn target(addrs: &[SocketAddr], first: SocketAddr, config: MeshConfig) -> Rc<Target> {
    let directory = Arc::new(Directory::new());
    let instances = addrs.iter().map(|a| Instance::fixed(*a)).collect();
    directory.set(Service::Project, instances, Source::Static);
    let index = directory
        .instances(Service::Project)
        .iter()
        .position(|i| i.grpc == Some(first))
        .unwrap() as u64;
    let t = Target::new(Service::Project, directory, config, 0, 1, None);
    t.set_random(Box::new(move || index));
    t
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
fn a_started_write_is_not_retried_a_read_is() {
    run(async {
        let (bad_calls, good_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let bad = serve(true, Rc::clone(&bad_calls));
        let good = serve(false, Rc::clone(&good_calls));
        let t = target(&[bad, good], bad, MeshConfig::default());

        let write: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
        assert_eq!(write.unwrap_err().code, Code::Unavailable);
        assert_eq!(
            (bad_calls.get(), good_calls.get()),
            (1, 0),
            "exactly one attempt"
        );

        let read: String = t.unary(READ, &String::new(), opts()).await.unwrap();
        assert_eq!(read, good.port().to_string());
        assert_eq!(
            (bad_calls.get(), good_calls.get()),
            (2, 1),
            "retried elsewhere"
        );
    });
}

#[test]
fn a_call_to_an_instance_that_is_gone_is_retried_whatever_the_method() {
    run(async {
        let good_calls = Rc::new(Cell::new(0));
        let good = serve(false, Rc::clone(&good_calls));
        let dead = support::gone();
        let t = target(&[dead, good], dead, MeshConfig::default());
        let write: String = t.unary(WRITE, &String::new(), opts()).await.unwrap();
        assert_eq!(write, good.port().to_string());
        assert_eq!(good_calls.get(), 1);
    });
}

#[test]
fn with_every_breaker_open_the_service_fails_fast_naming_itself() {
    run(async {
        let dead = support::gone();
        let config = MeshConfig {
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(3600),
            ..MeshConfig::default()
        };
        let t = target(&[dead], dead, config);
        let first: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
        let first = first.unwrap_err();
        assert!(first.message.contains("connect failed"), "{first:?}");
        let second: Result<String, Status> = t.unary(WRITE, &String::new(), opts()).await;
        let second = second.unwrap_err();
        assert_eq!(second.code, Code::Unavailable);
        assert_eq!(
            second.message,
            "project-service: every instance's circuit breaker is open"
        );
    });
}

#[test]
fn the_retry_budget_bounds_retries() {
    run(async {
        let (bad_calls, good_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let bad = serve(true, Rc::clone(&bad_calls));
        let good = serve(false, Rc::clone(&good_calls));
        // No reserve beyond one retry, none earned per call, a breaker that never opens.
        let config = MeshConfig {
            retry_budget: 0.0,
            retry_min_per_second: 1.0,
            breaker_failures: 1000,
            breaker_min_calls: 1000,
            ..MeshConfig::default()
        };
        let t = target(&[bad, good], bad, config);
        let first: Result<String, Status> = t.unary(READ, &String::new(), opts()).await;
        assert!(first.is_ok(), "the reserve allows one retry");
        let second: Result<String, Status> = t.unary(READ, &String::new(), opts()).await;
        assert_eq!(second.unwrap_err().code, Code::Unavailable, "budget spent");
        assert_eq!((bad_calls.get(), good_calls.get()), (2, 1));
    });
}

#[test]
fn a_draining_instance_gets_no_call() {
    run(async {
        let (draining_calls, good_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let draining = serve(false, Rc::clone(&draining_calls));
        let good = serve(false, Rc::clone(&good_calls));
        let directory = Arc::new(Directory::new());
        let mut leaving = Instance::fixed(draining);
        leaving.status = sdsim_mesh::InstanceStatus::Draining;
        directory.set(
            Service::Project,
            vec![leaving, Instance::fixed(good)],
            Source::Static,
        );
        let t = Target::new(
            Service::Project,
            directory,
            MeshConfig::default(),
            0,
            1,
            None,
        );
        for i in 0..20u64 {
            // Whatever the draws, the draining instance is not among the choices.
            t.set_random(Box::new(move || i));
            let _: String = t.unary(WRITE, &String::new(), opts()).await.unwrap();
        }
        assert_eq!((draining_calls.get(), good_calls.get()), (0, 20));
    });
}

/// A TCP proxy to `backend` that forwards until [`Freezer::freeze`], then holds every byte
/// (a frozen process: the connection stays open, nothing comes back).
struct Freezer {
    addr: SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl Freezer {
    fn start(backend: SocketAddr) -> Freezer {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = std::net::TcpStream::connect(backend).unwrap();
                let pairs = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ];
                for (mut from, mut to) in pairs {
                    let frozen = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Freezer { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_frozen_instance_gets_no_new_call_once_its_ping_is_late() {
    run(async {
        let (frozen_calls, good_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let behind = serve(false, Rc::clone(&frozen_calls));
        let good = serve(false, Rc::clone(&good_calls));
        let proxy = Freezer::start(behind);
        let t = target(&[proxy.addr, good], proxy.addr, MeshConfig::default());
        // Pings every 50 ms, late after 100 ms; the connection itself is dropped only after a
        // minute, so only the late ping can keep calls away from the frozen instance.
        t.set_connect(sdsim_net::grpc::client::Connect {
            keepalive: Some(sdsim_net::grpc::client::Keepalive {
                interval: Duration::from_millis(50),
                timeout: Duration::from_secs(60),
                late: Duration::from_millis(100),
            }),
            ..sdsim_net::grpc::client::Connect::default()
        });
        let first: String = t.unary(READ, &String::new(), opts()).await.unwrap();
        assert_eq!(first, behind.port().to_string(), "the first draw");
        proxy.freeze();
        // What the mesh decided, polled: a bound on a hang, not on speed.
        let id = proxy.addr.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let open = t
                .breakers()
                .iter()
                .any(|(i, s)| *i == id && *s == sdsim_mesh::BreakerState::Open);
            if open {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the frozen instance's breaker never opened: {:?}",
                t.breakers()
            );
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        // Every new call goes to the other instance (each would hang a minute otherwise).
        let patient = || CallOptions::timeout(Duration::from_secs(60));
        for _ in 0..5 {
            let answer: String = t.unary(WRITE, &String::new(), patient()).await.unwrap();
            assert_eq!(answer, good.port().to_string());
        }
        assert_eq!((frozen_calls.get(), good_calls.get()), (1, 5));
    });
}
