// SPDX-License-Identifier: MPL-2.0
//! What running a bundle's graphs on an inference server costs, in one run:
//! `cargo bench --bench remote`.
//!
//! A Triton Inference Server (PyPI's nvidia-pytriton, python backend running onnxruntime,
//! `pipelines/triton-server.sh`) serves the default bundle on loopback, one ONNX Runtime thread
//! per model; the local scorer also runs one thread per graph. Both score the same synthetic
//! 8 s window (320×180, 30 fps), and the bench prints, for gRPC and for HTTP:
//! - **per window, decoder only** (what the element runs per window once features are
//!   cached): p50 and p99, local and remote, and the latency remote adds;
//! - **whole window** (every keyframe and frame encoded, then the decoder): the same;
//! - **8 streams**: 8 threads scoring windows at once against one server, against the same 8
//!   threads on one shared local scorer: windows per second, and the ratio.
//!
//! This machine is both client and server, so the remote figures include the server's CPU:
//! they show the protocol's overhead, not what a GPU pool gives. Environment:
//! `QOE_BENCH_BUNDLE` (default models/micro-vqa2-streaming), `ORT_DYLIB_PATH`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use qoe_model::{Scorer, SessionOptions};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/triton.rs"]
mod triton;

const FPS: f64 = 30.0;
const DECODER_RUNS: usize = 20;
const WINDOW_RUNS: usize = 6;
const STREAMS: usize = 8;
const WINDOWS_PER_STREAM: usize = 4;

fn percentile(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[((times.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds of each of `runs` calls of `f`.
fn timed(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn row(what: &str, local: &mut [f64], remote: &mut [f64]) {
    let (l50, l99) = (percentile(local, 0.5), percentile(local, 0.99));
    let (r50, r99) = (percentile(remote, 0.5), percentile(remote, 0.99));
    println!(
        "{what:<22} local p50 {l50:8.1} ms  p99 {l99:8.1} ms | remote p50 {r50:8.1} ms  p99 {r99:8.1} ms | added p50 {:+8.1} ms",
        r50 - l50
    );
}

/// Windows per second of `STREAMS` threads scoring on `scorer` at once.
fn streams(scorer: &Arc<Scorer>, features: &Arc<qoe_model::WindowFeatures>) -> f64 {
    let t = Instant::now();
    let threads: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (scorer, features) = (scorer.clone(), features.clone());
            std::thread::spawn(move || {
                for _ in 0..WINDOWS_PER_STREAM {
                    scorer.score_window(&features).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    (STREAMS * WINDOWS_PER_STREAM) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    gst::init().unwrap();
    common::init_ort();
    let bundle: PathBuf = std::env::var("QOE_BENCH_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/micro-vqa2-streaming")
        });
    eprintln!("starting Triton with {} ...", bundle.display());
    let t = Instant::now();
    let repository = triton::repository_with("bench", &[&bundle], &["--threads", "1"]);
    let server = triton::Triton::start(&repository, triton::free_port());
    println!(
        "Triton ready in {:.1} s (repository written and models loaded)",
        t.elapsed().as_secs_f64()
    );

    let local = Arc::new(
        Scorer::open_with(
            &bundle,
            &SessionOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let frames = common::textured_frames((8.0 * FPS) as usize);
    let features = Arc::new(local.clip_features(&frames, FPS).unwrap());
    let mut local_decoder = timed(DECODER_RUNS, || {
        local.score_window(&features).unwrap();
    });
    let mut local_window = timed(WINDOW_RUNS, || {
        local.score(&frames, FPS, None).unwrap();
    });
    let local_rate = streams(&local, &features);
    for url in [server.grpc_url(), server.url()] {
        println!("-- {url}");
        let t = Instant::now();
        let remote = Arc::new(
            Scorer::open_with(
                &bundle,
                &SessionOptions {
                    server: Some(url.clone()),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        println!(
            "remote scorer opened in {:.2} s (bundle digest over every graph file, models checked)",
            t.elapsed().as_secs_f64()
        );
        let (a, b) = (
            local.score_window(&features).unwrap().score.unwrap(),
            remote.score_window(&features).unwrap().score.unwrap(),
        );
        println!(
            "score local {a:.6}, remote {b:.6}, difference {:.1e}",
            (a - b).abs()
        );
        let mut r = timed(DECODER_RUNS, || {
            remote.score_window(&features).unwrap();
        });
        row("decoder per window", &mut local_decoder, &mut r);
        let mut r = timed(WINDOW_RUNS, || {
            remote.score(&frames, FPS, None).unwrap();
        });
        row("whole 8 s window", &mut local_window, &mut r);
        let remote_rate = streams(&remote, &features);
        println!(
            "{STREAMS} streams, decoder windows/s: local {local_rate:.2}, one server {remote_rate:.2} (remote/local {:.2})",
            remote_rate / local_rate
        );
    }
    drop(server);
}
