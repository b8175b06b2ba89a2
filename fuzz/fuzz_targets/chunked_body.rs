//! Fuzzes the chunked body decoder: whole versus byte-at-a-time must agree, and the decoded
//! body never exceeds its limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sdsim_net::http::chunked::ChunkedDecoder;

fn run(data: &[u8], step: usize) -> (Result<bool, sdsim_net::http::chunked::ChunkError>, Vec<u8>, usize) {
    let mut decoder = ChunkedDecoder::new(128);
    let mut body = BytesMut::new();
    let mut input = BytesMut::new();
    let mut result = Ok(false);
    let mut fed = 0;
    for piece in data.chunks(step.max(1)) {
        input.extend_from_slice(piece);
        fed += piece.len();
        result = decoder.decode(&mut input, &mut body);
        if !matches!(result, Ok(false)) {
            break;
        }
    }
    // Bytes not consumed: those left in the buffer plus those never fed.
    (result, body.to_vec(), input.len() + data.len() - fed)
}

fuzz_target!(|data: &[u8]| {
    let (whole, body, left) = run(data, data.len());
    let (stepped, body2, left2) = run(data, 1);
    assert_eq!(whole, stepped);
    if whole == Ok(true) {
        assert_eq!(body, body2);
        assert_eq!(left, left2, "bytes after the body stay unread");
    }
    assert!(body.len() <= 128);
});
