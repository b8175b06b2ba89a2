//! The layer contract shared by HTTP/1.1 and gRPC: a [`Layer`] sees every request or call as
//! an [`Exchange`] (who, what, which route) and hooks into three moments:
//!
//! 1. [`Layer::request`], in stack order before the handler: may answer instead of the
//!    handler ([`Answer`]); the later layers' `request` hooks and the handler then do not run;
//! 2. [`Layer::respond`], in stack order on every answer: adds response metadata (HTTP headers,
//!    or gRPC initial metadata / the trailers of a Trailers-Only answer);
//! 3. [`Layer::done`], in stack order once the answer is sent or the call ends: observes it
//!    ([`Outcome`]: HTTP status or gRPC code, and the time taken).
//!
//! Each protocol has one adapter that runs a [`Layers`] list: `middleware::App::handle` for
//! HTTP, the stream task of `grpc::server` for gRPC. A layer written against this module runs
//! on both; one that only makes sense for one protocol checks [`Exchange::protocol`].
//!
//! What a layer learns reaches the rest without touching them: values it puts in
//! [`Exchange::extensions`] are seen by the later layers and by the handler (the adapters copy
//! them into the HTTP request's extensions and the gRPC `Call`), and fields it puts on
//! [`Exchange::span`] appear on every event the handler logs (and on the access-log line when
//! it is written as a `tracing` event; the buffered access log of the server writes the
//! trace context from the extensions instead).

use crate::grpc::status::{Code, Status};
use crate::http::types::{error, Response};
use futures_util::future::LocalBoxFuture;
use http::{HeaderMap, Method, StatusCode};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

/// The route label of a request that matched no route or method.
pub const UNMATCHED: &str = "unmatched";

/// Which protocol carries an exchange, with what identifies the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.1 request.
    Http {
        /// The request method.
        method: Method,
    },
    /// A gRPC call.
    Grpc {
        /// The full service name (`sdsim.auth.v1.AuthService`), or [`UNMATCHED`].
        service: &'static str,
        /// The method name (`ValidateToken`), or [`UNMATCHED`].
        method: &'static str,
    },
}

/// One request or call as the layers see it.
#[derive(Debug)]
pub struct Exchange {
    /// The protocol and the operation.
    pub protocol: Protocol,
    /// The client's address.
    pub peer: SocketAddr,
    /// The path as requested (`/api/projects/7`, `/sdsim.auth.v1.AuthService/Login`).
    pub path: Cow<'static, str>,
    /// A label with few values: the HTTP route pattern (`/api/projects/{id}`) or the gRPC
    /// method path, [`UNMATCHED`] when nothing matched.
    pub route: &'static str,
    /// Set by the request-id layer; empty when the stack has none.
    pub request_id: String,
    /// What a layer learned for its own later hooks, for the layers after it and for the
    /// handler (the rate-limit decision; the trace context).
    pub extensions: http::Extensions,
    /// The span the access-log line and the handler's events are written in: a layer with
    /// something to say on every line about this exchange replaces it with a child span
    /// carrying its fields (`tracing` fixes an event's field names where the event is written,
    /// so a span is how fields decided elsewhere reach a line). Disabled (`Span::none`) until a
    /// layer sets one.
    pub span: tracing::Span,
}

impl Exchange {
    /// An HTTP request of `method` to `path`, matched to `route`.
    pub fn http(method: Method, path: String, route: &'static str, peer: SocketAddr) -> Exchange {
        Exchange {
            protocol: Protocol::Http { method },
            peer,
            path: Cow::Owned(path),
            route,
            request_id: String::new(),
            extensions: http::Extensions::new(),
            span: tracing::Span::none(),
        }
    }

    /// A gRPC call of `service`/`method` at `path`; `route` is `path` for a registered method.
    pub fn grpc(
        service: &'static str,
        method: &'static str,
        path: Cow<'static, str>,
        route: &'static str,
        peer: SocketAddr,
    ) -> Exchange {
        Exchange {
            protocol: Protocol::Grpc { service, method },
            peer,
            path,
            route,
            request_id: String::new(),
            extensions: http::Extensions::new(),
            span: tracing::Span::none(),
        }
    }
}

