// SPDX-License-Identifier: MPL-2.0
//! A bundle's graphs on a KServe v2 inference server (Triton, KServe, MLServer): the open
//! inference protocol over HTTP/1.1, with Triton's binary tensor extension so that pixels
//! and past keys travel as raw little-endian bytes, not JSON numbers.
//!
//! `python -m qoe_onnx.triton` writes one server model per graph, named
//! [`model_name`]`(digest, part)`: the digest ([`bundle_digest`]) covers the manifest and
//! every graph file, so a probe never runs another bundle's graphs. The models are checked
//! (present, ready, the manifest's inputs and outputs) before the first window; while the
//! server cannot be reached the check waits, and every call fails at once until the next
//! try, which backs off from 0.5 s to 30 s. Failures are errors of the window (a warning and
//! a stale flag in the element), never a wait on the stream.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, Dim, MANIFEST, PartName, TensorSpec};
use crate::error::{Error, Result};
use crate::runner::{GraphRunner, Graphs, Input};
use crate::scorer::Values;

/// The digest's hex digits that name a bundle's server models.
const DIGEST_DIGITS: usize = 16;
/// Backoff after a failed contact: the first wait, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest response header block and body this client accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 30;

/// SHA-256 over the manifest's bytes, then each part (in name order): its name, a zero byte,
/// and its file's SHA-256. `python -m qoe_onnx.triton` computes the same.
pub fn bundle_digest(bundle: &Bundle) -> Result<String> {
    let manifest = bundle.dir.join(MANIFEST);
    let mut outer = Sha256::new();
    outer.update(
        std::fs::read(&manifest)
            .map_err(|e| Error::Bundle(format!("{}: cannot read: {e}", manifest.display())))?,
    );
    let mut names: Vec<&PartName> = bundle.manifest.parts.keys().collect();
    names.sort_by_key(|n| n.to_string());
    for name in names {
        let path = bundle.path(&bundle.manifest.parts[name].file);
        outer.update(name.to_string().as_bytes());
        outer.update([0u8]);
        outer.update(file_sha256(&path)?);
    }
    Ok(hex(&outer.finalize()))
}

