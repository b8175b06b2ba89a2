//! The gRPC listener's connection management, seen from real clients: keepalive pings (a client
//! that stops answering is disconnected, one that answers is kept), maximum connection age
//! (GOAWAY, and a tonic client carries on across it; calls that outlive the grace period are cut
//! off), and mutual TLS (a tonic client with a
//! certificate from the configured CA is served; without one, or with a stranger's, refused).

mod support;

use sdsim_auth::pb;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{runtime, start, stop, temp_dir};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_prost::ProstCodec;

const HEADERS: u8 = 1;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const SETTINGS: u8 = 4;

/// A hand-driven HTTP/2 connection: the client preface, then frames as they come.
struct RawH2 {
    tcp: TcpStream,
}

/// One frame: type, flags, payload.
type Frame = (u8, u8, Vec<u8>);

impl RawH2 {
    fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        let mut h2 = RawH2 { tcp };
        h2.send(SETTINGS, 0, &[]);
        h2
    }

    fn send(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).unwrap();
    }

    /// The next frame; `None` when the server closed the connection, `Err` on a read timeout.
    fn next(&mut self, wait: Duration) -> Result<Option<Frame>, std::io::Error> {
        self.tcp.set_read_timeout(Some(wait)).unwrap();
        let mut head = [0u8; 9];
        if let Err(e) = self.tcp.read_exact(&mut head) {
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Err(e),
                _ => Ok(None),
            };
        }
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let mut payload = vec![0u8; len];
        if self.tcp.read_exact(&mut payload).is_err() {
            return Ok(None);
        }
        Ok(Some((head[3], head[4], payload)))
    }

    /// Opens stream 1 with a gRPC call's headers and no body yet, so the call stays open until
    /// the server gives up on it.
    fn open_call(&mut self, path: &str) {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        block.push(0x04); // :path, literal value, name from the static table
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
        for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
            block.push(0x00); // literal name and value, not indexed
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        let len = block.len() as u32;
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, HEADERS, 0x4];
        frame.extend_from_slice(&[0, 0, 0, 1]); // END_HEADERS only, stream 1
        frame.extend_from_slice(&block);
        self.tcp.write_all(&frame).unwrap();
    }

    /// Reads frames until `until(frame types seen)` says stop, the server closes, or
    /// `for_at_most` has passed; acknowledges the server's SETTINGS, and answers PINGs when
    /// `answer_pings`. Returns the frame types seen and whether the connection was closed.
    fn watch(
        &mut self,
        for_at_most: Duration,
        answer_pings: bool,
        until: impl Fn(&[u8]) -> bool,
    ) -> (Vec<u8>, bool) {
        let end = Instant::now() + for_at_most;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if until(&seen) {
                break;
            }
            match self.next(left.max(Duration::from_millis(1))) {
                Err(_) => break,
                Ok(None) => return (seen, true),
                Ok(Some((kind, flags, payload))) => {
                    seen.push(kind);
                    if kind == SETTINGS && flags & 1 == 0 {
                        self.send(SETTINGS, 1, &[]);
                    }
                    if kind == PING && flags & 1 == 0 && answer_pings {
                        self.send(PING, 1, &payload);
                    }
                }
            }
        }
        (seen, false)
    }
}

#[sdsim_testing::backends(epoll, io_uring)]
fn keepalive_pings_close_silent_connections_and_keep_live_ones() {
    let server = start(&[
        "grpc.keepalive_interval=200ms",
        "grpc.keepalive_timeout=300ms",
    ]);
    let addr = server.auth_grpc_addr().unwrap();

    // A client that never answers is pinged, then disconnected once the ping times out.
    // Timed from before it connects: the server's timers cannot start earlier.
    let began = Instant::now();
    let mut silent = RawH2::connect(addr);
    let (seen, closed) = silent.watch(Duration::from_secs(20), false, |_| false);
    assert!(seen.contains(&PING), "no PING from the server: {seen:?}");
    assert!(
        closed,
        "a connection that ignores pings stays open: {seen:?}"
    );
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "closed after {:?}, before interval + timeout",
        began.elapsed()
    );

    // A client that answers is pinged repeatedly and kept: three pings take longer than an
    // interval plus a timeout.
    let pings = |seen: &[u8]| seen.iter().filter(|k| **k == PING).count();
    let mut live = RawH2::connect(addr);
    let (seen, closed) = live.watch(Duration::from_secs(20), true, |seen| pings(seen) >= 3);
    assert!(!closed, "a connection answering pings was closed: {seen:?}");
    assert!(pings(&seen) >= 3, "expected repeated pings: {seen:?}");
    stop(server);
}

