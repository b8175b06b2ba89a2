//! The connection loop: a thin shell that reads bytes, feeds the sans-IO decoder, hands each
//! request to the application, encodes responses in order (pipelined responses are coalesced
//! into one write), and enforces the read, write and idle timeouts and graceful drain.

use crate::http::codec::{Limits, RequestDecoder};
use crate::http::encode::{encode_response, encode_simple_error, HttpDate, ResponseFraming};
use crate::middleware::App;
use crate::transport::{IntoAnyIo, Transport};
use crate::ws::upgrade::{self, UpgradeToken};
use crate::ws::Upgraded;
use bytes::BytesMut;
use http::header::CONNECTION;
use http::Method;
use sdsim_core::shutdown::Phase;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Settings of every connection on a listener.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Codec limits.
    pub limits: Limits,
    /// Time for a whole request to arrive once its first byte has.
    pub read_timeout: Duration,
    /// Time for a response to be written.
    pub write_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

/// What is known about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Why a connection ended (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEnd {
    /// The client closed it.
    PeerClosed,
    /// A response said `Connection: close` (client asked, HTTP/1.0, or draining).
    Close,
    /// No request arrived within the idle timeout.
    IdleTimeout,
    /// A request did not arrive completely within the read timeout.
    ReadTimeout,
    /// A response could not be written within the write timeout.
    WriteTimeout,
    /// The request was malformed; an error response was sent.
    BadRequest,
    /// The server is draining and the connection was idle.
    Drained,
    /// A socket error.
    Io,
    /// The connection was upgraded (WebSocket) and handed over.
    Upgraded,
}

/// A connection the HTTP/1.1 loop handed over after a 101 response: run it on a task of its
/// own, so the connection does not keep the HTTP loop's state (several KB) for its lifetime.
pub struct Handoff {
    start: upgrade::Start,
    conn: Upgraded,
}

impl Handoff {
    /// The upgraded protocol's future.
    pub fn run(self) -> futures_util::future::LocalBoxFuture<'static, ()> {
        (self.start)(self.conn)
    }
}

const READ_CHUNK: usize = 8 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves HTTP/1.1 on `io` until the connection ends or is upgraded (then the hand-off is
/// returned with [`ConnEnd::Upgraded`]).
pub async fn serve_connection<T: Transport + IntoAnyIo>(
    mut io: T,
    info: ConnInfo,
    app: Rc<App>,
    settings: Rc<ConnSettings>,
    date: Rc<RefCell<HttpDate>>,
    mut phase: watch::Receiver<Phase>,
) -> (ConnEnd, Option<Handoff>) {
    let mut decoder = RequestDecoder::new(settings.limits.clone());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut request_started: Option<Instant> = None;
    loop {
        // Answer every complete request already buffered (pipelining), in order.
        let mut close_after_flush = None;
        let mut upgrade_to = None;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(mut decoded)) => {
                    request_started = None;
                    // Load shedding decides first: a refusal costs only the decode and a
                    // copy of bytes encoded once.
                    let keep_alive = decoded.keep_alive && *phase.borrow() == Phase::Accepting;
                    if app.shed(&mut decoded.request, keep_alive, &date, &mut out) {
                        if !keep_alive {
                            close_after_flush = Some(ConnEnd::Close);
                            break;
                        }
                        continue;
                    }
                    let head = decoded.request.method() == Method::HEAD;
                    let version = decoded.request.version();
                    let mut response = app.handle(decoded.request, &info).await;
                    let token = response.extensions_mut().remove::<UpgradeToken>();
                    if let Some(token) = token {
                        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                            encode_response(
                                &response,
                                ResponseFraming::keep_alive(),
                                date.borrow_mut().now(),
                                &mut out,
                            );
                            upgrade_to = upgrade::take(token);
                            break;
                        }
                        drop(upgrade::take(token));
                    }
                    let keep_alive = decoded.keep_alive
                        && *phase.borrow() == Phase::Accepting
                        && !asks_close(&response);
                    let framing = ResponseFraming::for_request(version, head, keep_alive);
                    encode_response(&response, framing, date.borrow_mut().now(), &mut out);
                    if !keep_alive {
                        close_after_flush = Some(ConnEnd::Close);
                        break;
                    }
                }
                Ok(None) => {
                    if decoder.take_continue() {
                        out.extend_from_slice(CONTINUE);
                    }
                    break;
                }
                Err(error) => {
                    tracing::debug!(peer = %info.peer, status = error.status().as_u16(), %error, "rejected request");
                    let mut date = date.borrow_mut();
                    encode_simple_error(
                        error.status(),
                        &error.message(),
                        false,
                        date.now(),
                        &mut out,
                    );
                    close_after_flush = Some(ConnEnd::BadRequest);
                    break;
                }
            }
        }
        if !out.is_empty() {
            match monoio::time::timeout(settings.write_timeout, io.write_all_from(out)).await {
                Ok((Ok(()), mut written)) => {
                    written.clear();
                    out = written;
                }
                Ok((Err(_), _)) => return (ConnEnd::Io, None),
                Err(_) => return (ConnEnd::WriteTimeout, None),
            }
        }
        if let Some(start) = upgrade_to {
            // Only what the client sent after the handshake moves on; the HTTP buffers go.
            let leftover = BytesMut::from(&buf[..]);
            drop((buf, out, decoder));
            let conn = Upgraded {
                io: io.into_any_io(),
                leftover,
                peer: info.peer,
                phase,
            };
            return (ConnEnd::Upgraded, Some(Handoff { start, conn }));
        }
        if let Some(end) = close_after_flush {
            io.close().await;
            return (end, None);
        }

        // Read more. A request in progress has the read timeout, counted from its first byte;
        // an idle connection has the idle timeout and closes when the server drains.
        let idle = buf.is_empty() && !decoder.in_progress();
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (result, returned) = if idle {
            if *phase.borrow() != Phase::Accepting {
                io.close().await;
                return (ConnEnd::Drained, None);
            }
            let read = monoio::time::timeout(settings.idle_timeout, io.read_into(buf));
            monoio::select! {
                r = read => match r {
                    Ok(done) => done,
                    Err(_) => return (ConnEnd::IdleTimeout, None),
                },
                _ = phase.wait_for(|p| *p != Phase::Accepting) => return (ConnEnd::Drained, None),
            }
        } else {
            let started = *request_started.get_or_insert_with(Instant::now);
            let left = settings.read_timeout.saturating_sub(started.elapsed());
            match monoio::time::timeout(left, io.read_into(buf)).await {
                Ok(done) => done,
                Err(_) => return (ConnEnd::ReadTimeout, None),
            }
        };
        buf = returned;
        match result {
            Ok(0) => return (ConnEnd::PeerClosed, None),
            Ok(_) => {
                if request_started.is_none() {
                    request_started = Some(Instant::now());
                }
            }
            Err(_) => return (ConnEnd::Io, None),
        }
    }
}

fn asks_close(response: &http::Response<bytes::Bytes>) -> bool {
    response
        .headers()
        .get(CONNECTION)
        .map(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
        .unwrap_or(false)
}
