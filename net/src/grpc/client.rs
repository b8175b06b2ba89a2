//! The gRPC client: one multiplexed HTTP/2 connection per target per shard (a [`Client`] is
//! shard-local; [`Clients::get`] keeps one per address on the calling shard), unary and
//! server-streaming calls, deadlines sent as `grpc-timeout` and enforced locally, status from
//! the trailers. A broken connection is replaced on the next call.
//!
//! [`Connect`] says how connections are opened: TLS (and mutual TLS) through [`ClientTls`], and
//! keepalive pings; a connection whose ping goes unanswered for the timeout is dropped, so calls
//! fail over instead of waiting on a peer that stopped (a frozen process, a silent network).

use super::frame;
use super::status::{Code, Status};
use crate::tls::ClientTls;
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::RecvStream;
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{HeaderMap, Request};
use monoio::io::IntoPollIo;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// When the caller stops waiting; sent as `grpc-timeout`.
    pub deadline: Option<Instant>,
    /// Extra request metadata (e.g. `authorization`).
    pub metadata: HeaderMap,
}

impl CallOptions {
    /// Options whose deadline is `timeout` from now.
    pub fn timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            deadline: Some(Instant::now() + timeout),
            metadata: HeaderMap::new(),
        }
    }

    /// Options carrying an incoming call's deadline onward (deadline propagation).
    pub fn within(call: &super::server::Call) -> CallOptions {
        CallOptions {
            deadline: call.deadline,
            metadata: HeaderMap::new(),
        }
    }
}

/// HTTP/2 PINGs on an idle or busy connection: one every `interval`; one unanswered for
/// `timeout` drops the connection (its calls fail UNAVAILABLE, the next call reconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time from one pong (or the connection's start) to the next ping.
    pub interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub timeout: Duration,
    /// A ping unanswered this long is late: the hook of [`Client::on_late_ping`] runs (the
    /// connection is kept until `timeout`).
    pub late: Duration,
}

/// How a [`Client`] opens its connection.
#[derive(Debug, Clone)]
pub struct Connect {
    /// TLS (mutual TLS when it carries a client certificate); `None` speaks plaintext HTTP/2.
    pub tls: Option<ClientTls>,
    /// Keepalive pings; `None` never pings.
    pub keepalive: Option<Keepalive>,
    /// Bound on TCP connect plus the TLS handshake.
    pub connect_timeout: Duration,
}

