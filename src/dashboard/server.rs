//! The dashboard's server: a thread accepting connections, and a short-lived thread per
//! connection that answers one request (or streams events to one page). The training
//! thread never touches any of it: it sends its numbers down a channel to the publisher
//! (`feed.rs`), which updates [`State`] under the lock and wakes the streams.
//!
//! A client that stalls only ever blocks its own thread, for at most the write timeout;
//! a client that leaves ends its thread at the next write. Connections beyond
//! [`MAX_CONNECTIONS`] are answered 503 at once.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::assets;
use super::http::{self, Method, Refusal, Request};
use super::state::{Cursor, State};

/// The most connections served at once (page loads and event streams together).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write to a client may block before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// An event stream with no news sends a comment this often (so a vanished client is
/// noticed, and proxies keep the stream open).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the publisher and the connection threads share.
pub struct Shared {
    pub state: Mutex<State>,
    /// Notified when the state changed or the server stops.
    pub news: Condvar,
    pub stop: AtomicBool,
    connections: AtomicUsize,
    /// Required in every request's query when the server listens beyond loopback.
    token: Option<String>,
    /// The `Host` values a loopback server answers (DNS rebinding defence); empty when
    /// a token guards the server instead.
    hosts: Vec<String>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicked publisher leaves the state usable: it is only ever appended to.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A listening server; stops (and joins its accept thread) on [`Server::stop`] or drop.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and starts accepting. A token is made when `addr` is not loopback.
    pub fn start(addr: SocketAddr, state: State) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let loopback = addr.ip().is_loopback();
        let token = if loopback { None } else { Some(new_token()?) };
        let hosts = if loopback {
            let p = addr.port();
            vec![
                format!("127.0.0.1:{p}"),
                format!("localhost:{p}"),
                format!("[::1]:{p}"),
            ]
        } else {
            Vec::new()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            news: Condvar::new(),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            token,
            hosts,
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("aotgrad-dashboard".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The page's address, with the token when one is required.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            // Listening on every interface: name this machine's loopback, which works
            // here; other machines use this host's address with the same port.
            format!("127.0.0.1:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        match &self.shared.token {
            Some(t) => format!("http://{host}/?token={t}"),
            None => format!("http://{host}/"),
        }
    }

    /// Stops accepting, ends every event stream and joins the accept thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.news.notify_all();
        if let Some(h) = self.accept.take() {
            // Wake the blocking accept with a connection of our own.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 128 random bits from the operating system, as hex.
fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            // Out of file descriptors, a reset before accept: back off a little.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        let guard = ConnectionGuard(shared.clone());
        if n >= MAX_CONNECTIONS {
            // Read what the client sent (briefly) before answering: closing a socket
            // with unread data resets the connection, and the reset can discard the 503.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = std::io::Read::read(&mut &stream, &mut [0u8; 8192]);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let busy = Refusal {
                status: 503,
                reason: "too many connections",
            };
            let _ = http::respond_refusal(&mut &stream, &busy);
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("aotgrad-dashboard-client".into())
            .spawn(move || {
                let _guard = guard;
                serve(stream, &s);
            });
        // A thread that could not start dropped its guard and its stream with it.
        drop(spawned);
    }
}

/// Counts a connection until it is dropped.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let req = match http::read_request(&mut stream) {
        Ok(r) => r,
        Err(refusal) => {
            let _ = http::respond_refusal(&mut stream, &refusal);
            return;
        }
    };
    if let Err(refusal) = admit(&req, shared) {
        let _ = http::respond_refusal(&mut stream, &refusal);
        return;
    }
    let head = req.method == Method::Head;
    let _ = match route(&req.path, shared) {
        Reply::Page(page) => {
            let query = shared
                .token
                .as_ref()
                .map(|t| format!("?token={t}"))
                .unwrap_or_default();
            let body = page.replace("{{QUERY}}", &query);
            http::respond(
                &mut stream,
                200,
                "text/html; charset=utf-8",
                body.as_bytes(),
                head,
            )
        }
        Reply::Bytes(ty, body) => http::respond(&mut stream, 200, ty, &body, head),
        Reply::Events if head => http::event_stream_head(&mut stream),
        Reply::Events => stream_events(&mut stream, shared),
        Reply::NotFound => http::respond_refusal(
            &mut stream,
            &Refusal {
                status: 404,
                reason: "no such page",
            },
        ),
    };
}

/// The token (beyond loopback) or the `Host` header (on loopback) must be right.
fn admit(req: &Request, shared: &Shared) -> Result<(), Refusal> {
    if let Some(t) = &shared.token {
        let given = req.token.as_deref().unwrap_or("");
        if !same_secret(given.as_bytes(), t.as_bytes()) {
            return Err(Refusal {
                status: 403,
                reason: "a valid ?token= is required (see the URL the run printed)",
            });
        }
    } else if let Some(h) = &req.host
        && !shared.hosts.iter().any(|a| a == h)
    {
        return Err(Refusal {
            status: 421,
            reason: "this server answers only its loopback address",
        });
    }
    Ok(())
}

/// Compares in time that does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

enum Reply {
    Page(&'static str),
    Bytes(&'static str, Vec<u8>),
    Events,
    NotFound,
}

/// The server's only routes: the page, its assets, the state, the event stream and
/// the pictures held in memory. Nothing is ever read from the disk.
fn route(path: &str, shared: &Shared) -> Reply {
    if path == "/" || path == "/index.html" {
        return Reply::Page(assets::INDEX_HTML);
    }
    if let Some(name) = path.strip_prefix("/assets/") {
        return match assets::get(name) {
            Some((ty, body)) => Reply::Bytes(ty, body.to_vec()),
            None => Reply::NotFound,
        };
    }
    if path == "/state" {
        let msg = shared.lock().diff(&mut Cursor::default());
        let body = msg.unwrap_or_else(|| "{\"finished\":false,\"runs\":[]}".to_string());
        return Reply::Bytes("application/json", body.into_bytes());
    }
    if path == "/events" {
        return Reply::Events;
    }
    if let Some(rest) = path.strip_prefix("/picture/")
        && let Some((run, name)) = rest.split_once('/')
        && let Ok(run) = run.parse::<usize>()
    {
        let st = shared.lock();
        if let Some(png) = st.runs.get(run).and_then(|r| r.picture(name)) {
            return Reply::Bytes("image/png", png.to_vec());
        }
    }
    Reply::NotFound
}

/// Streams the state's news to one page until the server stops or the page leaves.
fn stream_events(stream: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    http::event_stream_head(stream)?;
    // A page that reconnects gets everything again: it starts over on `reset`.
    stream.write_all(b"retry: 1000\n\n")?;
    stream.write_all(http::event("reset", "{}").as_bytes())?;
    let mut cursor = Cursor::default();
    loop {
        let (msg, stop) = {
            let mut st = shared.lock();
            loop {
                if let Some(m) = st.diff(&mut cursor) {
                    break (Some(m), false);
                }
                if shared.stop.load(Ordering::SeqCst) {
                    break (None, true);
                }
                let (next, wait) = shared
                    .news
                    .wait_timeout(st, HEARTBEAT)
                    .unwrap_or_else(|e| e.into_inner());
                st = next;
                if wait.timed_out() {
                    break (None, false);
                }
            }
        };
        match msg {
            Some(m) => stream.write_all(http::event("update", &m).as_bytes())?,
            None if stop => {
                stream.write_all(http::event("bye", "{}").as_bytes())?;
                return stream.flush();
            }
            None => stream.write_all(b": heartbeat\n\n")?,
        }
        stream.flush()?;
    }
}
