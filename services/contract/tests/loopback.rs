//! One contract, both sides of the wire: a table declared with `contract!` is served over a
//! real HTTP/2 connection on loopback, and its generated remote client answers what the
//! implementation answers in process — unary and streaming methods, the user a service acts
//! for, and failures with their kind and field.

use sdsim_contract::{
    acts_for, contract, Authenticate, Caller, Emit, ErrorCodes, Gone, InvalidField, Kind, Pending,
    Received, Refusal, Remote, RequestWire, ResponseWire, ServiceError,
};
use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::server::serve_connection;
use sdsim_net::grpc::{Code, Services, Settings};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
struct NameRequest {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TextReply {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(uint32, tag = "2")]
    up_to: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountReply {
    #[prost(uint32, tag = "1")]
    n: u32,
}

acts_for!(NameRequest, CountRequest);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum Oops {
    #[error("{field}: {message}")]
    Invalid {
        field: std::borrow::Cow<'static, str>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

impl From<InvalidField> for Oops {
    fn from(e: InvalidField) -> Oops {
        Oops::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

impl ServiceError for Oops {
    fn codes(&self) -> ErrorCodes {
        use http::StatusCode as H;
        match self {
            Oops::Invalid { .. } => ErrorCodes::new(
                H::BAD_REQUEST,
                "invalid_argument",
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            Oops::NotFound(_) => {
                ErrorCodes::new(H::NOT_FOUND, "not_found", Code::NotFound, "NOT_FOUND")
            }
            Oops::Other(_) => ErrorCodes::new(
                H::SERVICE_UNAVAILABLE,
                "unavailable",
                Code::Unavailable,
                "UNAVAILABLE",
            ),
        }
    }
    fn violations(&self) -> Vec<(&str, &str)> {
        match self {
            Oops::Invalid { field, message } => vec![(field.as_ref(), message.as_str())],
            _ => Vec::new(),
        }
    }
    fn from_received(r: Received) -> Oops {
        match (r.reason.as_deref(), r.violations.into_iter().next()) {
            (Some("INVALID_ARGUMENT"), Some((field, message))) => Oops::Invalid {
                field: field.into(),
                message,
            },
            (Some("NOT_FOUND"), _) => Oops::NotFound(r.message),
            _ => Oops::Other(format!("{:?}: {}", r.code, r.message)),
        }
    }
}

impl RequestWire<NameRequest> for String {
    type Error = Oops;
    fn into_message(self, user_id: &str) -> NameRequest {
        NameRequest {
            user_id: user_id.into(),
            name: self,
        }
    }
    fn from_message(m: NameRequest) -> Result<String, Oops> {
        Ok(sdsim_contract::required(m.name, "name")?)
    }
}

impl ResponseWire<TextReply> for String {
    type Error = Oops;
    fn into_message(self) -> TextReply {
        TextReply { text: self }
    }
    fn from_message(m: TextReply) -> Result<String, Oops> {
        Ok(m.text)
    }
}

impl RequestWire<CountRequest> for u32 {
    type Error = Oops;
    fn into_message(self, user_id: &str) -> CountRequest {
        CountRequest {
            user_id: user_id.into(),
            up_to: self,
        }
    }
    fn from_message(m: CountRequest) -> Result<u32, Oops> {
        Ok(m.up_to)
    }
}

impl ResponseWire<CountReply> for u32 {
    type Error = Oops;
    fn into_message(self) -> CountReply {
        CountReply { n: self }
    }
    fn from_message(m: CountReply) -> Result<u32, Oops> {
        Ok(m.n)
    }
}

contract! {
    /// A service to test the macro with.
    trait Greeter {
        service GreeterContract = "test.v1.Greeter";
        error Oops;
        remote RemoteGreeter;
        /// Greets the caller.
        caller fn greet(String) -> String = Greet(NameRequest) -> TextReply;
        /// Always fails, naming what it could not find.
        open fn find(String) -> String = Find(NameRequest) -> TextReply;
        /// 1, 2, ... up to the request, one message each.
        stream fn count(u32) -> u32 = Count(CountRequest) -> CountReply;
    }
}

/// The implementation in process.
struct Local;

impl Greeter for Local {
    fn greet<'a>(&'a self, who: &'a Caller, name: String) -> Pending<'a, String, Oops> {
        Box::pin(async move {
            let admin = if who.is_admin() { " (admin)" } else { "" };
            Ok(format!(
                "hello {name}, from {}{admin} with {:?}",
                who.user_id, who.perms
            ))
        })
    }
    fn find<'a>(&'a self, name: String) -> Pending<'a, String, Oops> {
        Box::pin(async move { Err(Oops::NotFound(format!("no {name} here"))) })
    }
    fn count<'a>(
        &'a self,
        _who: &'a Caller,
        up_to: u32,
        out: &'a mut dyn Emit<u32>,
    ) -> Pending<'a, (), Oops> {
        Box::pin(async move {
            for n in 1..=up_to {
                if out.emit(n).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// `svc-token`: a service; `ada-token`: user ada; anything else is refused.
struct Tokens;

impl Authenticate for Tokens {
    fn authenticate(&self, token: Option<&str>) -> Result<Caller, Refusal> {
        match token {
            None => Err(Refusal::Missing),
            Some("svc-token") => Ok(Caller::configured("gateway", vec!["service".into()])),
            Some("ada-token") => Ok(Caller::configured("ada", vec!["user".into()])),
            Some(_) => Err(Refusal::Invalid("the token is not valid".into())),
        }
    }
}

/// Collects a stream's items.
#[derive(Default)]
struct Collect(Vec<u32>);

impl Emit<u32> for Collect {
    fn emit(&mut self, n: u32) -> Pin<Box<dyn Future<Output = Result<(), Gone>> + '_>> {
        self.0.push(n);
        Box::pin(async { Ok(()) })
    }
}

/// Serves the contract on a loopback listener on this runtime; answers its address.
fn serve() -> SocketAddr {
    let mut services = Services::new();
    GreeterContract::register(&mut services, Rc::new(Local), Arc::new(Tokens));
    let services = Rc::new(services);
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, phase) = tokio::sync::watch::channel(Phase::Accepting);
    sdsim_core::runtime::spawn("loopback-accept", async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            use monoio::io::IntoPollIo;
            sdsim_core::runtime::spawn(
                "loopback-connection",
                serve_connection(
                    stream.into_poll_io().unwrap(),
                    peer,
                    Rc::clone(&services),
                    Rc::new(Settings::default()),
                    phase.clone(),
                ),
            );
        }
    });
    addr
}

#[test]
fn the_table_lists_every_method_with_its_path_and_kind() {
    let methods: Vec<_> = GreeterContract::METHODS
        .iter()
        .map(|m| (m.name, m.path, m.kind))
        .collect();
    assert_eq!(
        methods,
        [
            ("Greet", "/test.v1.Greeter/Greet", Kind::Caller),
            ("Find", "/test.v1.Greeter/Find", Kind::Open),
            ("Count", "/test.v1.Greeter/Count", Kind::Stream),
        ]
    );
}

#[test]
fn the_remote_client_answers_what_the_implementation_answers() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = serve();
        let remote =
            |token: &str| RemoteGreeter(Remote::new(addr, token, Duration::from_secs(5)).unwrap());
        let service = remote("svc-token");
        // A service acts for the user it names, with the permissions it forwards.
        let bob = Caller::acting_for("bob", true, vec!["project:read".into()]);
        assert_eq!(
            service.greet(&bob, "there".into()).await,
            Local.greet(&bob, "there".into()).await
        );
        assert_eq!(
            service.greet(&bob, "there".into()).await.unwrap(),
            "hello there, from bob (admin) with [\"project:read\"]"
        );
        // A user's own token acts for that user only.
        let ada = Caller::configured("ada", vec!["user".into()]);
        assert_eq!(
            remote("ada-token").greet(&ada, "x".into()).await,
            Local.greet(&ada, "x".into()).await
        );
        assert_eq!(
            remote("ada-token").greet(&bob, "x".into()).await,
            Err(Oops::Other(
                "PermissionDenied: user_id: a user's token acts only for that user".into()
            ))
        );
        assert_eq!(
            remote("nobody").greet(&ada, "x".into()).await,
            Err(Oops::Other(
                "Unauthenticated: authorization: the token is not valid".into()
            ))
        );
        // Failures cross with their kind, and bad input names its field.
        assert_eq!(service.find("x".into()).await, Local.find("x".into()).await);
        assert_eq!(
            service.greet(&bob, String::new()).await,
            Err(Oops::Invalid {
                field: "name".into(),
                message: "is required".into()
            })
        );
        // A stream arrives whole and in order.
        let (mut here, mut there) = (Collect::default(), Collect::default());
        Local.count(&bob, 5, &mut here).await.unwrap();
        service.count(&bob, 5, &mut there).await.unwrap();
        assert_eq!(
            (here.0, there.0),
            (vec![1, 2, 3, 4, 5], vec![1, 2, 3, 4, 5])
        );
    });
}
