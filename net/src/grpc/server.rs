//! The gRPC server: methods registered by path, served over h2 on a shard's connection.
//!
//! One task drives each HTTP/2 connection (accepting streams, keepalive pings, maximum age,
//! graceful shutdown when the server drains); each stream is a task of its own on the same
//! shard. Unary and server-streaming methods are supported. Limits: `max_message_bytes` (4 MiB)
//! per message in either direction → RESOURCE_EXHAUSTED, decided from the length prefix before
//! the message is read; `max_concurrent_streams` (1,000) per connection, advertised in SETTINGS,
//! as are the largest header list (16 KiB, larger → the stream is refused before it is decoded
//! into memory) and frame (16 KiB, larger → FRAME_SIZE_ERROR before its payload is read);
//! `grpc-timeout` becomes the handler's deadline → DEADLINE_EXCEEDED. gzip message encoding is accepted, and used for responses when the client
//! sent gzip and accepts it.
//!
//! Every call runs through the same layers as an HTTP request ([`Services::set_layers`]:
//! request id, rate limit, metrics, access log); what they add to the response goes in the
//! initial metadata, or with the status of a Trailers-Only answer.

use super::frame;
use super::method::MethodName;
use super::status::{parse_timeout, Code, Status};
use crate::middleware::layer::{Ended, Exchange, Layers, Outcome, UNMATCHED};
use crate::middleware::trace_context::TraceContext;
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use sdsim_core::shutdown::Phase;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::Instrument;

/// Connection and message limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest message in either direction (4 MiB).
    pub max_message_bytes: usize,
    /// Largest request header list, HPACK-decoded (16 KiB).
    pub max_header_list_bytes: u32,
    /// Largest frame payload a client may send (16 KiB, the HTTP/2 minimum).
    pub max_frame_bytes: u32,
    /// Streams one connection may have open (1,000).
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged (and the ping's own timeout).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Connections are asked to go away (GOAWAY) after this long, give or take 10% so that
    /// connections opened together do not all reconnect together; clients then rebalance.
    pub max_connection_age: Duration,
    /// How long calls in flight may go on after that GOAWAY before the connection is closed
    /// under them (`None`: as long as they take).
    pub max_connection_age_grace: Option<Duration>,
    /// The deadline of a unary call that came without `grpc-timeout`, and the bound on reading
    /// any call's request message (30 s).
    pub unary_timeout: Duration,
    /// Counts the calls being served, when set (shared by every connection of the process:
    /// the registry advertises it as the instance's load).
    pub in_flight: Option<Arc<AtomicU64>>,
}

/// One call counted in [`Settings::in_flight`] while it lives.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn enter(count: &Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_message_bytes: 4 << 20,
            max_header_list_bytes: 16 << 10,
            max_frame_bytes: 16 << 10,
            max_concurrent_streams: 1000,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Some(Duration::from_secs(5 * 60)),
            unary_timeout: Duration::from_secs(30),
            in_flight: None,
        }
    }
}

/// What a handler knows about its call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Request metadata (the HTTP/2 headers).
    pub metadata: HeaderMap,
    /// When the client stops waiting (`grpc-timeout`).
    pub deadline: Option<Instant>,
    /// The client's address.
    pub peer: SocketAddr,
    /// What the layers learned about the call (`middleware::layer::Exchange::extensions`).
    pub extensions: http::Extensions,
}

type Unary = Rc<dyn Fn(Call, Bytes) -> LocalBoxFuture<'static, Result<Bytes, Status>>>;
type Streaming = Rc<dyn Fn(Call, Bytes, Responses) -> LocalBoxFuture<'static, Result<(), Status>>>;

#[derive(Clone)]
enum Handler {
    Unary(Unary),
    Streaming(Streaming),
    Bidi(super::bidi::Bidi),
}

/// A registered method: its handler and its names.
#[derive(Clone)]
struct Registered {
    handler: Handler,
    name: MethodName,
}

/// The methods one server answers, by path (`/package.Service/Method`), and the layers every
/// call runs through.
#[derive(Default, Clone)]
pub struct Services {
    methods: HashMap<String, Registered>,
    layers: Rc<Layers>,
}

fn decode_request<Req: prost::Message + Default>(bytes: &Bytes) -> Result<Req, Status> {
    Req::decode(bytes.clone()).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("the request message does not decode: {e}"),
        )
    })
}

impl Services {
    /// An empty set of methods, without layers.
    pub fn new() -> Services {
        Services::default()
    }

    /// Runs every call through `layers` (the listener's `middleware::Stack::layers`).
    pub fn set_layers(&mut self, layers: Rc<Layers>) {
        self.layers = layers;
    }

