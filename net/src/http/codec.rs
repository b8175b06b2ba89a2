//! The sans-IO HTTP/1.1 request decoder: bytes in, whole requests (head and body) out.
//!
//! The connection loop owns a read buffer and one [`RequestDecoder`], and calls
//! [`RequestDecoder::decode`] after every read; pipelined requests come out one per call. The
//! head is parsed by httparse; bodies are `Content-Length` (split off the buffer without a copy)
//! or chunked ([`super::chunked`]). Every rejection is a [`DecodeError`] that knows its status.
//! Request-smuggling defences: `Content-Length` together with `Transfer-Encoding` is rejected,
//! as are differing duplicate lengths and transfer codings other than `chunked`.

use super::chunked::{ChunkError, ChunkedDecoder};
use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING,
};
use http::{Method, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// Size limits of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (request line + headers); larger → 431.
    pub max_head_bytes: usize,
    /// Largest body; larger → 413.
    pub max_body_bytes: usize,
    /// Longest request target; longer → 414.
    pub max_uri_bytes: usize,
    /// Most header fields; more → 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 1024 * 1024,
            max_body_bytes: 25 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a request was rejected. Each maps to one status ([`DecodeError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The head is larger than `max_head_bytes` → 431.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than `max_headers` → 431.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The request target is longer than `max_uri_bytes` → 414.
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// The request line or a header line is not valid HTTP/1.1 syntax → 400.
    #[error("malformed request: {0}")]
    Syntax(&'static str),
    /// A header has an invalid name or value → 400.
    #[error("invalid header field {0}")]
    BadHeader(String),
    /// The request target is not a valid URI → 400.
    #[error("invalid request target")]
    BadUri,
    /// HTTP/1.1 without exactly one `Host` header → 400.
    #[error("HTTP/1.1 requests need exactly one Host header")]
    Host,
    /// `Content-Length` is not a number, or duplicates disagree → 400.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` → 400 (request smuggling defence).
    #[error("both Content-Length and Transfer-Encoding")]
    AmbiguousLength,
    /// A transfer coding other than `chunked` → 501.
    #[error("unsupported Transfer-Encoding (only chunked is accepted)")]
    UnsupportedTransferEncoding,
    /// The chunked body is malformed → 400.
    #[error("malformed chunked body: {0}")]
    Chunked(ChunkError),
    /// The body is larger than `max_body_bytes` → 413.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// An HTTP version other than 1.0 and 1.1 → 505.
    #[error("only HTTP/1.0 and HTTP/1.1 are supported")]
    Version,
    /// An `Expect` other than `100-continue` → 417.
    #[error("unsupported Expect header")]
    Expectation,
}

impl DecodeError {
    /// The response status for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            DecodeError::HeadTooLarge(_) | DecodeError::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            DecodeError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            DecodeError::BodyTooLarge(_) | DecodeError::Chunked(ChunkError::TooLarge) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            DecodeError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            DecodeError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            DecodeError::Expectation => StatusCode::EXPECTATION_FAILED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A sentence for the error response.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// One whole request.
#[derive(Debug)]
pub struct Decoded {
    /// The request, body included.
    pub request: http::Request<Bytes>,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

enum State {
    Head,
    Fixed {
        parts: http::request::Parts,
        keep_alive: bool,
        length: usize,
    },
    Chunked {
        parts: http::request::Parts,
        keep_alive: bool,
        decoder: ChunkedDecoder,
        body: BytesMut,
    },
}

/// Decodes the requests of one connection.
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    send_continue: bool,
}

const STACK_HEADERS: usize = 128;

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> RequestDecoder {
        RequestDecoder {
            limits,
            state: State::Head,
            send_continue: false,
        }
    }

    /// True exactly once per request that asked `Expect: 100-continue` and whose body is not all
    /// here yet: the connection must send `100 Continue` before the client sends the body.
    pub fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.send_continue)
    }

    /// Whether part of a request has been consumed (a body is being read).
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Head)
    }

    /// Consumes bytes from `buf`. `Ok(None)`: more bytes are needed. `Ok(Some)`: one whole
    /// request; call again for pipelined requests still in `buf`. After an error the connection
    /// must be closed (the stream position is lost).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        if let State::Head = self.state {
            match self.decode_head(buf)? {
                Some(done) => return Ok(Some(done)),
                None if matches!(self.state, State::Head) => return Ok(None),
                None => {}
            }
        }
        let complete = match &mut self.state {
            State::Head => return Ok(None),
            State::Fixed { length, .. } => buf.len() >= *length,
            State::Chunked { decoder, body, .. } => {
                decoder.decode(buf, body).map_err(DecodeError::Chunked)?
            }
        };
        if !complete {
            return Ok(None);
        }
        self.send_continue = false;
        let (parts, keep_alive, body) = match std::mem::replace(&mut self.state, State::Head) {
            State::Fixed {
                parts,
                keep_alive,
                length,
            } => (parts, keep_alive, buf.split_to(length).freeze()),
            State::Chunked {
                parts,
                keep_alive,
                body,
                ..
            } => (parts, keep_alive, body.freeze()),
            State::Head => unreachable!("checked above"),
        };
        Ok(Some(Decoded {
            request: http::Request::from_parts(parts, body),
            keep_alive,
        }))
    }

    /// Parses a head if one is complete; returns a body-less request directly.
    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let limits = &self.limits;
        let mut stack: [MaybeUninit<httparse::Header<'_>>; STACK_HEADERS] =
            [const { MaybeUninit::uninit() }; STACK_HEADERS];
        let mut heap = Vec::new();
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_headers <= STACK_HEADERS
        {
            &mut stack[..limits.max_headers]
        } else {
            heap.resize_with(limits.max_headers, MaybeUninit::uninit);
            &mut heap[..]
        };
        let mut req = httparse::Request::new(&mut []);
        // Parse at most one byte past the head limit: the outcome then depends only on the bytes,
        // never on how the reads happened to split them.
        let window = &buf[..buf.len().min(limits.max_head_bytes + 1)];
        let parsed = req.parse_with_uninit_headers(window, slots);
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if window.len() > limits.max_head_bytes {
                    return Err(DecodeError::HeadTooLarge(limits.max_head_bytes));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(DecodeError::TooManyHeaders(limits.max_headers))
            }
            Err(httparse::Error::Version) => return Err(DecodeError::Version),
            Err(e) => return Err(DecodeError::Syntax(syntax_reason(e))),
        };
        if head_len > limits.max_head_bytes {
            return Err(DecodeError::HeadTooLarge(limits.max_head_bytes));
        }
        let path = req
            .path
            .ok_or(DecodeError::Syntax("missing request target"))?;
        if path.len() > limits.max_uri_bytes {
            return Err(DecodeError::UriTooLong(limits.max_uri_bytes));
        }
        let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
            .map_err(|_| DecodeError::Syntax("invalid method"))?;
        let version = if req.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let uri: Uri = path.parse().map_err(|_| DecodeError::BadUri)?;
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| DecodeError::BadHeader(h.name.to_string()))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| DecodeError::BadHeader(h.name.to_string()))?;
            headers.append(name, value);
        }
        let framing = body_framing(&headers, version, limits.max_body_bytes)?;
        if version == Version::HTTP_11 && headers.get_all(HOST).iter().count() != 1 {
            return Err(DecodeError::Host);
        }
        let expect_continue = match headers.get(EXPECT) {
            None => false,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"100-continue") => true,
            Some(_) => return Err(DecodeError::Expectation),
        };
        let keep_alive = keep_alive(&headers, version);
        let _ = buf.split_to(head_len);

        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .version(version);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let request = builder
            .body(())
            .map_err(|_| DecodeError::Syntax("invalid request"))?;
        let (parts, ()) = request.into_parts();
        self.state = match framing {
            Framing::None => {
                return Ok(Some(Decoded {
                    request: http::Request::from_parts(parts, Bytes::new()),
                    keep_alive,
                }))
            }
            Framing::Length(length) => State::Fixed {
                parts,
                keep_alive,
                length,
            },
            Framing::Chunked => State::Chunked {
                parts,
                keep_alive,
                decoder: ChunkedDecoder::new(limits.max_body_bytes),
                body: BytesMut::new(),
            },
        };
        self.send_continue = expect_continue;
        Ok(None)
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn body_framing(
    headers: &HeaderMap,
    version: Version,
    max_body: usize,
) -> Result<Framing, DecodeError> {
    let has_te = headers.contains_key(TRANSFER_ENCODING);
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // A list ("5, 5") is allowed when every member is the same number (RFC 9110 §8.6).
        for part in value
            .to_str()
            .map_err(|_| DecodeError::BadContentLength)?
            .split(',')
        {
            let part = part.trim();
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| DecodeError::BadContentLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(DecodeError::BadContentLength);
            }
            length = Some(n);
        }
    }
    if has_te {
        if length.is_some() {
            return Err(DecodeError::AmbiguousLength);
        }
        if version == Version::HTTP_10 {
            return Err(DecodeError::Syntax(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        let mut codings = Vec::new();
        for value in headers.get_all(TRANSFER_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| DecodeError::UnsupportedTransferEncoding)?;
            codings.extend(text.split(',').map(|c| c.trim().to_ascii_lowercase()));
        }
        return if codings == ["chunked"] {
            Ok(Framing::Chunked)
        } else {
            Err(DecodeError::UnsupportedTransferEncoding)
        };
    }
    match length {
        None | Some(0) => Ok(Framing::None),
        Some(n) if n > max_body as u64 => Err(DecodeError::BodyTooLarge(max_body)),
        Some(n) => Ok(Framing::Length(n as usize)),
    }
}

fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if close {
        false
    } else {
        version == Version::HTTP_11 || keep
    }
}

fn syntax_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}
