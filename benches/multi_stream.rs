// SPDX-License-Identifier: MPL-2.0
//! Many streams in one process, batched against unbatched, in one run:
//! `cargo bench --bench multi_stream`.
//!
//! 1. **Scoring.** 20 s of 720p30 `testsrc2` (x264, made with FFmpeg), decoded to RGB once,
//!    are scored by N = 1, 4 and 16 streams at once (one thread each, each starting at another
//!    frame so that windows fall due at different moments), as the element scores them
//!    (features cached, then the decoder per window), with the default bundle on one model
//!    shared by the N streams: once with every decoder prefill alone (`max-batch=1`, what
//!    the element did before batching) and once batched (the defaults). It prints the
//!    aggregate seconds of video scored per second of process CPU, the p50 and p99 time from
//!    a window falling due to its score (the batch's wait included), where the time goes
//!    (resize, vision, motion, decoder), the batches run and the largest score difference
//!    between the two arms (goal ≤ 1e-4).
//! 2. **End to end.** One 720p30 stream (`QOE_BENCH_SECONDS`, default 60 s of `testsrc2`)
//!    through `decodebin ! qoemonitor ! fakesink` with the default bundle and default settings
//!    but `leaky=false` (every window scored), against `identity`, alternately: seconds of
//!    video per CPU-second of what the element and its model add (goal ≥ 4), with the model
//!    already loaded (its load is printed apart), and the CPU time by thread.
//!
//! Environment: `QOE_BENCH_STREAMS` (default `1,4,16`; `none`: the end-to-end part only),
//! `QOE_BENCH_SECONDS`, `ORT_DYLIB_PATH`.

use std::collections::HashMap;
use std::sync::Arc;

use qoe_core::time::SECOND;
use qoe_model::batch::BatchOptions;
use qoe_model::preprocess::RgbImage;
use qoe_model::stream::StageTimes;
use qoe_model::{Scorer, SessionOptions};

#[path = "../tests/common/mod.rs"]
mod common;

const FPS: u64 = 30;
const WINDOW: u64 = 8 * SECOND;
const HOP: u64 = 2 * SECOND;

/// What one stream's run gave: each window's score by its start, the time from due to
/// scored per window, and the stages' times.
struct StreamRun {
    scores: HashMap<u64, f64>,
    latencies: Vec<f64>,
    stages: StageTimes,
}

/// Scores `frames` (a stream starting at frame `offset`, wrapping) as the element does.
fn run_stream(scorer: &Arc<Scorer>, frames: &[RgbImage], offset: usize) -> StreamRun {
    let mut run = StreamRun {
        scores: HashMap::new(),
        latencies: Vec::new(),
        stages: StageTimes::default(),
    };
    common::score_as_the_element_does(
        scorer,
        frames,
        offset,
        (WINDOW, HOP),
        |ready, score, took| {
            run.latencies.push(took);
            run.stages.preprocess += ready.spent.preprocess;
            run.stages.vision += ready.spent.vision;
            run.stages.motion += ready.spent.motion;
            run.stages.decoder += took;
            run.scores.insert(ready.window.start, score);
        },
    );
    run
}

struct Arm {
    throughput: f64,
    latencies: Vec<f64>,
    stages: StageTimes,
    scores: Vec<HashMap<u64, f64>>,
    windows: usize,
}

