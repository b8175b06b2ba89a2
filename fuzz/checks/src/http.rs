//! HTTP/1.1 request decoding (`sdsim_net::http::codec`) and chunked bodies
//! (`sdsim_net::http::chunked`).

use crate::alloc::peak_while;
use crate::ALLOCATION_SLACK;
use bytes::BytesMut;
use sdsim_net::http::chunked::{ChunkError, ChunkedDecoder};
use sdsim_net::http::codec::{Limits, RequestDecoder};

const LIMITS: Limits = Limits {
    max_head_bytes: 2048,
    max_body_bytes: 256,
    max_uri_bytes: 512,
    max_headers: 16,
};

/// One decoded request: method, target, body, keep-alive.
type Decoded = (String, String, Vec<u8>, bool);

#[derive(Debug, PartialEq)]
enum Outcome {
    Requests(Vec<Decoded>),
    Error(u16, Vec<Decoded>),
}

fn run(pieces: &[&[u8]]) -> Outcome {
    let mut decoder = RequestDecoder::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            let (result, held) = peak_while(|| decoder.decode(&mut buf));
            // A declared Content-Length or chunk size must not be allocated before it arrives.
            let bound =
                2 * total + LIMITS.max_head_bytes + LIMITS.max_body_bytes + ALLOCATION_SLACK;
            assert!(
                held <= bound,
                "one decode held {held} bytes (bound {bound})"
            );
            match result {
                Ok(Some(d)) => {
                    assert!(buf.len() < before, "a request must consume bytes");
                    assert!(d.request.body().len() <= LIMITS.max_body_bytes);
                    let r = d.request;
                    out.push((
                        r.method().to_string(),
                        r.uri().to_string(),
                        r.body().to_vec(),
                        d.keep_alive,
                    ));
                }
                Ok(None) => break,
                Err(e) => return Outcome::Error(e.status().as_u16(), out),
            }
        }
    }
    Outcome::Requests(out)
}

/// `http_request`: the input decoded whole and in two pieces (split where the first byte
/// says) gives the same requests and the same error status; bodies respect the body limit;
/// every request consumed bytes; no decode holds more than the input and the limits.
pub fn request(data: &[u8]) {
    let whole = run(&[data]);
    let split = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let pieces = run(&[&data[..split], &data[split..]]);
    assert_eq!(whole, pieces, "same input, same requests and verdict");
}

const CHUNKED_LIMIT: usize = 128;

fn chunked(data: &[u8], step: usize) -> (Result<bool, ChunkError>, Vec<u8>, usize) {
    let mut decoder = ChunkedDecoder::new(CHUNKED_LIMIT);
    let mut body = BytesMut::new();
    let mut input = BytesMut::new();
    let mut result = Ok(false);
    let mut fed = 0;
    for piece in data.chunks(step.max(1)) {
        input.extend_from_slice(piece);
        fed += piece.len();
        let (r, held) = peak_while(|| decoder.decode(&mut input, &mut body));
        let bound = 2 * data.len() + CHUNKED_LIMIT + ALLOCATION_SLACK;
        assert!(
            held <= bound,
            "one decode held {held} bytes (bound {bound})"
        );
        result = r;
        if !matches!(result, Ok(false)) {
            break;
        }
    }
    // Bytes not consumed: those left in the buffer plus those never fed.
    (result, body.to_vec(), input.len() + data.len() - fed)
}

/// `chunked_body`: whole and byte-at-a-time decoding agree (verdict, body, bytes left after
/// the body); the body never exceeds its limit.
pub fn chunked_body(data: &[u8]) {
    let (whole, body, left) = chunked(data, data.len());
    let (stepped, body2, left2) = chunked(data, 1);
    assert_eq!(whole, stepped);
    if whole == Ok(true) {
        assert_eq!(body, body2);
        assert_eq!(left, left2, "bytes after the body stay unread");
    }
    assert!(body.len() <= CHUNKED_LIMIT);
}
