//! A minimal HTTP/1.1 client connection: writes a prepared request, reads exactly one response
//! (Content-Length or chunked body), and reports whether the server will keep the connection.

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::io;

/// What one exchange produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// The response status.
    pub status: u16,
    /// Whether the connection can carry the next request.
    pub reusable: bool,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// A socket error or EOF mid-response.
    Io(io::Error),
    /// The response could not be parsed.
    Parse(&'static str),
}

/// One client connection with its read buffer.
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

impl Connection {
    /// Connects to `addr` with TCP_NODELAY.
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` (complete bytes) and reads one response.
    pub async fn exchange(&mut self, request: bytes::Bytes) -> Result<Exchange, ExchangeError> {
        self.send_and_read(request, parse_response).await
    }

    /// Like [`Self::exchange`], also returning the response body (de-chunked).
    pub async fn exchange_with_body(
        &mut self,
        request: bytes::Bytes,
    ) -> Result<(Exchange, Bytes), ExchangeError> {
        self.send_and_read(request, parse_response_with_body).await
    }

    async fn send_and_read<T>(
        &mut self,
        request: bytes::Bytes,
        parse: impl Fn(&mut BytesMut) -> Result<Option<T>, ExchangeError>,
    ) -> Result<T, ExchangeError> {
        let (result, _) = self.stream.write_all(request).await;
        result.map_err(ExchangeError::Io)?;
        loop {
            if let Some(done) = parse(&mut self.buf)? {
                return Ok(done);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let buf = std::mem::take(&mut self.buf);
            let (len, cap) = (buf.len(), buf.capacity());
            // monoio reads from the start of a BytesMut: read into the spare tail instead.
            let (result, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
            self.buf = slice.into_inner();
            match result {
                Ok(0) => return Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(ExchangeError::Io(e)),
            }
        }
    }
}

/// A parsed response head and where its body ends.
struct Head {
    exchange: Exchange,
    head_len: usize,
    /// Bytes of the body as sent (chunk framing included).
    body_len: usize,
    chunked: bool,
}

/// Parses the head of the response at the start of `buf` and finds the end of its body;
/// `None` until all of it is there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Parse("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value)
                .map_err(|_| ExchangeError::Parse("bad content-length"))?;
            length = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| ExchangeError::Parse("bad content-length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
        0
    } else if chunked {
        match chunked_length(&buf[head_len..], None)? {
            Some(n) => n,
            None => return Ok(None),
        }
    } else {
        length.ok_or(ExchangeError::Parse("response without length"))?
    };
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    Ok(Some(Head {
        exchange: Exchange {
            status,
            reusable: !close,
        },
        head_len,
        body_len,
        chunked: chunked && body_len > 0,
    }))
}

/// Parses (and consumes) one whole response from `buf`, if it is all there.
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<Exchange>, ExchangeError> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    buf.advance(head.head_len + head.body_len);
    Ok(Some(head.exchange))
}

/// Like [`parse_response`], also returning the body (de-chunked).
pub fn parse_response_with_body(
    buf: &mut BytesMut,
) -> Result<Option<(Exchange, Bytes)>, ExchangeError> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let whole = buf.split_to(head.head_len + head.body_len).freeze();
    let body = whole.slice(head.head_len..);
    let body = if head.chunked {
        let mut out = Vec::with_capacity(body.len());
        chunked_length(&body, Some(&mut out))?;
        Bytes::from(out)
    } else {
        body
    };
    Ok(Some((head.exchange, body)))
}

/// The encoded length of a complete chunked body at the start of `data`, if complete; the
/// chunks' data is appended to `out` when given.
fn chunked_length(
    data: &[u8],
    mut out: Option<&mut Vec<u8>>,
) -> Result<Option<usize>, ExchangeError> {
    let mut at = 0;
    loop {
        let Some(line_end) = data[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &data[at..at + line_end];
        let hex = line.split(|b| *b == b';').next().unwrap_or(b"");
        let size = usize::from_str_radix(std::str::from_utf8(hex).unwrap_or("x").trim(), 16)
            .map_err(|_| ExchangeError::Parse("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(end) = data[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(&data[at..at + size]);
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_partial() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n"[..],
        );
        assert_eq!(
            parse_response(&mut buf).unwrap(),
            Some(Exchange {
                status: 200,
                reusable: true
            })
        );
        assert_eq!(
            parse_response(&mut buf).unwrap(),
            Some(Exchange {
                status: 204,
                reusable: true
            })
        );
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nok\r\n0\r\n"[..]);
        assert_eq!(parse_response(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r\nNEXT");
        assert_eq!(
            parse_response(&mut buf).unwrap(),
            Some(Exchange {
                status: 200,
                reusable: false
            })
        );
        assert_eq!(&buf[..], b"NEXT");
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"[..]);
        assert_eq!(parse_response(&mut buf).unwrap(), None);
        assert!(parse_response(&mut BytesMut::from(&b"JUNK\r\n\r\n"[..])).is_err());
    }

    #[test]
    fn bodies_are_returned_whole_and_de_chunked() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\nREST"[..],
        );
        let (first, body) = parse_response_with_body(&mut buf).unwrap().unwrap();
        assert_eq!((first.status, &body[..]), (200, &b"{\"a\":1}"[..]));
        let (second, body) = parse_response_with_body(&mut buf).unwrap().unwrap();
        assert_eq!((second.status, &body[..]), (201, &b"{\"b\":2}"[..]));
        assert_eq!(&buf[..], b"REST");
        let mut partial =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\""[..]);
        assert!(parse_response_with_body(&mut partial).unwrap().is_none());
    }
}