impl Default for Connect {
    fn default() -> Connect {
        Connect {
            tls: None,
            keepalive: None,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A client of one target address, for the calling shard.
pub struct Client {
    addr: SocketAddr,
    authority: String,
    connect: Connect,
    max_message_bytes: usize,
    sender: RefCell<Option<SendRequest<Bytes>>>,
    keepalive_drops: Rc<Cell<u64>>,
    unanswered: RefCell<Option<Rc<dyn Fn()>>>,
    dropped: RefCell<Option<Rc<dyn Fn()>>>,
}

impl Client {
    /// A plaintext client of `addr` without keepalive (connects on first use).
    pub fn new(addr: SocketAddr) -> Client {
        Client::with_connect(addr, Connect::default())
    }

    /// A client of `addr` that opens its connections as `connect` says.
    pub fn with_connect(addr: SocketAddr, connect: Connect) -> Client {
        Client {
            addr,
            authority: addr.to_string(),
            connect,
            max_message_bytes: 4 << 20,
            sender: RefCell::new(None),
            keepalive_drops: Rc::new(Cell::new(0)),
            unanswered: RefCell::new(None),
            dropped: RefCell::new(None),
        }
    }

    /// Calls `hook` (on this shard) each time a keepalive ping is late ([`Keepalive::late`]):
    /// the mesh stops sending the instance new calls at once, long before the connection is
    /// dropped.
    pub fn on_late_ping(&self, hook: Rc<dyn Fn()>) {
        *self.unanswered.borrow_mut() = Some(hook);
    }

    /// Calls `hook` (on this shard) each time this client drops a connection because a
    /// keepalive ping went unanswered (the calls on it fail UNAVAILABLE).
    pub fn on_keepalive_drop(&self, hook: Rc<dyn Fn()>) {
        *self.dropped.borrow_mut() = Some(hook);
    }

    /// Connections this client dropped because a keepalive ping went unanswered.
    pub fn keepalive_drops(&self) -> u64 {
        self.keepalive_drops.get()
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, Status> {
        let unavailable =
            |what: String| Status::new(Code::Unavailable, format!("{}: {what}", self.addr));
        let opened = async {
            let tcp = monoio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| unavailable(format!("connect failed: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let io = tcp
                .into_poll_io()
                .map_err(|e| unavailable(format!("poll io: {e}")))?;
            match &self.connect.tls {
                None => self.handshake(io).await,
                Some(tls) => {
                    let name = tls.server_name(self.addr.ip());
                    let io = tls
                        .connector()
                        .connect(name, io)
                        .await
                        .map_err(|e| unavailable(format!("TLS handshake failed: {e}")))?;
                    if io.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return Err(unavailable("TLS peer did not agree to ALPN h2".into()));
                    }
                    self.handshake(io).await
                }
            }
        };
        monoio::time::timeout(self.connect.connect_timeout, opened)
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
    }

    /// The HTTP/2 handshake on an open stream; spawns the task that drives the connection (and
    /// pings it, with keepalive on).
    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Bytes>, Status>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| {
                Status::new(
                    Code::Unavailable,
                    format!("{}: HTTP/2 handshake failed: {e}", self.addr),
                )
            })?;
        let pinger = self
            .connect
            .keepalive
            .and_then(|k| Some((k, connection.ping_pong()?)));
        let (addr, drops) = (self.addr, Rc::clone(&self.keepalive_drops));
        let hook = self.unanswered.borrow().clone();
        let on_drop = self.dropped.borrow().clone();
        // h2 needs its connection future driven (docs/architecture.md). Dropping it (when a
        // ping goes unanswered) fails the calls in flight and makes the sender refuse new ones.
        sdsim_core::runtime::spawn("grpc-client-connection", async move {
            let Some((keepalive, pinger)) = pinger else {
                let _ = connection.await;
                return;
            };
            monoio::select! {
                // The connection first: when a pong and the ping's timeout are ready in the same
                // wake-up (a frozen peer continued), the pong is read before the timeout is
                // looked at, and a connection that answered is not dropped (with the calls just
                // sent on it).
                biased;
                _ = &mut connection => {}
                unanswered = ping_until_unanswered(pinger, keepalive, hook) => if unanswered {
                    drops.set(drops.get() + 1);
                    if let Some(on_drop) = &on_drop {
                        on_drop();
                    }
                    tracing::warn!(
                        %addr,
                        timeout = ?keepalive.timeout,
                        "gRPC client: keepalive ping unanswered, dropping the connection"
                    );
                }
            }
        });
        Ok(sender)
    }

    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, Status> {
        let cached = self.sender.borrow().clone();
        if let Some(sender) = cached {
            if let Ok(ready) = sender.ready().await {
                return Ok(ready);
            }
            self.sender.borrow_mut().take();
        }
        let fresh = self.connect().await?;
        let ready = fresh
            .ready()
            .await
            .map_err(|e| Status::new(Code::Unavailable, format!("{}: {e}", self.addr)))?;
        *self.sender.borrow_mut() = Some(ready.clone());
        Ok(ready)
    }

    /// Opens the connection now unless it is open (a pool warms connections in the
    /// background so that calls do not wait for a connect).
    pub async fn connect_now(&self) -> Result<(), Status> {
        self.ready_sender().await.map(drop)
    }

    async fn start(
        &self,
        path: &str,
        message: &[u8],
        opts: &CallOptions,
    ) -> Result<Option<RecvStream>, Status> {
        // Until the request's stream exists, nothing reached the server.
        let mut sender = self.ready_sender().await.map_err(Status::not_sent)?;
        let mut req = Request::post(format!("http://{}{path}", self.authority))
            .body(())
            .map_err(|e| Status::new(Code::Internal, format!("bad request for {path}: {e}")))?;
        let headers = req.headers_mut();
        for (k, v) in &opts.metadata {
            headers.insert(k, v.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static("identity,gzip"),
        );
        if let Some(deadline) = opts.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(
                    Status::new(Code::DeadlineExceeded, "deadline passed before the call")
                        .not_sent(),
                );
            }
            // Milliseconds, rounded up, at most 8 digits.
            let ms = left.as_micros().div_ceil(1000).min(99_999_999);
            if let Ok(v) = HeaderValue::from_str(&format!("{ms}m")) {
                headers.insert("grpc-timeout", v);
            }
        }
        let gone = |e: h2::Error| Status::new(Code::Unavailable, format!("{path}: {e}"));
        let (response, mut send) = sender.send_request(req, false).map_err(|e| {
            self.sender.borrow_mut().take();
            gone(e).not_sent()
        })?;
        send.send_data(frame::encode(message, false), true)
            .map_err(gone)?;
        let response = response.await.map_err(|e| {
            if e.is_go_away() || e.is_io() {
                self.sender.borrow_mut().take();
            }
            let unsent = refused_before_processing(&e);
            let status = gone(e);
            if unsent {
                status.not_sent()
            } else {
                status
            }
        })?;
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::new(
                http_to_code(parts.status),
                format!("{path}: HTTP status {}", parts.status),
            ));
        }
        // Trailers-Only: the status came in the only HEADERS frame (no messages).
        match status_from(&parts.headers) {
            Some(Err(status)) => Err(status),
            Some(Ok(())) => Ok(None),
            None => Ok(Some(body)),
        }
    }

