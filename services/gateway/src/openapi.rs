//! `GET /openapi.json`: the OpenAPI 3.1 description of the whole HTTP API (`docs/openapi.json`
//! in the repository, compiled in), served by every listener that serves HTTP. A listener of
//! one role serves the same full document: a client reading it learns the API the gateway
//! offers, whichever process it asked.

use bytes::Bytes;
use http::header::CACHE_CONTROL;
use http::{HeaderValue, StatusCode};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{with_body, Request, Response};

/// The document, as committed; `services/server/tests/openapi.rs` checks that it describes
/// exactly the routes a server registers.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// Registers `GET /openapi.json`.
pub fn register(router: &mut Router) {
    router
        .route(http::Method::GET, "/openapi.json", |_req: Request| {
            std::future::ready(document())
        })
        .expect("/openapi.json is registered once");
}

fn document() -> Response {
    let mut resp = with_body(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(DOCUMENT.as_bytes()),
    );
    // It changes only with the binary.
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
