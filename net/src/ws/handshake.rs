//! The opening handshake (RFC 6455 §4.2): checks an upgrade request and builds the 101 answer.
//!
//! Every value is checked for size before anything is decoded or copied out of it: a key is
//! exactly 24 base64 characters (16 bytes) and decodes into a stack buffer, a bearer token
//! offered as a subprotocol is at most [`MAX_SUBPROTOCOL_TOKEN_BYTES`], an `Origin` at most
//! [`MAX_ORIGIN_BYTES`]; larger ones are refused (400) without being copied.

use super::deflate;
use crate::http::types::{error, Request, Response};
use base64::Engine;
use http::header::{
    HeaderValue, CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{StatusCode, Version};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of a valid `Sec-WebSocket-Key`: 16 bytes in base64.
const KEY_CHARS: usize = 24;
/// Longest bearer token accepted in `Sec-WebSocket-Protocol` (the access-token limit).
pub const MAX_SUBPROTOCOL_TOKEN_BYTES: usize = 8192;
/// Longest `Origin` accepted (scheme, host and port; real ones are far shorter).
pub const MAX_ORIGIN_BYTES: usize = 2048;

/// The subprotocol sdsim speaks (JSON text frames).
pub const PROTOCOL: &str = "sdsim.v1";
/// Prefix of a subprotocol carrying a bearer token (`bearer.<token>`): browsers cannot set
/// `Authorization` on a WebSocket, so they offer `sdsim.v1, bearer.<token>`.
pub const BEARER_PREFIX: &str = "bearer.";

/// What the server accepts in a handshake.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Origins allowed (`*` = all); requests without `Origin` are allowed.
    pub allowed_origins: Vec<String>,
    /// Whether permessage-deflate may be negotiated.
    pub compression: bool,
}

/// An accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The subprotocol chosen, when the client offered `sdsim.v1`.
    pub protocol: Option<&'static str>,
    /// A token offered as `bearer.<token>` subprotocol.
    pub subprotocol_token: Option<String>,
    /// Whether permessage-deflate was negotiated.
    pub deflate: bool,
}

/// A refused handshake: the status and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 400, 403 or 426.
    pub status: StatusCode,
    /// What was wrong.
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            message: message.into(),
        }
    }

    /// The error response (426 carries `Upgrade` and `Sec-WebSocket-Version`).
    pub fn response(&self) -> Response {
        let mut resp = error(self.status, "websocket_handshake", &self.message);
        if self.status == StatusCode::UPGRADE_REQUIRED {
            let h = resp.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        resp
    }
}

fn has_token(req: &Request, name: http::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks an upgrade request against RFC 6455 and `policy`.
pub fn check(req: &Request, policy: &Policy) -> Result<Accepted, Refused> {
    if req.version() < Version::HTTP_11 {
        return Err(Refused::new(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket needs HTTP/1.1",
        ));
    }
    if !has_token(req, UPGRADE, "websocket") {
        return Err(Refused::new(
            StatusCode::UPGRADE_REQUIRED,
            "expected the header Upgrade: websocket",
        ));
    }
    if !has_token(req, CONNECTION, "upgrade") {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "expected the header Connection: Upgrade",
        ));
    }
    match req.headers().get(SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes() == b"13" => {}
        Some(_) => {
            return Err(Refused::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ))
        }
        None => {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "missing Sec-WebSocket-Version",
            ))
        }
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Refused::new(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
    let mut decoded = [0u8; 18];
    let valid_key = key.len() == KEY_CHARS
        && base64::engine::general_purpose::STANDARD.decode_slice(key.as_bytes(), &mut decoded)
            == Ok(16);
    if !valid_key {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Origin of {} bytes is longer than {MAX_ORIGIN_BYTES}",
                    origin.len()
                ),
            ));
        }
        let origin = origin.to_str().unwrap_or("");
        let allowed = same_origin(origin, req)
            || policy
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if !allowed {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                format!("origin {origin:?} is not allowed (websocket.allowed_origins)"),
            ));
        }
    }
    let mut protocol = None;
    let mut subprotocol_token = None;
    for value in req.headers().get_all(SEC_WEBSOCKET_PROTOCOL) {
        for offered in value.to_str().unwrap_or("").split(',').map(str::trim) {
            if offered == PROTOCOL {
                protocol = Some(PROTOCOL);
            } else if let Some(token) = offered.strip_prefix(BEARER_PREFIX) {
                if token.len() > MAX_SUBPROTOCOL_TOKEN_BYTES {
                    return Err(Refused::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the bearer subprotocol token of {} bytes is longer than {MAX_SUBPROTOCOL_TOKEN_BYTES}",
                            token.len()
                        ),
                    ));
                }
                subprotocol_token = Some(token.to_string());
            }
        }
    }
    let deflate = policy.compression
        && deflate::accepts(
            req.headers()
                .get_all(SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
    Ok(Accepted {
        accept: accept_key(key.as_bytes()),
        protocol,
        subprotocol_token,
        deflate,
    })
}

/// Whether `origin` (`http://host[:port]` or `https://…`) names the host the request was sent
/// to (`Host`): a page served by this server opening its own WebSocket, such as the console at
/// `/`. A browser sends the origin of the page that opens the socket, so another site's page
/// never matches; the socket still needs a bearer token, which is never a cookie.
fn same_origin(origin: &str, req: &Request) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    req.headers()
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| !host.is_empty() && host.eq_ignore_ascii_case(authority))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// The 101 Switching Protocols response for an accepted handshake.
pub fn switching_protocols(accepted: &Accepted) -> Response {
    let mut resp = Response::new(bytes::Bytes::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accepted.accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = accepted.protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if accepted.deflate {
        h.insert(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(deflate::RESPONSE),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(host: &str, origin: &str) -> Request {
        http::Request::builder()
            .uri("/ws")
            .header("host", host)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin)
            .body(bytes::Bytes::new())
            .unwrap()
    }

    #[test]
    fn a_page_of_this_server_may_open_a_websocket_with_no_origin_configured() {
        let policy = Policy {
            allowed_origins: Vec::new(),
            compression: false,
        };
        for (host, origin) in [
            ("127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("Console.Example", "https://console.example"),
        ] {
            assert!(
                check(&with_origin(host, origin), &policy).is_ok(),
                "{origin} on {host}"
            );
        }
        for (host, origin) in [
            ("127.0.0.1:8000", "http://127.0.0.1:8001"),
            ("127.0.0.1:8000", "http://evil.example"),
            ("app.example", "http://app.example.evil"),
            ("app.example", "app.example"),
            ("app.example", "null"),
        ] {
            let refused = check(&with_origin(host, origin), &policy).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{origin} on {host}");
        }
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
