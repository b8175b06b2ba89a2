//! [`contract!`](crate::contract): one method table per service, from which come the trait,
//! the gRPC registration, the remote client and the list of served methods.

/// Declares a service contract from one table of methods.
///
/// ```text
/// contract! {
///     /// The project service.
///     pub trait ProjectService {
///         service ProjectContract = "sdsim.project.v1.ProjectService";
///         error Failure;
///         remote RemoteProjects;
///         /// One project.
///         caller fn get_project(String) -> Project
///             = GetProject(pb::GetProjectRequest) -> pb::GetProjectResponse;
///         open fn health_check(()) -> ServiceHealth
///             = HealthCheck(pb::HealthCheckRequest) -> pb::HealthCheckResponse;
///         stream fn live(String) -> Point = Live(pb::LiveRequest) -> pb::LiveResponse;
///     }
/// }
/// ```
///
/// Each row is a method: its kind (`caller`: unary, gets the authenticated [`Caller`];
/// `open`: unary, no authentication; `stream`: server streaming, authenticated), the Rust name,
/// request and response types, and the RPC with its request and response messages. The request
/// and response types implement [`RequestWire`] and [`ResponseWire`] for those messages (with
/// the service's error), and the request messages of authenticated methods implement
/// [`ActsFor`].
///
/// It generates:
/// - the trait, one method per row (answers are [`Pending`] futures, so `dyn` works), and its
///   implementation for `Arc<T>`;
/// - the contract type (`ProjectContract`) with `SERVICE`, `METHODS` (every row: name, path,
///   kind) and `register`, which serves every row on an `sdsim_net::grpc::Services` from any
///   implementation: authenticate, decode, call, encode, errors as [`status`];
/// - the remote client (`RemoteProjects`, wrapping a [`Remote`]) implementing the same trait.
///
/// [`Caller`]: crate::Caller
/// [`RequestWire`]: crate::RequestWire
/// [`ResponseWire`]: crate::ResponseWire
/// [`ActsFor`]: crate::ActsFor
/// [`Pending`]: crate::Pending
/// [`status`]: crate::status
/// [`Remote`]: crate::Remote
#[macro_export]
macro_rules! contract {
    (
        $(#[$doc:meta])*
        $vis:vis trait $Trait:ident {
            service $Contract:ident = $name:literal;
            error $Error:ty;
            remote $Remote:ident;
            $(
                $(#[$mdoc:meta])*
                $kind:ident fn $method:ident($Req:ty) -> $Resp:ty
                    = $Rpc:ident($ReqMsg:ty) -> $RespMsg:ty;
            )*
        }
    ) => {
        $(#[$doc])*
        $vis trait $Trait {
            $($crate::contract!(@signature $kind [$(#[$mdoc])*] $method, $Req, $Resp, $Error);)*
        }

        impl<T: $Trait + ?Sized> $Trait for ::std::sync::Arc<T> {
            $($crate::contract!(@forward $kind $method, $Req, $Resp, $Error);)*
        }

        #[doc = concat!("The contract of `", $name, "`: its methods and its gRPC registration.")]
        $vis struct $Contract;

        impl $Contract {
            /// The gRPC service name.
            pub const SERVICE: &'static str = $name;
            /// Every method, as served.
            pub const METHODS: &'static [$crate::Method] = &[$($crate::Method {
                name: stringify!($Rpc),
                path: concat!("/", $name, "/", stringify!($Rpc)),
                kind: $crate::contract!(@kind $kind),
            }),*];

            /// Serves every method of `service` on `services`; `auth` authenticates the calls
            /// of the methods that need a caller.
            pub fn register<S: $Trait + ?Sized + 'static>(
                services: &mut $crate::__private::Services,
                service: ::std::rc::Rc<S>,
                auth: ::std::sync::Arc<dyn $crate::Authenticate>,
            ) {
                $($crate::contract!(@register $kind services, service, auth, $name, $Rpc,
                    $method, $Req, $Resp, $ReqMsg, $RespMsg, $Error);)*
            }
        }

        #[doc = concat!("`", $name, "` in another process, over gRPC.")]
        $vis struct $Remote(pub $crate::Remote);

        impl $Trait for $Remote {
            $($crate::contract!(@remote $kind $name, $Rpc, $method, $Req, $Resp, $ReqMsg,
                $RespMsg, $Error);)*
        }
    };

    (@kind caller) => { $crate::Kind::Caller };
    (@kind open) => { $crate::Kind::Open };
    (@kind stream) => { $crate::Kind::Stream };

    (@signature caller [$($doc:tt)*] $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        $($doc)*
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req)
            -> $crate::Pending<'a, $Resp, $Error>;
    };
    (@signature open [$($doc:tt)*] $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        $($doc)*
        fn $method<'a>(&'a self, request: $Req) -> $crate::Pending<'a, $Resp, $Error>;
    };
    (@signature stream [$($doc:tt)*] $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        $($doc)*
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req,
            out: &'a mut dyn $crate::Emit<$Resp>) -> $crate::Pending<'a, (), $Error>;
    };

    (@forward caller $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req)
            -> $crate::Pending<'a, $Resp, $Error> {
            (**self).$method(who, request)
        }
    };
    (@forward open $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        fn $method<'a>(&'a self, request: $Req) -> $crate::Pending<'a, $Resp, $Error> {
            (**self).$method(request)
        }
    };
    (@forward stream $method:ident, $Req:ty, $Resp:ty, $Error:ty) => {
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req,
            out: &'a mut dyn $crate::Emit<$Resp>) -> $crate::Pending<'a, (), $Error> {
            (**self).$method(who, request, out)
        }
    };

    (@register caller $services:ident, $service:ident, $auth:ident, $name:literal, $Rpc:ident,
        $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty, $RespMsg:ty, $Error:ty) => {{
        let (service, auth) = (::std::rc::Rc::clone(&$service), ::std::sync::Arc::clone(&$auth));
        $services.unary(
            concat!("/", $name, "/", stringify!($Rpc)),
            move |call: $crate::__private::Call, message: $ReqMsg| {
                let (service, auth) = (::std::rc::Rc::clone(&service), ::std::sync::Arc::clone(&auth));
                async move {
                    let user_id = $crate::ActsFor::user_id(&message);
                    let who = $crate::serve::caller::<$Error>(&*auth, &call, user_id)?;
                    let request = <$Req as $crate::RequestWire<$ReqMsg>>::from_message(message)
                        .map_err(|e: $Error| $crate::status(&e))?;
                    let response = service.$method(&who, request).await
                        .map_err(|e: $Error| $crate::status(&e))?;
                    Ok::<_, $crate::__private::Status>(
                        <$Resp as $crate::ResponseWire<$RespMsg>>::into_message(response))
                }
            },
        );
    }};
    (@register open $services:ident, $service:ident, $auth:ident, $name:literal, $Rpc:ident,
        $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty, $RespMsg:ty, $Error:ty) => {{
        let service = ::std::rc::Rc::clone(&$service);
        $services.unary(
            concat!("/", $name, "/", stringify!($Rpc)),
            move |_call: $crate::__private::Call, message: $ReqMsg| {
                let service = ::std::rc::Rc::clone(&service);
                async move {
                    let request = <$Req as $crate::RequestWire<$ReqMsg>>::from_message(message)
                        .map_err(|e: $Error| $crate::status(&e))?;
                    let response = service.$method(request).await
                        .map_err(|e: $Error| $crate::status(&e))?;
                    Ok::<_, $crate::__private::Status>(
                        <$Resp as $crate::ResponseWire<$RespMsg>>::into_message(response))
                }
            },
        );
    }};
    (@register stream $services:ident, $service:ident, $auth:ident, $name:literal, $Rpc:ident,
        $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty, $RespMsg:ty, $Error:ty) => {{
        let (service, auth) = (::std::rc::Rc::clone(&$service), ::std::sync::Arc::clone(&$auth));
        $services.server_streaming(
            concat!("/", $name, "/", stringify!($Rpc)),
            move |call: $crate::__private::Call, message: $ReqMsg,
                  out: $crate::__private::Stream<$RespMsg>| {
                let (service, auth) = (::std::rc::Rc::clone(&service), ::std::sync::Arc::clone(&auth));
                async move {
                    let user_id = $crate::ActsFor::user_id(&message);
                    let who = $crate::serve::caller::<$Error>(&*auth, &call, user_id)?;
                    let request = <$Req as $crate::RequestWire<$ReqMsg>>::from_message(message)
                        .map_err(|e: $Error| $crate::status(&e))?;
                    let mut out = $crate::serve::StreamOut::<$Resp, $RespMsg>::new(out);
                    service.$method(&who, request, &mut out).await
                        .map_err(|e: $Error| $crate::status(&e))
                }
            },
        );
    }};

    (@remote caller $name:literal, $Rpc:ident, $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty,
        $RespMsg:ty, $Error:ty) => {
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req)
            -> $crate::Pending<'a, $Resp, $Error> {
            ::std::boxed::Box::pin(async move {
                let message: $ReqMsg =
                    $crate::RequestWire::into_message(request, &who.user_id);
                let reply: $RespMsg = self.0
                    .unary(concat!("/", $name, "/", stringify!($Rpc)), Some(who), &message)
                    .await
                    .map_err(|s| <$Error as $crate::ServiceError>::from_status(&s))?;
                <$Resp as $crate::ResponseWire<$RespMsg>>::from_message(reply)
            })
        }
    };
    (@remote open $name:literal, $Rpc:ident, $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty,
        $RespMsg:ty, $Error:ty) => {
        fn $method<'a>(&'a self, request: $Req) -> $crate::Pending<'a, $Resp, $Error> {
            ::std::boxed::Box::pin(async move {
                let message: $ReqMsg = $crate::RequestWire::into_message(request, "");
                let reply: $RespMsg = self.0
                    .unary(concat!("/", $name, "/", stringify!($Rpc)), None, &message)
                    .await
                    .map_err(|s| <$Error as $crate::ServiceError>::from_status(&s))?;
                <$Resp as $crate::ResponseWire<$RespMsg>>::from_message(reply)
            })
        }
    };
    (@remote stream $name:literal, $Rpc:ident, $method:ident, $Req:ty, $Resp:ty, $ReqMsg:ty,
        $RespMsg:ty, $Error:ty) => {
        fn $method<'a>(&'a self, who: &'a $crate::Caller, request: $Req,
            out: &'a mut dyn $crate::Emit<$Resp>) -> $crate::Pending<'a, (), $Error> {
            ::std::boxed::Box::pin(async move {
                let message: $ReqMsg =
                    $crate::RequestWire::into_message(request, &who.user_id);
                let from_status = |s: $crate::__private::Status| {
                    <$Error as $crate::ServiceError>::from_status(&s)
                };
                let mut replies = self.0
                    .server_streaming::<_, $RespMsg>(
                        concat!("/", $name, "/", stringify!($Rpc)), Some(who), &message)
                    .await
                    .map_err(from_status)?;
                while let Some(reply) = replies.message().await.map_err(from_status)? {
                    let item = <$Resp as $crate::ResponseWire<$RespMsg>>::from_message(reply)?;
                    if out.emit(item).await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        }
    };
}
