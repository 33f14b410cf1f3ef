// SPDX-License-Identifier: MPL-2.0
//! The process's Prometheus endpoint: one listener for every stream, a thread per connection
//! (at most [`MAX_CONNECTIONS`]), `GET`/`HEAD /metrics` only, bounded request heads and
//! deadlines, so that no client can hold up another or the pipeline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::render;

/// Largest request head the endpoint reads; a longer one is answered 431 and closed.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, however slowly it trickles.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 512;

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
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| ServeError::Address {
            address: address.to_owned(),
            source,
        })?
        .collect();
    let listen = |source| ServeError::Listen {
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(&addrs[..]).map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    std::thread::Builder::new()
        .name("qoe-metrics".into())
        .spawn(move || accept_loop(listener))
        .map_err(ServeError::Thread)?;
    *server = Some((address.to_owned(), bound));
    Ok(bound)
}

/// The address the endpoint is bound to, if open.
pub fn served_address() -> Option<SocketAddr> {
    SERVER.lock().unwrap().as_ref().map(|(_, bound)| *bound)
}

fn accept_loop(listener: TcpListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            drop(stream); // shed load rather than queue it
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let done = active.clone();
        let spawned = std::thread::Builder::new()
            .name("qoe-metrics-conn".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = handle(stream);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The connection was dropped with the closure; keep the count right.
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
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

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            Err(e) => return Err(e),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            );
        }
    };
    if !complete {
        // Silent or too slow: answer 408 if the client is still there, then close.
        return respond(
            &mut stream,
            "408 Request Timeout",
            "text/plain",
            b"request timeout\n",
            false,
        );
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    match route(line.trim_end()) {
        Route::Metrics { head_only } => {
            let body = render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                head_only,
            )
        }
        Route::NotFound => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
            false,
        ),
        Route::MethodNotAllowed => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD only\n",
            false,
        ),
        Route::BadRequest => respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
            false,
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