fn file_sha256(path: &Path) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| Error::Bundle(format!("{}: cannot read: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(fail)?;
        if n == 0 {
            return Ok(hasher.finalize().to_vec());
        }
        hasher.update(&buffer[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server model that runs part `part` of the bundle with digest `digest`.
pub fn model_name(digest: &str, part: &PartName) -> String {
    let short = &digest[..DIGEST_DIGITS.min(digest.len())];
    format!("gstqoe-{short}-{}", part.to_string().replace('@', "."))
}

/// Where the server is: `http://host:port`. gRPC is not built yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn parse(url: &str) -> Result<ServerAddress> {
        let bad = |why: &str| Error::Runtime(format!("inference server {url:?}: {why}"));
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("grpc://") {
            return Err(bad(
                "gRPC is not supported yet; give the server's HTTP address (Triton: http://host:8000)",
            ));
        } else {
            return Err(bad("expected http://host:port"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("expected http://host:port, without a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
                (host, port)
            }
            _ => (rest, 80),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("expected http://host:port"));
        }
        Ok(ServerAddress {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    fn url(&self) -> String {
        match self.host.contains(':') {
            true => format!("http://[{}]:{}", self.host, self.port),
            false => format!("http://{}:{}", self.host, self.port),
        }
    }
}

/// An HTTP response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The server's error text: KServe v2's `{"error": …}`, or the body.
    fn error_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().chars().take(300).collect())
    }
}

/// Why a call failed: the server could not be reached (back off), or it answered.
enum Failure {
    Transport(String),
    Answer(Response),
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last: String,
}

/// Whether the server's models were checked against the bundle.
enum Check {
    Pending,
    Passed,
    Failed(String),
}

/// One server, shared by every graph of a scorer: its keep-alive connections, the backoff
/// and the check of its models.
pub struct Server {
    address: ServerAddress,
    url: String,
    timeout: Duration,
    idle: Mutex<Vec<BufReader<TcpStream>>>,
    backoff: Mutex<Backoff>,
    check: Mutex<Check>,
    /// The bundle's parts with their server models.
    models: Vec<(PartName, String, Vec<TensorSpec>, Vec<TensorSpec>)>,
    bundle_name: String,
    digest: String,
}

impl Server {
    /// One request on a pooled connection, or a fresh one when the pooled one was closed.
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::result::Result<Response, Failure> {
        {
            let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = backoff.retry_at {
                let now = Instant::now();
                if at > now {
                    return Err(Failure::Transport(format!(
                        "{} (failed {} times; next try in {:.1} s)",
                        backoff.last,
                        backoff.failures,
                        (at - now).as_secs_f64()
                    )));
                }
            }
        }
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let result = match pooled {
            Some(conn) => match self.exchange(conn, method, path, headers, body) {
                Ok(r) => Ok(r),
                // A keep-alive connection the server closed: once more on a new one.
                Err(_) => self
                    .connect()
                    .and_then(|c| self.exchange(c, method, path, headers, body)),
            },
            None => self
                .connect()
                .and_then(|c| self.exchange(c, method, path, headers, body)),
        };
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((response, conn)) => {
                *backoff = Backoff::default();
                if let Some(conn) = conn {
                    self.idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(conn);
                }
                match response.status {
                    200 => Ok(response),
                    _ => Err(Failure::Answer(response)),
                }
            }
            Err(why) => {
                backoff.failures += 1;
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (backoff.failures - 1).min(10))
                    .min(BACKOFF_MAX);
                backoff.retry_at = Some(Instant::now() + wait);
                backoff.last = format!("inference server {} unreachable: {why}", self.url);
                Err(Failure::Transport(backoff.last.clone()))
            }
        }
    }

    fn connect(&self) -> std::result::Result<BufReader<TcpStream>, String> {
        let addrs = (self.address.host.as_str(), self.address.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.address.host))?;
        let mut last = format!("{} resolves to no address", self.address.host);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    stream.set_read_timeout(Some(self.timeout)).ok();
                    stream.set_write_timeout(Some(self.timeout)).ok();
                    return Ok(BufReader::new(stream));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    /// Sends one request and reads its response; gives the connection back when it may be
    /// used again.
    fn exchange(
        &self,
        mut conn: BufReader<TcpStream>,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::result::Result<(Response, Option<BufReader<TcpStream>>), String> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\n",
            self.address.host,
            self.address.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| format!("sending {path}: {e}"))?;
        let response = read_response(&mut conn).map_err(|e| format!("reading {path}: {e}"))?;
        let keep = !response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Ok((response, keep.then_some(conn)))
    }

    /// Checks every part's server model once: present, ready, and taking and giving what the
    /// manifest says. `Ok(false)`: the server could not be reached, try again later.
    fn check_models(&self) -> Result<bool> {
        let mut check = self.check.lock().unwrap_or_else(|e| e.into_inner());
        match &*check {
            Check::Passed => return Ok(true),
            Check::Failed(why) => return Err(Error::Server(why.clone())),
            Check::Pending => {}
        }
        let mut missing = Vec::new();
        for (_, model, inputs, outputs) in &self.models {
            match self.call("GET", &format!("/v2/models/{model}"), &[], &[]) {
                Ok(r) => {
                    if let Err(why) = self.compare(model, &r.body, inputs, outputs) {
                        *check = Check::Failed(why.clone());
                        return Err(Error::Server(why));
                    }
                }
                Err(Failure::Transport(_)) => return Ok(false),
                Err(Failure::Answer(r)) if matches!(r.status, 400 | 404) => {
                    missing.push(model.clone())
                }
                Err(Failure::Answer(r)) => {
                    return Err(Error::Server(format!(
                        "inference server {}: model {model}: HTTP {}: {}",
                        self.url,
                        r.status,
                        r.error_text()
                    )));
                }
            }
        }
        if !missing.is_empty() {
            let which = match missing.len() == self.models.len() {
                true => format!(
                    "none of the {} models (such as {})",
                    missing.len(),
                    missing[0]
                ),
                false => format!("no model {}", missing.join(", ")),
            };
            let why = format!(
                "inference server {} has {which} of bundle {} (digest {}){}; write its repository from this bundle: python -m qoe_onnx.triton --bundle DIR --out REPO",
                self.url,
                self.bundle_name,
                &self.digest[..DIGEST_DIGITS],
                self.held_bundles()
            );
            *check = Check::Failed(why.clone());
            return Err(Error::Server(why));
        }
        for (_, model, _, _) in &self.models {
            match self.call("GET", &format!("/v2/models/{model}/ready"), &[], &[]) {
                Ok(_) => {}
                Err(Failure::Transport(_)) => return Ok(false),
                Err(Failure::Answer(r)) => {
                    // Not ready yet (loading): not a wrong model; checked again later.
                    return Err(Error::Server(format!(
                        "inference server {}: model {model} is not ready (HTTP {})",
                        self.url, r.status
                    )));
                }
            }
        }
        *check = Check::Passed;
        Ok(true)
    }

    /// The gst-qoe bundles whose models the server holds (Triton's repository index), as
    /// a clause of the "no model" error.
    fn held_bundles(&self) -> String {
        let Ok(r) = self.call("POST", "/v2/repository/index", &[], b"{}") else {
            return String::new();
        };
        let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&r.body) else {
            return String::new();
        };
        let mut digests: Vec<String> = list
            .iter()
            .filter_map(|m| m.get("name")?.as_str())
            .filter_map(|n| {
                n.strip_prefix("gstqoe-")?
                    .split('-')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        digests.sort();
        digests.dedup();
        match digests.is_empty() {
            true => "; it holds no gst-qoe models".to_owned(),
            false => format!("; it holds gst-qoe models of digest {}", digests.join(", ")),
        }
    }

    /// Compares a model's KServe v2 metadata with the manifest's inputs and outputs.
    fn compare(
        &self,
        model: &str,
        metadata: &[u8],
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> std::result::Result<(), String> {
        let meta: serde_json::Value = serde_json::from_slice(metadata).map_err(|e| {
            format!(
                "inference server {}: model {model}: metadata is not JSON: {e}",
                self.url
            )
        })?;
        for (what, specs) in [("inputs", inputs), ("outputs", outputs)] {
            let served = meta
                .get(what)
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            let mut served_names: Vec<&str> = served
                .iter()
                .filter_map(|t| t.get("name")?.as_str())
                .collect();
            let mut declared: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            served_names.sort();
            declared.sort();
            if served_names != declared {
                return Err(format!(
                    "inference server {}: model {model} has {what} {served_names:?}; the bundle declares {declared:?}",
                    self.url
                ));
            }
            for spec in specs {
                let tensor = served
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(&spec.name))
                    .expect("names compared");
                let datatype = tensor
                    .get("datatype")
                    .and_then(|d| d.as_str())
                    .unwrap_or("");
                let shape: Vec<i64> = tensor
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .map(|s| s.iter().filter_map(|d| d.as_i64()).collect())
                    .unwrap_or_default();
                let want_type = kserve_datatype(&spec.dtype);
                let fits = shape.len() == spec.shape.len()
                    && shape.iter().zip(&spec.shape).all(|(got, want)| match want {
                        Dim::Fixed(n) => *got == -1 || *got == *n,
                        Dim::Named(_) => *got == -1,
                    });
                if datatype != want_type || !fits {
                    return Err(format!(
                        "inference server {}: model {model}'s {} {} is {datatype} {shape:?}; the bundle declares {} {:?}",
                        self.url,
                        &what[..what.len() - 1],
                        spec.name,
                        want_type,
                        spec.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

fn kserve_datatype(dtype: &str) -> &'static str {
    match dtype {
        "float32" => "FP32",
        "int64" => "INT64",
        "float16" => "FP16",
        "int32" => "INT32",
        _ => "?",
    }
}

/// Reads a status line, headers and a body (Content-Length or chunked).
fn read_response(conn: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    let mut head_bytes = 0;
    let mut read_line =
        |conn: &mut BufReader<TcpStream>, line: &mut String| -> std::io::Result<()> {
            line.clear();
            let n = conn.read_line(line)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            head_bytes += n;
            if head_bytes > MAX_HEAD {
                return Err(invalid("response head too large".into()));
            }
            Ok(())
        };
    read_line(conn, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {:?}", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        read_line(conn, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid(format!("bad chunk size {:?}", size.trim())))?;
            if body.len() + n > MAX_BODY {
                return Err(invalid("response body too large".into()));
            }
            let start = body.len();
            body.resize(start + n, 0);
            conn.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            conn.read_line(&mut crlf)?;
            if n == 0 {
                break;
            }
        }
    } else {
        let length = match response.header("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(invalid("response body too large".into()));
        }
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    }
    Ok(Response { body, ..response })
}

/// A graph on the server.
struct RemoteGraph {
    name: PartName,
    model: String,
    outputs: Vec<String>,
    server: Arc<Server>,
}

impl GraphRunner for RemoteGraph {
    fn run(&self, inputs: Vec<(String, Input)>) -> Result<Vec<Values>> {
        let server = &self.server;
        match server.check_models() {
            Ok(true) => {}
            Ok(false) => {
                let backoff = server.backoff.lock().unwrap_or_else(|e| e.into_inner());
                return Err(Error::Server(backoff.last.clone()));
            }
            Err(e) => return Err(e),
        }
        let blobs: Vec<Vec<u8>> = inputs.iter().map(|(_, v)| v.le_bytes()).collect();
        let mut header = serde_json::json!({
            "inputs": inputs.iter().zip(&blobs).map(|((name, value), blob)| serde_json::json!({
                "name": name,
                "shape": value.shape(),
                "datatype": value.datatype(),
                "parameters": {"binary_data_size": blob.len()},
            })).collect::<Vec<_>>(),
            "outputs": self.outputs.iter().map(|name| serde_json::json!({
                "name": name, "parameters": {"binary_data": true},
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let json_length = header.len();
        for blob in &blobs {
            header.extend_from_slice(blob);
        }
        let response = server
            .call(
                "POST",
                &format!("/v2/models/{}/infer", self.model),
                &[
                    ("Content-Type", "application/octet-stream".to_owned()),
                    ("Inference-Header-Content-Length", json_length.to_string()),
                ],
                &header,
            )
            .map_err(|f| match f {
                Failure::Transport(why) => Error::Server(why),
                Failure::Answer(r) => Error::graph(
                    &self.name,
                    format!(
                        "inference server {} model {}: HTTP {}: {}",
                        server.url,
                        self.model,
                        r.status,
                        r.error_text()
                    ),
                ),
            })?;
        parse_outputs(&response, &self.outputs).map_err(|why| {
            Error::graph(
                &self.name,
                format!(
                    "inference server {} model {}: {why}",
                    server.url, self.model
                ),
            )
        })
    }
}

/// The outputs of an infer response, in `wanted` order: binary (Triton's extension) or JSON.
fn parse_outputs(
    response: &Response,
    wanted: &[String],
) -> std::result::Result<Vec<Values>, String> {
    let json_length = match response.header("inference-header-content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("bad Inference-Header-Content-Length {v:?}"))?,
        None => response.body.len(),
    };
    if json_length > response.body.len() {
        return Err("the response is shorter than its header says".into());
    }
    let header: serde_json::Value = serde_json::from_slice(&response.body[..json_length])
        .map_err(|e| format!("the response is not KServe v2 JSON: {e}"))?;
    let outputs = header
        .get("outputs")
        .and_then(|o| o.as_array())
        .ok_or("the response has no outputs")?;
    let mut offset = json_length;
    let mut by_name: HashMap<String, Values> = HashMap::new();
    for output in outputs {
        let name = output
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_owned();
        let datatype = output
            .get("datatype")
            .and_then(|d| d.as_str())
            .unwrap_or("");
        if datatype != "FP32" {
            return Err(format!("output {name} is {datatype}, not FP32"));
        }
        let shape: Vec<i64> = output
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|d| d.as_i64()).collect())
            .unwrap_or_default();
        let count: i64 = shape.iter().product();
        let data: Vec<f32> = match output
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(|s| s.as_u64())
        {
            Some(size) => {
                let size = size as usize;
                if size != count as usize * 4 || offset + size > response.body.len() {
                    return Err(format!("output {name}: {size} bytes for shape {shape:?}"));
                }
                let bytes = &response.body[offset..offset + size];
                offset += size;
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            None => output
                .get("data")
                .and_then(|d| d.as_array())
                .ok_or_else(|| format!("output {name} has no data"))?
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|v| v as f32)
                        .ok_or_else(|| format!("output {name}: a value is not a number"))
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        if data.len() != count as usize {
            return Err(format!(
                "output {name}: {} values for shape {shape:?}",
                data.len()
            ));
        }
        by_name.insert(name, (shape, data));
    }
    wanted
        .iter()
        .map(|name| {
            by_name
                .remove(name)
                .ok_or_else(|| format!("the response lacks output {name}"))
        })
        .collect()
}

/// Every graph of `bundle` on the KServe v2 server at `url`, each call bounded by `timeout`.
/// A server that answers with the wrong models is an error now; one that cannot be reached
/// is checked again before the first window it takes.
pub(crate) fn open_all(bundle: &Bundle, url: &str, timeout: Duration) -> Result<Graphs> {
    let address = ServerAddress::parse(url)?;
    let digest = bundle_digest(bundle)?;
    let mut names: Vec<&PartName> = bundle.manifest.parts.keys().collect();
    names.sort();
    let models = names
        .iter()
        .map(|name| {
            let part = &bundle.manifest.parts[*name];
            (
                (*name).clone(),
                model_name(&digest, name),
                part.inputs.clone(),
                part.outputs.clone(),
            )
        })
        .collect();
    let server = Arc::new(Server {
        url: address.url(),
        address,
        timeout,
        idle: Mutex::new(Vec::new()),
        backoff: Mutex::new(Backoff::default()),
        check: Mutex::new(Check::Pending),
        models,
        bundle_name: bundle.manifest.name.clone(),
        digest: digest.clone(),
    });
    // A wrong repository fails the start; an unreachable server does not.
    server.check_models()?;
    Ok(server
        .models
        .iter()
        .map(|(name, model, _, outputs)| {
            let graph: Box<dyn GraphRunner> = Box::new(RemoteGraph {
                name: name.clone(),
                model: model.clone(),
                outputs: outputs.iter().map(|o| o.name.clone()).collect(),
                server: server.clone(),
            });
            (name.clone(), graph)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = ServerAddress::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8000));
        assert_eq!(a.url(), "http://127.0.0.1:8000");
        let a = ServerAddress::parse("http://[::1]:8001/").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.url().as_str()),
            ("::1", 8001, "http://[::1]:8001")
        );
        assert_eq!(ServerAddress::parse("http://pool").unwrap().port, 80);
        for (bad, says) in [
            ("grpc://h:8001", "gRPC is not supported yet"),
            ("h:8000", "expected http://host:port"),
            ("http://h:99999", "port \"99999\""),
            ("http://h:8000/v2", "without a path"),
            ("http://:8000", "expected http://host:port"),
        ] {
            let e = ServerAddress::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn model_names_carry_the_digest_and_the_part() {
        let part: PartName = "keyframe_encoder@rgb".parse().unwrap();
        assert_eq!(
            model_name("0123456789abcdef0123", &part),
            "gstqoe-0123456789abcdef-keyframe_encoder.rgb"
        );
    }

    fn response(headers: &[(&str, &str)], body: Vec<u8>) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
        }
    }

    #[test]
    fn binary_and_json_outputs_come_back_in_the_manifest_order() {
        let json = br#"{"outputs":[{"name":"b","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        for v in [1.5f32, -2.0, 3.25] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let length = json.len().to_string();
        let r = response(&[("Inference-Header-Content-Length", &length)], body);
        let out = parse_outputs(&r, &["a".into(), "b".into()]).unwrap();
        assert_eq!(out, vec![(vec![1], vec![3.25]), (vec![2], vec![1.5, -2.0])]);
        let r = response(
            &[],
            br#"{"outputs":[{"name":"a","datatype":"FP32","shape":[1,2],"data":[0.5,1]}]}"#
                .to_vec(),
        );
        assert_eq!(
            parse_outputs(&r, &["a".into()]).unwrap(),
            vec![(vec![1, 2], vec![0.5, 1.0])]
        );
        let e = parse_outputs(&r, &["a".into(), "c".into()]).unwrap_err();
        assert!(e.contains("lacks output c"), "{e}");
        let r = response(
            &[],
            br#"{"outputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[1]}]}"#.to_vec(),
        );
        assert!(
            parse_outputs(&r, &["a".into()])
                .unwrap_err()
                .contains("INT64")
        );
        let r = response(&[("Inference-Header-Content-Length", "20")], br#"{"outputs":[{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}"#.to_vec());
        assert!(parse_outputs(&r, &["a".into()]).is_err());
    }
}