    fn register(&mut self, path: &str, handler: Handler) {
        let name = MethodName::intern(path);
        self.methods
            .insert(path.to_string(), Registered { handler, name });
    }

    /// Registers a unary method.
    pub fn unary<Req, Resp, F, Fut>(&mut self, path: &str, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call, Req) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<Resp, Status>> + 'static,
    {
        let f = Rc::new(f);
        let handler: Unary = Rc::new(move |call, bytes| {
            let f = Rc::clone(&f);
            Box::pin(async move {
                let req = decode_request::<Req>(&bytes)?;
                let resp = f(call, req).await?;
                Ok(Bytes::from(resp.encode_to_vec()))
            })
        });
        self.register(path, Handler::Unary(handler));
    }

    /// Registers a server-streaming method: the handler sends through [`Stream`].
    pub fn server_streaming<Req, Resp, F, Fut>(&mut self, path: &str, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call, Req, Stream<Resp>) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), Status>> + 'static,
    {
        let f = Rc::new(f);
        let handler: Streaming = Rc::new(move |call, bytes, out| {
            let f = Rc::clone(&f);
            Box::pin(async move {
                let req = decode_request::<Req>(&bytes)?;
                f(call, req, Stream::new(out)).await
            })
        });
        self.register(path, Handler::Streaming(handler));
    }

    /// Registers a bidirectional-streaming method: the handler reads the client's messages
    /// from [`Requests`](super::bidi::Requests) while it sends through [`Stream`].
    pub fn bidi_streaming<Req, Resp, F, Fut>(&mut self, path: &str, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call, super::bidi::Requests<Req>, Stream<Resp>) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), Status>> + 'static,
    {
        self.register(path, Handler::Bidi(super::bidi::erase(f)));
    }

    /// The services (`package.Service`) with at least one method here, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .methods
            .keys()
            .filter_map(|path| Some(path.strip_prefix('/')?.split_once('/')?.0.to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether `path` is served.
    pub fn has(&self, path: &str) -> bool {
        self.methods.contains_key(path)
    }
}

/// The sending side of a server-streaming response. The h2 stream sits in a shared slot so the
/// server can still send the trailers after the handler returns.
pub struct Responses {
    slot: Rc<RefCell<Option<SendStream<Bytes>>>>,
    gzip: bool,
    max: usize,
}

impl Responses {
    async fn send_bytes(&mut self, message: &[u8]) -> Result<(), Status> {
        if message.len() > self.max {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "response message of {} bytes is over the limit of {}",
                    message.len(),
                    self.max
                ),
            ));
        }
        let framed = frame::encode(message, self.gzip);
        let mut stream = self
            .slot
            .borrow_mut()
            .take()
            .ok_or_else(|| Status::new(Code::Cancelled, "the stream is closed"))?;
        let sent = send_with_flow_control(&mut stream, framed).await;
        *self.slot.borrow_mut() = Some(stream);
        sent
    }
}

/// Typed messages of a server-streaming response.
pub struct Stream<T> {
    out: Responses,
    _type: PhantomData<T>,
}

impl<T: prost::Message> Stream<T> {
    pub(super) fn new(out: Responses) -> Stream<T> {
        Stream {
            out,
            _type: PhantomData,
        }
    }

    /// Sends one message; waits while the client's flow-control window is closed. An error
    /// means the client went away (CANCELLED): stop producing.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        self.out.send_bytes(&message.encode_to_vec()).await
    }
}

/// Sends `data` within the peer's window, reserving capacity and waiting for it chunk by chunk
/// (a 4 MiB message is not buffered beyond what the peer accepts).
async fn send_with_flow_control(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
) -> Result<(), Status> {
    let gone = |e: h2::Error| Status::new(Code::Cancelled, format!("the client went away: {e}"));
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = poll_fn(|cx| stream.poll_capacity(cx)).await;
        let n = match granted {
            Some(Ok(n)) if n > 0 => n.min(data.len()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(gone(e)),
            None => return Err(Status::new(Code::Cancelled, "the stream closed")),
        };
        stream.send_data(data.split_to(n), false).map_err(gone)?;
    }
    Ok(())
}

