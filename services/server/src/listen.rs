//! Listener wiring: the HTTP connection settings every listener shares, and the accept loop
//! of the gRPC listeners.

use crate::composition::Composition;
use sdsim_core::runtime::Shard;
use sdsim_core::shutdown::Phase;
use sdsim_net::conn::ConnSettings;
use sdsim_net::grpc::server as grpc_server;
use sdsim_net::grpc::{Services, Settings as GrpcSettings};
use sdsim_net::http::codec::Limits;
use sdsim_net::middleware::App;
use sdsim_net::server::ListenerContext;
use std::rc::Rc;
use std::sync::Arc;

/// What an HTTP listener's connections run with: `app`, the `http` limits and timeouts, TLS.
pub(crate) fn http_context(c: &Composition, app: App) -> Rc<ListenerContext> {
    let config = &c.config;
    let http = &config.http;
    Rc::new(ListenerContext {
        app: Rc::new(app),
        settings: Rc::new(ConnSettings {
            limits: Limits {
                max_head_bytes: http.max_head_bytes,
                max_body_bytes: http.max_body_bytes,
                max_uri_bytes: http.max_uri_bytes,
                max_headers: http.max_headers,
            },
            read_timeout: http.read_timeout,
            write_timeout: http.write_timeout,
            idle_timeout: http.idle_timeout,
        }),
        tls: c.tls.clone(),
        shutdown: Arc::clone(&c.gateway.shutdown),
        stats: Arc::clone(&c.gateway.conn_stats),
        max_connections: config.server.max_connections,
    })
}

/// Accepts gRPC (HTTP/2) connections until the server drains; each is served on its own task.
pub(crate) async fn grpc_accept_loop(
    shard: &Shard,
    listener: monoio::net::TcpListener,
    services: Rc<Services>,
    c: Arc<Composition>,
) {
    let g = &c.gateway;
    let mut phase = sdsim_net::server::shard_phase(shard, &g.shutdown);
    let grpc = &c.config.grpc;
    let settings = Rc::new(GrpcSettings {
        max_message_bytes: grpc.max_message_bytes,
        max_header_list_bytes: grpc.max_header_list_bytes,
        max_frame_bytes: grpc.max_frame_bytes,
        max_concurrent_streams: grpc.max_concurrent_streams,
        keepalive_interval: grpc.keepalive_interval,
        keepalive_timeout: grpc.keepalive_timeout,
        unary_timeout: grpc.unary_timeout,
        max_connection_age: grpc.max_connection_age,
        max_connection_age_grace: Some(grpc.max_connection_age_grace).filter(|g| !g.is_zero()),
        in_flight: Some(Arc::clone(&c.grpc_in_flight)),
    });
    while let Some((stream, peer, guard)) = sdsim_net::server::next_connection(
        shard,
        &listener,
        &mut phase,
        &g.shutdown,
        &g.conn_stats,
        c.config.server.max_connections,
    )
    .await
    {
        let (services, settings, c) = (Rc::clone(&services), Rc::clone(&settings), Arc::clone(&c));
        let conn_phase = phase.clone();
        shard.spawn("grpc-connection", async move {
            let _open = guard;
            let mut closed = conn_phase.clone();
            let serve = async {
                use monoio::io::IntoPollIo;
                let Ok(io) = stream.into_poll_io() else {
                    return;
                };
                match &c.grpc_tls {
                    None => {
                        grpc_server::serve_connection(io, peer, services, settings, conn_phase)
                            .await
                    }
                    Some(acceptor) => {
                        let read_timeout = c.config.http.read_timeout;
                        let handshake =
                            monoio::time::timeout(read_timeout, acceptor.accept(io)).await;
                        if let Ok(Ok(tls)) = handshake {
                            grpc_server::serve_connection(tls, peer, services, settings, conn_phase)
                                .await
                        }
                    }
                }
            };
            monoio::select! {
                _ = serve => {}
                _ = closed.wait_for(|p| *p == Phase::Closed) => c.gateway.shutdown.record_forced(1),
            }
        });
    }
}
