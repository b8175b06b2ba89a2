//! The peer server for HTTP benchmarks: idiomatic axum 0.8 on a tokio multi-thread runtime,
//! serving the same `GET /health` (`{"status":"ok"}`, `application/json`) as sdsim.
//!
//! Settings, as a careful user would run it: `--threads` worker threads (the benchmark gives it
//! the same CPU count as sdsim's shards), default hyper HTTP/1.1 settings (keep-alive on), no
//! logging middleware, mimalloc as the allocator (sdsim uses it too).

use axum::routing::get;
use axum::Router;
use clap::Parser;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: String,
    /// tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = Router::new().route(
            "/health",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        eprintln!(
            "peer-axum listening on {} with {} worker thread(s)",
            args.listen, args.threads
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
