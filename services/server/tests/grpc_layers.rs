//! gRPC calls run through the same layers as HTTP requests, seen from a tonic client on the
//! auth service's gRPC listener: a request id (kept or generated, echoed in the response
//! metadata), `sdsim_grpc_server_*` metrics on the gateway's `/metrics`, an access-log line
//! per call, and the per-client-IP rate limit, whose bucket HTTP and gRPC share.

mod support;

use prost::Message;
use sdsim_auth::pb;
use sdsim_net::grpc::pb::health as hpb;
use sdsim_net::grpc::status::{ErrorInfo, RpcStatus};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;
use support::{get, runtime, start, stop};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const VALIDATE: &str = "/sdsim.auth.v1.AuthService/ValidateToken";
const SERVICE_TOKEN: &str = "svc-token-layers-0123456789";

/// `google.rpc.RetryInfo`, decoded here as any client would.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// Access-log lines of every server in this test binary, as JSON objects.
static ACCESS_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ACCESS_LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `sdsim::access` events to [`ACCESS_LOG`], one JSON object per line.
fn capture_access_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("sdsim::access=info")
            .with_writer(|| Capture)
            .init();
    });
}

/// The captured access-log lines whose `request_id` is `id`.
fn access_lines(id: &str) -> Vec<Value> {
    let text = String::from_utf8(ACCESS_LOG.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["request_id"] == id)
        .collect()
}

