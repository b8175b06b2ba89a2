//! Fuzzes the gRPC message-frame decoder: never panics, a message never exceeds the limit
//! (after gzip too), and a decoded message re-encodes to a frame that decodes to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sdsim_net::grpc::frame::{decode, encode};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let gzip = flags & 1 == 1;
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = decode(&mut buf, MAX, gzip) {
        assert!(message.len() <= MAX);
        let mut again = BytesMut::from(&encode(&message, flags & 2 == 2)[..]);
        let round = decode(&mut again, MAX, true).expect("our own frame decodes");
        assert_eq!(round.as_deref(), Some(&message[..]));
    }
});
