// SPDX-License-Identifier: MPL-2.0
//! Live streams in one process: `cargo bench --bench live_streams`.
//!
//! One pipeline holds N live 640×360 30 fps streams, each `videotestsrc is-live=true` →
//! `x264enc` (ultrafast, zerolatency) → `avdec_h264` → `qoemonitor` (the default bundle,
//! default settings: `leaky=true`) → `fakesink sync=true`, all sharing one model. After a
//! warm-up (`QOE_LIVE_WARMUP`, 15 s: the model loads, the first windows fall due) it counts
//! over `QOE_LIVE_SECONDS` (45 s) each stream's windows scored and dropped and frames
//! dropped, for every N in `QOE_LIVE_STREAMS` (default `4,6,8`), once with batching off
//! (`max-batch=1`) and once at the defaults. Goal: 8 streams, default settings, no window
//! dropped. It prints the largest N without a dropped window for both arms.

use std::time::Duration;

use gst::prelude::*;

#[path = "../tests/common/mod.rs"]
mod common;

#[derive(Default, Clone, Copy)]
struct Counts {
    scored: u64,
    dropped: u64,
    frames_dropped: u64,
}

fn counts(monitors: &[gst::Element]) -> Counts {
    monitors.iter().fold(Counts::default(), |mut c, m| {
        let stats = m.property::<Option<gst::Structure>>("stats").unwrap();
        let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
        c.scored += get("windows-scored");
        c.dropped += get("windows-dropped");
        c.frames_dropped += get("frames-dropped");
        c
    })
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Runs N live streams with `max-batch` (None: the default); returns the counts over the
/// measured span.
fn run(streams: usize, max_batch: Option<u32>, warmup: Duration, span: Duration) -> Counts {
    let bundle = common::default_bundle();
    let batch = max_batch.map_or(String::new(), |b| format!(" max-batch={b}"));
    let description: Vec<String> = (0..streams)
        .map(|i| {
            format!(
                "videotestsrc is-live=true pattern=smpte horizontal-speed={} \
                 ! video/x-raw,width=640,height=360,framerate=30/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! h264parse ! avdec_h264 \
                 ! qoemonitor name=q{i} stream-id=s{i} bundle={}{batch} ! fakesink sync=true",
                1 + i % 5,
                bundle.display()
            )
        })
        .collect();
    let pipeline = gst::parse::launch(&description.join("  "))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let monitors: Vec<gst::Element> = (0..streams)
        .map(|i| pipeline.by_name(&format!("q{i}")).unwrap())
        .collect();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let wait = |span: Duration| {
        let deadline = std::time::Instant::now() + span;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
                && let gst::MessageView::Error(e) = msg.view()
            {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{}", e.error());
            }
        }
    };
    wait(warmup);
    let before = counts(&monitors);
    wait(span);
    let after = counts(&monitors);
    pipeline.set_state(gst::State::Null).unwrap();
    Counts {
        scored: after.scored - before.scored,
        dropped: after.dropped - before.dropped,
        frames_dropped: after.frames_dropped - before.frames_dropped,
    }
}

fn main() {
    gst::init().unwrap();
    gstqoe::plugin_register_static().unwrap();
    common::init_ort();
    let (warmup, span) = (
        env_secs("QOE_LIVE_WARMUP", 15),
        env_secs("QOE_LIVE_SECONDS", 45),
    );
    let counts_to_run: Vec<usize> = std::env::var("QOE_LIVE_STREAMS")
        .unwrap_or_else(|_| "4,6,8".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    println!(
        "live 640x360 30 fps x264 streams in one process, default bundle, leaky=true, {} s counted after {} s:",
        span.as_secs(),
        warmup.as_secs()
    );
    println!("| streams | arm | windows scored | windows dropped | frames dropped |");
    println!("|---|---|---|---|---|");
    let mut best = [0usize; 2];
    for &n in &counts_to_run {
        for (arm, (name, max_batch)) in [("unbatched", Some(1)), ("batched (defaults)", None)]
            .into_iter()
            .enumerate()
        {
            let c = run(n, max_batch, warmup, span);
            println!(
                "| {n} | {name} | {} | {} | {} |",
                c.scored, c.dropped, c.frames_dropped
            );
            if c.dropped == 0 && c.scored > 0 {
                best[arm] = best[arm].max(n);
            }
        }
    }
    println!(
        "largest N without a dropped window: unbatched {}, batched {} (goal: 8 at the defaults)",
        best[0], best[1]
    );
}
