// SPDX-License-Identifier: MPL-2.0
//! What `qoemonitor` costs on a decoded 1080p30 stream, next to `identity`, in one run.
//!
//! `cargo bench --bench element_cost` encodes 10 s of 1080p30 `testsrc2` with FFmpeg (x264),
//! then plays `filesrc ! decodebin ! {identity|qoemonitor} ! fakesink` as fast as it goes,
//! alternating the two, and compares process CPU time (all threads, decoder included).
//! For scale it also times FFmpeg decoding alone and with `freezedetect,blockdetect,
//! blurdetect,blackdetect`. Goal: the qoemonitor pipeline costs at most 1.05× the identity one.
//!
//! With scoring on (`bundle=` the tiny VQA²-Streaming fixture, leaky as in live use) the model
//! works on its own threads, so process CPU time grows by the model's work; what must stay
//! within 1.05× is the streaming thread (decoder, element, sink: the CPU time of the thread
//! that delivers buffers to fakesink, from the first buffer to EOS), printed for all three.
//!
//! Environment: `QOE_BENCH_ROUNDS` (default 5); `ORT_DYLIB_PATH` (else `.cache/venv`'s).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gst::prelude::*;

#[path = "../tests/common/mod.rs"]
mod common;

use common::cpu_seconds;

fn video() -> PathBuf {
    eprintln!("encoding the 1080p30 test stream (once) ...");
    common::testsrc_x264(1920, 1080, 10)
}

/// CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU seconds so far of this process's threads whose names start with `prefix`.
fn threads_cpu_seconds(prefix: &str) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // pid (comm) state ppid … utime(14) stime(15)
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            name.starts_with(prefix).then(|| {
                let f: Vec<&str> = rest.split(' ').collect();
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick
            })
        })
        .sum()
}

/// Process CPU seconds, wall seconds, and the streaming thread's CPU seconds (first buffer
/// at the sink to EOS there) of one run of the pipeline to EOS. The sink is named `sink`.
fn run(description: &str) -> (f64, f64, f64) {
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let streaming = std::sync::Arc::new(std::sync::Mutex::new((None::<f64>, 0.0f64)));
    let seen = streaming.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let mut s = seen.lock().unwrap();
                let now = thread_cpu_seconds();
                match &info.data {
                    Some(gst::PadProbeData::Buffer(_)) if s.0.is_none() => s.0 = Some(now),
                    Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos => {
                        s.1 = now - s.0.unwrap_or(now)
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    let (cpu0, wall0) = (common::process_cpu_seconds(), Instant::now());
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    // The model's own threads (features, decoder, and ONNX Runtime's pool, which the
    // features and score threads run on) are counted apart before they go away at NULL.
    let model = threads_cpu_seconds("qoe-");
    let process = common::process_cpu_seconds() - cpu0;
    pipeline.set_state(gst::State::Null).unwrap();
    let thread = streaming.lock().unwrap().1;
    (process - model, wall0.elapsed().as_secs_f64(), thread)
}

fn ffmpeg_cpu(video: &Path, filters: Option<&str>) -> f64 {
    let before = cpu_seconds(libc::RUSAGE_CHILDREN);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-i"]).arg(video);
    if let Some(f) = filters {
        cmd.args(["-vf", f]);
    }
    assert!(cmd.args(["-f", "null", "-"]).status().unwrap().success());
    cpu_seconds(libc::RUSAGE_CHILDREN) - before
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    gst::init().unwrap();
    gstqoe::plugin_register_static().unwrap();
    let video = video();
    let rounds: usize = std::env::var("QOE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let pipeline = |element: &str| {
        format!(
            "filesrc location={} ! decodebin ! {element} ! fakesink name=sink sync=false",
            video.display()
        )
    };
    common::init_ort();
    let scoring = format!(
        // One intra-op thread: all of ONNX Runtime's work runs on the qoe-* worker threads,
        // so that it can be told apart from the pipeline's own.
        "qoemonitor bundle={} threads=1",
        common::bundle("vqa2-tiny-streaming").display()
    );

    run(&pipeline("identity")); // warm caches and the plugin registry
    let (mut identity, mut monitor, mut scored) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        identity.push(run(&pipeline("identity")));
        monitor.push(run(&pipeline("qoemonitor")));
        scored.push(run(&pipeline(&scoring)));
    }
    let pick = |runs: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        median(runs.iter().map(f).collect())
    };
    let (id, qoe) = (pick(&identity, |r| r.0), pick(&monitor, |r| r.0));
    let (id_t, qoe_t, scored_t) = (
        pick(&identity, |r| r.2),
        pick(&monitor, |r| r.2),
        pick(&scored, |r| r.2),
    );
    let frames = 300.0;
    println!(
        "decoded 1080p30, 10 s (300 frames), median of {rounds} alternating runs, process CPU time:"
    );
    println!("  decode ! identity   ! fakesink  {id:7.3} s");
    println!("  decode ! qoemonitor ! fakesink  {qoe:7.3} s");
    println!(
        "  ratio qoemonitor / identity     {:7.3}x  (goal <= 1.05x)",
        qoe / id
    );
    println!(
        "  qoemonitor extra per frame      {:7.1} us",
        (qoe - id) / frames * 1e6
    );

    let scored_pipeline = pick(&scored, |r| r.0);
    println!(
        "  decode ! qoemonitor bundle=… ! fakesink, without the model's threads {scored_pipeline:7.3} s  \
         ({:.3}x identity, goal <= 1.05x)",
        scored_pipeline / id
    );
    println!("streaming thread only (decoder, element, sink), CPU time, median:");
    println!("  identity                        {id_t:7.3} s");
    println!(
        "  qoemonitor                      {qoe_t:7.3} s  ({:.3}x identity)",
        qoe_t / id_t
    );
    println!(
        "  qoemonitor + scoring (leaky)    {scored_t:7.3} s  ({:.3}x identity)",
        scored_t / id_t
    );

    let plain = ffmpeg_cpu(&video, None);
    let detect = ffmpeg_cpu(
        &video,
        Some("freezedetect,blockdetect,blurdetect,blackdetect"),
    );
    println!("for scale, FFmpeg on the same file:");
    println!("  decode only                     {plain:7.3} s");
    println!(
        "  freeze/block/blur/blackdetect   {detect:7.3} s  ({:.1}x decode)",
        detect / plain
    );
}
