//! HTTP and HTTPS: plain HTTP/1.1 over our own connection (hyper's client connection),
//! HTTPS through reqwest (rustls); the status must be in `ok_status`, the body may have
//! to match `expect`.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

use super::{has_local_cause, snippet, tcp::handshake, Failure, Probe, ProbeResult, MAX_BODY};
use crate::config::HttpCheck;

impl Probe for HttpCheck {
    async fn probe(&self, address: IpAddr, timeout: Duration, _target: &str) -> ProbeResult {
        http_probe(self, timeout, address).await
    }
}
/// Plain HTTP/1.1 over a fresh connection, framed by hyper's HTTP/1 client connection
/// (RFC 9112: Content-Length, chunked, interim 1xx replies skipped per RFC 9110 §15.2,
/// close). The connection is our own `TcpStream`, so the TCP handshake figures are
/// read from it, and it is closed as soon as the check has its answer.
async fn plain_http(http: &HttpCheck, to: SocketAddr) -> ProbeResult {
    let started = Instant::now();
    let stream = TcpStream::connect(to).await.map_err(|e| Failure::connect(to, e))?;
    let stats = handshake(&stream, started.elapsed());
    let fail = |reason: String| Failure { reason, tcp: Some(stats), local: false };
    let request = plain_request(http, to).map_err(|e| Failure::local(format!("building the request: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        // hyper's default of at most 100 header lines, kept on the stack (as reqwest
        // has for HTTPS); a head over 64 KiB is refused.
        .max_buf_size(MAX_BODY)
        // "Host:", not "host:": some embedded status pages compare header names by case.
        .title_case_headers(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(CloseOnDrop(stream)))
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status().as_u16();
        if !http.ok_status.contains(&status) {
            return Err(fail(format!("status {status} is not in {:?}", http.ok_status)));
        }
        if let Some(pattern) = &http.body {
            use http_body_util::BodyExt as _;
            let mut body = response.into_body();
            let mut seen = BodyMatch::new(pattern);
            while !seen.decided().map_err(|f| fail(f.reason))? {
                match body.frame().await {
                    Some(Ok(frame)) => seen.feed(frame.data_ref().map_or(&[][..], |d| &d[..])),
                    Some(Err(e)) => return Err(fail(seen.failed(&format!("reading body: {}", error_chain(&e))))),
                    None => return Err(fail(seen.failed("body ended without matching"))),
                }
            }
        }
        Ok((format!("status {status}"), Some(stats)))
    };
    // The connection is driven beside the exchange; once it ends (the server closed),
    // what it read is still delivered to the exchange.
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        done = &mut exchange => done,
        _ = &mut connection => exchange.await,
    }
}

/// A check's connection, closed by dropping it once the check has its answer. hyper
/// half-closes (shutdown(SHUT_WR)) a `Connection: close` exchange first; here that is
/// one more syscall per check for a socket about to be closed anyway.
struct CloseOnDrop(TcpStream);

impl tokio::io::AsyncRead for CloseOnDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CloseOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The request line and headers of a plain HTTP check (names and values were checked
/// when the config was loaded).
fn plain_request(
    http: &HttpCheck,
    to: SocketAddr,
) -> Result<hyper::Request<http_body_util::Empty<bytes::Bytes>>, http::header::InvalidHeaderValue> {
    let host = http.host.clone().unwrap_or_else(|| match to {
        SocketAddr::V6(a) if a.port() == 80 => format!("[{}]", a.ip()),
        SocketAddr::V4(a) if a.port() == 80 => a.ip().to_string(),
        other => other.to_string(),
    });
    let (target, head) = &http.plain_head;
    let mut request = hyper::Request::new(http_body_util::Empty::new());
    *request.method_mut() = http.method.clone();
    *request.uri_mut() = http::Uri::from(target.clone());
    *request.headers_mut() = head.clone();
    request.headers_mut().insert(http::header::HOST, http::HeaderValue::from_str(&host)?);
    Ok(request)
}

/// A response body tried against the check's pattern as it arrives (RFC-agnostic:
/// the pieces are what the HTTP layer decoded), up to MAX_BODY bytes.
struct BodyMatch<'a> {
    pattern: &'a regex::Regex,
    seen: Vec<u8>,
    matched: bool,
}

impl<'a> BodyMatch<'a> {
    /// Starts with the empty body (a pattern may match that).
    fn new(pattern: &'a regex::Regex) -> Self {
        BodyMatch { pattern, matched: pattern.is_match(""), seen: Vec::new() }
    }

    /// Adds a piece, cut at the cap, and tries the pattern on all that arrived.
    fn feed(&mut self, piece: &[u8]) {
        if self.matched || piece.is_empty() {
            return;
        }
        let room = MAX_BODY - self.seen.len();
        self.seen.extend_from_slice(&piece[..piece.len().min(room)]);
        self.matched = self.pattern.is_match(&String::from_utf8_lossy(&self.seen));
    }

    /// Ok(true) once matched, Ok(false) while more may come, Err once the cap is read
    /// without a match.
    fn decided(&self) -> Result<bool, Failure> {
        if self.matched {
            Ok(true)
        } else if self.seen.len() >= MAX_BODY {
            Err(self.failed("body does not match").into())
        } else {
            Ok(false)
        }
    }

    /// Why the body failed, with how much of it was read.
    fn failed(&self, how: &str) -> String {
        format!("{how} /{}/ ({} bytes read): {:?}", self.pattern, self.seen.len(), snippet(&self.seen))
    }
}

async fn http_probe(http: &HttpCheck, timeout: Duration, address: IpAddr) -> ProbeResult {
    if !http.tls {
        return plain_http(http, SocketAddr::new(address, http.port)).await;
    }
    // HTTPS from here on (plain HTTP returned above).
    let socket = SocketAddr::new(address, http.port);
    // With a server name (SNI, or else the Host), connect to the target's address under
    // that name, so TLS sees the name and the URL still reaches this target.
    let server_name = http.sni.clone().or_else(|| http.host.clone());
    let url = match &server_name {
        Some(host) => format!("https://{host}:{}{}", http.port, http.path),
        None => format!("https://{socket}{}", http.path),
    };
    let client = http_client(http, timeout, server_name.map(|name| (name, socket)))?;
    let mut request = client.request(http.method.clone(), &url);
    if let Some(host) = &http.host {
        request = request.header(reqwest::header::HOST, host);
    }
    for (name, value) in &http.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| {
        if has_local_cause(&e) {
            Failure::local(format!("{url}: {}", error_chain(&e)))
        } else {
            Failure::from(format!("{url}: {}", error_chain(&e)))
        }
    })?;
    let status = response.status().as_u16();
    if !http.ok_status.contains(&status) {
        return Err(format!("status {status} is not in {:?}", http.ok_status).into());
    }
    if let Some(pattern) = &http.body {
        // Tried as it arrives, as for plain HTTP: a streaming body passes at its first
        // match, and at most MAX_BODY bytes are read.
        let mut seen = BodyMatch::new(pattern);
        let mut response = response;
        while !seen.decided()? {
            match response.chunk().await {
                Ok(Some(piece)) => seen.feed(&piece),
                Ok(None) => return Err(seen.failed("body ended without matching").into()),
                Err(e) => return Err(seen.failed(&format!("reading body: {}", error_chain(&e))).into()),
            }
        }
    }
    Ok((format!("status {status}"), None))
}

