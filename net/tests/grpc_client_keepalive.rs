//! The gRPC client's keepalive: behind a TCP proxy that stops forwarding (a peer that no longer
//! answers, like a SIGSTOP'd process or a silent network), a call fails UNAVAILABLE once a ping
//! goes unanswered for the keepalive timeout, instead of waiting out its deadline; the next call
//! reconnects.

use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::client::{CallOptions, Client, Connect, Keepalive};
use sdsim_net::grpc::{Call, Code, Services, Settings, Status};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// A one-thread monoio gRPC server with `/test.Svc/Echo`; its address.
fn start_server() -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (_phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Accepting);
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut services = Services::new();
            services.unary("/test.Svc/Echo", |_call: Call, b: Blob| async move {
                Ok::<_, Status>(b)
            });
            let services = Rc::new(services);
            let settings = Rc::new(Settings::default());
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                use monoio::io::IntoPollIo;
                let io = stream.into_poll_io().unwrap();
                sdsim_core::runtime::spawn(
                    "grpc-connection",
                    sdsim_net::grpc::server::serve_connection(
                        io,
                        peer,
                        Rc::clone(&services),
                        Rc::clone(&settings),
                        phase_rx.clone(),
                    ),
                );
            }
        });
    });
    addr_rx.recv().unwrap()
}

/// A TCP proxy to `backend`; [`Proxy::freeze`] makes every connection open so far swallow the
/// bytes of both directions (connections opened later forward normally).
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Proxy {
    fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let connections = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(backend).unwrap();
                let flag = Arc::new(AtomicBool::new(false));
                connections.lock().unwrap().push(Arc::clone(&flag));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let f2 = Arc::clone(&flag);
                std::thread::spawn(move || pump(client, server, flag));
                std::thread::spawn(move || pump(s2, c2, f2));
            }
        });
        Proxy { addr, frozen }
    }

    fn freeze(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn on_monoio<Fut: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> Fut + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f());
    })
    .join()
    .expect("client thread");
}

fn echo(text: &str) -> Blob {
    Blob {
        data: text.as_bytes().to_vec(),
    }
}

#[test]
fn an_unanswered_ping_drops_the_connection_and_the_next_call_reconnects() {
    let proxy = Proxy::start(start_server());
    let proxy_addr = proxy.addr;
    let proxy = Arc::new(proxy);
    let freezer = Arc::clone(&proxy);
    on_monoio(move || async move {
        let client = Client::with_connect(
            proxy_addr,
            Connect {
                keepalive: Some(Keepalive {
                    interval: Duration::from_millis(50),
                    timeout: Duration::from_millis(300),
                    late: Duration::from_millis(300),
                }),
                ..Connect::default()
            },
        );
        // A long deadline: only the keepalive can end the call below early.
        let patient = || CallOptions::timeout(Duration::from_secs(120));
        let got: Blob = client
            .unary("/test.Svc/Echo", &echo("before"), patient())
            .await
            .unwrap();
        assert_eq!(got, echo("before"));
        freezer.freeze();
        let err = client
            .unary::<_, Blob>("/test.Svc/Echo", &echo("frozen"), patient())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err:?}");
        assert_eq!(client.keepalive_drops(), 1);
        // The dropped connection is replaced; the proxy forwards new connections.
        let got: Blob = client
            .unary("/test.Svc/Echo", &echo("after"), patient())
            .await
            .unwrap();
        assert_eq!(got, echo("after"));
        assert_eq!(client.keepalive_drops(), 1);
    });
}

#[test]
fn without_keepalive_a_call_to_a_silent_peer_waits_out_its_deadline() {
    let proxy = Arc::new(Proxy::start(start_server()));
    let proxy_addr = proxy.addr;
    let freezer = Arc::clone(&proxy);
    on_monoio(move || async move {
        let client = Client::new(proxy_addr);
        let got: Blob = client
            .unary("/test.Svc/Echo", &echo("before"), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(got, echo("before"));
        freezer.freeze();
        let err = client
            .unary::<_, Blob>(
                "/test.Svc/Echo",
                &echo("frozen"),
                CallOptions::timeout(Duration::from_millis(500)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::DeadlineExceeded, "{err:?}");
        assert_eq!(client.keepalive_drops(), 0);
    });
}
