//! The controller's small HTTP/1 listeners (Prometheus's /metrics, a push feed): hyper,
//! one request per connection, a bounded number of connections, each within a time
//! limit, and an address that cannot be bound retried in the background rather than
//! failing the start — so that no local user holding the port keeps the controller
//! from serving DNS.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// How one listener behaves: what the log calls it, how many connections it serves at
/// once, and how long one may take (request, answer and all).
pub(crate) struct Listener {
    /// e.g. "metrics listener", "feed cmdb's listener".
    pub what: String,
    /// The line logged once bound.
    pub bound: String,
    pub max_connections: usize,
    pub limit: Duration,
}

/// Serves `address` with `respond` until the task is aborted; never returns an error.
pub(crate) async fn serve<F, Fut>(address: SocketAddr, listener: Listener, respond: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let Listener { what, bound, max_connections, limit } = listener;
    let mut said = String::new();
    let socket = loop {
        match TcpListener::bind(address).await {
            Ok(socket) => break socket,
            Err(e) => {
                let why = e.to_string();
                if why != said {
                    warn!(%address, error = %why, retry_every = "2s", "{what} cannot be bound; serving without it, retrying");
                    said = why;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    info!(%address, "{bound}");
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "{what}: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("{what}: every connection slot is busy; connection closed");
            continue;
        };
        let respond = respond.clone();
        let what = what.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper::service::service_fn(respond));
            // A client that stops reading (or sending) must not hold a slot forever.
            match tokio::time::timeout(limit, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "{what}: request"),
                Err(_) => debug!("{what}: request timed out"),
            }
        });
    }
}
