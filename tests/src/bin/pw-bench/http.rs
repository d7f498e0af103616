//! Plain HTTP checks per second and CPU per check: the controller's check (hyper's
//! HTTP/1 client connection) against the hand-written reader it replaced, kept here
//! only as the "before" of this comparison. Same loopback server, same request, same
//! body pattern, alternating rounds in one run.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const IN_FLIGHT: usize = 64;
const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct passed.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A loopback server on its own thread answering every connection with REPLY.
fn server() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(REPLY).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    });
    Ok((address, served))
}

/// Checks/s and CPU µs per check for one implementation over one round.
fn round<F, Fut>(check: F) -> Result<(f64, f64)>
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = bool> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cpu = thread_cpu();
    let started = Instant::now();
    let (done, failed) = rt.block_on(async move {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let mut workers = Vec::new();
                for _ in 0..IN_FLIGHT {
                    let check = check.clone();
                    workers.push(tokio::task::spawn_local(async move {
                        let (mut done, mut failed) = (0u64, 0u64);
                        while started.elapsed() < ROUND {
                            if check().await {
                                done += 1;
                            } else {
                                failed += 1;
                            }
                        }
                        (done, failed)
                    }));
                }
                let mut total = (0, 0);
                for w in workers {
                    let (d, f) = w.await.unwrap_or((0, 0));
                    total = (total.0 + d, total.1 + f);
                }
                total
            })
            .await
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu).as_secs_f64();
    if failed > 0 || done == 0 {
        bail!("{failed} checks failed, {done} passed: the comparison is void");
    }
    Ok((done as f64 / elapsed, cpu * 1e6 / done as f64))
}

pub fn run() -> Result<()> {
    println!("\n== plain HTTP checks: hyper client connection (now) vs the hand-written reader (before), loopback, {IN_FLIGHT} in flight, {ROUNDS}x{} s each ==", ROUND.as_secs());
    let (address, served) = server()?;
    let text = format!(
        "[server]\ninterfaces = [\"lo\"]\n[checks.c]\ntype = \"http\"\nport = {}\npath = \"/health\"\nbody = \"^ok$\"\ntimeout = \"2s\"\n",
        address.port()
    );
    let check = Arc::new(primwatch::config::Config::parse(Path::new("bench.toml"), &text)?.checks.remove("c").unwrap());
    let pattern = regex::Regex::new("^ok$")?;
    let now = {
        let check = check.clone();
        move || {
            let check = check.clone();
            async move { primwatch::health::checks::run(&check, "bench", IpAddr::from([127, 0, 0, 1])).await.ok }
        }
    };
    let before = move || {
        let pattern = pattern.clone();
        // Bounded by the check's timeout, as `checks::run` bounds every probe.
        async move {
            tokio::time::timeout(Duration::from_secs(2), before::plain_http(address, &pattern)).await.unwrap_or(false)
        }
    };
    let (mut now_rate, mut now_cpu, mut before_rate, mut before_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (r, c) = round(before.clone())?;
        before_rate.push(r);
        before_cpu.push(c);
        let (r, c) = round(now.clone())?;
        now_rate.push(r);
        now_cpu.push(c);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("{:<44} {:>12} {:>16}", "", "checks/s", "CPU µs/check");
    println!(
        "{:<44} {:>12.0} {:>16.1}",
        "before: hand-written reader (httparse)",
        mean(&before_rate),
        mean(&before_cpu)
    );
    println!("{:<44} {:>12.0} {:>16.1}", "now: hyper http1 client connection", mean(&now_rate), mean(&now_cpu));
    println!(
        "now / before: {:.2}x checks/s, {:.2}x CPU per check (client thread only; the server answered {})",
        mean(&now_rate) / mean(&before_rate),
        mean(&now_cpu) / mean(&before_cpu),
        served.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The plain HTTP reader primwatch used before hyper, reduced to what this comparison
/// exercises (Content-Length and close-delimited bodies, interim 1xx skipped).
mod before {
    use super::*;

    pub async fn plain_http(to: SocketAddr, pattern: &regex::Regex) -> bool {
        let Ok(mut stream) = TcpStream::connect(to).await else { return false };
        tcp_info(&stream);
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: {to}\r\nUser-Agent: primwatch\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let (status, head_len, length) = loop {
            match parse_head(&buf) {
                Ok(Some(head)) if (100..200).contains(&head.0) && head.0 != 101 => {
                    buf.drain(..head.1);
                    continue;
                }
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(_) => return false,
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if status != 200 {
            return false;
        }
        let mut raw = buf.split_off(head_len);
        loop {
            let end = length.map_or(raw.len(), |l| l.min(raw.len()));
            if pattern.is_match(&String::from_utf8_lossy(&raw[..end])) {
                return true;
            }
            if length.is_some_and(|l| raw.len() >= l) {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The TCP_INFO read both implementations do after connecting.
    fn tcp_info(stream: &TcpStream) {
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: TCP_INFO fills a tcp_info of the given length on a valid socket fd.
        unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
    }

    /// (status, head length, Content-Length) of a complete head; None while partial.
    fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, httparse::Error> {
        let lines = buf.windows(2).filter(|w| w == b"\r\n").count();
        let mut headers = vec![httparse::EMPTY_HEADER; lines.max(1)];
        let mut response = httparse::Response::new(&mut headers);
        Ok(match response.parse(buf)? {
            httparse::Status::Complete(len) => {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                Some((response.code.unwrap_or(0), len, length))
            }
            httparse::Status::Partial => None,
        })
    }
}
