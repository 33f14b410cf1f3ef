// SPDX-License-Identifier: MPL-2.0
//! The process's Prometheus endpoint: one listener for every stream, served by one
//! event-driven thread (mio), `GET`/`HEAD /metrics` only. Request heads are bounded and
//! must arrive within [`REQUEST_DEADLINE`]; when the connection table is full, or the
//! process runs out of file descriptors, the oldest connection that has not sent its request
//! yet is closed to make room, so that idle or trickling clients (slowloris) can never lock a
//! real scrape out, and the endpoint costs one thread however many clients there are.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::render;

/// Largest request head the endpoint reads; a longer one is answered 431 and closed.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, however slowly it trickles.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// Time a client has to take its answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections held at once (fewer when the process may open few files: half its limit, so
/// that the pipeline keeps the rest); beyond it the oldest not yet answered is closed.
pub const MAX_CONNECTIONS: usize = 4096;

/// Why the metrics endpoint cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "this process already serves the metrics of all its streams on {requested} ({bound}); one endpoint per process"
    )]
    AlreadyServing {
        requested: String,
        bound: SocketAddr,
    },
    #[error("metrics address '{address}' is not host:port: {source}")]
    Address {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// The endpoint of this process, once opened.
static SERVER: Mutex<Option<(String, SocketAddr)>> = Mutex::new(None);

/// Opens the process's metrics endpoint on `address` (host:port), or confirms it is open
/// there already. Returns the bound address. Fails, saying why, if the address is bad or in
/// use, or if this process already serves its metrics on another address.
pub fn serve(address: &str) -> Result<SocketAddr, ServeError> {
    let mut server = SERVER.lock().unwrap();
    if let Some((requested, bound)) = server.as_ref() {
        if requested == address {
            return Ok(*bound);
        }
        return Err(ServeError::AlreadyServing {
            requested: requested.clone(),
            bound: *bound,
        });
    }
    let addrs = listen_addresses(address).map_err(|source| ServeError::Address {
        address: address.to_owned(),
        source,
    })?;
    let listen = |source| ServeError::Listen {
        address: address.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(&addrs[..]).map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let poll = Poll::new().map_err(listen)?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(listen)?;
    std::thread::Builder::new()
        .name("qoe-metrics".into())
        .spawn(move || Server::new(poll, listener, connection_limit()).run())
        .map_err(ServeError::Thread)?;
    *server = Some((address.to_owned(), bound));
    Ok(bound)
}

/// Where to listen for `address`: `host:port`, or `:port` for every interface, as Prometheus
/// exporters take it (IPv6 and IPv4 where the system has both, else IPv4).
fn listen_addresses(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    match address.strip_prefix(':') {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("port '{port}' is not a number from 0 to 65535"),
                )
            })?;
            Ok(vec![
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
            ])
        }
        None => Ok(address.to_socket_addrs()?.collect()),
    }
}

/// The address the endpoint is bound to, if open.
pub fn served_address() -> Option<SocketAddr> {
    SERVER.lock().unwrap().as_ref().map(|(_, bound)| *bound)
}

/// [`MAX_CONNECTIONS`], or half the files this process may open if that is less.
fn connection_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (files / 2).clamp(16, MAX_CONNECTIONS)
}

const LISTENER: Token = Token(usize::MAX);

enum Phase {
    /// Reading the request head, which must be complete by the deadline.
    Reading(Vec<u8>),
    /// Writing the answer; `usize` bytes of it are sent.
    Writing(Vec<u8>, usize),
}

struct Connection {
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
}

/// The endpoint's event loop and its connections.
struct Server {
    poll: Poll,
    listener: TcpListener,
    limit: usize,
    connections: HashMap<Token, Connection>,
    /// Tokens in the order accepted, so in deadline order: the front is the oldest. Entries
    /// of closed connections are skipped when met (tokens are never reused).
    by_age: VecDeque<Token>,
    next_token: usize,
    /// The listener has connections this loop could not take yet (no descriptor was free).
    backlog: bool,
}

/// What to do with a connection after an event.
enum Next {
    Keep,
    Close,
}

