//! The machine's limit for HTTP/1.1 keep-alive: the least a server can do per request. One
//! monoio thread (io_uring, epoll where it is missing) accepts connections; each connection
//! reads, parses every complete request in the buffer with httparse (pipelined requests
//! included), appends one fixed response per request — the same `{"status":"ok"}` JSON that
//! sdsim's `GET /health` answers — and writes them in one `write`. No routing, no headers
//! looked at, no allocation per request: whatever a real server spends beyond this is its own.
//!
//! `target/release/limit-http --listen 127.0.0.1:8200` (bench-http starts it pinned).

use bytes::BytesMut;
use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: String,
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
const READ_SIZE: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Serves one connection until the client closes it or sends something that does not parse.
async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut input = BytesMut::with_capacity(READ_SIZE);
    let mut output: Vec<u8> = Vec::with_capacity(READ_SIZE);
    loop {
        if input.capacity() - input.len() < READ_SIZE / 2 {
            input.reserve(READ_SIZE);
        }
        let (read, buf) = stream.read(input).await;
        input = buf;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut consumed = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&input[consumed..]) {
                Ok(httparse::Status::Complete(len)) => {
                    consumed += len;
                    output.extend_from_slice(RESPONSE);
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        let _ = input.split_to(consumed);
        if output.is_empty() {
            continue;
        }
        let (written, buf) = stream.write_all(output).await;
        output = buf;
        output.clear();
        if written.is_err() {
            return;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen.as_str())?;
        eprintln!("limit-http listening on {}", args.listen);
        loop {
            let (stream, _) = listener.accept().await?;
            monoio::spawn(serve(stream));
        }
    })
}