async fn health_check(c: &mut tonic::client::Grpc<Channel>) -> Result<String, tonic::Status> {
    c.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply: pb::HealthCheckResponse = c
        .unary(
            tonic::Request::new(pb::HealthCheckRequest {}),
            PathAndQuery::from_static("/sdsim.auth.v1.AuthService/HealthCheck"),
            ProstCodec::default(),
        )
        .await?
        .into_inner();
    Ok(reply.status)
}

#[sdsim_testing::backends(epoll, io_uring)]
fn connections_past_their_maximum_age_are_sent_goaway_and_clients_carry_on() {
    let server = start(&["grpc.max_connection_age=400ms"]);
    let addr = server.auth_grpc_addr().unwrap();

    let mut raw = RawH2::connect(addr);
    let (seen, closed) = raw.watch(Duration::from_secs(20), true, |_| false);
    assert!(seen.contains(&GOAWAY), "no GOAWAY: {seen:?}");
    assert!(closed, "an aged idle connection stays open: {seen:?}");

    // A tonic client calling through several ages of its connection carries on. A call sent
    // as the GOAWAY arrives can fail (tonic, unlike grpc-go, does not retry a call the server
    // never started); retried at once, it succeeds on the new connection.
    runtime().block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = tonic::client::Grpc::new(channel);
        // Calls for at least 1.5 s (three ages or more) and at least 10 calls.
        let began = Instant::now();
        let end = began + Duration::from_millis(1500);
        let (mut calls, mut raced) = (0, Vec::new());
        while Instant::now() < end || calls < 10 {
            let mut status = health_check(&mut c).await;
            if let Err(first) = &status {
                raced.push(format!("{:?}: {}", first.code(), first.message()));
                status = health_check(&mut c).await;
            }
            assert_eq!(
                status.as_deref().ok(),
                Some("SERVING"),
                "call {calls}, retried after {raced:?}"
            );
            calls += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // At most one raced call per age of the connection: an age lasts at least 360 ms
        // (400 ms less its 10 % jitter), so the calls saw at most this many connections.
        let connections = (began.elapsed().as_secs_f64() / 0.36).ceil() as usize + 1;
        assert!(
            raced.len() <= connections,
            "{} of {calls} calls failed over {connections} connections at most: {raced:?}",
            raced.len()
        );
    });
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn calls_outliving_the_maximum_age_grace_are_cut_off() {
    const AGE: Duration = Duration::from_millis(400);
    const GRACE: Duration = Duration::from_millis(600);
    let server = start(&[
        "grpc.max_connection_age=400ms",
        "grpc.max_connection_age_grace=600ms",
    ]);
    let addr = server.auth_grpc_addr().unwrap();

    // A call that never finishes keeps an aged connection open only for the grace period.
    // Timed from before it connects: the connection's age cannot start earlier.
    let began = Instant::now();
    let mut raw = RawH2::connect(addr);
    raw.open_call("/sdsim.auth.v1.AuthService/HealthCheck");
    let (seen, closed) = raw.watch(Duration::from_secs(20), true, |_| false);
    assert!(seen.contains(&GOAWAY), "no GOAWAY: {seen:?}");
    assert!(
        closed,
        "a connection with an endless call stays open: {seen:?}"
    );
    let lived = began.elapsed();
    assert!(
        lived >= AGE.mul_f64(0.9) + GRACE,
        "closed after {lived:?}, before the age (less its 10% jitter) plus the grace"
    );
    stop(server);

    // With no grace ("0s") the same call keeps the aged connection open.
    let server = start(&[
        "grpc.max_connection_age=400ms",
        "grpc.max_connection_age_grace=0s",
    ]);
    let mut raw = RawH2::connect(server.auth_grpc_addr().unwrap());
    raw.open_call("/sdsim.auth.v1.AuthService/HealthCheck");
    let (seen, closed) = raw.watch(Duration::from_secs(20), true, |seen| seen.contains(&GOAWAY));
    assert!(seen.contains(&GOAWAY), "no GOAWAY: {seen:?}");
    assert!(!closed, "closed with its GOAWAY: {seen:?}");
    // Still open well past the grace the first server gave.
    let (seen, closed) = raw.watch(GRACE * 3, true, |_| false);
    assert!(
        !closed,
        "the call was cut off although the grace is unlimited: {seen:?}"
    );
    stop(server);
}