/// What makes two HTTP checks need different clients.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    timeout: Duration,
    user_agent: String,
    tls_verify: bool,
    /// PEM roots that replace the system's (`ca_file`).
    ca_pem: Option<Vec<u8>>,
    /// A server name resolved to one target's address (TLS needs the name for SNI).
    resolve: Option<(String, SocketAddr)>,
}

/// HTTP clients kept for reuse at most.
const MAX_CLIENTS: usize = 1024;

/// Clients are built once and shared: building one loads TLS roots, which costs far
/// more than a check. Connections are never pooled, so every check still connects.
fn http_client(
    http: &HttpCheck,
    timeout: Duration,
    resolve: Option<(String, SocketAddr)>,
) -> Result<reqwest::Client, Failure> {
    use std::{collections::HashMap, sync::Mutex};
    static CLIENTS: Mutex<Option<HashMap<ClientKey, reqwest::Client>>> = Mutex::new(None);
    let key = ClientKey {
        timeout,
        user_agent: http.user_agent.clone(),
        tls_verify: http.tls_verify,
        ca_pem: http.ca_pem.clone(),
        resolve,
    };
    let mut cache = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(client) = cache.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(key.user_agent.clone())
        .danger_accept_invalid_certs(!key.tls_verify);
    if let Some((host, socket)) = &key.resolve {
        builder = builder.resolve(host, *socket);
    }
    if let Some(pem) = &key.ca_pem {
        // Checked when the config was loaded.
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Failure::local(format!("the check's ca_file: {e}")))?;
        builder = builder.tls_built_in_root_certs(false);
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    let client = builder.build().map_err(|e| Failure::local(format!("building the HTTPS client: {e}")))?;
    // Keys follow targets (a resolved name's addresses come and go): bounded, emptied
    // when full (the clients in use live on in their checks; the next run rebuilds).
    if cache.len() >= MAX_CLIENTS {
        cache.clear();
    }
    cache.insert(key, client.clone());
    Ok(client)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
