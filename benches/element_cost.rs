// SPDX-License-Identifier: MPL-2.0
//! What `qoemonitor` costs on a decoded 1080p30 stream, next to `identity`, in one run.
//!
//! `cargo bench --bench element_cost` encodes 10 s of 1080p30 `testsrc2` with FFmpeg (x264),
//! then plays `filesrc ! decodebin ! {identity|qoemonitor} ! fakesink` as fast as it goes,
//! alternating the two, and compares process CPU time (all threads, decoder included).
//! For scale it also times FFmpeg decoding alone and with `freezedetect,blockdetect,
//! blurdetect,blackdetect`. Goal: the qoemonitor pipeline costs at most 1.05× the identity one.
//!
//! Environment: `QOE_BENCH_ROUNDS` (default 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gst::prelude::*;

#[path = "../tests/common/mod.rs"]
mod common;

fn cpu_seconds(who: i32) -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn video() -> PathBuf {
    eprintln!("encoding the 1080p30 test stream (once) ...");
    common::clip(
        "bench-1080p30.mp4",
        "testsrc2=size=1920x1080:rate=30:duration=10",
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ],
    )
}

/// CPU seconds and wall seconds of one run of the pipeline to EOS.
fn run(description: &str) -> (f64, f64) {
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let (cpu0, wall0) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (
        cpu_seconds(libc::RUSAGE_SELF) - cpu0,
        wall0.elapsed().as_secs_f64(),
    )
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
            "filesrc location={} ! decodebin ! {element} ! fakesink sync=false",
            video.display()
        )
    };

    run(&pipeline("identity")); // warm caches and the plugin registry
    let (mut identity, mut monitor) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        identity.push(run(&pipeline("identity")).0);
        monitor.push(run(&pipeline("qoemonitor")).0);
    }
    let (id, qoe) = (median(identity), median(monitor));
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
