//! Backends for health checks: a third namespace joined to the server namespace by
//! veth (10.99.1.0/24), and small HTTP/TCP servers that stop, start, change their
//! status code, and lose their address (so SYNs go unanswered).

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Result;

use crate::{lab::Lab, netns};

pub const BACKEND_IF: &str = "pwb0";
pub const SERVER_SIDE_IF: &str = "pwsb0";
pub const SERVER_SIDE_ADDR: &str = "10.99.1.1";

/// The backend namespace.
pub struct BackendNet {
    pub ns: String,
}

impl BackendNet {
    pub fn new(lab: &Lab) -> Result<BackendNet> {
        BackendNet::named(lab, &crate::unique("pwb"))
    }

    /// As `new`, with a fixed namespace name (the demo's, so a later run finds it).
    pub fn named(lab: &Lab, ns: &str) -> Result<BackendNet> {
        let ns = ns.to_string();
        netns::ip(&["netns", "add", &ns])?;
        let net = BackendNet { ns };
        netns::ip(&[
            "link",
            "add",
            BACKEND_IF,
            "netns",
            &net.ns,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_SIDE_IF,
            "netns",
            &lab.server_ns,
        ])?;
        netns::ip(&["-n", &net.ns, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", &net.ns, "link", "set", BACKEND_IF, "up"])?;
        netns::ip(&["-n", &lab.server_ns, "link", "set", SERVER_SIDE_IF, "up"])?;
        netns::ip(&["-n", &lab.server_ns, "addr", "add", &format!("{SERVER_SIDE_ADDR}/24"), "dev", SERVER_SIDE_IF])?;
        Ok(net)
    }

    pub fn add_address(&self, address: IpAddr) -> Result<()> {
        netns::ip(&["-n", &self.ns, "addr", "add", &format!("{address}/24"), "dev", BACKEND_IF])
    }

    /// An HTTP backend on port 80 of each address (added to the namespace first).
    pub fn serve_http(&self, addresses: impl IntoIterator<Item = IpAddr>) -> Result<Vec<HttpBackend>> {
        addresses
            .into_iter()
            .map(|ip| {
                self.add_address(ip)?;
                HttpBackend::start(&self.ns, SocketAddr::new(ip, 80))
            })
            .collect()
    }

    /// Removes the address: packets to it are dropped, so connects time out.
    pub fn remove_address(&self, address: IpAddr) -> Result<()> {
        netns::ip(&["-n", &self.ns, "addr", "del", &format!("{address}/24"), "dev", BACKEND_IF])
    }
}

impl Drop for BackendNet {
    fn drop(&mut self) {
        let _ = netns::ip(&["netns", "del", &self.ns]);
    }
}

/// A minimal HTTP/1.1 server: answers every request with `status` and `body`.
pub struct HttpBackend {
    pub address: SocketAddr,
    ns: String,
    status: Arc<AtomicU16>,
    body: Arc<Mutex<String>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl HttpBackend {
    pub fn start(ns: &str, address: SocketAddr) -> Result<HttpBackend> {
        let mut backend = HttpBackend {
            address,
            ns: ns.to_string(),
            status: Arc::new(AtomicU16::new(200)),
            body: Arc::new(Mutex::new("ok".into())),
            running: None,
        };
        backend.resume()?;
        Ok(backend)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    /// Closes the listening socket: connects are refused.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }

    /// Listens again.
    pub fn resume(&mut self) -> Result<()> {
        let address = self.address;
        // std sets SO_REUSEADDR, so a stopped backend can listen again at once.
        let listener = netns::run_in(&self.ns, move || TcpListener::bind(address))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (status, body, flag) = (self.status.clone(), self.body.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut reader = BufReader::new(stream);
                        let mut line = String::new();
                        // Read the request head; the check sends no body.
                        while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                            line.clear();
                        }
                        let code = status.load(Ordering::SeqCst);
                        let text = body.lock().unwrap().clone();
                        let reply = format!(
                            "HTTP/1.1 {code} Status\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        );
                        let _ = reader.get_mut().write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, thread));
        Ok(())
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A self-signed certificate and key for `name` (EC P-256), made with openssl.
pub fn self_signed(dir: &std::path::Path, name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !out.status.success() {
        anyhow::bail!("openssl req: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((cert, key))
}

/// `openssl s_server -www` on `listen` in `ns`: answers GET with a 200 status page.
pub fn tls_server(
    ns: &str,
    listen: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<std::process::Child> {
    Ok(netns::command(ns, "openssl")
        .args(["s_server", "-quiet", "-accept", listen, "-www", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}