/// A layer's answer in place of the handler's, rendered by each protocol's adapter.
#[derive(Debug)]
pub enum Answer {
    /// The client is over its rate limit: HTTP 429 `rate_limited`, gRPC RESOURCE_EXHAUSTED
    /// with a `google.rpc.RetryInfo` detail.
    RateLimited {
        /// Until the limit allows one more request.
        retry_after: Duration,
    },
    /// The shard is overloaded and refuses new work: HTTP 503 `overloaded` with
    /// `Retry-After`, gRPC RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail.
    Overloaded {
        /// When to try again.
        retry_after: Duration,
    },
    /// A complete HTTP response (a CORS preflight). Only HTTP-only layers give it.
    Http(Response),
}

/// Whole seconds to wait, at least 1 (what `Retry-After` carries).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Answer {
    /// The HTTP response.
    pub fn into_http(self) -> Response {
        match self {
            Answer::RateLimited { retry_after } => error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!(
                    "too many requests from this client; retry in {} s",
                    retry_after_secs(retry_after)
                ),
            ),
            Answer::Overloaded { retry_after } => {
                let secs = retry_after_secs(retry_after);
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    &format!("the server is overloaded; retry in {secs} s"),
                );
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, secs.into());
                response
            }
            Answer::Http(response) => response,
        }
    }

    /// The gRPC status.
    pub fn into_status(self) -> Status {
        match self {
            Answer::RateLimited { retry_after } => Status::new(
                Code::ResourceExhausted,
                format!(
                    "too many requests from this client; retry in {} s",
                    retry_after_secs(retry_after)
                ),
            )
            .with_reason("sdsim", "RATE_LIMITED")
            .with_retry_delay(retry_after),
            Answer::Overloaded { retry_after } => Status::new(
                Code::ResourceExhausted,
                format!(
                    "the server is overloaded; retry in {} s",
                    retry_after_secs(retry_after)
                ),
            )
            .with_reason("sdsim", "OVERLOADED")
            .with_retry_delay(retry_after),
            // A layer that answers in HTTP terms must check the protocol first.
            Answer::Http(response) => Status::new(
                Code::Internal,
                format!(
                    "an HTTP-only layer answered a gRPC call ({})",
                    response.status()
                ),
            ),
        }
    }
}

/// What [`Layer::request`] decided.
pub enum Check<'a> {
    /// Go on to the next layer, then the handler.
    Pass,
    /// Answer now; the handler does not run.
    Answer(Answer),
    /// The decision needs to wait (e.g. for another shard); `Some` answers.
    Wait(LocalBoxFuture<'a, Option<Answer>>),
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// An HTTP response was produced.
    Http {
        /// Its status.
        status: StatusCode,
        /// Its body length as sent (after compression).
        body_bytes: usize,
    },
    /// A gRPC call finished.
    Grpc {
        /// Its `grpc-status`.
        code: Code,
    },
}

/// What [`Layer::done`] observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub ended: Ended,
    /// From the request's arrival to the answer (HTTP) or the call's end (gRPC).
    pub elapsed: Duration,
}

/// One layer of the stack; every hook has a default that does nothing.
pub trait Layer {
    /// Before the handler; see the module documentation.
    fn request<'a>(&'a self, _ex: &'a mut Exchange, _metadata: &'a HeaderMap) -> Check<'a> {
        Check::Pass
    }

    /// Adds response metadata.
    fn respond(&self, _ex: &Exchange, _metadata: &mut HeaderMap) {}

    /// Observes the finished exchange.
    fn done(&self, _ex: &Exchange, _outcome: &Outcome) {}
}

/// An ordered list of layers and the loops that run their hooks.
#[derive(Default)]
pub struct Layers {
    list: Vec<Box<dyn Layer>>,
}

impl Layers {
    /// No layers.
    pub fn new() -> Layers {
        Layers::default()
    }

