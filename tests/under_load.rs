// SPDX-License-Identifier: MPL-2.0
//! The pipeline first (#35): a live 720p30 stream watched with the default bundle at default
//! settings keeps up, and sees no stall, while two other processes score a clip with the same
//! bundle as fast as they can. Judged side by side in one run against the same live stream
//! watched without a model, since what a 2-core machine's debug build holds in absolute frames
//! a second depends on the machine (one idle machine here averaged 23.1 fps with no fault in the
//! code). `benches/under_load.sh` judges the absolute goals (average >= 29.8 fps, no 5 s interval
//! below 29) on the release build.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::*;

/// A pipeline in another process scoring `clip` with `bundle`, started again whenever it ends,
/// until `stop`. Returns (runs that failed, whether one was still scoring at the stop).
fn loader(
    clip: PathBuf,
    bundle: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, bool)> {
    std::thread::spawn(move || {
        let (mut failed, mut running) = (0, false);
        while !stop.load(Ordering::SeqCst) {
            let mut child: Child = Command::new("gst-launch-1.0")
                .env("GST_PLUGIN_PATH", plugin_dir())
                .args(["-q", "filesrc", &format!("location={}", clip.display())])
                .args(["!", "decodebin", "!", "qoemonitor"])
                .arg(format!("bundle={}", bundle.display()))
                .args(["leaky=false", "!", "fakesink", "sync=false"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("gst-launch-1.0");
            running = true;
            while !stop.load(Ordering::SeqCst) {
                if let Some(status) = child.try_wait().unwrap() {
                    failed += usize::from(!status.success());
                    running = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        (failed, running)
    })
}

/// A live 720p30 stream, encoded and decoded, watched by a qoemonitor named `name` (with
/// `bundle`, or without a model), into a synchronised sink.
fn live_stream(name: &str, bundle: Option<&PathBuf>) -> String {
    let model = bundle.map_or(String::new(), |b| format!("bundle={}", b.display()));
    format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast ! avdec_h264 \
         ! qoemonitor name={name} stream-id={name} {model} stats-interval=0 ! fakesink sync=true "
    )
}

#[test]
fn a_live_stream_keeps_its_frame_rate_beside_two_scoring_pipelines() {
    init();
    init_ort();
    let bundle = default_bundle();
    let clip = testsrc_x264(1280, 720, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|_| loader(clip.clone(), bundle.clone(), stop.clone()))
        .collect();

    // Two live streams in one pipeline, alike but for the model.
    let pipeline = gst::parse::launch(&format!(
        "{}{}",
        live_stream("watched", Some(&bundle)),
        live_stream("unwatched", None)
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let warnings = Arc::new(AtomicUsize::new(0));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let stats = |name: &str, field: &str| {
        pipeline
            .by_name(name)
            .unwrap()
            .property::<Option<gst::Structure>>("stats")
            .unwrap()
            .get::<u64>(field)
            .unwrap()
    };
    let frames = || (stats("watched", "frames"), stats("unwatched", "frames"));
    // Start-up is not counted: three processes load the model at once.
    std::thread::sleep(Duration::from_secs(15));
    let (started, first) = (Instant::now(), frames());
    std::thread::sleep(Duration::from_secs(30));
    let (seconds, last) = (started.elapsed().as_secs_f64(), frames());
    let watched = (last.0 - first.0) as f64 / seconds;
    let unwatched = (last.1 - first.1) as f64 / seconds;
    let (stalls, scored, dropped) = (
        stats("watched", "stalls"),
        stats("watched", "windows-scored"),
        stats("watched", "windows-dropped"),
    );
    for message in bus.iter() {
        match message.view() {
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            gst::MessageView::Warning(_) => {
                warnings.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    stop.store(true, Ordering::SeqCst);
    let loads: Vec<(usize, bool)> = loaders.into_iter().map(|l| l.join().unwrap()).collect();
    eprintln!(
        "live 720p30 beside 2 scoring pipelines (failed runs, scoring at the end: {loads:?}): \
         watched {watched:.2} fps, without a model {unwatched:.2} fps (ratio {:.3}); {stalls} stalls; \
         windows scored {scored}, dropped {dropped}",
        watched / unwatched
    );
    assert!(
        loads
            .iter()
            .all(|(failed, running)| *failed == 0 && *running),
        "both loaders scored throughout: {loads:?}"
    );
    assert_eq!(stalls, 0, "a stall the model caused");
    // The model runs off the streaming thread, below its priority: the watched stream keeps
    // the pace of the one without a model (0.974 on this 2-core machine, both near 22 fps).
    // Inference on the streaming thread would hold it for a decoder prefill every 2 s hop.
    // Threads that take the whole machine (the priorities before #35) slow both streams
    // alike: that is for the bench to catch, on its absolute goals.
    assert!(
        watched >= 0.90 * unwatched,
        "watched {watched:.2} fps against {unwatched:.2} without a model"
    );
    assert_eq!(warnings.load(Ordering::Relaxed), 0, "warnings on the bus");
}
