//! The request decoder against a table of well-formed, edge and malformed requests.

use bytes::BytesMut;
use sdsim_net::http::codec::{Decoded, Limits, RequestDecoder};

#[derive(Debug, PartialEq)]
enum Want {
    /// One request: method, path (with query), body, keep-alive.
    Ok(&'static str, &'static str, &'static str, bool),
    /// Rejected with this status.
    Status(u16),
    /// Needs more bytes.
    Incomplete,
}

fn limits() -> Limits {
    Limits {
        max_head_bytes: 4096,
        max_body_bytes: 64,
        max_uri_bytes: 128,
        max_headers: 16,
    }
}

fn run(input: &[u8]) -> Want {
    let mut decoder = RequestDecoder::new(limits());
    let mut buf = BytesMut::from(input);
    match decoder.decode(&mut buf) {
        Ok(Some(Decoded {
            request,
            keep_alive,
        })) => {
            let path = request
                .uri()
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_string();
            let body = String::from_utf8(request.body().to_vec()).unwrap();
            Want::Ok(
                Box::leak(request.method().as_str().to_string().into_boxed_str()),
                Box::leak(path.into_boxed_str()),
                Box::leak(body.into_boxed_str()),
                keep_alive,
            )
        }
        Ok(None) => Want::Incomplete,
        Err(e) => Want::Status(e.status().as_u16()),
    }
}

#[test]
fn table() {
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "u".repeat(200));
    let unterminated_uri = format!("GET /{}", "u".repeat(300));
    let many_headers: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\nHost: h\r\n{many_headers}\r\n");
    let rows: Vec<(&str, Vec<u8>, Want)> = vec![
        ("simple GET", b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("GET", "/a?b=1", "", true)),
        ("HTTP/1.0 closes", b"GET / HTTP/1.0\r\n\r\n".to_vec(), Want::Ok("GET", "/", "", false)),
        ("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec(), Want::Ok("GET", "/", "", true)),
        ("close", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_vec(), Want::Ok("GET", "/", "", false)),
        ("close in a list", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, Close\r\n\r\n".to_vec(), Want::Ok("GET", "/", "", false)),
        ("content-length body", b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc".to_vec(), Want::Ok("POST", "/p", "abc", true)),
        ("repeated equal CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab".to_vec(), Want::Ok("POST", "/", "ab", true)),
        ("CL list of equal values", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nab".to_vec(), Want::Ok("POST", "/", "ab", true)),
        ("chunked with ext and trailer", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nhi\r\n0\r\nT: 1\r\n\r\n".to_vec(), Want::Ok("POST", "/", "hi", true)),
        ("chunked uppercase hex", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n".to_vec(), Want::Ok("POST", "/", "0123456789", true)),
        ("HEAD", b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("HEAD", "/", "", true)),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("OPTIONS", "*", "", true)),
        ("absolute form", b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("GET", "/x", "", true)),
        ("extension method", b"PURGE /c HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("PURGE", "/c", "", true)),
        ("partial head", b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec(), Want::Incomplete),
        ("partial body", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab".to_vec(), Want::Incomplete),
        ("no Host in 1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Want::Status(400)),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), Want::Status(400)),
        ("CL and TE (smuggling)", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), Want::Status(400)),
        ("differing CLs", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_vec(), Want::Status(400)),
        ("negative CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n".to_vec(), Want::Status(400)),
        ("plus-signed CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc".to_vec(), Want::Status(400)),
        ("huge CL overflow", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), Want::Status(400)),
        ("CL over the limit", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n".to_vec(), Want::Status(413)),
        ("chunked over the limit", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n".to_vec(), Want::Status(413)),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), Want::Status(400)),
        ("chunk without CRLF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX".to_vec(), Want::Status(400)),
        ("gzip transfer coding", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), Want::Status(501)),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), Want::Status(400)),
        ("header without colon", b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n".to_vec(), Want::Status(400)),
        ("NUL in header value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n".to_vec(), Want::Status(400)),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n".to_vec(), Want::Status(400)),
        ("bare LF request line", b"GET / HTTP/1.1\nHost: h\n\n".to_vec(), Want::Ok("GET", "/", "", true)),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), Want::Status(400)),
        ("lowercase method token", b"get / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), Want::Ok("get", "/", "", true)),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n".to_vec(), Want::Status(505)),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n".to_vec(), Want::Status(505)),
        ("unknown Expect", b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx".to_vec(), Want::Status(417)),
        ("head too large", big_head.into_bytes(), Want::Status(431)),
        ("too many headers", many_headers.into_bytes(), Want::Status(431)),
        ("long URI", long_uri.into_bytes(), Want::Status(414)),
        ("unterminated long URI waits for the head", unterminated_uri.into_bytes(), Want::Incomplete),
    ];
    let mut failures = Vec::new();
    for (name, input, want) in rows {
        let got = run(&input);
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn pipelined_requests_come_out_one_by_one() {
    let mut d = RequestDecoder::new(limits());
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\nHost: h\r\n\r\nGET /4"[..],
    );
    let mut paths = Vec::new();
    while let Some(decoded) = d.decode(&mut buf).unwrap() {
        paths.push(decoded.request.uri().path().to_string());
    }
    assert_eq!(paths, ["/1", "/2", "/3"]);
    assert_eq!(
        &buf[..],
        b"GET /4",
        "the partial fourth request stays buffered"
    );
}

#[test]
fn expect_continue_is_signalled_once_then_the_body_completes() {
    let mut d = RequestDecoder::new(limits());
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n"[..],
    );
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(d.in_progress());
    assert!(d.take_continue());
    assert!(!d.take_continue(), "only once");
    buf.extend_from_slice(b"da");
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(!d.take_continue());
    buf.extend_from_slice(b"ta");
    let done = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&done.request.body()[..], b"data");
    assert!(!d.in_progress());
    // When the body arrives with the head, no 100 Continue is needed.
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"[..],
    );
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert!(!d.take_continue());
}

#[test]
fn chunked_split_at_every_byte_decodes_the_same() {
    let input = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n";
    for split in 1..input.len() {
        let mut d = RequestDecoder::new(limits());
        let mut buf = BytesMut::from(&input[..split]);
        let first = d.decode(&mut buf).unwrap();
        assert!(first.is_none(), "split {split}");
        buf.extend_from_slice(&input[split..]);
        let done = d.decode(&mut buf).unwrap().expect("complete");
        assert_eq!(&done.request.body()[..], b"abcdefg", "split {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn headers_and_errors_carry_details() {
    let mut d = RequestDecoder::new(limits());
    let mut buf =
        BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n"[..]);
    let r = d.decode(&mut buf).unwrap().unwrap().request;
    let values: Vec<_> = r.headers().get_all("x-multi").iter().collect();
    assert_eq!(values, ["a", "b"]);
    let mut d = RequestDecoder::new(limits());
    let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"[..]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(e.message(), "request body larger than 64 bytes");
}
