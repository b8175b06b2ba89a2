//! What a layer learns reaches the rest of a gRPC call without their code knowing the layer:
//! over a real socket, a layer's extension is in the handler's `Call`, and the field it puts on
//! the exchange's span is on the access-log line and on the handler's own events.

use sdsim_net::grpc::{Call, Services, Settings, Status};
use sdsim_net::middleware::access_log::{AccessLog, TARGET};
use sdsim_net::middleware::layer::{Check, Exchange, Layer, Layers};
use sonic_rs::{JsonValueTrait, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// What [`Tagger`] learned about a call.
#[derive(Clone)]
struct Tag(String);

/// Tags every call with the value of its `x-tag` metadata.
struct Tagger;

impl Layer for Tagger {
    fn request<'a>(&'a self, ex: &'a mut Exchange, metadata: &'a http::HeaderMap) -> Check<'a> {
        let tag = metadata
            .get("x-tag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        ex.span = tracing::info_span!(target: TARGET, parent: &ex.span, "tagged", tag = %tag);
        ex.extensions.insert(Tag(tag));
        Check::Pass
    }
}

/// Log output of the server thread, and a signal for each write.
#[derive(Clone, Default)]
struct Captured(Arc<(Mutex<Vec<u8>>, Condvar)>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 .0.lock().unwrap().extend_from_slice(buf);
        self.0 .1.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The lines logged once one with `target` has been (it is written after the client has
    /// its answer: the access line comes when the call has ended).
    fn lines_once_logged(&self, target: &str) -> Vec<Value> {
        let parse = |bytes: &[u8]| -> Vec<Value> {
            let text = std::str::from_utf8(bytes).unwrap();
            text.lines()
                .map(|l| sonic_rs::from_str(l).unwrap())
                .collect()
        };
        let (log, written) = &*self.0;
        let (log, _) = written
            .wait_timeout_while(log.lock().unwrap(), Duration::from_secs(30), |log| {
                !parse(log)
                    .iter()
                    .any(|l| l["target"].as_str() == Some(target))
            })
            .unwrap();
        parse(&log)
    }
}

/// A one-thread gRPC server whose calls run through [`Tagger`] and the access log, logging
/// JSON into `log`.
fn start(log: Captured) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || log.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut services = Services::new();
            let mut layers = Layers::new();
            layers.push(Tagger).push(AccessLog);
            services.set_layers(Rc::new(layers));
            services.unary("/test.Ctx/Seen", |call: Call, _b: Blob| async move {
                let seen = call.extensions.get::<Tag>().map(|t| t.0.clone());
                tracing::info!(target: "test_handler", "handling");
                Ok::<_, Status>(Blob {
                    data: seen.unwrap_or_default().into_bytes(),
                })
            });
            let services = Rc::new(services);
            let settings = Rc::new(Settings::default());
            let (_phase_tx, phase_rx) =
                tokio::sync::watch::channel(sdsim_core::shutdown::Phase::Accepting);
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

#[test]
fn a_layers_extension_and_span_fields_reach_the_handler_and_the_access_log() {
    let log = Captured::default();
    let addr = start(log.clone());
    let seen = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(Blob::default());
            req.metadata_mut().insert("x-tag", "t-42".parse().unwrap());
            grpc.unary(
                req,
                PathAndQuery::from_static("/test.Ctx/Seen"),
                ProstCodec::<Blob, Blob>::default(),
            )
            .await
            .unwrap()
            .into_inner()
        });
    assert_eq!(seen.data, b"t-42", "the handler sees the layer's extension");

    let lines = log.lines_once_logged(TARGET);
    let field = |line: &Value, path: [&str; 2]| line[path[0]][path[1]].as_str().map(str::to_owned);
    let access = lines
        .iter()
        .find(|l| l["target"].as_str() == Some(TARGET))
        .expect("an access-log line");
    assert_eq!(access["message"].as_str(), Some("grpc call"));
    assert_eq!(field(access, ["span", "name"]).as_deref(), Some("tagged"));
    assert_eq!(
        field(access, ["span", "tag"]).as_deref(),
        Some("t-42"),
        "{access:?}"
    );
    let handler = lines
        .iter()
        .find(|l| l["target"].as_str() == Some("test_handler"))
        .expect("the handler's event");
    assert_eq!(
        field(handler, ["span", "tag"]).as_deref(),
        Some("t-42"),
        "{handler:?}"
    );
}
