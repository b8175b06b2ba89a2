//! The browser console as the gateway serves it: the page at `/` and its versioned assets, with
//! their content types, caching (`no-cache` page, immutable assets, ETags and 304), the
//! Content-Security-Policy, gzip through the middleware stack, 404 and 405 for what it does not
//! serve, and the page's own WebSocket accepted without any `websocket.allowed_origins`. The
//! page itself is driven in a real browser by `tests/console/console.spec.mjs` (`./test.sh`).

mod support;

use std::io::Read;
use support::{start, stop, Client};

const CSP: &str = "default-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

const UPLOT: &[u8] = include_bytes!("../../../console/vendor/uplot/uPlot.iife.min.js");

fn request(c: &mut Client, head: &str) -> sdsim_testing::http::Resp {
    c.send(format!("{head}\r\nHost: t\r\n\r\n").as_bytes());
    c.read_response(head.starts_with("HEAD "))
}

/// The asset URLs the page names (`/console/<version>/…`).
fn asset_urls(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|s| s.starts_with("/console/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_page_is_html_revalidated_every_time_under_a_strict_policy() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    let page = request(&mut c, "GET / HTTP/1.1");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let text = page.text();
    assert!(text.contains("data-testid=\"sign-in\""), "{text}");
    assert!(!text.contains("{{version}}"));
    let urls = asset_urls(&text);
    assert!(
        urls.iter().any(|u| u.ends_with("/app.js")),
        "the page loads app.js: {urls:?}"
    );

    // The same page again with its ETag: 304, no body.
    let etag = page
        .header("etag")
        .expect("the page has an ETag")
        .to_string();
    let again = request(&mut c, &format!("GET / HTTP/1.1\r\nIf-None-Match: {etag}"));
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = request(
        &mut c,
        "GET / HTTP/1.1\r\nIf-None-Match: \"something-else\"",
    );
    assert_eq!(other.status, 200);

    // HEAD answers like GET without the body; other methods are 405.
    let head = request(&mut c, "HEAD / HTTP/1.1");
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, page.header("content-length"))
    );
    let post = request(&mut c, "POST / HTTP/1.1\r\nContent-Length: 0");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    stop(server);
}

#[test]
fn assets_are_immutable_under_their_version_and_unknown_ones_are_404() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    let page = request(&mut c, "GET / HTTP/1.1").text();
    let urls = asset_urls(&page);
    assert!(urls.len() >= 4, "{urls:?}");
    for url in &urls {
        let resp = request(&mut c, &format!("GET {url} HTTP/1.1"));
        assert_eq!(resp.status, 200, "{url}");
        let expected = match url.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset type {other:?} in {url}"),
        };
        assert_eq!(resp.header("content-type"), Some(expected), "{url}");
        assert_eq!(
            resp.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        assert_eq!(resp.header("content-security-policy"), Some(CSP));
        assert!(resp.header("etag").is_some(), "{url}");
    }
    let version = urls[0].split('/').nth(2).unwrap().to_string();

    // Every module the page imports is there: app.js names them by relative paths.
    let app = request(&mut c, &format!("GET /console/{version}/app.js HTTP/1.1"));
    for module in [
        "api.js",
        "ws.js",
        "charts.js",
        "diagram.js",
        "editor.js",
        "views.js",
    ] {
        assert!(app.text().contains(&format!("'./{module}'")), "{module}");
        let resp = request(&mut c, &format!("GET /console/{version}/{module} HTTP/1.1"));
        assert_eq!(resp.status, 200, "{module}");
    }
    // uPlot's licence travels with it.
    let licence = request(
        &mut c,
        &format!("GET /console/{version}/vendor/uplot/LICENSE HTTP/1.1"),
    );
    assert_eq!(licence.status, 200);
    assert!(licence.text().contains("MIT License"), "{}", licence.text());

    let missing = request(&mut c, &format!("GET /console/{version}/nope.js HTTP/1.1"));
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("\"code\":\"not_found\""));
    assert!(missing.text().contains("nope.js"), "{}", missing.text());
    // An asset of another build is not served under that build's URL (it would be cached
    // there for a year).
    let stale = request(&mut c, "GET /console/000000000000/app.js HTTP/1.1");
    assert_eq!(stale.status, 404);
    assert!(stale.text().contains("reload the page"), "{}", stale.text());
    let escape = request(
        &mut c,
        &format!("GET /console/{version}/../Cargo.toml HTTP/1.1"),
    );
    assert_eq!(escape.status, 404);
    stop(server);
}

#[test]
fn a_large_asset_is_gzipped_by_the_stack_and_decodes_to_the_committed_file() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    let page = request(&mut c, "GET / HTTP/1.1").text();
    let url = asset_urls(&page)
        .into_iter()
        .find(|u| u.ends_with("uPlot.iife.min.js"))
        .expect("the page loads uPlot");
    let plain = request(&mut c, &format!("GET {url} HTTP/1.1"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, UPLOT);
    let gz = request(
        &mut c,
        &format!("GET {url} HTTP/1.1\r\nAccept-Encoding: gzip"),
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    assert!(
        gz.body.len() < UPLOT.len() / 2,
        "{} of {} bytes",
        gz.body.len(),
        UPLOT.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, UPLOT);
    stop(server);
}

/// The page opens `ws://<its host>/ws`, so the browser sends its own origin: accepted with the
/// default (empty) `websocket.allowed_origins`; another site's page is still refused.
#[test]
fn the_pages_own_websocket_is_accepted_and_other_origins_are_not() {
    let server = start(&[]);
    let addr = server.local_addr();
    let upgrade = |origin: &str| {
        let mut c = Client::connect(addr);
        c.send(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Protocol: sdsim.v1\r\nOrigin: {origin}\r\n\r\n"
            )
            .as_bytes(),
        );
        c.read_response(false)
    };
    assert_eq!(upgrade(&format!("http://{addr}")).status, 101);
    let refused = upgrade("http://evil.example");
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("websocket.allowed_origins"));
    stop(server);
}
