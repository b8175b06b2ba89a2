//! The gRPC server over real sockets with a tonic client: unary and server streaming, status
//! codes, deadlines, the 4 MiB limit, gzip, 1,000 concurrent streams, grpc.health.v1.

use bytes::Bytes;
use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::pb::health::health_check_response::ServingStatus;
use sdsim_net::grpc::pb::health::{HealthCheckRequest, HealthCheckResponse};
use sdsim_net::grpc::{health::Health, Call, Code as SCode, Services, Settings, Status, Stream};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(uint32, tag = "2")]
    n: u32,
}

fn services(phase: tokio::sync::watch::Receiver<Phase>) -> Services {
    let mut s = Services::new();
    s.unary("/test.Svc/Echo", |call: Call, b: Blob| async move {
        let mut b = b;
        if let Some(v) = call.metadata.get("x-tag") {
            b.data.extend_from_slice(v.as_bytes());
        }
        Ok::<_, Status>(b)
    });
    s.unary("/test.Svc/Sleep", |_call: Call, b: Blob| async move {
        monoio::time::sleep(Duration::from_millis(b.n as u64)).await;
        Ok::<_, Status>(b)
    });
    s.unary("/test.Svc/Fail", |_call: Call, _b: Blob| async move {
        Err::<Blob, _>(Status::new(
            SCode::InvalidArgument,
            "field n: must be even (got 3) — ünïcode",
        ))
    });
    s.unary("/test.Svc/Big", |_call: Call, _b: Blob| async move {
        Ok::<_, Status>(Blob {
            data: vec![1; 5 << 20],
            n: 0,
        })
    });
    s.server_streaming(
        "/test.Svc/Count",
        |_call: Call, b: Blob, mut out: Stream<Blob>| async move {
            for i in 0..b.n {
                out.send(&Blob {
                    data: vec![7; 1000],
                    n: i,
                })
                .await?;
            }
            Ok(())
        },
    );
    // Answers the grpc-timeout it received.
    s.unary("/test.Svc/Timeout", |call: Call, _b: Blob| async move {
        let t = call
            .metadata
            .get("grpc-timeout")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        Ok::<_, Status>(Blob { data: t, n: 0 })
    });
    // Calls Timeout on this same server within the incoming call's deadline (propagation).
    s.unary("/test.Svc/Relay", |call: Call, b: Blob| async move {
        let me = SELF.with(|a| a.get()).expect("address set");
        let client = sdsim_net::grpc::client::Client::new(me);
        let opts = sdsim_net::grpc::client::CallOptions::within(&call);
        client
            .unary::<Blob, Blob>("/test.Svc/Timeout", &b, opts)
            .await
    });
    Health::new(&["test.Svc"], phase).register(&mut s);
    s
}

thread_local! {
    static SELF: std::cell::Cell<Option<SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// Starts a one-thread monoio server; returns its address and the phase sender.
fn start() -> (SocketAddr, tokio::sync::watch::Sender<Phase>) {
    start_with(Settings {
        keepalive_interval: Duration::from_millis(200),
        ..Settings::default()
    })
}

/// [`start`] with the given settings.
fn start_with(settings: Settings) -> (SocketAddr, tokio::sync::watch::Sender<Phase>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Accepting);
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            SELF.with(|a| a.set(Some(listener.local_addr().unwrap())));
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let services = Rc::new(services(phase_rx.clone()));
            let settings = Rc::new(settings);
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
    (addr_rx.recv().unwrap(), phase_tx)
}