impl Server {
    fn new(poll: Poll, listener: TcpListener, limit: usize) -> Server {
        Server {
            poll,
            listener,
            limit,
            connections: HashMap::new(),
            by_age: VecDeque::new(),
            next_token: 0,
            backlog: false,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.backlog {
                Duration::from_millis(10)
            } else {
                self.next_deadline().map_or(Duration::from_secs(60), |d| {
                    d.saturating_duration_since(Instant::now())
                })
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                // Nothing sensible is left to do; the pipeline must not notice.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            for event in events.iter() {
                let token = event.token();
                if token == LISTENER {
                    self.backlog = true;
                } else {
                    self.on_ready(token);
                }
            }
            if self.backlog {
                self.accept();
            }
            self.expire();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        // The oldest connection's deadline comes first (same deadline for all); a connection
        // that moved on to writing may have a later one, which expire() handles at that time.
        self.connections.values().map(|c| c.deadline).min()
    }

    /// Takes every waiting connection, making room as needed.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    // Room is made only for a connection that is really there.
                    if self.connections.len() >= self.limit && !self.evict_oldest_reader() {
                        continue; // every slot is answering: shed the newcomer
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.connections.insert(
                        token,
                        Connection {
                            stream,
                            phase: Phase::Reading(Vec::new()),
                            deadline: Instant::now() + REQUEST_DEADLINE,
                        },
                    );
                    self.by_age.push_back(token);
                    // Data may have come with the connection; edge-triggered, so read now.
                    self.on_ready(token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return;
                }
                Err(e) if out_of_descriptors(&e) => {
                    if !self.evict_oldest_reader() {
                        return; // retried shortly (backlog stays set)
                    }
                }
                Err(_) => {} // the client gave up before it was taken: next one
            }
        }
    }

    /// Closes the oldest connection still waiting for its request (a 408 if it takes it).
    /// False if there is none.
    fn evict_oldest_reader(&mut self) -> bool {
        while let Some(token) = self.by_age.pop_front() {
            if let Some(connection) = self.connections.get(&token)
                && matches!(connection.phase, Phase::Reading(_))
            {
                self.close_with(token, "408 Request Timeout", b"request timeout\n");
                return true;
            }
        }
        false
    }

    /// Answers connections whose time is up with 408 (if still reading) and closes them.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            self.close_with(token, "408 Request Timeout", b"request timeout\n");
        }
        while let Some(front) = self.by_age.front() {
            if self.connections.contains_key(front) {
                break;
            }
            self.by_age.pop_front();
        }
    }

    /// Closes `token`; if it had not been answered, tries once to answer `status` first.
    fn close_with(&mut self, token: Token, status: &str, body: &[u8]) {
        if let Some(mut connection) = self.connections.remove(&token) {
            if matches!(connection.phase, Phase::Reading(_)) {
                let _ = connection
                    .stream
                    .write(&response(status, "text/plain", body, false));
                let _ = connection.stream.shutdown(std::net::Shutdown::Write);
            }
            let _ = self.poll.registry().deregister(&mut connection.stream);
        }
    }

    fn on_ready(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        if let Next::Close = connection.advance()
            && let Some(mut connection) = self.connections.remove(&token)
        {
            let _ = self.poll.registry().deregister(&mut connection.stream);
        }
    }
}

impl Connection {
    /// Reads what has come and writes what can go, until the socket would block.
    fn advance(&mut self) -> Next {
        if let Phase::Reading(head) = &mut self.phase {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => return Next::Close,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Next::Close,
                }
                if let Some(answer) = answer_to(head) {
                    self.phase = Phase::Writing(answer, 0);
                    self.deadline = Instant::now() + WRITE_DEADLINE;
                    break;
                }
            }
        }
        if let Phase::Writing(answer, sent) = &mut self.phase {
            while *sent < answer.len() {
                match self.stream.write(&answer[*sent..]) {
                    Ok(0) => return Next::Close,
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return Next::Close,
                }
            }
            let _ = self.stream.flush();
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Next::Close
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request line (`GET /metrics HTTP/1.1`).
pub fn route(request_line: &str) -> Route {
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::MethodNotAllowed,
    }
}

/// The answer to a request head read so far, once there is one: when the head is complete,
/// or too long.
fn answer_to(head: &[u8]) -> Option<Vec<u8>> {
    let complete =
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return (head.len() > MAX_REQUEST_BYTES).then(|| {
            response(
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            )
        });
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    Some(match route(line.trim_end()) {
        Route::Metrics { head_only } => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render().as_bytes(),
            head_only,
        ),
        Route::NotFound => response(
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
            false,
        ),
        Route::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD only\n",
            false,
        ),
        Route::BadRequest => response("400 Bad Request", "text/plain", b"bad request\n", false),
    })
}

/// A whole HTTP/1.1 answer; the connection closes after it.
fn response(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_every_interface() {
        let addrs = listen_addresses(":9464").unwrap();
        assert_eq!(
            addrs,
            [
                "[::]:9464".parse::<SocketAddr>().unwrap(),
                "0.0.0.0:9464".parse().unwrap()
            ]
        );
        assert_eq!(
            listen_addresses("127.0.0.1:9464").unwrap(),
            ["127.0.0.1:9464".parse::<SocketAddr>().unwrap()]
        );
        let bad = listen_addresses(":http").unwrap_err().to_string();
        assert!(bad.contains("port 'http' is not a number"), "{bad}");
        assert!(listen_addresses(":70000").is_err());
        // Bound as serve() binds it, the loopback reaches it.
        let listener = std::net::TcpListener::bind(&listen_addresses(":0").unwrap()[..]).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listener.local_addr().unwrap().ip().is_unspecified());
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("HEAD /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route("GET /metrics"), Route::BadRequest);
        assert_eq!(route("\u{1}\u{2} garbage"), Route::BadRequest);
        assert_eq!(route("GET /metrics SPDY/3 extra"), Route::BadRequest);
    }

    /// With every slot taken by a silent client, a new connection closes the oldest one (408)
    /// and a real request is answered at once.
    #[test]
    fn a_full_table_evicts_the_oldest_silent_client() {
        use std::io::{Read, Write};
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let poll = Poll::new().unwrap();
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap();
        std::thread::spawn(move || Server::new(poll, listener, 8).run());

        let connect = || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        };
        let mut silent: Vec<_> = (0..8).map(|_| connect()).collect();
        std::thread::sleep(Duration::from_millis(100)); // all eight accepted, in order
        let t0 = Instant::now();
        let mut scrape = connect();
        scrape.write_all(b"GET /nothing HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        let mut evicted = String::new();
        silent[0].read_to_string(&mut evicted).unwrap();
        assert!(evicted.starts_with("HTTP/1.1 408"), "{evicted}");
        // The others are still held.
        silent[1].set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            silent[1].read(&mut byte).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
    }
}
