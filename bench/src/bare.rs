//! What the bare servers share: framing HTTP/1.1 requests with httparse and the fixed answers,
//! with headers as sdsim sends them. `bare-answer` answers every request itself; `bare-hop`'s
//! front answers with the body its back sent over HTTP/2.

use anyhow::bail;

/// The body sdsim's refusal carries (same length, same shape).
pub const REFUSAL_BODY: &str =
    r#"{"error":{"code":"overloaded","message":"the server is overloaded; retry in 1 s"}}"#;

/// A JSON object of `bytes` bytes (at least 9): `{"d":"xxx…"}`.
pub fn json_body(bytes: usize) -> String {
    let fill = bytes.saturating_sub(8).max(1);
    format!("{{\"d\":\"{}\"}}", "x".repeat(fill))
}

/// The head of a JSON answer of `body_len` bytes: headers as sdsim sends them, a fixed date.
/// `status_line` is e.g. `200 OK`; `extra` holds whole header lines (`name: value\r\n`).
pub fn response_head(status_line: &str, extra: &str, body_len: usize) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\n{extra}x-content-type-options: nosniff\r\ndate: Tue, 02 Dec 2026 02:33:35 GMT\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

/// The whole fixed answer: 503 (sdsim's refusal) or 200 with a JSON body of `body_bytes`.
pub fn response(status: u16, body_bytes: usize) -> anyhow::Result<Vec<u8>> {
    let (line, extra, body) = match status {
        503 => (
            "503 Service Unavailable",
            "retry-after: 1\r\n",
            REFUSAL_BODY.to_string(),
        ),
        200 => ("200 OK", "", json_body(body_bytes)),
        other => bail!("--status: {other} is neither 503 nor 200"),
    };
    let mut answer = response_head(line, extra, body.len()).into_bytes();
    answer.extend_from_slice(body.as_bytes());
    Ok(answer)
}

/// Where the request at the start of `buf` ends: `Ok(None)` while it is incomplete.
pub fn request_end(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut body = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value)?.trim().parse()?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked bodies are not supported");
        }
    }
    Ok((buf.len() >= head + body).then_some(head + body))
}

/// Writes `out` (emptying it), then reads what the client sent next onto the end of `buf`;
/// `false` once the client closed. monoio takes the buffers by value and hands them back.
pub async fn write_then_read(
    stream: &mut monoio::net::TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    if !out.is_empty() {
        let (result, mut written) = stream.write_all(std::mem::take(out)).await;
        result?;
        written.clear();
        *out = written;
    }
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8192);
    }
    // monoio reads from a buffer's start; a slice from `len` appends.
    let (len, capacity) = (buf.len(), buf.capacity());
    let (result, slice) = stream
        .read(monoio::buf::IoBufMut::slice_mut(
            std::mem::take(buf),
            len..capacity,
        ))
        .await;
    *buf = slice.into_inner();
    Ok(result? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_by_their_head_and_content_length() {
        let get = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(request_end(get).unwrap(), Some(get.len()));
        assert_eq!(request_end(&get[..10]).unwrap(), None);
        let post = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcGET";
        assert_eq!(request_end(post).unwrap(), Some(post.len() - 3));
        assert_eq!(request_end(&post[..post.len() - 4]).unwrap(), None);
        assert!(request_end(b"\x01\x02 nonsense\r\n\r\n").is_err());
    }

    #[test]
    fn the_answers_are_complete_http_responses_of_the_asked_size() {
        for (status, body) in [(503, REFUSAL_BODY.len()), (200, 1200)] {
            let bytes = response(status, 1200).unwrap();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            let head = match parsed.parse(&bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete"),
            };
            assert_eq!(parsed.code, Some(status));
            assert_eq!(bytes.len() - head, body, "{status}");
        }
        assert_eq!(json_body(1500).len(), 1500);
        assert!(serde_json::from_str::<serde_json::Value>(&json_body(1500)).is_ok());
    }
}
