//! gRPC message framing (length-prefixed messages, sans-IO): a 1-byte compressed flag, a
//! 4-byte big-endian length, the message; gzip when the flag is set.

use super::status::{Code, Status};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::{Read, Write};

/// Takes the next whole message from `buf`; `Ok(None)` means more bytes are needed. Messages
/// (and gzip output) larger than `max` are RESOURCE_EXHAUSTED; a compressed message without an
/// accepted `grpc-encoding` is INTERNAL, as the spec asks.
pub fn decode(buf: &mut BytesMut, max: usize, gzip: bool) -> Result<Option<Bytes>, Status> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if flag > 1 {
        return Err(Status::new(
            Code::Internal,
            format!("invalid compressed flag {flag}"),
        ));
    }
    if len > max {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!("message of {len} bytes is over the limit of {max} bytes"),
        ));
    }
    if buf.len() < 5 + len {
        buf.reserve(5 + len - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    let message = buf.split_to(len).freeze();
    if flag == 0 {
        return Ok(Some(message));
    }
    if !gzip {
        return Err(Status::new(
            Code::Internal,
            "compressed message without a grpc-encoding this server accepts (identity, gzip)",
        ));
    }
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(&message[..])
        .take(max as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(e) => Err(Status::new(
            Code::Internal,
            format!("bad gzip message: {e}"),
        )),
        Ok(_) if out.len() > max => Err(Status::new(
            Code::ResourceExhausted,
            format!("decompressed message is over the limit of {max} bytes"),
        )),
        Ok(_) => Ok(Some(out.into())),
    }
}

/// Frames one message, gzip-compressed when `gzip`.
pub fn encode(message: &[u8], gzip: bool) -> Bytes {
    let (flag, body) = if gzip {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(message).expect("writing to a Vec cannot fail");
        (1u8, z.finish().expect("writing to a Vec cannot fail"))
    } else {
        (0u8, message.to_vec())
    };
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(flag);
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (&'static str, Vec<u8>, bool, Result<Option<Vec<u8>>, Code>);

    #[test]
    fn table_of_frames() {
        let plain = encode(b"hello", false);
        let zipped = encode(&[7u8; 3000], true);
        let cases: Vec<Row> = vec![
            ("plain", plain.to_vec(), false, Ok(Some(b"hello".to_vec()))),
            ("short header", vec![0, 0, 0], false, Ok(None)),
            ("short body", plain[..7].to_vec(), false, Ok(None)),
            ("gzip", zipped.to_vec(), true, Ok(Some(vec![7u8; 3000]))),
            (
                "gzip not negotiated",
                zipped.to_vec(),
                false,
                Err(Code::Internal),
            ),
            ("bad flag", vec![2, 0, 0, 0, 0], false, Err(Code::Internal)),
            (
                "over the limit",
                vec![0, 0, 0x10, 0, 1],
                false,
                Err(Code::ResourceExhausted),
            ),
            (
                "bad gzip",
                vec![1, 0, 0, 0, 3, 1, 2, 3],
                true,
                Err(Code::Internal),
            ),
            (
                "gzip bomb",
                encode(&vec![0u8; 2_000_000], true).to_vec(),
                true,
                Err(Code::ResourceExhausted),
            ),
        ];
        for (name, bytes, gzip, want) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            let got = decode(&mut buf, 1 << 20, gzip)
                .map(|m| m.map(|b| b.to_vec()))
                .map_err(|s| s.code);
            assert_eq!(got, want, "{name}");
        }
    }
}
