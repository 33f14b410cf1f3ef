// SPDX-License-Identifier: MPL-2.0
//! A Triton Inference Server for tests and benches: `pipelines/triton-server.sh serve` as a
//! child process on a loopback port, and python-backend repositories written by
//! `python -m qoe_onnx.triton` (the script's `repo`).

#![allow(dead_code)] // each test or bench uses part of it

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::repo;

/// A tritonserver child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Triton {
    child: Child,
    /// Stopped or killed, and its stubs gone: nothing left for `drop`.
    done: bool,
    port: u16,
    grpc_port: u16,
    repository: PathBuf,
    log: PathBuf,
}

impl Triton {
    /// Starts a server on `repository`, HTTP on `port` and gRPC on a free port, and waits
    /// until it is ready.
    pub fn start(repository: &Path, port: u16) -> Triton {
        Triton::start_on(repository, port, free_port())
    }

    pub fn start_on(repository: &Path, port: u16, grpc_port: u16) -> Triton {
        let script = repo().join("pipelines/triton-server.sh");
        assert!(
            repo().join(".cache/triton/bin/python").is_file(),
            "no Triton in .cache/triton: run `bash pipelines/triton-server.sh setup` (tests/run.sh does)"
        );
        let log = repository.with_extension(format!("{port}.log"));
        let child = Command::new("bash")
            .arg(script)
            .arg("serve")
            .arg(repository)
            .arg(port.to_string())
            .arg(grpc_port.to_string())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut server = Triton {
            child,
            done: false,
            port,
            grpc_port,
            repository: repository.to_owned(),
            log,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn grpc_url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.grpc_port)
    }

    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "tritonserver exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if http_status(self.port, "/v2/health/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "tritonserver not ready in 120 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until && self.child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
    }

    /// Kills the server as a crash would (SIGKILL), then the python backend stubs it leaves
    /// (most see it gone and exit; not always at once).
    pub fn kill(&mut self) {
        let mut regions = shm_regions(&format!("/proc/{}/maps", self.child.id()));
        let _ = self.child.kill();
        let _ = self.child.wait();
        regions.extend(self.kill_stubs());
        for region in regions {
            let _ = std::fs::remove_file(region);
        }
        self.done = true;
    }

    /// Kills what still runs a model of this repository (found by its path in /proc); returns
    /// the shared memory they mapped, which a killed server leaves in /dev/shm.
    fn kill_stubs(&self) -> Vec<PathBuf> {
        let needle = format!("{}/", self.repository.display());
        let mut regions = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&needle) {
                continue;
            }
            regions.extend(shm_regions(&format!("/proc/{pid}/maps")));
            // SAFETY: a plain kill(2) of a process of this test's own making.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        regions
    }

    /// The same repository on the same port again.
    pub fn restart(&mut self) {
        if !self.done {
            self.stop();
        }
        *self = Triton::start_on(&self.repository.clone(), self.port, self.grpc_port);
    }
}

/// The python backend's shared memory files a process maps (its `/proc/PID/maps`).
fn shm_regions(maps: &str) -> Vec<PathBuf> {
    let mut regions: Vec<PathBuf> = std::fs::read_to_string(maps)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with("/dev/shm/triton_python_backend"))
        .map(PathBuf::from)
        .collect();
    regions.dedup();
    regions
}

impl Drop for Triton {
    fn drop(&mut self) {
        if !self.done {
            self.stop();
        }
    }
}

/// The status of a GET on loopback, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A python-backend repository holding the graphs of `bundles`, in this process's scratch
/// folder under `name`.
pub fn repository(name: &str, bundles: &[&Path]) -> PathBuf {
    repository_with(name, bundles, &[])
}

/// [`repository`] with more options of `qoe_onnx.triton` (`--threads 1`).
pub fn repository_with(name: &str, bundles: &[&Path], options: &[&str]) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("triton-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    for dir in bundles {
        let status = Command::new("bash")
            .arg(repo().join("pipelines/triton-server.sh"))
            .arg("repo")
            .arg(dir)
            .arg(&out)
            .args(options)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "qoe_onnx.triton failed on {}",
            dir.display()
        );
    }
    out
}
