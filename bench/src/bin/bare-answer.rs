//! The floor of answering over loopback: a bare HTTP/1.1 server — monoio (the driver sdsim uses
//! by default), httparse, one task per connection, nothing else — that answers every request
//! with one fixed response built at start. Its CPU time per answer is what any server that
//! answers each request pays at least: the read, the parse of the head, the write, and the
//! kernel's TCP work on both. `bench-shedding` measures it with `--status 503` (a refusal the
//! size of sdsim's) and `--status 200` (a body the size of the measured project), beside sdsim.
//!
//! `bare-answer --listen 127.0.0.1:8080 --status 503`

use anyhow::Context;
use clap::Parser;
use monoio::net::{TcpListener, TcpStream};
use sdsim_bench::bare::{request_end, response, write_then_read};
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
        if !write_then_read(&mut stream, &mut buf, &mut out).await? {
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