/// The response headers of a call: what the layers added, content type and encodings.
fn grpc_headers(gzip: bool, metadata: HeaderMap) -> http::Response<()> {
    let mut resp = http::Response::new(());
    *resp.headers_mut() = metadata;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if gzip {
        resp.headers_mut()
            .insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    resp.headers_mut().insert(
        "grpc-accept-encoding",
        HeaderValue::from_static("identity,gzip"),
    );
    resp
}

/// A Trailers-Only response: the status in the only HEADERS frame. Returns its code.
fn trailers_only(respond: &mut SendResponse<Bytes>, status: &Status, metadata: HeaderMap) -> Code {
    let mut resp = grpc_headers(false, metadata);
    status.write(resp.headers_mut());
    let _ = respond.send_response(resp, true);
    status.code
}

fn http_error(respond: &mut SendResponse<Bytes>, code: StatusCode) {
    let mut resp = http::Response::new(());
    *resp.status_mut() = code;
    let _ = respond.send_response(resp, true);
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Serves one HTTP/2 connection until the client leaves, the connection ages out, or the
/// server drains (then GOAWAY lets streams in flight finish).
pub async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    services: Rc<Services>,
    settings: Rc<Settings>,
    mut phase: watch::Receiver<Phase>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_header_list_size(settings.max_header_list_bytes)
        .max_frame_size(settings.max_frame_bytes)
        .max_send_buffer_size(1 << 20)
        .handshake::<_, Bytes>(io);
    let mut conn = match monoio::time::timeout(settings.keepalive_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (dead_tx, mut dead_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(pinger) = conn.ping_pong() {
        sdsim_core::runtime::spawn(
            "grpc-keepalive",
            keepalive(pinger, Rc::clone(&settings), dead_tx),
        );
    }
    let aged = monoio::time::sleep(jittered(settings.max_connection_age));
    futures_util::pin_mut!(aged);
    // Armed when the connection has aged: calls still open when it fires are cut off.
    let mut aged_out = false;
    let mut going_away = false;
    loop {
        let next = monoio::select! {
            next = conn.accept() => next,
            _ = &mut aged, if !going_away || aged_out => {
                if aged_out {
                    tracing::debug!(%peer, "calls outlived max_connection_age_grace: closing");
                    return;
                }
                going_away = true;
                conn.graceful_shutdown();
                if let Some(grace) = settings.max_connection_age_grace {
                    aged_out = true;
                    aged.as_mut().reset(monoio::time::Instant::now() + grace);
                }
                continue;
            }
            _ = phase.wait_for(|p| *p != Phase::Accepting), if !going_away => {
                going_away = true;
                conn.graceful_shutdown();
                continue;
            }
            _ = &mut dead_rx => {
                tracing::debug!(%peer, "keepalive ping unanswered: closing the connection");
                return;
            }
        };
        match next {
            Some(Ok((req, respond))) => {
                let services = Rc::clone(&services);
                let settings = Rc::clone(&settings);
                let counted = settings.in_flight.as_ref().map(InFlight::enter);
                sdsim_core::runtime::spawn("grpc-call", async move {
                    handle_stream(req, respond, peer, &services, &settings).await;
                    drop(counted);
                });
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "HTTP/2 connection error");
                return;
            }
            None => return,
        }
    }
}

/// `age` give or take up to 10%, different for each connection.
fn jittered(age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState gets fresh keys, so this is a cheap per-connection random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let per_mille = 900 + random % 201; // 900..=1100
    age.mul_f64(per_mille as f64 / 1000.0)
}

async fn keepalive(
    mut pinger: h2::PingPong,
    settings: Rc<Settings>,
    dead: tokio::sync::oneshot::Sender<()>,
) {
    loop {
        monoio::time::sleep(settings.keepalive_interval).await;
        let pong = pinger.ping(h2::Ping::opaque());
        match monoio::time::timeout(settings.keepalive_timeout, pong).await {
            Ok(Ok(_pong)) => continue,
            Ok(Err(_)) => return, // The connection is gone.
            Err(_) => {
                let _ = dead.send(());
                return;
            }
        }
    }
}

async fn handle_stream(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    services: &Services,
    settings: &Settings,
) {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return http_error(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
    }
    let grpc_type = header(&parts.headers, "content-type").is_some_and(|ct| {
        ct == "application/grpc"
            || ct.starts_with("application/grpc+")
            || ct.starts_with("application/grpc;")
    });
    if !grpc_type {
        return http_error(&mut respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let registered = services.methods.get(parts.uri.path()).cloned();
    let mut ex = match &registered {
        Some(r) => Exchange::grpc(
            r.name.service,
            r.name.method,
            Cow::Borrowed(r.name.path),
            r.name.path,
            peer,
        ),
        None => Exchange::grpc(
            UNMATCHED,
            UNMATCHED,
            Cow::Owned(parts.uri.path().to_string()),
            UNMATCHED,
            peer,
        ),
    };
    let layers = &services.layers;
    let answer = layers.request(&mut ex, &parts.headers).await;
    let mut metadata = HeaderMap::new();
    layers.respond(&ex, &mut metadata);
    let code = match answer {
        Some(answer) => trailers_only(&mut respond, &answer.into_status(), metadata),
        None => {
            let call = CallParts {
                parts,
                body,
                peer,
                metadata,
                extensions: ex.extensions.clone(),
            };
            let trace = ex.extensions.get::<TraceContext>().cloned();
            let served =
                serve_call(call, registered, respond, settings).instrument(ex.span.clone());
            // The calls the method makes are children of this call's span.
            crate::otel::current::traced(trace, served).await
        }
    };
    let outcome = Outcome {
        ended: Ended::Grpc { code },
        elapsed: started.elapsed(),
    };
    layers.done(&ex, &outcome);
}

/// A call the layers let through.
struct CallParts {
    parts: http::request::Parts,
    body: RecvStream,
    peer: SocketAddr,
    /// Response metadata from the layers.
    metadata: HeaderMap,
    /// What the layers learned, for the handler.
    extensions: http::Extensions,
}

/// Reads the request, runs the handler within the deadline and sends the answer; returns the
/// call's final code.
async fn serve_call(
    call: CallParts,
    registered: Option<Registered>,
    mut respond: SendResponse<Bytes>,
    settings: &Settings,
) -> Code {
    let CallParts {
        parts,
        mut body,
        peer,
        metadata,
        extensions,
    } = call;
    let path = parts.uri.path();
    let Some(Registered { handler, .. }) = registered else {
        return trailers_only(
            &mut respond,
            &Status::new(Code::Unimplemented, format!("unknown method {path}")),
            metadata,
        );
    };
    let request_gzip = match header(&parts.headers, "grpc-encoding") {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return trailers_only(
                &mut respond,
                &Status::new(
                    Code::Unimplemented,
                    format!("grpc-encoding {other:?} is not supported (identity, gzip)"),
                ),
                metadata,
            )
        }
    };
    let accepts_gzip = header(&parts.headers, "grpc-accept-encoding")
        .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip"));
    let deadline = match header(&parts.headers, "grpc-timeout") {
        None => None,
        Some(v) => match parse_timeout(v) {
            Some(d) => Some(Instant::now() + d),
            None => {
                return trailers_only(
                    &mut respond,
                    &Status::new(
                        Code::InvalidArgument,
                        format!("grpc-timeout {v:?} is malformed"),
                    ),
                    metadata,
                )
            }
        },
    };
    let accepts_gzip_reply = request_gzip && accepts_gzip;
    if let Handler::Bidi(f) = handler {
        let call = Call {
            metadata: parts.headers,
            deadline,
            peer,
            extensions,
        };
        let Ok(stream) = respond.send_response(grpc_headers(accepts_gzip_reply, metadata), false)
        else {
            return Code::Cancelled;
        };
        let slot = Rc::new(RefCell::new(Some(stream)));
        let responses = Responses {
            slot: Rc::clone(&slot),
            gzip: accepts_gzip_reply,
            max: settings.max_message_bytes,
        };
        let run = f(
            call,
            body,
            settings.max_message_bytes,
            request_gzip,
            responses,
        );
        return finish_stream(&slot, deadline, run).await;
    }
    // Without a client deadline the server's own bounds the wait: a unary call gets
    // `unary_timeout`; any call's request must arrive within it (a client that opens a stream and
    // never sends its message does not hold a handler slot forever).
    let server_bound = Instant::now() + settings.unary_timeout;
    let read_until = deadline.map_or(server_bound, |d| d.min(server_bound));
    let read = read_request(&mut body, settings.max_message_bytes, request_gzip);
    let message = match monoio::time::timeout_at(read_until.into(), read).await {
        Ok(r) => r,
        Err(_) if deadline == Some(read_until) => Err(Status::new(
            Code::DeadlineExceeded,
            "deadline exceeded while reading the request",
        )),
        Err(_) => Err(Status::new(
            Code::DeadlineExceeded,
            format!(
                "the request did not arrive within {} (grpc.unary_timeout)",
                sdsim_core::config::format_duration(settings.unary_timeout)
            ),
        )),
    };
    let message = match message {
        Ok(m) => m,
        Err(status) => return trailers_only(&mut respond, &status, metadata),
    };
    let call = Call {
        metadata: parts.headers,
        deadline,
        peer,
        extensions,
    };
    let gzip = accepts_gzip_reply;
    // The client left before the answer was sent.
    let gone = Code::Cancelled;
    match handler {
        Handler::Unary(f) => {
            let bound = deadline.unwrap_or(server_bound);
            // Without grpc-timeout, the server's own bound is what the calls the handler
            // makes must meet too.
            let outcome = monoio::time::timeout_at(
                bound.into(),
                crate::deadline::within(Some(bound), f(call, message)),
            )
            .await;
            let reply = match outcome {
                Err(_) if deadline.is_some() => {
                    Err(Status::new(Code::DeadlineExceeded, "deadline exceeded"))
                }
                Err(_) => Err(Status::new(
                    Code::DeadlineExceeded,
                    format!(
                        "no grpc-timeout was sent and the call ran past {} (grpc.unary_timeout)",
                        sdsim_core::config::format_duration(settings.unary_timeout)
                    ),
                )),
                Ok(r) => r,
            };
            let reply = reply.and_then(|bytes| {
                if bytes.len() > settings.max_message_bytes {
                    Err(Status::new(
                        Code::ResourceExhausted,
                        "the response is over the message size limit",
                    ))
                } else {
                    Ok(bytes)
                }
            });
            match reply {
                Err(status) => trailers_only(&mut respond, &status, metadata),
                Ok(bytes) => {
                    let Ok(mut stream) = respond.send_response(grpc_headers(gzip, metadata), false)
                    else {
                        return gone;
                    };
                    if send_with_flow_control(&mut stream, frame::encode(&bytes, gzip))
                        .await
                        .is_err()
                    {
                        return gone;
                    }
                    finish(&mut stream, &Status::new(Code::Ok, ""))
                }
            }
        }
        Handler::Streaming(f) => {
            let Ok(stream) = respond.send_response(grpc_headers(gzip, metadata), false) else {
                return gone;
            };
            let slot = Rc::new(RefCell::new(Some(stream)));
            let responses = Responses {
                slot: Rc::clone(&slot),
                gzip,
                max: settings.max_message_bytes,
            };
            finish_stream(&slot, deadline, f(call, message, responses)).await
        }
        Handler::Bidi(_) => {
            unreachable!("bidirectional calls are served before the request is read")
        }
    }
}

/// Runs a streaming handler within the call's deadline, then sends its trailers; returns the
/// call's code.
async fn finish_stream(
    slot: &Rc<RefCell<Option<SendStream<Bytes>>>>,
    deadline: Option<Instant>,
    run: impl std::future::Future<Output = Result<(), Status>>,
) -> Code {
    let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
    let run = crate::deadline::within(deadline, run);
    let result = match monoio::time::timeout_at(until.into(), run).await {
        Ok(r) => r,
        Err(_) => Err(Status::new(Code::DeadlineExceeded, "deadline exceeded")),
    };
    // A send cut off by the deadline took the stream with it: h2 resets the stream.
    let stream = slot.borrow_mut().take();
    let status = result.err().unwrap_or_else(|| Status::new(Code::Ok, ""));
    match stream {
        Some(mut stream) => finish(&mut stream, &status),
        None => status.code,
    }
}

/// Sends the trailers; returns the call's code.
fn finish(stream: &mut SendStream<Bytes>, status: &Status) -> Code {
    let mut trailers = HeaderMap::new();
    status.write(&mut trailers);
    let _ = stream.send_trailers(trailers);
    status.code
}

/// Reads the one request message of a stream. The length prefix is checked as soon as its five
/// bytes are in, so a message declared over `max` is refused before its bytes are read or
/// buffered, and the buffer grows only to the declared length.
async fn read_request(body: &mut RecvStream, max: usize, gzip: bool) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    let mut declared: Option<usize> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk
            .map_err(|e| Status::new(Code::Cancelled, format!("request stream failed: {e}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if let Some(len) = declared {
            if buf.len() + chunk.len() > 5 + len {
                return Err(more_than_one_message());
            }
        }
        buf.extend_from_slice(&chunk);
        if declared.is_none() && buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > max {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("request message of {len} bytes is over the limit of {max} bytes"),
                ));
            }
            if buf.len() > 5 + len {
                return Err(more_than_one_message());
            }
            buf.reserve(5 + len - buf.len());
            declared = Some(len);
        }
    }
    let message = frame::decode(&mut buf, max, gzip)?
        .ok_or_else(|| Status::new(Code::Internal, "the request ended without a whole message"))?;
    if !buf.is_empty() {
        return Err(more_than_one_message());
    }
    Ok(message)
}

fn more_than_one_message() -> Status {
    Status::new(
        Code::Unimplemented,
        "more than one request message: this method is not client-streaming",
    )
}
