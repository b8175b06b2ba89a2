//! The gRPC listener refuses oversize inputs before reading them into memory: a header list over
//! `max_header_list_bytes` (431 and the stream reset, the connection lives on), a frame over
//! `max_frame_bytes` (GOAWAY FRAME_SIZE_ERROR once its 9-byte header is in, its payload never
//! sent), and a message whose length prefix is over `max_message_bytes` (RESOURCE_EXHAUSTED
//! once the 5-byte prefix is in, the message never sent). The first two are driven by hand-made
//! HTTP/2 frames, since a well-behaved client would not send them.

use bytes::Bytes;
use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::{Call, Services, Settings, Status};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

const MAX_HEADER_LIST: u32 = 4096;
const MAX_MESSAGE: usize = 1 << 20;

/// Starts a one-thread monoio gRPC server with an echo method; returns its address.
fn start() -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (_phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Accepting);
            let mut services = Services::new();
            services.unary("/test.Svc/Echo", |_call: Call, b: Bytes| async move {
                Ok::<_, Status>(b)
            });
            let services = Rc::new(services);
            let settings = Rc::new(Settings {
                max_header_list_bytes: MAX_HEADER_LIST,
                max_message_bytes: MAX_MESSAGE,
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

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;

/// A client speaking raw HTTP/2 frames over a blocking socket.
struct RawH2 {
    socket: TcpStream,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl RawH2 {
    fn connect(addr: SocketAddr) -> RawH2 {
        let socket = TcpStream::connect(addr).unwrap();
        // A guard against a server that never answers, not a measurement.
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = RawH2 { socket };
        c.socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        c.send(SETTINGS, 0, 0, &[]);
        c
    }

    fn send_head(&mut self, kind: u8, flags: u8, stream: u32, len: usize) {
        let len = (len as u32).to_be_bytes();
        let mut head = vec![len[1], len[2], len[3], kind, flags];
        head.extend_from_slice(&stream.to_be_bytes());
        self.socket.write_all(&head).unwrap();
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.send_head(kind, flags, stream, payload.len());
        self.socket.write_all(payload).unwrap();
    }

    fn read(&mut self) -> Frame {
        let mut head = [0u8; 9];
        self.socket
            .read_exact(&mut head)
            .expect("the server closed or went silent before answering");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.socket.read_exact(&mut payload).unwrap();
        Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }
    }

    /// Reads frames until one satisfies `wanted` (settings, window updates and acks pass by).
    fn until(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let frame = self.read();
            if wanted(&frame) {
                return frame;
            }
            assert_ne!(frame.kind, GOAWAY, "unexpected GOAWAY {:?}", frame.payload);
        }
    }
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    for s in [name, value] {
        // Length as a 7-bit-prefix integer, no Huffman.
        let mut n = s.len();
        if n < 127 {
            block.push(n as u8);
        } else {
            block.push(127);
            n -= 127;
            while n >= 128 {
                block.push((n % 128) as u8 | 0x80);
                n /= 128;
            }
            block.push(n as u8);
        }
        block.extend_from_slice(s.as_bytes());
    }
}

fn grpc_request_headers(extra: &[(&str, String)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/test.Svc/Echo"),
        (":authority", "t"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, name, value);
    }
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    block
}

fn code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        payload[at],
        payload[at + 1],
        payload[at + 2],
        payload[at + 3],
    ])
}

#[test]
fn a_header_list_over_the_limit_refuses_the_stream_not_the_connection() {
    let addr = start();
    let mut c = RawH2::connect(addr);
    let big = "b".repeat(MAX_HEADER_LIST as usize + 100);
    let block = grpc_request_headers(&[("x-big", big)]);
    assert!(block.len() < 16 << 10, "fits one frame");
    c.send(HEADERS, END_HEADERS, 1, &block);
    // h2 answers 431 (a HEADERS frame ending the stream), then resets the stream so that no
    // DATA for it is taken either; the handler never sees the call.
    let answer = c.until(|f| f.stream == 1);
    assert_eq!(
        (answer.kind, answer.flags & END_STREAM),
        (HEADERS, END_STREAM),
        "a 431 response first"
    );
    let reset = c.until(|f| f.kind == RST_STREAM);
    assert_eq!(reset.stream, 1);
    assert_eq!(code(&reset.payload, 0), PROTOCOL_ERROR);
    // The connection carries on.
    c.send(PING, 0, 0, b"12345678");
    let pong = c.until(|f| f.kind == PING && f.flags & ACK != 0);
    assert_eq!(pong.payload, b"12345678");
}

#[test]
fn a_frame_over_the_limit_closes_the_connection_before_its_payload_is_read() {
    let addr = start();
    let mut c = RawH2::connect(addr);
    // Only the 9-byte head announcing a 1 MiB frame: the payload is never sent.
    c.send_head(HEADERS, END_HEADERS, 1, 1 << 20);
    let goaway = c.until(|f| f.kind == GOAWAY);
    assert_eq!(code(&goaway.payload, 4), FRAME_SIZE_ERROR);
}

#[test]
fn a_message_over_the_limit_is_refused_from_its_length_prefix() {
    let addr = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (h2c, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut h2c = h2c.ready().await.unwrap();
        let call = |h2c: &mut h2::client::SendRequest<Bytes>, prefix: Vec<u8>, end: bool| {
            let req = http::Request::post(format!("http://{addr}/test.Svc/Echo"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (resp, mut send) = h2c.send_request(req, false).unwrap();
            send.send_data(Bytes::from(prefix), end).unwrap();
            (resp, send)
        };
        // Declares 100 MiB and sends nothing more, keeping the stream open: the answer comes
        // from the prefix alone.
        let declared = 100u32 << 20;
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&declared.to_be_bytes());
        let (resp, _send) = call(&mut h2c, prefix, false);
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("answered without waiting for the message")
            .unwrap();
        let headers = resp.headers();
        assert_eq!(
            headers["grpc-status"], "8",
            "RESOURCE_EXHAUSTED: {headers:?}"
        );
        let message = headers["grpc-message"].to_str().unwrap();
        assert!(
            message.contains("104857600 bytes is over the limit of 1048576"),
            "{message}"
        );

        // A message within the limit is echoed (a BytesValue holding "abc").
        let message = [0x0a, 3, b'a', b'b', b'c'];
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let (resp, _send) = call(&mut h2c, framed, true);
        let mut body = resp.await.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'b', b'c']);
        let trailers = body.trailers().await.unwrap().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
    });
}
