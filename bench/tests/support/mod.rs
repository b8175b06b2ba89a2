//! A small server speaking sdsim's WebSocket protocol (`GET /ws` upgrade, `subscribe`,
//! `ping`, `POST /api/publish` fanned out as `event` messages with a per-channel `seq`), with
//! misbehaviours a test can switch on: a publish answer held back, an event sent twice, a
//! sequence number skipped. It runs on plain threads in the test process, so the process's
//! own figures (RSS, CPU time) stand for the server's.

use bytes::BytesMut;
use sdsim_net::ws::frame::{self, Decoder, Limits, Message, Opcode, Role};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does wrong, on purpose.
#[derive(Debug, Clone, Default)]
pub(crate) struct Quirks {
    /// The answer to the first publish comes this much later (its event is sent at once).
    pub first_publish_answer_delay: Duration,
    /// The event of this publish (1-based) is sent to every subscriber twice.
    pub duplicate_publish: Option<u64>,
    /// Before this publish (1-based) one sequence number is skipped.
    pub skip_seq_before_publish: Option<u64>,
}

type Writer = Arc<Mutex<TcpStream>>;

#[derive(Default)]
struct Hub {
    /// Channel → its last sequence number and its subscribers.
    channels: HashMap<String, (u64, Vec<Writer>)>,
    publishes: u64,
}

/// The running server; its threads end with the test process.
pub(crate) struct ProtocolServer {
    addr: SocketAddr,
}

impl ProtocolServer {
    /// Listens on a free loopback port.
    pub(crate) fn start(quirks: Quirks) -> ProtocolServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let hub = Arc::new(Mutex::new(Hub::default()));
        let quirks = Arc::new(quirks);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (hub, quirks) = (Arc::clone(&hub), Arc::clone(&quirks));
                std::thread::spawn(move || {
                    let _ = serve(stream, &hub, &quirks);
                });
            }
        });
        ProtocolServer { addr }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until a request head is complete; returns the head, leaving what follows in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<String>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(mut stream: TcpStream, hub: &Mutex<Hub>, quirks: &Quirks) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    let Some(head) = read_head(&mut stream, &mut buf)? else {
        return Ok(());
    };
    if let Some(key) = header(&head, "sec-websocket-key") {
        let accept = sdsim_net::ws::handshake::accept_key(key.as_bytes());
        stream.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )?;
        return websocket(stream, buf, hub);
    }
    let mut head = head;
    loop {
        let length: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf.split_to(length);
        let answer = publish(&body, hub, quirks);
        stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )?;
        match read_head(&mut stream, &mut buf)? {
            Some(next) => head = next,
            None => return Ok(()),
        }
    }
}

/// Sends the event of one `POST /api/publish` body to the channel's subscribers; the answer.
fn publish(body: &[u8], hub: &Mutex<Hub>, quirks: &Quirks) -> String {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let channel = request["channel"].as_str().unwrap_or_default().to_string();
    let number = {
        let mut hub = hub.lock().unwrap();
        hub.publishes += 1;
        let number = hub.publishes;
        let (seq, subscribers) = hub.channels.entry(channel.clone()).or_default();
        *seq += 1 + u64::from(quirks.skip_seq_before_publish == Some(number));
        let event =
            json!({"op": "event", "channel": channel, "seq": *seq, "data": request["data"]});
        let frame = frame::server_frame(Opcode::Text, event.to_string().as_bytes());
        let copies = if quirks.duplicate_publish == Some(number) {
            2
        } else {
            1
        };
        for subscriber in subscribers.iter() {
            let mut socket = subscriber.lock().unwrap();
            for _ in 0..copies {
                let _ = socket.write_all(&frame);
            }
        }
        number
    };
    if number == 1 {
        std::thread::sleep(quirks.first_publish_answer_delay);
    }
    json!({"channel": channel, "seq": number}).to_string()
}

fn websocket(stream: TcpStream, mut buf: BytesMut, hub: &Mutex<Hub>) -> std::io::Result<()> {
    let mut reader = stream.try_clone()?;
    let writer: Writer = Arc::new(Mutex::new(stream));
    let send = |opcode: Opcode, payload: &[u8]| {
        let _ = writer
            .lock()
            .unwrap()
            .write_all(&frame::server_frame(opcode, payload));
    };
    let mut decoder = Decoder::new(Role::Server, Limits::default(), false);
    loop {
        while let Some(message) = decoder
            .decode(&mut buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            match message {
                Message::Text(text) => {
                    let m: Value = serde_json::from_slice(&text).unwrap_or_default();
                    match m["op"].as_str() {
                        Some("subscribe") => {
                            let channel = m["channel"].as_str().unwrap_or_default().to_string();
                            let mut hub = hub.lock().unwrap();
                            let (seq, subscribers) =
                                hub.channels.entry(channel.clone()).or_default();
                            subscribers.push(Arc::clone(&writer));
                            let reply = json!({"op": "subscribed", "channel": channel, "seq": *seq, "recovered": false});
                            send(Opcode::Text, reply.to_string().as_bytes());
                        }
                        Some("ping") => send(Opcode::Text, br#"{"op":"pong"}"#),
                        _ => {}
                    }
                }
                Message::Ping(payload) => send(Opcode::Pong, &payload),
                Message::Close(..) => {
                    send(Opcode::Close, &frame::close_body(1000, ""));
                    return Ok(());
                }
                Message::Binary(_) | Message::Pong(_) => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
