//! Properties of the request decoder: any split of valid (pipelined, chunked) input decodes to
//! the same requests as the whole; arbitrary bytes never panic and never stall the decoder.

use bytes::BytesMut;
use proptest::prelude::*;
use sdsim_net::http::codec::{Limits, RequestDecoder};

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let path = "/[a-z0-9/_-]{0,20}(\\?[a-z]=[0-9]{1,3})?";
    let body = prop::collection::vec(any::<u8>(), 0..60);
    let chunked = any::<bool>();
    let chunk = 1usize..9;
    let close = any::<bool>();
    (method, path, body, chunked, chunk, close).prop_map(
        |(method, path, body, chunked, chunk, close)| {
            let mut out =
                format!("{method} {path} HTTP/1.1\r\nHost: example\r\nX-Test: v\r\n").into_bytes();
            if close {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in body.chunks(chunk) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            out
        },
    )
}

/// Feeds `input` in pieces cut at `cuts`; returns the requests, or the first error's status.
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Result<Vec<Seen>, u16> {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut at = 0;
    for point in points {
        buf.extend_from_slice(&input[at..point]);
        at = point;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(d)) => {
                    let r = d.request;
                    seen.push(Seen {
                        method: r.method().to_string(),
                        target: r.uri().to_string(),
                        headers: r
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body: r.body().to_vec(),
                        keep_alive: d.keep_alive,
                    });
                }
                Ok(None) => break,
                Err(e) => return Err(e.status().as_u16()),
            }
        }
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn any_split_of_pipelined_requests_decodes_the_same(
        requests in prop::collection::vec(request_strategy(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let input: Vec<u8> = requests.concat();
        let whole = decode_in_pieces(&input, &[]).expect("valid input decodes");
        prop_assert_eq!(whole.len(), requests.len());
        let split = decode_in_pieces(&input, &cuts).expect("valid input decodes when split");
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn random_bytes_never_panic_or_stall(input in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut decoder = RequestDecoder::new(Limits { max_head_bytes: 256, max_body_bytes: 64, ..Limits::default() });
        let mut buf = BytesMut::from(&input[..]);
        // Each call either consumes a request, asks for more, or fails: bounded by the input.
        for _ in 0..=input.len() + 1 {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(d)) => {
                    prop_assert!(d.request.body().len() <= 64);
                    prop_assert!(buf.len() < before, "a request consumed bytes");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn prefixed_garbage_after_a_valid_request_is_an_error_or_incomplete(
        request in request_strategy(),
        junk in "[^A-Z]{1,20}",
    ) {
        let mut input = request.clone();
        input.extend_from_slice(junk.as_bytes());
        // The valid request still comes out first, whatever follows it.
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&input[..]);
        prop_assert!(decoder.decode(&mut buf).unwrap().is_some());
    }
}