struct Client {
    grpc: tonic::client::Grpc<Channel>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Client {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// A unary call with `metadata`; the reply or the status, and the response metadata.
    async fn call<M, R>(
        &mut self,
        path: &str,
        message: M,
        metadata: &[(&'static str, &str)],
    ) -> (Result<R, tonic::Status>, tonic::metadata::MetadataMap)
    where
        M: prost::Message + Default + Send + 'static,
        R: prost::Message + Default + Send + 'static,
    {
        self.grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(message);
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        let path: PathAndQuery = path.parse().unwrap();
        match self
            .grpc
            .unary(req, path, ProstCodec::<M, R>::default())
            .await
        {
            Ok(resp) => {
                let metadata = resp.metadata().clone();
                (Ok(resp.into_inner()), metadata)
            }
            Err(status) => {
                let metadata = status.metadata().clone();
                (Err(status), metadata)
            }
        }
    }

    async fn validate(
        &mut self,
        metadata: &[(&'static str, &str)],
    ) -> (
        Result<pb::ValidateTokenResponse, tonic::Status>,
        tonic::metadata::MetadataMap,
    ) {
        let req = pb::ValidateTokenRequest {
            token: "not-a-token".into(),
            ..Default::default()
        };
        self.call(VALIDATE, req, metadata).await
    }
}

fn header<'a>(m: &'a tonic::metadata::MetadataMap, name: &str) -> Option<&'a str> {
    m.get(name).and_then(|v| v.to_str().ok())
}

#[sdsim_testing::backends(epoll, io_uring)]
fn grpc_calls_get_a_request_id_metrics_and_an_access_log_line() {
    capture_access_log();
    // The log is the whole binary's, and the other backend's run of this test writes to it too.
    let backend = sdsim_testing::backend::current().name();
    let (ok_id, unknown_id) = (
        format!("layers-a-ok-{backend}"),
        format!("layers-a-unknown-{backend}"),
    );
    let server = start(&["ratelimit.enabled=false", "log.access=true"]);
    let grpc = server.auth_grpc_addr().unwrap();
    runtime().block_on(async {
        let mut c = Client::connect(grpc).await;
        let (reply, meta) = c.validate(&[]).await;
        assert!(!reply.unwrap().valid);
        let generated = header(&meta, "x-request-id").expect("a generated request id");
        assert_eq!(generated.len(), 16, "{generated}");
        assert!(
            generated.bytes().all(|b| b.is_ascii_hexdigit()),
            "{generated}"
        );

        let (reply, meta) = c.validate(&[("x-request-id", &ok_id)]).await;
        assert!(reply.is_ok());
        assert_eq!(header(&meta, "x-request-id"), Some(ok_id.as_str()));

        let (reply, meta) = c
            .call::<_, pb::ValidateTokenResponse>(
                "/sdsim.auth.v1.AuthService/NoSuchMethod",
                pb::ValidateTokenRequest::default(),
                &[("x-request-id", &unknown_id)],
            )
            .await;
        assert_eq!(reply.unwrap_err().code(), tonic::Code::Unimplemented);
        assert_eq!(
            header(&meta, "x-request-id"),
            Some(unknown_id.as_str()),
            "a Trailers-Only answer carries the id too"
        );
    });

    let metrics = get(server.local_addr(), "/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        r#"sdsim_grpc_server_requests_total{service="sdsim.auth.v1.AuthService",method="ValidateToken",code="OK"} 2"#,
        r#"sdsim_grpc_server_requests_total{service="unmatched",method="unmatched",code="UNIMPLEMENTED"} 1"#,
        r#"sdsim_grpc_server_request_duration_seconds_count{service="sdsim.auth.v1.AuthService",method="ValidateToken"} 2"#,
        "# TYPE sdsim_grpc_server_request_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line}\n{}",
            text.lines()
                .filter(|l| l.contains("grpc_server"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    let ok = access_lines(&ok_id);
    assert_eq!(ok.len(), 1, "one line per call: {ok:?}");
    let ok = &ok[0];
    assert_eq!(ok["target"], "sdsim::access");
    assert_eq!(ok["message"], "grpc call");
    assert_eq!(ok["service"], "sdsim.auth.v1.AuthService");
    assert_eq!(ok["method"], "ValidateToken");
    assert_eq!(ok["path"], VALIDATE);
    assert_eq!(ok["grpc_status"], "OK");
    assert!(ok["duration_ms"].as_f64().unwrap() >= 0.0);
    let peer: SocketAddr = ok["peer"].as_str().unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback());
    let unknown = access_lines(&unknown_id);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["grpc_status"], "UNIMPLEMENTED");
    assert_eq!(
        unknown[0]["path"],
        "/sdsim.auth.v1.AuthService/NoSuchMethod"
    );
    assert_eq!(unknown[0]["method"], "unmatched");

    // The fields both protocols have are named alike in the HTTP line.
    let http_id = metrics.header("x-request-id").unwrap();
    let http = access_lines(http_id);
    assert_eq!(http.len(), 1, "{http:?}");
    assert_eq!(http[0]["message"], "request");
    for field in ["path", "duration_ms", "request_id", "peer"] {
        assert!(http[0].get(field).is_some(), "HTTP line lacks {field}");
        assert!(ok.get(field).is_some(), "gRPC line lacks {field}");
    }
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn grpc_is_rate_limited_per_client_ip_in_the_bucket_http_uses() {
    let tokens =
        format!(r#"auth.tokens=[{{token="{SERVICE_TOKEN}",user="gateway-1",roles=["service"]}}]"#);
    // One token per 10,000 s: nothing refills while the test runs.
    let server = start(&[
        "ratelimit.enabled=true",
        "ratelimit.burst=4",
        "ratelimit.rate_per_s=0.0001",
        r#"ratelimit.exempt_prefixes=["/health","/metrics"]"#,
        &tokens,
    ]);
    let http = server.local_addr();
    let grpc = server.auth_grpc_addr().unwrap();
    let remaining = |resp: &support::Resp| resp.header("x-ratelimit-remaining").map(str::to_owned);
    runtime().block_on(async {
        let mut c = Client::connect(grpc).await;
        let first = get(http, "/test/png");
        assert_eq!(first.status, 200);
        assert_eq!(remaining(&first).as_deref(), Some("3"));

        let (reply, meta) = c.validate(&[]).await;
        assert!(reply.is_ok(), "{reply:?}");
        assert_eq!(header(&meta, "x-ratelimit-limit"), Some("4"));
        assert_eq!(header(&meta, "x-ratelimit-remaining"), Some("2"));

        assert_eq!(remaining(&get(http, "/test/png")).as_deref(), Some("1"));
        let (reply, meta) = c.validate(&[]).await;
        assert!(reply.is_ok(), "{reply:?}");
        assert_eq!(header(&meta, "x-ratelimit-remaining"), Some("0"));

        // The bucket is empty: gRPC is refused with a retry hint, in metadata and in details.
        let (reply, meta) = c.validate(&[("x-request-id", "layers-b-limited")]).await;
        let status = reply.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let retry_after: u64 = header(&meta, "retry-after").unwrap().parse().unwrap();
        assert!(retry_after >= 1);
        assert_eq!(header(&meta, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&meta, "x-request-id"), Some("layers-b-limited"));
        let details = RpcStatus::decode(status.details()).expect("grpc-status-details-bin");
        let mut delay = None;
        let mut reason = None;
        for any in details.details {
            match any.type_url.as_str() {
                "type.googleapis.com/google.rpc.RetryInfo" => {
                    let d = RetryInfo::decode(any.value.as_slice())
                        .unwrap()
                        .retry_delay
                        .unwrap();
                    delay = Some(Duration::new(d.seconds as u64, d.nanos as u32));
                }
                "type.googleapis.com/google.rpc.ErrorInfo" => {
                    reason = Some(ErrorInfo::decode(any.value.as_slice()).unwrap().reason);
                }
                other => panic!("unexpected detail {other}"),
            }
        }
        assert_eq!(reason.as_deref(), Some("RATE_LIMITED"));
        let delay = delay.expect("a RetryInfo detail");
        let whole_secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        assert_eq!(whole_secs, retry_after, "both hints say the same");

        // HTTP from the same address is out too: one bucket per client.
        let refused = get(http, "/test/png");
        assert_eq!(refused.status, 429);
        assert!(refused.header("retry-after").is_some());

        // Not limited: health checks on both protocols, and calls with a service token.
        let (health, _) = c
            .call::<_, hpb::HealthCheckResponse>(
                "/grpc.health.v1.Health/Check",
                hpb::HealthCheckRequest::default(),
                &[],
            )
            .await;
        assert_eq!(health.unwrap().status, 1, "SERVING");
        assert_eq!(get(http, "/health").status, 200);
        let service = format!("Bearer {SERVICE_TOKEN}");
        let (reply, _) = c.validate(&[("authorization", &service)]).await;
        assert!(
            reply.is_ok(),
            "a service token is not limited per IP: {reply:?}"
        );
        let (reply, _) = c
            .validate(&[("authorization", "Bearer someone-else")])
            .await;
        assert_eq!(
            reply.unwrap_err().code(),
            tonic::Code::ResourceExhausted,
            "any other token is"
        );
    });

    let text = get(http, "/metrics").text();
    for line in [
        r#"sdsim_grpc_server_requests_total{service="sdsim.auth.v1.AuthService",method="ValidateToken",code="RESOURCE_EXHAUSTED"} 2"#,
        r#"sdsim_grpc_server_requests_total{service="sdsim.auth.v1.AuthService",method="ValidateToken",code="OK"} 3"#,
        "sdsim_ratelimit_rejected_total 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    stop(server);
}
