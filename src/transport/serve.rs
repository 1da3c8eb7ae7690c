//! Serving the router: one HTTP/1.1 connection per accepted socket, upgrades
//! allowed, graceful shutdown.
//!
//! `axum::serve` would do the same, but it hides the socket behind its protocol
//! detection, so an upgraded WebSocket could never get its TCP stream back; here
//! the connection is served on the stream itself and [`super::upgrade::split`]
//! recovers it.

use std::pin::pin;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets each
/// connection finish its request in flight, and returns when all are done.
/// A connection that has not sent a request's whole header within
/// `header_timeout` is dropped (a slow or half-sent request must not hold a
/// socket and a task for long).
/// (Upgraded WebSocket sessions are not connections here any more: the
/// application tracks and closes them.)
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    shutdown: CancellationToken,
    header_timeout: std::time::Duration,
) -> std::io::Result<()>
where
    L: Listener<Addr = std::net::SocketAddr>,
{
    let connections = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // Every request knows its client's address (per-address quotas).
        let peer = super::quota::Peer(peer.ip());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                request
            },
        ));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new());
            builder.header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