/// A CA, a server certificate for `localhost` and a client certificate, both signed by it.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sdsim test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("gateway.internal", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

#[sdsim_testing::backends(epoll, io_uring)]
fn mutual_tls_serves_clients_with_a_certificate_from_the_ca_only() {
    let ours = pki();
    let strangers = pki();
    let dir = temp_dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca) = (
        write("server.pem", &ours.server.0),
        write("server.key", &ours.server.1),
        write("clients-ca.pem", &ours.ca_pem),
    );
    let server = start(&[
        &format!("tls.cert={cert}"),
        &format!("tls.key={key}"),
        &format!("grpc.client_ca={ca}"),
    ]);
    let addr = server.auth_grpc_addr().unwrap();

    let call_with = |identity: Option<&(String, String)>| -> Result<String, String> {
        runtime().block_on(async {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ours.ca_pem))
                .domain_name("localhost");
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
                .unwrap()
                .tls_config(tls)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let mut c = tonic::client::Grpc::new(channel);
            health_check(&mut c).await.map_err(|e| e.to_string())
        })
    };
    assert_eq!(call_with(Some(&ours.client)).as_deref(), Ok("SERVING"));
    assert!(
        call_with(None).is_err(),
        "served a client without a certificate"
    );
    assert!(
        call_with(Some(&strangers.client)).is_err(),
        "served a client whose certificate another CA signed"
    );
    // Refused handshakes leave the listener serving.
    assert_eq!(call_with(Some(&ours.client)).as_deref(), Ok("SERVING"));
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn a_client_ca_file_without_certificates_is_refused_at_start() {
    let ours = pki();
    let dir = temp_dir();
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let ca = dir.join("empty-ca.pem");
    std::fs::write(&cert, &ours.server.0).unwrap();
    std::fs::write(&key, &ours.server.1).unwrap();
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut o = sdsim_core::config::Overrides::default();
    for s in [
        format!("tls.cert={}", cert.display()),
        format!("tls.key={}", key.display()),
        format!("grpc.client_ca={}", ca.display()),
        "gateway.listen=127.0.0.1:0".into(),
        "auth.http_listen=127.0.0.1:0".into(),
        "auth.grpc_listen=127.0.0.1:0".into(),
        // Every listener on a free port: the default ones may be taken on a shared machine,
        // and that error would come before the one this test is about.
        "project.http_listen=127.0.0.1:0".into(),
        "project.grpc_listen=127.0.0.1:0".into(),
        "simulation.http_listen=127.0.0.1:0".into(),
        "simulation.grpc_listen=127.0.0.1:0".into(),
        format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
    ] {
        o.set(&s).unwrap();
    }
    let config = sdsim_server::config::Config::load(None, &o).unwrap();
    let err = sdsim_server::Server::start_with(config, |_| {})
        .err()
        .expect("start-up fails");
    let text = err.to_string();
    assert!(
        text.contains("grpc.client_ca") && text.contains("empty-ca.pem"),
        "{text}"
    );
}
