//! Which client errors say that the call provably never reached the server (the mesh retries
//! those on another instance, even for a write): a raw HTTP/2 peer answers the request's
//! HEADERS with RST_STREAM or GOAWAY, and the client's status is checked for `unsent`.

use sdsim_net::grpc::client::{CallOptions, Client};
use sdsim_net::grpc::Status;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// What the peer does when the request's HEADERS arrive.
#[derive(Clone, Copy)]
enum Answer {
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY naming this last stream id (NO_ERROR), then close the connection.
    GoAwayThenClose(u32),
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A one-connection HTTP/2 peer that does `answer` to the first request.
fn peer(answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).unwrap();
        s.write_all(&frame(4, 0, 0, &[])).unwrap();
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).is_err() {
                return;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).unwrap();
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match kind {
                4 if flags & 1 == 0 => s.write_all(&frame(4, 1, 0, &[])).unwrap(),
                1 => {
                    respond(&mut s, answer, stream);
                    if let Answer::GoAwayThenClose(_) = answer {
                        // A clean close (FIN, after reading what the client sent), so that
                        // the client sees the end of the connection, not a reset.
                        s.shutdown(std::net::Shutdown::Write).unwrap();
                        let _ = std::io::copy(&mut s, &mut std::io::sink());
                        return;
                    }
                }
                _ => {}
            }
        }
    });
    addr
}

fn respond(s: &mut TcpStream, answer: Answer, stream: u32) {
    match answer {
        Answer::Reset(code) => s
            .write_all(&frame(3, 0, stream, &code.to_be_bytes()))
            .unwrap(),
        Answer::GoAwayThenClose(last) => {
            let mut payload = last.to_be_bytes().to_vec();
            payload.extend_from_slice(&0u32.to_be_bytes());
            s.write_all(&frame(7, 0, 0, &payload)).unwrap();
        }
    }
}

fn call(addr: SocketAddr) -> Status {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(addr);
        let opts = CallOptions::timeout(Duration::from_secs(5));
        client
            .unary_raw("/test.v1.Things/CreateThing", b"", opts)
            .await
            .unwrap_err()
    })
}

const REFUSED_STREAM: u32 = 0x7;
const INTERNAL_ERROR: u32 = 0x2;

#[test]
fn a_refused_stream_was_not_sent() {
    let status = call(peer(Answer::Reset(REFUSED_STREAM)));
    assert!(status.unsent, "{status:?}");
}

#[test]
fn a_stream_reset_for_another_reason_may_have_started() {
    let status = call(peer(Answer::Reset(INTERNAL_ERROR)));
    assert!(!status.unsent, "{status:?}");
}

#[test]
fn a_goaway_below_the_stream_was_not_sent() {
    let status = call(peer(Answer::GoAwayThenClose(0)));
    assert!(status.unsent, "{status:?}");
}

#[test]
fn a_goaway_that_covers_the_stream_may_have_started() {
    let status = call(peer(Answer::GoAwayThenClose(1)));
    assert!(!status.unsent, "{status:?}");
}

#[test]
fn nothing_listening_was_not_sent() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let status = call(addr);
    assert!(status.unsent, "{status:?}");
}