fn run_arm(scorer: &Arc<Scorer>, frames: &Arc<Vec<RgbImage>>, streams: usize) -> Arm {
    let seconds = frames.len() as f64 / FPS as f64;
    let cpu0 = common::process_cpu_seconds();
    let threads: Vec<_> = (0..streams)
        .map(|s| {
            let (scorer, frames) = (scorer.clone(), frames.clone());
            std::thread::spawn(move || run_stream(&scorer, &frames, s * 13))
        })
        .collect();
    let runs: Vec<StreamRun> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let cpu = common::process_cpu_seconds() - cpu0;
    let mut arm = Arm {
        throughput: streams as f64 * seconds / cpu,
        latencies: Vec::new(),
        stages: StageTimes::default(),
        scores: Vec::new(),
        windows: 0,
    };
    for run in runs {
        arm.windows += run.scores.len();
        arm.latencies.extend(run.latencies);
        arm.stages.preprocess += run.stages.preprocess;
        arm.stages.vision += run.stages.vision;
        arm.stages.motion += run.stages.motion;
        arm.stages.decoder += run.stages.decoder;
        arm.scores.push(run.scores);
    }
    arm.latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    arm
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn open(bundle: &std::path::Path, max_rows: usize) -> Arc<Scorer> {
    Arc::new(
        Scorer::open_with(
            bundle,
            &SessionOptions {
                batch: BatchOptions {
                    max_rows,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| {
            panic!("{e} (the default bundle's decoder graphs: bash pipelines/default-bundle.sh)")
        }),
    )
}

fn scoring(bundle: &std::path::Path) {
    let counts: Vec<usize> = std::env::var("QOE_BENCH_STREAMS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    if counts.is_empty() {
        return; // QOE_BENCH_STREAMS=none: the end-to-end part only
    }
    eprintln!("encoding and decoding 20 s of 720p30 (once) ...");
    let clip = common::testsrc_x264(1280, 720, 20);
    let frames: Arc<Vec<RgbImage>> = Arc::new(
        common::decode_rgb(&clip)
            .into_iter()
            .map(|(_, image)| image)
            .collect(),
    );
    let alone = open(bundle, 1);
    let batched = open(bundle, qoe_model::batch::DEFAULT_MAX_ROWS);
    println!(
        "{} s of 720p30 per stream, default bundle, window 8 s, hop 2 s, one ONNX Runtime thread; \
         unbatched = every decoder prefill alone, batched = max-batch {} rows, max-batch-delay {} ms:",
        frames.len() as u64 / FPS,
        qoe_model::batch::DEFAULT_MAX_ROWS,
        qoe_model::batch::DEFAULT_MAX_DELAY.as_millis()
    );
    println!(
        "| streams | arm | video s per CPU s | gain | due→scored p50 / p99 | resize / vision / motion / decoder (share of stage time) | batches (rows, largest) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut largest_difference = 0.0f64;
    for &n in &counts {
        let before = batched.batch_counts().unwrap_or_default();
        let a = run_arm(&alone, &frames, n);
        let b = run_arm(&batched, &frames, n);
        let after = batched.batch_counts().unwrap_or_default();
        for (sa, sb) in a.scores.iter().zip(&b.scores) {
            for (start, score) in sa {
                largest_difference = largest_difference.max((score - sb[start]).abs());
            }
        }
        for (name, arm, gain) in [
            ("unbatched", &a, 1.0),
            ("batched", &b, b.throughput / a.throughput),
        ] {
            let s = arm.stages;
            let total = s.total().max(1e-9);
            let batches = if name == "batched" {
                format!(
                    "{} ({} rows, {})",
                    after.batches - before.batches,
                    after.rows - before.rows,
                    after.largest
                )
            } else {
                format!("{} (alone)", arm.windows * 2)
            };
            println!(
                "| {n} | {name} | {:.2} | {gain:.2}× | {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} / {:.0} % | {batches} |",
                arm.throughput,
                percentile(&arm.latencies, 0.5) * 1e3,
                percentile(&arm.latencies, 0.99) * 1e3,
                100.0 * s.preprocess / total,
                100.0 * s.vision / total,
                100.0 * s.motion / total,
                100.0 * s.decoder / total,
            );
        }
    }
    println!(
        "largest score difference, batched against unbatched: {largest_difference:.2e} (goal <= 1e-4)"
    );
}

/// CPU seconds so far of this process's threads, summed by thread name.
fn threads_by_name() -> HashMap<String, f64> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by_name = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid … utime(14) stime(15)
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let cpu =
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick;
        // Numbered threads of one kind (avdec_h264's, GStreamer's task pools) count together.
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == ':' || c == '-');
        *by_name.entry(kind.to_owned()).or_insert(0.0) += cpu;
    }
    by_name
}

/// Process CPU seconds of one run of `description` to EOS, and the CPU seconds its threads
/// spent by thread name (those that ended before EOS are in none).
fn pipeline_cpu(description: &str) -> (f64, HashMap<String, f64>) {
    use gst::prelude::*;
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let cpu0 = common::process_cpu_seconds();
    let threads0 = threads_by_name();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{}", e.error())
            }
            _ => {}
        }
    }
    let mut threads = threads_by_name();
    for (name, cpu) in threads.iter_mut() {
        *cpu -= threads0.get(name).copied().unwrap_or(0.0);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (common::process_cpu_seconds() - cpu0, threads)
}

fn end_to_end(bundle: &std::path::Path) {
    let seconds: u64 = std::env::var("QOE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("encoding {seconds} s of 720p30 (once) ...");
    let clip = common::testsrc_x264(1280, 720, seconds);
    let pipeline = |element: &str| {
        format!(
            "filesrc location={} ! decodebin ! {element} ! fakesink sync=false",
            clip.display()
        )
    };
    let monitor = format!("qoemonitor bundle={} leaky=false", bundle.display());
    // Held, the model stays loaded between runs (the element's default options share it):
    // what is measured is the stream's cost, not the model's load, printed apart.
    let cpu0 = common::process_cpu_seconds();
    let _held = qoe_model::shared_scorer(bundle, &SessionOptions::default()).unwrap();
    println!(
        "loading the default bundle (once per process): {:.2} CPU-s",
        common::process_cpu_seconds() - cpu0
    );
    pipeline_cpu(&pipeline("identity")); // warm caches and the registry
    let (mut identity, mut scored, mut by_thread) = (Vec::new(), Vec::new(), HashMap::new());
    for _ in 0..2 {
        identity.push(pipeline_cpu(&pipeline("identity")).0);
        let (cpu, threads) = pipeline_cpu(&pipeline(&monitor));
        if scored.iter().all(|&c| cpu < c) {
            by_thread = threads;
        }
        scored.push(cpu);
    }
    let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (id, qoe) = (min(&identity), min(&scored));
    let mut threads: Vec<(String, f64)> =
        by_thread.into_iter().filter(|(_, c)| *c >= 0.05).collect();
    threads.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    println!(
        "  CPU seconds by thread in that qoemonitor run: {}",
        threads
            .iter()
            .map(|(name, cpu)| format!("{name} {cpu:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "end to end, {seconds} s of 720p30, decodebin ! {{identity|qoemonitor (default bundle, default settings, leaky=false)}} ! fakesink, \
         process CPU, the lower of 2 alternating runs: identity {id:.2} s, qoemonitor {qoe:.2} s; \
         the element and model add {:.2} s: {:.2} s of video per CPU-second (goal >= 4)",
        qoe - id,
        seconds as f64 / (qoe - id)
    );
}

fn main() {
    gst::init().unwrap();
    gstqoe::plugin_register_static().unwrap();
    common::init_ort();
    let bundle = common::default_bundle();
    scoring(&bundle);
    end_to_end(&bundle);
}
