//! HTTP/1.1: the sans-IO codec, the router and the request/response types handlers use.
//!
//! - [`codec`]: request decoder (httparse head, Content-Length and chunked bodies, limits).
//! - [`chunked`]: the chunked transfer-coding decoder the request decoder uses.
//! - [`encode`]: response encoder, cached `Date`, codec error responses.
//! - [`router`]: path patterns with parameters (matchit) → handlers, 404/405.
//! - [`types`]: `Request`/`Response` aliases, extensions (path params, client address, request
//!   id) and JSON helpers.

pub mod chunked;
pub mod codec;
pub mod encode;
pub mod router;
pub mod types;
