// SPDX-License-Identifier: MPL-2.0
//! A bundle's graphs on a KServe v2 inference server (Triton, KServe, MLServer), over HTTP
//! ([`http`]: HTTP/1.1 with Triton's binary tensor extension) or gRPC ([`grpc`]: the open
//! inference protocol's `GRPCInferenceService`, tensors as raw bytes).
//!
//! `python -m qoe_onnx.triton` writes one server model per graph, named
//! [`model_name`]`(digest, part)`: the digest ([`bundle_digest`]) covers the manifest and
//! every graph file, so a probe never runs another bundle's graphs. The models are checked
//! (present, ready, the manifest's inputs and outputs) before the first window; while the
//! server cannot be reached the check waits, and every call fails at once until the next
//! try, which backs off from 0.5 s to 30 s. Failures are errors of the window (a warning and
//! a stale flag in the element), never a wait on the stream.

mod grpc;
mod http;

use std::io::Read;
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

/// SHA-256 over the manifest's bytes, then each part (in name order): its name, a zero byte,
/// its graph file's SHA-256 and, when it has one, its external data file's (`<file>.data`).
/// `python -m qoe_onnx.triton` computes the same.
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
        let mut data = path.clone().into_os_string();
        data.push(".data");
        let data = std::path::PathBuf::from(data);
        if data.is_file() {
            outer.update(file_sha256(&data)?);
        }
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

/// The protocol a server is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Grpc,
}

/// Where the server is: `http://host:port` or `grpc://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn parse(url: &str) -> Result<ServerAddress> {
        let bad = |why: &str| Error::Runtime(format!("inference server {url:?}: {why}"));
        let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest, 80)
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            (Scheme::Grpc, rest, 8001)
        } else {
            return Err(bad(
                "expected http://host:port or grpc://host:port (Triton: 8000 and 8001)",
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("expected scheme://host:port, without a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 address without a port has colons inside its brackets only.
            Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
                (host, port)
            }
            _ => (rest, default_port),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("expected scheme://host:port"));
        }
        Ok(ServerAddress {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    /// `host:port`, bracketing an IPv6 host.
    fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Grpc => "grpc",
        };
        format!("{scheme}://{}", self.authority())
    }
}

/// A tensor in a model's metadata (KServe v2's JSON field names).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct TensorMeta {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

/// A model's inputs and outputs as the server declares them.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
struct Metadata {
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
}

/// Why a call failed.
#[derive(Debug)]
enum Failure {
    /// The server could not be reached or did not answer in time: back off.
    Transport(String),
    /// The server has no such model.
    Missing,
    /// The server answered with an error.
    Answer(String),
}

