//! The chunked transfer coding (RFC 9112 §7.1), decoded byte by byte: `size[;ext]CRLF data CRLF`
//! … `0CRLF [trailers] CRLF`. Strict about CRLF (a bare LF is an error, as request-smuggling
//! defences require), bounded in extension and trailer length, and in total body size.

use bytes::{Buf, BytesMut};

/// Longest chunk extension accepted (they carry nothing we use).
const MAX_EXTENSION: usize = 4096;
/// Most bytes of trailer fields accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is malformed, or too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk size line is not hex digits, or overflows.
    #[error("invalid chunk size")]
    BadSize,
    /// A chunk size line or chunk data is not followed by CRLF.
    #[error("chunk not terminated by CRLF")]
    MissingCrlf,
    /// A chunk extension is longer than 4 KiB.
    #[error("chunk extension too long")]
    ExtensionTooLong,
    /// The trailer section is longer than 16 KiB.
    #[error("trailer section too long")]
    TrailersTooLong,
    /// The decoded body would exceed the body limit.
    #[error("chunked body exceeds the body size limit")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a size; `digits` read so far.
    Size { value: u64, digits: u32 },
    /// Inside `;extension` up to CR; `len` bytes so far.
    Extension { value: u64, len: usize },
    /// Saw CR after the size line; expecting LF.
    SizeLf { value: u64 },
    /// Copying chunk data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// In the trailer section; `line` bytes in the current line, `total` overall.
    Trailer { line: usize, total: usize },
    /// Saw CR in the trailer section; `line` = length of the line it ends.
    TrailerLf { line: usize, total: usize },
    /// The terminating empty line has been read.
    Done,
}

/// Decodes one chunked body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    decoded: usize,
    limit: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies larger than `limit` bytes.
    pub fn new(limit: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            decoded: 0,
            limit,
        }
    }

    /// Whether the whole body (and its trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can of `input`, appending chunk data to `body`. Returns `Ok(true)` once
    /// the body is complete; the bytes after it stay in `input`.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        body: &mut BytesMut,
    ) -> Result<bool, ChunkError> {
        while !input.is_empty() {
            if let State::Data { remaining } = self.state {
                let take = (remaining as usize).min(input.len());
                body.extend_from_slice(&input[..take]);
                input.advance(take);
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            let byte = input[0];
            input.advance(1);
            self.state = self.step(byte)?;
            if self.state == State::Done {
                return Ok(true);
            }
        }
        Ok(self.state == State::Done)
    }

    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { value, digits } => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (byte as char).to_digit(16).unwrap_or(0) as u64;
                    if digits >= 16 {
                        return Err(ChunkError::BadSize);
                    }
                    State::Size {
                        value: value.checked_mul(16).ok_or(ChunkError::BadSize)? + digit,
                        digits: digits + 1,
                    }
                }
                b';' | b' ' | b'\t' if digits > 0 => State::Extension { value, len: 0 },
                b'\r' if digits > 0 => State::SizeLf { value },
                b'\n' if digits > 0 => return Err(ChunkError::MissingCrlf),
                _ => return Err(ChunkError::BadSize),
            },
            State::Extension { value, len } => match byte {
                b'\r' => State::SizeLf { value },
                b'\n' => return Err(ChunkError::MissingCrlf),
                _ if len >= MAX_EXTENSION => return Err(ChunkError::ExtensionTooLong),
                _ => State::Extension {
                    value,
                    len: len + 1,
                },
            },
            State::SizeLf { value } => {
                if byte != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                if value == 0 {
                    State::Trailer { line: 0, total: 0 }
                } else {
                    let total = (self.decoded as u64)
                        .checked_add(value)
                        .ok_or(ChunkError::TooLarge)?;
                    if total > self.limit as u64 {
                        return Err(ChunkError::TooLarge);
                    }
                    self.decoded = total as usize;
                    State::Data { remaining: value }
                }
            }
            State::Data { .. } => unreachable!("data is copied in bulk by decode"),
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(ChunkError::MissingCrlf),
            State::Trailer { line, total } => {
                if total >= MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLong);
                }
                match byte {
                    b'\r' => State::TrailerLf {
                        line,
                        total: total + 1,
                    },
                    b'\n' => return Err(ChunkError::MissingCrlf),
                    _ => State::Trailer {
                        line: line + 1,
                        total: total + 1,
                    },
                }
            }
            State::TrailerLf { line, total } => {
                if byte != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                if line == 0 {
                    State::Done
                } else {
                    State::Trailer {
                        line: 0,
                        total: total + 1,
                    }
                }
            }
            State::Done => State::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limit: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new(limit);
        let mut buf = BytesMut::from(input);
        let mut body = BytesMut::new();
        d.decode(&mut buf, &mut body)?;
        assert!(d.is_done(), "incomplete");
        Ok((body.to_vec(), buf.to_vec()))
    }

    #[test]
    fn decodes_sizes_extensions_trailers() {
        let (body, rest) = decode_all(
            b"5\r\nhello\r\nA;x=1\r\n0123456789\r\n0\r\nT: v\r\n\r\nNEXT",
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello0123456789");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let input = b"3\r\nabc\r\n1;e\r\nd\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut body = BytesMut::new();
        for (i, b) in input.iter().enumerate() {
            let mut one = BytesMut::from(&[*b][..]);
            let done = d.decode(&mut one, &mut body).unwrap();
            assert_eq!(done, i == input.len() - 1);
        }
        assert_eq!(&body[..], b"abcd");
    }

    #[test]
    fn rejects_malformed() {
        let cases: [(&[u8], ChunkError); 8] = [
            (b"x\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"11111111111111111\r\n", ChunkError::BadSize),
            (b"5\nhello", ChunkError::MissingCrlf),
            (b"5\r\nhelloXX", ChunkError::MissingCrlf),
            (b"0\r\nT: v\n", ChunkError::MissingCrlf),
            (b"10\r\n", ChunkError::TooLarge),
            (b"-1\r\n", ChunkError::BadSize),
        ];
        for (input, want) in cases {
            let mut d = ChunkedDecoder::new(8);
            let mut buf = BytesMut::from(input);
            let got = d.decode(&mut buf, &mut BytesMut::new());
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(input));
        }
        let long_ext = [b"1;".as_slice(), &[b'e'; 5000]].concat();
        let mut d = ChunkedDecoder::new(8);
        let got = d.decode(&mut BytesMut::from(&long_ext[..]), &mut BytesMut::new());
        assert_eq!(got, Err(ChunkError::ExtensionTooLong));
    }
}
