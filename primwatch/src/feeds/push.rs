//! A push feed's listener: `POST /feeds/NAME` with `Authorization: Bearer TOKEN`; the
//! body (at most `max_bytes`, uploaded within `timeout`) is one batch. The reply says
//! whether it was applied (200) or refused (422, with the line and reason); a wrong or
//! missing token is 401, a larger body 413. One request per connection, at most
//! `MAX_CONNECTIONS` at once.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::warn;

use super::event::FeedEvent;
use crate::config::FeedConfig;

/// Connections served at once per push listener.
const MAX_CONNECTIONS: usize = 16;

struct Endpoint {
    name: String,
    path: String,
    token: crate::config::Token,
    feed: FeedConfig,
    generation: u64,
    events: mpsc::Sender<FeedEvent>,
}

/// Serves the listener until the task is aborted (an address that cannot be bound is
/// retried every 2 s: see `sys::http_listener`).
pub(super) async fn serve(
    name: String,
    listen: SocketAddr,
    token: crate::config::Token,
    feed: FeedConfig,
    generation: u64,
    events: mpsc::Sender<FeedEvent>,
) {
    let listener = crate::sys::http_listener::Listener {
        what: format!("feed {name}'s listener"),
        bound: format!("feed {name} listening for pushes on POST /feeds/{name}"),
        max_connections: MAX_CONNECTIONS,
        // The upload and the controller's verdict within the timeout, plus a margin for
        // a big batch to be applied.
        limit: feed.timeout + Duration::from_secs(30),
    };
    let endpoint = Arc::new(Endpoint { path: format!("/feeds/{name}"), name, token, feed, generation, events });
    crate::sys::http_listener::serve(listen, listener, move |request| respond(request, endpoint.clone())).await;
}

/// Compares without stopping at the first difference: the time taken says nothing about
/// how much of a guessed token was right.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    endpoint: Arc<Endpoint>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
        *response.status_mut() = status;
        Ok(response)
    };
    if request.uri().path() != endpoint.path {
        return reply(StatusCode::NOT_FOUND, format!("this listener takes POST {}", endpoint.path));
    }
    if request.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
    }
    let authorized = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_token(given, endpoint.token.0.as_bytes()));
    if !authorized {
        warn!(feed = %endpoint.name, "feed push refused: missing or wrong bearer token");
        return reply(StatusCode::UNAUTHORIZED, "a bearer token is required".into());
    }
    let max = endpoint.feed.max_bytes;
    let body = Limited::new(request.into_body(), max);
    let body = match tokio::time::timeout(endpoint.feed.timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, format!("the batch is larger than max_bytes ({max} bytes)"))
        }
        Ok(Err(e)) => return reply(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the body did not arrive within the timeout".into()),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let event = FeedEvent {
        feed: endpoint.name.clone(),
        generation: endpoint.generation,
        data: Ok(body.to_vec()),
        reply: Some(tx),
    };
    if endpoint.events.send(event).await.is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "the controller is stopping".into());
    }
    match rx.await {
        Ok(Ok(said)) => reply(StatusCode::OK, said),
        Ok(Err(why)) => reply(StatusCode::UNPROCESSABLE_ENTITY, why),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "the feed was stopped (reloaded) meanwhile".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same_token(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!super::same_token(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!super::same_token(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!super::same_token(b"", b"0123456789abcdef"));
    }
}