    /// Appends `layer`: it runs after the ones already there.
    pub fn push(&mut self, layer: impl Layer + 'static) -> &mut Layers {
        self.list.push(Box::new(layer));
        self
    }

    /// How many layers there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Runs the `request` hooks in order until one answers.
    pub async fn request(&self, ex: &mut Exchange, metadata: &HeaderMap) -> Option<Answer> {
        for layer in &self.list {
            let answer = match layer.request(ex, metadata) {
                Check::Pass => None,
                Check::Answer(answer) => Some(answer),
                Check::Wait(decision) => decision.await,
            };
            if answer.is_some() {
                return answer;
            }
        }
        None
    }

    /// Runs every `respond` hook in order.
    pub fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        for layer in &self.list {
            layer.respond(ex, metadata);
        }
    }

    /// Runs every `done` hook in order.
    pub fn done(&self, ex: &Exchange, outcome: &Outcome) {
        for layer in &self.list {
            layer.done(ex, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records every hook it sees; answers in `request` when `answers`.
    struct Recorder {
        name: &'static str,
        answers: bool,
        seen: Rc<RefCell<Vec<String>>>,
    }

    impl Recorder {
        fn note(&self, hook: &str, ex: &Exchange) {
            let protocol = match ex.protocol {
                Protocol::Http { .. } => "http",
                Protocol::Grpc { .. } => "grpc",
            };
            self.seen
                .borrow_mut()
                .push(format!("{} {hook} {protocol}", self.name));
        }
    }

    impl Layer for Recorder {
        fn request<'a>(&'a self, ex: &'a mut Exchange, _metadata: &'a HeaderMap) -> Check<'a> {
            self.note("request", ex);
            if self.answers {
                return Check::Answer(Answer::RateLimited {
                    retry_after: Duration::from_millis(1500),
                });
            }
            Check::Wait(Box::pin(async { None }))
        }

        fn respond(&self, ex: &Exchange, _metadata: &mut HeaderMap) {
            self.note("respond", ex);
        }

        fn done(&self, ex: &Exchange, _outcome: &Outcome) {
            self.note("done", ex);
        }
    }

    #[test]
    fn one_list_runs_in_order_on_both_protocols_and_stops_at_an_answer() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut layers = Layers::new();
        for (name, answers) in [("a", false), ("b", true), ("c", false)] {
            layers.push(Recorder {
                name,
                answers,
                seen: Rc::clone(&seen),
            });
        }
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let exchanges = [
            Exchange::http(Method::GET, "/x".into(), "/x", peer),
            Exchange::grpc("s.S", "M", Cow::Borrowed("/s.S/M"), "/s.S/M", peer),
        ];
        for mut ex in exchanges {
            let answer = layers
                .request(&mut ex, &HeaderMap::new())
                .now_or_never()
                .expect("no layer waits on anything");
            assert!(matches!(answer, Some(Answer::RateLimited { .. })));
            layers.respond(&ex, &mut HeaderMap::new());
            let outcome = Outcome {
                ended: Ended::Grpc { code: Code::Ok },
                elapsed: Duration::ZERO,
            };
            layers.done(&ex, &outcome);
        }
        let expected: Vec<String> = ["http", "grpc"]
            .iter()
            .flat_map(|p| {
                [
                    "a request",
                    "b request",
                    "a respond",
                    "b respond",
                    "c respond",
                    "a done",
                    "b done",
                    "c done",
                ]
                .map(|hook| format!("{hook} {p}"))
            })
            .collect();
        assert_eq!(*seen.borrow(), expected);
    }

    #[test]
    fn a_rate_limit_answer_in_each_protocol() {
        let limited = || Answer::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        let http = limited().into_http();
        assert_eq!(http.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = String::from_utf8_lossy(http.body()).into_owned();
        assert!(
            body.contains("rate_limited") && body.contains("retry in 2 s"),
            "{body}"
        );
        let status = limited().into_status();
        assert_eq!(status.code, Code::ResourceExhausted);
        assert_eq!(status.reason().as_deref(), Some("RATE_LIMITED"));
        assert_eq!(status.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
