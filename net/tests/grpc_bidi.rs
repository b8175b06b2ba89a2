//! Bidirectional streaming over real sockets: a tonic client gets each answer before it sends
//! its next message (the handler reads while it writes), and malformed request streams end with
//! the status that names what was wrong while the connection keeps serving.

use bytes::Bytes;
use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::bidi::Requests;
use sdsim_net::grpc::{Call, Services, Settings, Status, Stream};
use std::net::SocketAddr;
use std::rc::Rc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(uint32, tag = "2")]
    n: u32,
}

const SUM: &str = "/test.Svc/RunningSum";
const MAX: usize = 64 << 10;

/// A one-thread monoio server whose `RunningSum` answers each message with the sum so far.
fn start() -> SocketAddr {
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
            services.bidi_streaming(
                SUM,
                |_call: Call, mut requests: Requests<Blob>, mut out: Stream<Blob>| async move {
                    let mut sum = 0;
                    while let Some(b) = requests.next().await? {
                        sum += b.n;
                        out.send(&Blob {
                            data: Vec::new(),
                            n: sum,
                        })
                        .await?;
                    }
                    Ok::<_, Status>(())
                },
            );
            let services = Rc::new(services);
            let settings = Rc::new(Settings {
                max_message_bytes: MAX,
                ..Settings::default()
            });
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

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn each_answer_comes_before_the_next_message_is_sent() {
    let addr = start();
    rt().block_on(async move {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<Blob>(1);
        tx.send(Blob { data: vec![], n: 1 }).await.unwrap();
        let responses = client
            .streaming(
                tonic::Request::new(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (b, rx))
                })),
                PathAndQuery::from_static(SUM),
                ProstCodec::<Blob, Blob>::default(),
            )
            .await
            .unwrap();
        let mut responses = responses.into_inner();
        // The client's side stays open: an answer that waited for its end would hang here.
        for (n, sum) in [(2, 3), (3, 6), (4, 10)] {
            let first = responses.message().await.unwrap().unwrap();
            assert_eq!(first.n, sum - n);
            tx.send(Blob { data: vec![], n }).await.unwrap();
        }
        let last = responses.message().await.unwrap().unwrap();
        assert_eq!(last.n, 10);
        drop(tx);
        assert!(responses.message().await.unwrap().is_none(), "ends OK");
    });
}

/// One bidirectional call by a raw h2 client on `h2c` sending `body`; the answers' count,
/// grpc-status and grpc-message.
async fn raw(
    h2c: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (usize, String, String) {
    let mut req = tonic::codegen::http::Request::post(format!("http://{addr}{SUM}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let (resp, mut send) = h2c
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req.body(()).unwrap(), false)
        .unwrap();
    // The server may answer (and reset) before all of it is sent; the answer is what counts.
    let _ = send.send_data(Bytes::from(body), true);
    let (parts, mut stream) = resp.await.unwrap().into_parts();
    let mut headers = parts.headers;
    let mut answers = 0;
    if !headers.contains_key("grpc-status") {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.data().await {
            buf.extend_from_slice(&chunk.unwrap());
        }
        while sdsim_net::grpc::frame::decode(&mut buf, MAX, false)
            .unwrap()
            .is_some()
        {
            answers += 1;
        }
        headers = stream.trailers().await.unwrap().unwrap_or_default();
    }
    let get = |k: &str| {
        headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (answers, get("grpc-status"), get("grpc-message"))
}

/// A malformed-input case: the request body, its grpc-encoding, the answers sent before the
/// fault, the grpc-status, words of the grpc-message.
type Case = (
    Vec<u8>,
    Option<&'static str>,
    usize,
    &'static str,
    &'static str,
);

fn framed(n: u32) -> Vec<u8> {
    use prost::Message;
    let blob = Blob { data: vec![], n };
    sdsim_net::grpc::frame::encode(&blob.encode_to_vec(), false).to_vec()
}

#[test]
fn malformed_request_streams_end_with_a_status_naming_the_fault_and_the_connection_serves_on() {
    let addr = start();
    rt().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut h2c, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let over = {
            let mut b = vec![0u8];
            b.extend_from_slice(&((MAX as u32) + 1).to_be_bytes());
            b
        };
        let cut = {
            let mut b = framed(5);
            b.extend_from_slice(&[0, 0, 0, 0, 9, 1, 2]);
            b
        };
        let not_a_blob = {
            // Field 1 declared as a length-delimited value longer than the message.
            let mut b = vec![0u8, 0, 0, 0, 2];
            b.extend_from_slice(&[0x0a, 0x7f]);
            b
        };
        let compressed_flag = {
            let mut b = framed(1);
            b[0] = 1;
            b
        };
        let table: Vec<Case> = vec![
            (over, None, 0, "8", "over the limit"),
            (cut, None, 1, "13", "ended inside a message"),
            (not_a_blob, None, 0, "3", "does not decode"),
            (compressed_flag, None, 0, "13", "compressed message"),
            (framed(1), Some("br"), 0, "12", "not supported"),
            ([framed(2), framed(3)].concat(), None, 2, "0", ""),
        ];
        for (body, encoding, answers, status, words) in table {
            let (got, code, message) = raw(&mut h2c, addr, encoding, body).await;
            assert_eq!((got, code.as_str()), (answers, status), "{message}");
            assert!(message.contains(words), "{message:?} lacks {words:?}");
        }
        // The same connection still serves.
        let (got, code, _) = raw(&mut h2c, addr, None, framed(7)).await;
        assert_eq!((got, code.as_str()), (1, "0"));
    });
}