    /// A unary call.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let bytes = self.unary_raw(path, &req.encode_to_vec(), opts).await?;
        Resp::decode(bytes).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("{path}: response does not decode: {e}"),
            )
        })
    }

    /// A unary call with an encoded request; returns the encoded response (load generators and
    /// proxies need no types).
    pub async fn unary_raw(
        &self,
        path: &str,
        message: &[u8],
        opts: CallOptions,
    ) -> Result<Bytes, Status> {
        let call = async {
            let Some(mut body) = self.start(path, message, &opts).await? else {
                return Err(Status::new(
                    Code::Internal,
                    format!("{path}: OK without a response message"),
                ));
            };
            let mut reader = Reader::new(self.max_message_bytes);
            let mut reply = None;
            while let Some(message) = reader.next(&mut body).await? {
                if reply.replace(message).is_some() {
                    return Err(Status::new(
                        Code::Internal,
                        format!("{path}: more than one response message"),
                    ));
                }
            }
            reply.ok_or_else(|| Status::new(Code::Internal, format!("{path}: no response message")))
        };
        match opts.deadline {
            Some(d) => monoio::time::timeout_at(d.into(), call)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::new(
                        Code::DeadlineExceeded,
                        format!("{path}: deadline exceeded"),
                    ))
                }),
            None => call.await,
        }
    }

    /// A server-streaming call: read the messages with [`Responses::message`].
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Responses<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let body = self.start(path, &req.encode_to_vec(), &opts).await?;
        Ok(Responses {
            body,
            reader: Reader::new(self.max_message_bytes),
            deadline: opts.deadline,
            _type: PhantomData,
        })
    }
}

