//! The browser console: the page at `/` and its assets under `/console/{version}/…`, embedded
//! in the binary from the repository's `console/` directory (plain ES modules and a vendored
//! uPlot; there is no front-end build step).
//!
//! Caching: the page itself is `no-cache` (revalidated with its `ETag` on every load), so a new
//! binary is picked up at once; the assets live under a version taken from the SHA-256 of all of
//! them, so they can be `immutable` for a year — a changed asset changes the version, and the
//! page names the new one. The modules import each other by relative paths, so they stay within
//! the version that loaded them. Compression is the middleware stack's, as for every response.
//!
//! Security: a `Content-Security-Policy` allowing scripts, styles, images and connections from
//! the page's own origin only. `connect-src 'self'` also covers the page's WebSocket, since CSP
//! level 3 matches `'self'` against `ws:`/`wss:` URLs of the same host and port; the browser
//! works that origin out itself, so the policy stays right behind a proxy that rewrites `Host`.

use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
};
use http::{Method, StatusCode};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{error, with_body, Request, Response};
use std::sync::OnceLock;

/// The policy of every console response (see the module documentation).
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `Cache-Control` of the page: revalidate every time.
pub const PAGE_CACHE_CONTROL: &str = "no-cache";

/// `Cache-Control` of a versioned asset: its URL changes when it does.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// One embedded file of `console/`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../console/",
                $path
            )),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads; anything else under `/console/` is a 404.
const ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ws.js", JS),
    asset!("charts.js", JS),
    asset!("diagram.js", JS),
    asset!("views.js", JS),
    asset!("editor.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("vendor/uplot/uPlot.iife.min.js", JS),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

const INDEX_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../console/index.html"
));

/// What the routes serve, worked out once per process (hashing every asset).
struct Console {
    version: String,
    index: Bytes,
    index_etag: HeaderValue,
    asset_etags: Vec<HeaderValue>,
}

fn hex(digest: &[u8], chars: usize) -> String {
    digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(chars)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect()
}

fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    HeaderValue::from_str(&format!("\"{}\"", hex(digest.as_ref(), 32)))
        .expect("hex digits are a valid header value")
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        let mut all = ring::digest::Context::new(&ring::digest::SHA256);
        for asset in ASSETS {
            all.update(asset.path.as_bytes());
            all.update(&(asset.body.len() as u64).to_le_bytes());
            all.update(asset.body);
        }
        let version = hex(all.finish().as_ref(), 12);
        let index = Bytes::from(INDEX_TEMPLATE.replace("{{version}}", &version));
        Console {
            index_etag: etag_of(&index),
            index,
            asset_etags: ASSETS.iter().map(|a| etag_of(a.body)).collect(),
            version,
        }
    })
}

/// The version the page's asset URLs carry (`/console/{version}/app.js`).
pub fn version() -> &'static str {
    &console().version
}

/// Registers `GET /` (the page) and `GET /console/{version}/{*path}` (its assets); HEAD comes
/// with GET, other methods are 405.
pub fn register(router: &mut Router) {
    router
        .route(Method::GET, "/", |req: Request| {
            std::future::ready(page(&req))
        })
        .expect("the console page route does not conflict");
    router
        .route(Method::GET, "/console/{version}/{*path}", |req: Request| {
            std::future::ready(asset(&req))
        })
        .expect("the console asset route does not conflict");
}

fn page(req: &Request) -> Response {
    let c = console();
    respond(
        req,
        "text/html; charset=utf-8",
        c.index.clone(),
        &c.index_etag,
        PAGE_CACHE_CONTROL,
    )
}

fn asset(req: &Request) -> Response {
    let c = console();
    // The router matched the pattern, so the path has the form /console/{version}/{path}.
    let rest = req.uri().path().strip_prefix("/console/").unwrap_or("");
    let (version, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("the console has no asset {path:?}"),
        );
    };
    if version != c.version {
        // An old page asking for assets of another build: the current ones may not fit it,
        // and caching them under the old URL for a year would be wrong.
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "console assets are at version {}, not {version:?}: reload the page",
                c.version
            ),
        );
    }
    let a = &ASSETS[index];
    respond(
        req,
        a.content_type,
        Bytes::from_static(a.body),
        &c.asset_etags[index],
        ASSET_CACHE_CONTROL,
    )
}

/// The body with its headers, or 304 when the client holds this very body (`If-None-Match`).
fn respond(
    req: &Request,
    content_type: &'static str,
    body: Bytes,
    etag: &HeaderValue,
    cache_control: &'static str,
) -> Response {
    let fresh = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag.as_bytes() == etag.as_bytes());
    let mut resp = if fresh {
        with_body(StatusCode::NOT_MODIFIED, content_type, Bytes::new())
    } else {
        with_body(StatusCode::OK, content_type, body)
    };
    let headers = resp.headers_mut();
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = std::str::from_utf8(&console().index).unwrap();
        let prefix = format!("/console/{}/", version());
        let named: Vec<&str> = page
            .split('"')
            .filter_map(|s| s.strip_prefix(prefix.as_str()))
            .collect();
        assert!(named.contains(&"app.js"), "the page loads app.js: {page}");
        for path in named {
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "the page names {path}, which is not embedded"
            );
        }
        assert!(!page.contains("{{version}}"));
    }

    #[test]
    fn module_imports_resolve_to_embedded_assets() {
        let mut imports = 0;
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            // `import … from './x.js';`, on one line or several.
            for rest in text.split(" from '").skip(1) {
                let spec = rest.split('\'').next().unwrap_or("");
                let target = spec.strip_prefix("./").unwrap_or_else(|| {
                    panic!("{}: import {spec:?} is not relative to the version", a.path)
                });
                assert!(
                    ASSETS.iter().any(|b| b.path == target),
                    "{} imports {spec}, which is not embedded",
                    a.path
                );
                imports += 1;
            }
        }
        assert!(imports >= 7, "found {imports} imports");
    }
}
