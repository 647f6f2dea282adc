//! The accept loop: HTTP/1.1 connections with a header read deadline, and a graceful shutdown
//! whose drain is bounded.
//!
//! `axum::serve` has neither: a client that sends half a request line and then nothing keeps its
//! connection (and, on shutdown, the whole server) alive for as long as it likes. Here:
//!
//! - every connection must deliver a complete request head within
//!   [`ServerConfig::header_read_timeout`](crate::ServerConfig::header_read_timeout), first
//!   request and keep-alive ones alike, or hyper closes it;
//! - a request body must arrive within `body_read_timeout` (the [`crate::limits`] layer);
//! - on shutdown the listener is closed at once, connections finish the requests they are
//!   serving and close, and after `shutdown_drain` whatever is left is dropped, so the server
//!   always returns within the bound.

use crate::state::AppState;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Serves [`crate::router`] on `listener` (with client addresses recorded as the request origin)
/// until the process ends.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    serve_with_shutdown(listener, state, std::future::pending()).await
}

/// [`serve`], stopping when `shutdown` completes: no new connections, in-flight requests get
/// up to `shutdown_drain` to finish, then the remaining connections are dropped and this
/// returns.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config().clone();
    let state_for_summaries = state.clone();
    let router = crate::router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // Room for the largest head the limits layer refuses with a JSON answer (hyper's own
        // refusal past this is an empty 431).
        .max_buf_size(buffer_size(config.max_uri_bytes, config.max_header_bytes));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Finished connection tasks are reaped as we go, so the set holds live ones only.
        while connections.try_join_next().is_some() {}
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(addr));
                    request
                });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(client = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open,
        drain_ms = config.shutdown_drain.as_millis(),
        "shutting down: draining connections"
    );
    if tokio::time::timeout(config.shutdown_drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            "drain bound passed: dropping the connections still open"
        );
    }
    connections.shutdown().await;
    state_for_summaries.flush_refusal_summaries().await;
    Ok(())
}

/// hyper's read buffer: at least its minimum (8 KiB), and enough for a head at the limits.
fn buffer_size(max_uri: usize, max_headers: usize) -> usize {
    const HYPER_MIN: usize = 8 * 1024;
    max_uri
        .saturating_add(max_headers)
        .saturating_add(4096)
        .max(HYPER_MIN)
}
