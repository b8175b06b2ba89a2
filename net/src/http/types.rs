//! The request and response types handlers see, their extensions, and JSON helpers.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use std::net::SocketAddr;

/// A whole request: head plus body (bodies are bounded by `http.max_body_bytes`).
pub type Request = http::Request<Bytes>;
/// A whole response.
pub type Response = http::Response<Bytes>;

/// Path parameters captured by the router, e.g. `id` in `/api/projects/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The request id (from a sane incoming `X-Request-Id`, or generated), echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The route pattern a request matched (`"/api/projects/{id}"`), or `"unmatched"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRoute(pub &'static str);

/// A JSON response with `status`, serialised with sonic-rs.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match sonic_rs::to_vec(value) {
        Ok(body) => with_body(status, "application/json", body.into()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            &format!("response serialisation failed: {e}"),
        ),
    }
}

/// The error shape of every sdsim HTTP API: `{"error":{"code":"...","message":"..."}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let body = sonic_rs::to_vec(&Outer {
        error: Inner { code, message },
    })
    .unwrap_or_else(|_| {
        br#"{"error":{"code":"internal_error","message":"unprintable error"}}"#.to_vec()
    });
    with_body(status, "application/json", body.into())
}

/// A response with a body and its content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Parses a JSON request body into `T`; the error is a 400 `invalid_json` response saying the
/// expected `shape` and what is wrong (unknown field, wrong type, missing field, bad JSON,
/// nesting deeper than [`crate::json::MAX_DEPTH`]), naming the field at fault.
pub fn json_body<'a, T: serde::Deserialize<'a>>(
    req: &'a Request,
    shape: &str,
) -> Result<T, Box<Response>> {
    crate::json::decode(req.body()).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("body must be {shape}: {e}"),
        ))
    })
}
