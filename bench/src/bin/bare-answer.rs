//! The floor of answering over loopback: a bare HTTP/1.1 server — monoio (the driver sdsim uses
//! by default), httparse, one task per connection, nothing else — that answers every request
//! with one fixed response built at start. Its CPU time per answer is what any server that
//! answers each request pays at least: the read, the parse of the head, the write, and the
//! kernel's TCP work on both. `bench-shedding` measures it with `--status 503` (a refusal the
//! size of sdsim's) and `--status 200` (a body the size of the measured project), beside sdsim.
//!
//! `bare-answer --listen 127.0.0.1:8080 --status 503`

use anyhow::{bail, Context};
use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use std::net::SocketAddr;
use std::rc::Rc;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The status of every answer: 503 (sdsim's refusal) or 200.
    #[arg(long, default_value_t = 503)]
    status: u16,
    /// Length of the 200 answer's JSON body.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
}

/// The body sdsim's refusal carries (same length, same shape).
const REFUSAL_BODY: &str =
    r#"{"error":{"code":"overloaded","message":"the server is overloaded; retry in 1 s"}}"#;

/// The fixed answer: headers as sdsim sends them on such an answer, a fixed date.
fn response(status: u16, body_bytes: usize) -> anyhow::Result<Vec<u8>> {
    let (line, extra, body) = match status {
        503 => (
            "503 Service Unavailable",
            "retry-after: 1\r\n",
            REFUSAL_BODY.to_string(),
        ),
        200 => {
            // A JSON string of the asked length: `{"d":"xxx…"}`.
            let fill = body_bytes.saturating_sub(8).max(1);
            ("200 OK", "", format!("{{\"d\":\"{}\"}}", "x".repeat(fill)))
        }
        other => bail!("--status: {other} is neither 503 nor 200"),
    };
    Ok(format!(
        "HTTP/1.1 {line}\r\ncontent-type: application/json\r\n{extra}x-content-type-options: nosniff\r\ndate: Tue, 02 Dec 2026 02:33:35 GMT\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
}

/// Where the request at the start of `buf` ends: `Ok(None)` while it is incomplete.
fn request_end(buf: &[u8]) -> anyhow::Result<Option<usize>> {
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

async fn serve(mut stream: TcpStream, answer: Rc<[u8]>) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(answer.len() * 4);
    loop {
        let mut used = 0;
        while let Some(end) = request_end(&buf[used..])? {
            used += end;
            out.extend_from_slice(&answer);
        }
        buf.drain(..used);
        if !out.is_empty() {
            let (result, written) = stream.write_all(out).await;
            result?;
            out = written;
            out.clear();
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        // monoio reads from a buffer's start; a slice from `len` appends.
        let (len, capacity) = (buf.len(), buf.capacity());
        let (result, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..capacity))
            .await;
        buf = slice.into_inner();
        if result? == 0 {
            return Ok(());
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let answer: Rc<[u8]> = response(args.status, args.body_bytes)?.into();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        let listener =
            TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let answer = Rc::clone(&answer);
            monoio::spawn(async move {
                // A client that breaks its connection ends only that connection.
                let _ = serve(stream, answer).await;
            });
        }
    })
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
    }
}