/// Pings until a ping goes unanswered for `keepalive.timeout` (`true`) or the connection ends
/// (`false`).
async fn ping_until_unanswered(
    mut pinger: h2::PingPong,
    keepalive: Keepalive,
    late: Option<Rc<dyn Fn()>>,
) -> bool {
    let suspect = keepalive.late.min(keepalive.timeout);
    loop {
        monoio::time::sleep(keepalive.interval).await;
        let mut pong = std::pin::pin!(pinger.ping(h2::Ping::opaque()));
        match monoio::time::timeout(suspect, &mut pong).await {
            Ok(Ok(_pong)) => continue,
            Ok(Err(_)) => return false,
            Err(_) => {}
        }
        // Late: the peer may be frozen. Say so at once (the mesh stops sending it new calls),
        // and drop the connection only if the pong never comes.
        if let Some(late) = &late {
            late();
        }
        match monoio::time::timeout(keepalive.timeout - suspect, pong).await {
            Ok(Ok(_pong)) => continue,
            Ok(Err(_)) => return false,
            Err(_) => return true,
        }
    }
}

/// The messages of a server-streaming response.
pub struct Responses<T> {
    body: Option<RecvStream>,
    reader: Reader,
    deadline: Option<Instant>,
    _type: PhantomData<T>,
}

impl<T: prost::Message + Default> Responses<T> {
    /// The next message; `Ok(None)` when the stream ended with OK.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let next = self.reader.next(body);
        let bytes = match self.deadline {
            Some(d) => monoio::time::timeout_at(d.into(), next)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::new(Code::DeadlineExceeded, "deadline exceeded"))
                })?,
            None => next.await?,
        };
        bytes
            .map(|b| {
                T::decode(b).map_err(|e| {
                    Status::new(Code::Internal, format!("message does not decode: {e}"))
                })
            })
            .transpose()
    }
}

struct Reader {
    buf: BytesMut,
    max: usize,
    gzip: bool,
}

impl Reader {
    fn new(max: usize) -> Reader {
        Reader {
            buf: BytesMut::new(),
            max,
            gzip: true,
        }
    }

    /// The next message, or `None` after OK trailers; a non-OK status is the error.
    async fn next(&mut self, body: &mut RecvStream) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(message) = frame::decode(&mut self.buf, self.max, self.gzip)? {
                return Ok(Some(message));
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    return Err(Status::new(
                        Code::Unavailable,
                        format!("response stream failed: {e}"),
                    ))
                }
                None => {
                    if !self.buf.is_empty() {
                        return Err(Status::new(
                            Code::Internal,
                            "the response ended inside a message",
                        ));
                    }
                    let trailers = body
                        .trailers()
                        .await
                        .map_err(|e| Status::new(Code::Unavailable, format!("trailers: {e}")))?
                        .unwrap_or_default();
                    return match status_from(&trailers) {
                        Some(Ok(())) => Ok(None),
                        Some(Err(status)) => Err(status),
                        None => Err(Status::new(
                            Code::Internal,
                            "the response has no grpc-status",
                        )),
                    };
                }
            }
        }
    }
}

/// Whether the server provably did not process the stream: it refused it (RST_STREAM
/// REFUSED_STREAM, RFC 9113 §8.7), or its GOAWAY named a last stream below it (h2 fails
/// exactly those streams with the remote GOAWAY as soon as it arrives).
fn refused_before_processing(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// The status in `headers`: `None` without `grpc-status`, `Some(Ok(()))` for OK.
fn status_from(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<u8>()
        .ok()?;
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let mut status = Status::new(code_from(code), message);
    status.details = Status::details_from(headers.get("grpc-status-details-bin"));
    Some(Err(status))
}

fn code_from(n: u8) -> Code {
    use Code::*;
    [
        Ok,
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ]
    .get(n as usize)
    .copied()
    .unwrap_or(Unknown)
}

fn http_to_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This shard's clients, one per target address.
#[derive(Default)]
pub struct Clients {
    by_addr: RefCell<HashMap<SocketAddr, Rc<Client>>>,
}

impl Clients {
    /// The client of `addr` on this shard (created on first use).
    pub fn get(&self, addr: SocketAddr) -> Rc<Client> {
        Rc::clone(
            self.by_addr
                .borrow_mut()
                .entry(addr)
                .or_insert_with(|| Rc::new(Client::new(addr))),
        )
    }
}