async fn client(addr: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary<
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Default + Send + 'static,
>(
    c: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    req: tonic::Request<M>,
) -> Result<R, tonic::Status> {
    c.ready().await.unwrap();
    c.unary(
        req,
        PathAndQuery::from_static(path),
        ProstCodec::<M, R>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

/// One unary call by a raw h2 client; returns grpc-status and grpc-message.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    timeout: Option<&str>,
    msg: &Blob,
) -> (String, String) {
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2c, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = tonic::codegen::http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    let (resp, mut send) = h2c.send_request(req.body(()).unwrap(), false).unwrap();
    // On a busy machine a short deadline can pass before the message is sent: the server then
    // answers DEADLINE_EXCEEDED while reading the request and closes the stream, and this send
    // fails. The answer below is what the test checks.
    let _ = send.send_data(
        sdsim_net::grpc::frame::encode(&msg.encode_to_vec(), false),
        true,
    );
    let resp = resp.await.unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut headers = parts.headers;
    if !headers.contains_key("grpc-status") {
        while let Some(chunk) = body.data().await {
            let _ = chunk.unwrap();
        }
        headers = body.trailers().await.unwrap().unwrap_or_default();
    }
    let get = |k: &str| {
        headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn unary_status_codes_limits_and_deadlines() {
    let (addr, _phase) = start();
    rt().block_on(async {
        let mut c = client(addr).await;
        let mut req = tonic::Request::new(Blob {
            data: b"hi ".to_vec(),
            n: 1,
        });
        req.metadata_mut().insert("x-tag", "meta".parse().unwrap());
        let got: Blob = unary(&mut c, "/test.Svc/Echo", req).await.unwrap();
        assert_eq!(got.data, b"hi meta");

        let err = unary::<Blob, Blob>(
            &mut c,
            "/test.Svc/Nope",
            tonic::Request::new(Blob::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("/test.Svc/Nope"));

        let err = unary::<Blob, Blob>(
            &mut c,
            "/test.Svc/Fail",
            tonic::Request::new(Blob::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "field n: must be even (got 3) — ünïcode");

        // 5 MiB request: over the 4 MiB limit.
        let big = Blob {
            data: vec![0; 5 << 20],
            n: 0,
        };
        let err = unary::<Blob, Blob>(&mut c, "/test.Svc/Echo", tonic::Request::new(big))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        // Just under the limit passes.
        let ok = Blob {
            data: vec![3; (4 << 20) - 64],
            n: 0,
        };
        let got: Blob = unary(&mut c, "/test.Svc/Echo", tonic::Request::new(ok.clone()))
            .await
            .unwrap();
        assert_eq!(got.data.len(), ok.data.len());
        // A response over the limit is refused by the server, not sent.
        let err = unary::<Blob, Blob>(
            &mut c,
            "/test.Svc/Big",
            tonic::Request::new(Blob::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

        // grpc-timeout: a 60 s handler under a 50 ms deadline. tonic would give up on its own
        // clock at the same moment, so the header is sent by a raw h2 client to see the
        // server's answer. The server gives up at the deadline: far sooner than the handler
        // would finish, however busy the machine.
        let began = std::time::Instant::now();
        let (status, message) = raw_call(
            addr,
            "/test.Svc/Sleep",
            Some("50m"),
            &Blob {
                data: vec![],
                n: 60_000,
            },
        )
        .await;
        assert_eq!(status, "4", "{message}");
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "answered when the handler finished, not at the deadline: {:?}",
            began.elapsed()
        );
        let (status, _) = raw_call(addr, "/test.Svc/Sleep", Some("5x"), &Blob::default()).await;
        assert_eq!(status, "3", "a malformed grpc-timeout is INVALID_ARGUMENT");
        // The connection is still good.
        let got: Blob = unary(
            &mut c,
            "/test.Svc/Echo",
            tonic::Request::new(Blob {
                data: b"x".to_vec(),
                n: 0,
            }),
        )
        .await
        .unwrap();
        assert_eq!(got.data, b"x");
    });
}

#[test]
fn a_unary_call_without_grpc_timeout_ends_at_the_servers_unary_timeout() {
    let (addr, _phase) = start_with(Settings {
        unary_timeout: Duration::from_millis(300),
        ..Settings::default()
    });
    rt().block_on(async {
        let mut c = client(addr).await;
        // No grpc-timeout, a handler that would run for an hour: the server's bound ends it.
        let err = unary::<Blob, Blob>(
            &mut c,
            "/test.Svc/Sleep",
            tonic::Request::new(Blob {
                data: vec![],
                n: 3_600_000,
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(
            err.message(),
            "no grpc-timeout was sent and the call ran past 300ms (grpc.unary_timeout)"
        );
        // A client's own deadline wins, even when it is longer than the server's bound.
        let mut req = tonic::Request::new(Blob {
            data: b"slow".to_vec(),
            n: 600,
        });
        req.set_timeout(Duration::from_secs(3600));
        let got: Blob = unary(&mut c, "/test.Svc/Sleep", req).await.unwrap();
        assert_eq!(got.data, b"slow");
        // The connection still serves.
        let got: Blob = unary(
            &mut c,
            "/test.Svc/Echo",
            tonic::Request::new(Blob {
                data: b"still here".to_vec(),
                n: 0,
            }),
        )
        .await
        .unwrap();
        assert_eq!(got.data, b"still here");
    });
}

#[test]
fn gzip_both_ways_when_the_client_asks() {
    let (addr, _phase) = start();
    rt().block_on(async {
        let mut c = client(addr)
            .await
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        let blob = Blob {
            data: b"compress me ".repeat(10_000),
            n: 0,
        };
        let got: Blob = unary(&mut c, "/test.Svc/Echo", tonic::Request::new(blob.clone()))
            .await
            .unwrap();
        assert_eq!(got, blob);
    });
}

#[test]
fn server_streaming_and_a_thousand_concurrent_streams() {
    let (addr, _phase) = start();
    rt().block_on(async {
        let mut c = client(addr).await;
        c.ready().await.unwrap();
        let mut stream = c
            .server_streaming(
                tonic::Request::new(Blob {
                    data: vec![],
                    n: 500,
                }),
                PathAndQuery::from_static("/test.Svc/Count"),
                ProstCodec::<Blob, Blob>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(msg) = stream.message().await.unwrap() {
            assert_eq!(msg.n, n);
            n += 1;
        }
        assert_eq!(n, 500);

        // 1,000 calls at once on one connection, each holding its stream for 200 ms.
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..1000)
            .map(|i| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    let got: Blob = unary(
                        &mut c,
                        "/test.Svc/Sleep",
                        tonic::Request::new(Blob {
                            data: vec![],
                            n: 200 + i % 2,
                        }),
                    )
                    .await
                    .unwrap();
                    got.n
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), 200 + (i as u32) % 2);
        }
        // Served concurrently, not one after another (1,000 × 200 ms would be 200 s).
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn health_check_and_watch_follow_the_server_phase() {
    let (addr, phase) = start();
    rt().block_on(async {
        let mut c = client(addr).await;
        let check = |service: &str| HealthCheckRequest {
            service: service.into(),
        };
        let got: HealthCheckResponse = unary(
            &mut c,
            "/grpc.health.v1.Health/Check",
            tonic::Request::new(check("")),
        )
        .await
        .unwrap();
        assert_eq!(got.status, ServingStatus::Serving as i32);
        let got: HealthCheckResponse = unary(
            &mut c,
            "/grpc.health.v1.Health/Check",
            tonic::Request::new(check("test.Svc")),
        )
        .await
        .unwrap();
        assert_eq!(got.status, ServingStatus::Serving as i32);
        let err = unary::<_, HealthCheckResponse>(
            &mut c,
            "/grpc.health.v1.Health/Check",
            tonic::Request::new(check("other")),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        c.ready().await.unwrap();
        let mut watch = c
            .server_streaming(
                tonic::Request::new(check("")),
                PathAndQuery::from_static("/grpc.health.v1.Health/Watch"),
                ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            watch.message().await.unwrap().unwrap().status,
            ServingStatus::Serving as i32
        );
        phase.send_replace(Phase::Draining);
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.status, ServingStatus::NotServing as i32);
    });
    let _ = Bytes::new();
}

/// Runs `f` on a fresh monoio thread (the client is shard-local, like in the server).
fn on_monoio<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
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

#[test]
fn sdsim_client_calls_statuses_deadlines_streams_and_propagation() {
    use sdsim_net::grpc::client::{CallOptions, Client};
    let (addr, _phase) = start();
    on_monoio(move || async move {
        let c = Client::new(addr);
        let got: Blob = c
            .unary(
                "/test.Svc/Echo",
                &Blob {
                    data: b"a".to_vec(),
                    n: 1,
                },
                CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(got.data, b"a");
        let err = c
            .unary::<_, Blob>("/test.Svc/Fail", &Blob::default(), CallOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, SCode::InvalidArgument);
        assert_eq!(err.message, "field n: must be even (got 3) — ünïcode");
        let err = c
            .unary::<_, Blob>(
                "/test.Svc/Missing",
                &Blob::default(),
                CallOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, SCode::Unimplemented);
        // A 60 s handler under a 50 ms deadline: the call ends at the deadline.
        let began = std::time::Instant::now();
        let err = c
            .unary::<_, Blob>(
                "/test.Svc/Sleep",
                &Blob {
                    data: vec![],
                    n: 60_000,
                },
                CallOptions::timeout(Duration::from_millis(50)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, SCode::DeadlineExceeded);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the call waited for the handler: {:?}",
            began.elapsed()
        );
        // The deadline travels: Relay's inner call carries what is left of the caller's 30 s,
        // which is at least 30 s less the whole call's duration.
        let began = std::time::Instant::now();
        let got: Blob = c
            .unary(
                "/test.Svc/Relay",
                &Blob::default(),
                CallOptions::timeout(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        let took = began.elapsed().as_millis() as u64 + 1;
        let inner = String::from_utf8(got.data).unwrap();
        let ms: u64 = inner
            .strip_suffix('m')
            .expect("milliseconds")
            .parse()
            .unwrap();
        assert!(
            ms <= 30_000 && ms >= 30_000 - took,
            "inner grpc-timeout {inner} after a call of {took} ms"
        );
        let mut stream = c
            .server_streaming::<_, Blob>(
                "/test.Svc/Count",
                &Blob {
                    data: vec![],
                    n: 100,
                },
                CallOptions::default(),
            )
            .await
            .unwrap();
        let mut n = 0;
        while let Some(m) = stream.message().await.unwrap() {
            assert_eq!(m.n, n);
            n += 1;
        }
        assert_eq!(n, 100);
        let health: HealthCheckResponse = c
            .unary(
                "/grpc.health.v1.Health/Check",
                &HealthCheckRequest {
                    service: String::new(),
                },
                CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        // Nothing listening: UNAVAILABLE, quickly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Client::new(port)
            .unary::<_, Blob>("/test.Svc/Echo", &Blob::default(), CallOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, SCode::Unavailable);
    });
}
