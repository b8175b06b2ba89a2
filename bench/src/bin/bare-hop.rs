//! The machine's limit of one internal hop: the least a front and a back can do when each
//! answer crosses a second process. `bare-hop back` is a bare HTTP/2 server (monoio, the `h2`
//! crate on monoio's poll I/O, as sdsim's gRPC server) answering every request with one fixed
//! JSON body of `--body-bytes` after reading the request's body: no routing, no protobuf, no
//! database, no auth. `bare-hop front` is `bare-answer`'s HTTP/1.1 server (the same framing,
//! `sdsim_bench::bare`) that, per request, sends one HTTP/2 request with a body of
//! `--request-bytes` to the back on one connection opened at start (a bare `h2` client, as
//! sdsim's gRPC client: 1 MiB stream and 4 MiB connection windows, TCP_NODELAY) and answers with
//! the back's body. `bench-hop` sizes both like sdsim's hop (the gRPC `GetProject` request, the
//! project JSON); the front's CPU per request minus `bare-answer`'s for the same answer is what
//! the hop itself costs at least: one more HTTP/2 exchange and loopback TCP both ways.
//!
//! With `--grpc` the back answers as a gRPC server would (`content-type: application/grpc`, the
//! body as one length-prefixed message, `grpc-status: 0` in the trailers): the least a gRPC
//! server can do per unary call, the floor the load generator measures against.
//!
//! `bare-hop back --listen 127.0.0.1:9401 --body-bytes 1500`
//! `bare-hop front --listen 127.0.0.1:9400 --back 127.0.0.1:9401 --request-bytes 90`

use anyhow::{ensure, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use h2::client::SendRequest;
use monoio::io::IntoPollIo;
use monoio::net::{TcpListener, TcpStream};
use sdsim_bench::bare::{json_body, request_end, response_head, write_then_read};
use std::net::SocketAddr;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The HTTP/2 server answering a fixed body.
    Back {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// Length of the JSON body of every answer.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Answer as a gRPC unary call: the body as one message, `grpc-status: 0` trailers.
        #[arg(long)]
        grpc: bool,
    },
    /// The HTTP/1.1 server asking the back for every answer.
    Front {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// The back's address.
        #[arg(long)]
        back: SocketAddr,
        /// Length of the body of each request to the back.
        #[arg(long, default_value_t = 64)]
        request_bytes: usize,
    },
}

/// Answers `request` with `body` once its body has been read; as gRPC (`body` is then the
/// length-prefixed message) with `grpc`.
async fn answer_one(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    body: Bytes,
    grpc: bool,
) -> anyhow::Result<()> {
    let mut incoming = request.into_body();
    while let Some(chunk) = incoming.data().await {
        let chunk = chunk?;
        incoming.flow_control().release_capacity(chunk.len())?;
    }
    let mut head = http::Response::builder().status(200);
    if grpc {
        head = head.header("content-type", "application/grpc");
    }
    let mut send = respond.send_response(head.body(())?, false)?;
    send.send_data(body, !grpc)?;
    if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers)?;
    }
    Ok(())
}

async fn back_connection(stream: TcpStream, body: Bytes, grpc: bool) -> anyhow::Result<()> {
    let mut connection = h2::server::handshake(stream.into_poll_io()?).await?;
    while let Some(accepted) = connection.accept().await {
        let (request, respond) = accepted?;
        // Each stream on its own task: the connection is driven by `accept`, so a stream
        // awaited here would stall the others.
        monoio::spawn(answer_one(request, respond, body.clone(), grpc));
    }
    Ok(())
}

/// One exchange with the back: the body it answered, in the chunks it came in.
async fn call(sender: &SendRequest<Bytes>, body: Bytes) -> anyhow::Result<Vec<Bytes>> {
    let mut sender = sender.clone().ready().await?;
    let request = http::Request::post("http://back/hop").body(())?;
    let (response, mut outgoing) = sender.send_request(request, false)?;
    outgoing.send_data(body, true)?;
    let response = response.await?;
    ensure!(
        response.status() == 200,
        "the back answered {}",
        response.status()
    );
    let mut incoming = response.into_body();
    let mut chunks = Vec::with_capacity(1);
    while let Some(chunk) = incoming.data().await {
        let chunk = chunk?;
        incoming.flow_control().release_capacity(chunk.len())?;
        chunks.push(chunk);
    }
    Ok(chunks)
}

async fn front_connection(
    mut stream: TcpStream,
    sender: SendRequest<Bytes>,
    request_body: Bytes,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let mut used = 0;
        while let Some(end) = request_end(&buf[used..])? {
            used += end;
            let chunks = call(&sender, request_body.clone()).await?;
            let len = chunks.iter().map(Bytes::len).sum();
            out.extend_from_slice(response_head("200 OK", "", len).as_bytes());
            for chunk in &chunks {
                out.extend_from_slice(chunk);
            }
        }
        buf.drain(..used);
        if !write_then_read(&mut stream, &mut buf, &mut out).await? {
            return Ok(());
        }
    }
}

async fn front(listen: SocketAddr, back: SocketAddr, request_bytes: usize) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(back)
        .await
        .with_context(|| format!("connecting to the back at {back}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(tcp.into_poll_io()?)
        .await
        .context("the HTTP/2 handshake with the back")?;
    // h2 makes progress only while its connection future is polled.
    monoio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bare-hop front: the connection to the back ended: {e}");
        }
    });
    let request_body = Bytes::from(vec![b'r'; request_bytes]);
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (sender, body) = (sender.clone(), request_body.clone());
        monoio::spawn(async move {
            // A client that breaks its connection ends only that connection.
            let _ = front_connection(stream, sender, body).await;
        });
    }
}

async fn back(listen: SocketAddr, body_bytes: usize, grpc: bool) -> anyhow::Result<()> {
    let json = json_body(body_bytes);
    let body = if grpc {
        // Uncompressed flag, big-endian length, the message.
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(json.len() as u32).to_be_bytes());
        framed.extend_from_slice(json.as_bytes());
        Bytes::from(framed)
    } else {
        Bytes::from(json)
    };
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let body = body.clone();
        monoio::spawn(async move {
            let _ = back_connection(stream, body, grpc).await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        match args.role {
            Role::Back {
                listen,
                body_bytes,
                grpc,
            } => back(listen, body_bytes, grpc).await,
            Role::Front {
                listen,
                back,
                request_bytes,
            } => front(listen, back, request_bytes).await,
        }
    })
}