/// The calls of the protocol this client makes, in either transport.
trait Protocol: Send + Sync {
    fn metadata(&self, model: &str) -> std::result::Result<Metadata, Failure>;
    fn ready(&self, model: &str) -> std::result::Result<bool, Failure>;
    /// The names of the models in the server's repository (Triton's extension).
    fn repository(&self) -> std::result::Result<Vec<String>, Failure>;
    /// Runs `model`; returns `outputs` in that order.
    fn infer(
        &self,
        model: &str,
        inputs: &[(String, Input)],
        outputs: &[String],
    ) -> std::result::Result<Vec<Values>, Failure>;
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

/// A server model for a part: its name, and the manifest's inputs and outputs.
struct Served {
    model: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

/// One server, shared by every graph of a scorer: its client, the backoff and the check of
/// its models.
pub struct Server {
    url: String,
    protocol: Box<dyn Protocol>,
    backoff: Mutex<Backoff>,
    check: Mutex<Check>,
    models: Vec<Served>,
    bundle_name: String,
    digest: String,
}

impl Server {
    /// Runs `call` unless the server is in backoff; a transport failure starts or lengthens
    /// the backoff, any answer ends it.
    fn attempt<T>(
        &self,
        call: impl FnOnce(&dyn Protocol) -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, Failure> {
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
        let result = call(self.protocol.as_ref());
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Err(Failure::Transport(why)) => {
                backoff.failures += 1;
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (backoff.failures - 1).min(10))
                    .min(BACKOFF_MAX);
                backoff.retry_at = Some(Instant::now() + wait);
                backoff.last = format!("inference server {} unreachable: {why}", self.url);
                return Err(Failure::Transport(backoff.last.clone()));
            }
            _ => *backoff = Backoff::default(),
        }
        result
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
        for served in &self.models {
            match self.attempt(|p| p.metadata(&served.model)) {
                Ok(meta) => {
                    if let Err(why) = self.compare(served, &meta) {
                        *check = Check::Failed(why.clone());
                        return Err(Error::Server(why));
                    }
                }
                Err(Failure::Transport(_)) => return Ok(false),
                Err(Failure::Missing) => missing.push(served.model.clone()),
                Err(Failure::Answer(why)) => {
                    return Err(Error::Server(format!(
                        "inference server {}: model {}: {why}",
                        self.url, served.model
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
        for served in &self.models {
            match self.attempt(|p| p.ready(&served.model)) {
                Ok(true) => {}
                Err(Failure::Transport(_)) => return Ok(false),
                // Not ready yet (loading): not a wrong model; checked again later.
                Ok(false) | Err(_) => {
                    return Err(Error::Server(format!(
                        "inference server {}: model {} is not ready",
                        self.url, served.model
                    )));
                }
            }
        }
        *check = Check::Passed;
        Ok(true)
    }

    /// The gst-qoe bundles whose models the server holds, as a clause of the "no model"
    /// error.
    fn held_bundles(&self) -> String {
        let Ok(names) = self.attempt(|p| p.repository()) else {
            return String::new();
        };
        let mut digests: Vec<String> = names
            .iter()
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

    /// Compares a model's metadata with the manifest's inputs and outputs.
    fn compare(&self, served: &Served, meta: &Metadata) -> std::result::Result<(), String> {
        let model = &served.model;
        for (what, specs, tensors) in [
            ("input", &served.inputs, &meta.inputs),
            ("output", &served.outputs, &meta.outputs),
        ] {
            let mut got: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            let mut declared: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            got.sort();
            declared.sort();
            if got != declared {
                return Err(format!(
                    "inference server {}: model {model} has {what}s {got:?}; the bundle declares {declared:?}",
                    self.url
                ));
            }
            for spec in specs.iter() {
                let tensor = tensors
                    .iter()
                    .find(|t| t.name == spec.name)
                    .expect("names compared");
                let want_type = kserve_datatype(&spec.dtype);
                let fits = tensor.shape.len() == spec.shape.len()
                    && tensor
                        .shape
                        .iter()
                        .zip(&spec.shape)
                        .all(|(got, want)| match want {
                            Dim::Fixed(n) => *got == -1 || *got == *n,
                            Dim::Named(_) => *got == -1,
                        });
                if tensor.datatype != want_type || !fits {
                    return Err(format!(
                        "inference server {}: model {model}'s {what} {} is {} {:?}; the bundle declares {want_type} {:?}",
                        self.url, spec.name, tensor.datatype, tensor.shape, spec.shape
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
        if !server.check_models()? {
            let backoff = server.backoff.lock().unwrap_or_else(|e| e.into_inner());
            return Err(Error::Server(backoff.last.clone()));
        }
        server
            .attempt(|p| p.infer(&self.model, &inputs, &self.outputs))
            .map_err(|f| match f {
                Failure::Transport(why) => Error::Server(why),
                Failure::Missing => Error::graph(
                    &self.name,
                    format!(
                        "inference server {} no longer has model {}",
                        server.url, self.model
                    ),
                ),
                Failure::Answer(why) => Error::graph(
                    &self.name,
                    format!(
                        "inference server {} model {}: {why}",
                        server.url, self.model
                    ),
                ),
            })
    }
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
            Served {
                model: model_name(&digest, name),
                inputs: part.inputs.clone(),
                outputs: part.outputs.clone(),
            }
        })
        .collect();
    let protocol: Box<dyn Protocol> = match address.scheme {
        Scheme::Http => Box::new(http::Client::new(address.clone(), timeout)),
        Scheme::Grpc => Box::new(grpc::Client::new(&address, timeout)?),
    };
    let server = Arc::new(Server {
        url: address.url(),
        protocol,
        backoff: Mutex::new(Backoff::default()),
        check: Mutex::new(Check::Pending),
        models,
        bundle_name: bundle.manifest.name.clone(),
        digest,
    });
    // A wrong repository fails the start; an unreachable server does not.
    server.check_models()?;
    Ok(names
        .iter()
        .zip(&server.models)
        .map(|(name, served)| {
            let graph: Box<dyn GraphRunner> = Box::new(RemoteGraph {
                name: (*name).clone(),
                model: served.model.clone(),
                outputs: served.outputs.iter().map(|o| o.name.clone()).collect(),
                server: server.clone(),
            });
            ((*name).clone(), graph)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = ServerAddress::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port),
            (Scheme::Http, "127.0.0.1", 8000)
        );
        assert_eq!(a.url(), "http://127.0.0.1:8000");
        let a = ServerAddress::parse("grpc://[::1]:8001/").unwrap();
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port, a.url().as_str()),
            (Scheme::Grpc, "::1", 8001, "grpc://[::1]:8001")
        );
        assert_eq!(ServerAddress::parse("http://pool").unwrap().port, 80);
        assert_eq!(ServerAddress::parse("grpc://pool").unwrap().port, 8001);
        assert_eq!(ServerAddress::parse("grpc://[::1]").unwrap().port, 8001);
        for (bad, says) in [
            ("h:8000", "expected http://host:port or grpc://host:port"),
            (
                "https://h:8000",
                "expected http://host:port or grpc://host:port",
            ),
            ("http://h:99999", "port \"99999\""),
            ("http://h:8000/v2", "without a path"),
            ("http://:8000", "expected scheme://host:port"),
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
}
