// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor` in real pipelines on real encoded video.
//!
//! The test videos are made here with FFmpeg (Debian's `ffmpeg`): 8 s of moving `testsrc2`,
//! where source frames 150..=194 are replaced by frame 149 (a content freeze) and every frame
//! from 60 on is shifted 1.5 s later (a timestamp hole, i.e. a stall). x264 encodes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gst::prelude::*;

const MS: u64 = 1_000_000;
const FPS: u64 = 30;
const FRAME: u64 = 1_000_000_000 / FPS;

/// Where the stall and freeze are in the test video, in nanoseconds of stream time.
const STALL_START: u64 = 60 * 1_000_000_000 / FPS; // 2.0 s
const STALL_DURATION: u64 = 1500 * MS;
const FREEZE_START: u64 = 149 * 1_000_000_000 / FPS + STALL_DURATION; // frame 149, after the hole
const FREEZE_DURATION: u64 = (195 - 149) * 1_000_000_000 / FPS; // 1.533 s

fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().unwrap();
        gstqoe::plugin_register_static().expect("register plugin");
    });
}

/// Makes (once per container) the test video and returns its path.
fn test_video(container: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hole-and-freeze.{container}"));
    if path.exists() {
        return path;
    }
    let filter = "[0]split[a][b];[a][b]freezeframes=first=150:last=194:replace=149,\
                  setpts='PTS+if(gte(N,60),1.5/TB,0)'[v]";
    let tmp = path.with_extension(format!("part.{container}"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=8"])
        .args(["-filter_complex", filter, "-map", "[v]"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-fps_mode", "passthrough"])
        .args(["-video_track_timescale", "90000"])
        .arg(&tmp)
        .status()
        .expect("ffmpeg (Debian package ffmpeg) must be installed for these tests");
    assert!(status.success(), "ffmpeg failed to make {}", path.display());
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Runs `pipeline` to EOS and returns the `qoe-*` element messages in bus order.
fn run(description: &str) -> Vec<gst::Structure> {
    init();
    let pipeline = gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name().starts_with("qoe-")) {
                    messages.push(s.to_owned());
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    messages
}

fn named<'a>(messages: &'a [gst::Structure], name: &str) -> Vec<&'a gst::Structure> {
    messages.iter().filter(|s| s.name() == name).collect()
}

fn t(s: &gst::Structure, field: &str) -> u64 {
    s.get::<u64>(field).unwrap_or_else(|e| panic!("{field} in {s}: {e}"))
}

fn assert_near(what: &str, got: u64, want: u64, tolerance: u64) {
    assert!(got.abs_diff(want) <= tolerance, "{what}: got {got} ns, want {want} ns ± {tolerance}");
}

fn check_hole_and_freeze(messages: &[gst::Structure]) {
    let stalls = named(messages, "qoe-stall");
    assert_eq!(stalls.len(), 2, "one stall, start and end: {stalls:?}");
    assert_eq!(stalls[0].get::<&str>("event").unwrap(), "start");
    assert_eq!(stalls[1].get::<&str>("event").unwrap(), "end");
    assert_eq!(stalls[1].get::<&str>("cause").unwrap(), "timestamp-gap");
    assert_near("stall start", t(stalls[1], "start"), STALL_START, FRAME);
    assert_near("stall duration", t(stalls[1], "duration"), STALL_DURATION, FRAME);

    let freezes = named(messages, "qoe-freeze");
    assert_eq!(freezes.len(), 2, "one freeze, start and end: {freezes:?}");
    assert_eq!(freezes[0].get::<&str>("event").unwrap(), "start");
    assert_near("freeze start", t(freezes[0], "start"), FREEZE_START, FRAME);
    // Reported once the picture has been still for freeze-min-duration (1 s).
    assert_near("freeze reported at", t(freezes[0], "stream-time"), FREEZE_START, FRAME);
    assert_near("freeze duration", t(freezes[1], "duration"), FREEZE_DURATION, FRAME);
    assert_near("freeze end", t(freezes[1], "stream-time"), FREEZE_START + FREEZE_DURATION, FRAME);

    let stats = named(messages, "qoe-stats");
    let last = stats.last().expect("final qoe-stats at EOS");
    assert_eq!(last.get::<u64>("frames").unwrap(), 240);
    assert_eq!(last.get::<u64>("stalls").unwrap(), 1);
    assert_eq!(last.get::<u64>("freezes").unwrap(), 1);
    assert_near("stall time", t(last, "stall-time"), STALL_DURATION, FRAME);
    // 1.5 s of 9.5 s watched.
    let ratio = last.get::<f64>("stall-ratio").unwrap();
    assert!((ratio - 1.5 / 9.5).abs() < 0.01, "stall ratio {ratio}");
    assert!(!last.get::<bool>("live").unwrap());
    // Periodic stats every second of stream time, then the final one.
    assert!(stats.len() >= 9, "{} stats messages", stats.len());
}

#[test]
fn matroska_hole_and_freeze_are_found_at_the_right_times() {
    let video = test_video("mkv");
    let messages = run(&format!("filesrc location={} ! decodebin ! qoemonitor ! fakesink", video.display()));
    check_hole_and_freeze(&messages);
}

#[test]
fn mp4_hole_is_found_although_the_frame_before_it_is_stretched() {
    // MP4 has no holes: the frame before one simply lasts 1.53 s. The caps' frame rate
    // reveals it.
    let video = test_video("mp4");
    let messages = run(&format!("filesrc location={} ! decodebin ! qoemonitor ! fakesink", video.display()));
    check_hole_and_freeze(&messages);
}

#[test]
fn stream_time_follows_a_seek_segment() {
    // Played from 1 s on: stream times stay those of the file.
    init();
    let video = test_video("mkv");
    let pipeline = gst::parse::launch(&format!("filesrc location={} ! decodebin ! qoemonitor ! fakesink", video.display()))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    pipeline.state(gst::ClockTime::from_seconds(10)).0.unwrap();
    pipeline
        .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, gst::ClockTime::from_seconds(1))
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut stalls = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) if e.structure().is_some_and(|s| s.name() == "qoe-stall") => {
                stalls.push(e.structure().unwrap().to_owned())
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(stalls.len(), 2, "{stalls:?}");
    assert_near("stall start (stream time)", t(&stalls[1], "start"), STALL_START, FRAME);
    assert_near("stall running time", t(&stalls[1], "running-time"), STALL_START + STALL_DURATION - 1_000 * MS, FRAME);
}

#[test]
fn gst_launch_prints_the_messages_as_a_user_sees_them() {
    let video = test_video("mkv");
    // The cdylib lies next to the test binary's deps folder.
    let plugin_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    assert!(plugin_dir.join("libgstqoe.so").exists(), "libgstqoe.so not in {}", plugin_dir.display());
    let output = Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", &plugin_dir)
        .args(["-m", "filesrc", &format!("location={}", video.display()), "!", "decodebin", "!"])
        .args(["qoemonitor", "stream-id=lobby-cam", "!", "fakesink"])
        .output()
        .expect("gst-launch-1.0 (Debian package gstreamer1.0-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "gst-launch failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("qoe-")).collect();
    assert!(
        lines.iter().any(|l| l.contains("qoe-stall, event=(string)start, cause=(string)timestamp-gap")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("qoe-freeze, event=(string)end")), "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("stream-id=(string)lobby-cam")), "{lines:#?}");
    assert!(stdout.contains("Got EOS from element"), "{stdout}");
}

/// Every accepted raw format: moving pictures never freeze, a still picture does, and
/// frames are counted.
#[test]
fn every_accepted_format_is_read_without_conversion() {
    let formats = [
        "I420", "YV12", "NV12", "NV21", "Y41B", "Y42B", "Y444", "NV16", "NV24", "A420", "GRAY8", "YUY2", "YVYU",
        "UYVY", "VYUY", "AYUV", "RGB", "BGR", "RGBA", "BGRA", "ARGB", "ABGR", "RGBx", "BGRx", "xRGB", "xBGR",
        "I420_10LE", "I422_10LE", "Y444_10LE", "I420_12LE", "P010_10LE", "GRAY16_LE",
    ];
    for format in formats {
        for (pattern, frozen) in [("ball", false), ("colors", true)] {
            // Odd sizes exercise strides and subsampled chroma.
            let messages = run(&format!(
                "videotestsrc pattern={pattern} num-buffers=45 ! video/x-raw,format={format},width=322,height=242,framerate=30/1 \
                 ! qoemonitor ! fakesink"
            ));
            let last = named(&messages, "qoe-stats").last().map(|s| (*s).clone()).expect("final stats");
            assert_eq!(last.get::<u64>("frames").unwrap(), 45, "{format}");
            assert_eq!(last.get::<u64>("freezes").unwrap(), frozen as u64, "{format} {pattern}");
        }
    }
}

#[test]
fn heavy_compression_still_is_a_freeze_and_motion_is_not() {
    // CRF 40 leaves coding noise on still pictures; the default threshold must absorb it
    // while moving content stays unfrozen.
    init();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crf40.mkv");
    if !path.exists() {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=6"])
            .args(["-filter_complex", "[0]split[a][b];[a][b]freezeframes=first=60:last=119:replace=59[v]", "-map", "[v]"])
            .args(["-c:v", "libx264", "-crf", "40", "-pix_fmt", "yuv420p"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let messages = run(&format!("filesrc location={} ! decodebin ! qoemonitor ! fakesink", path.display()));
    let freezes = named(&messages, "qoe-freeze");
    assert_eq!(freezes.len(), 2, "{freezes:?}");
    assert_near("freeze start", t(freezes[1], "start"), 59 * FRAME, FRAME);
    assert_near("freeze duration", t(freezes[1], "duration"), 61 * FRAME, 2 * FRAME);
}

/// A live source that stops sending for a second: the stall is reported while it lasts,
/// against the real pipeline clock, and ends when frames come back.
#[test]
fn live_source_outage_is_reported_while_it_lasts() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true pattern=ball name=src ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! qoemonitor name=q ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let bus = pipeline.bus().unwrap();
    let monitor = pipeline.by_name("q").unwrap();
    let src_pad = pipeline.by_name("src").unwrap().static_pad("src").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let stall_messages = |timeout_ms: u64| -> Vec<gst::Structure> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else { break };
            match msg.view() {
                gst::MessageView::Element(e) if e.structure().is_some_and(|s| s.name() == "qoe-stall") => {
                    out.push(e.structure().unwrap().to_owned())
                }
                gst::MessageView::Error(e) => panic!("{}", e.error()),
                _ => {}
            }
        }
        out
    };

    assert!(stall_messages(1000).is_empty(), "no stall while frames flow");
    let probe = src_pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| gst::PadProbeReturn::Ok).unwrap();
    let during = stall_messages(1000);
    assert_eq!(during.len(), 1, "stall start reported during the outage: {during:?}");
    assert_eq!(during[0].get::<&str>("event").unwrap(), "start");
    assert_eq!(during[0].get::<&str>("cause").unwrap(), "late-arrival");
    let stats = monitor.property::<Option<gst::Structure>>("stats").unwrap();
    assert!(stats.get::<bool>("stalled").unwrap());
    assert!(stats.get::<bool>("live").unwrap());
    assert_ne!(t(&stats, "initial-buffering"), u64::MAX, "initial buffering measured when live");

    src_pad.remove_probe(probe);
    let after = stall_messages(500);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(after.len(), 1, "stall end after the outage: {after:?}");
    let duration = t(&after[0], "duration");
    // Blocked for about 1 s (plus scheduling); the stall began one frame after the last one.
    assert!((800 * MS..1400 * MS).contains(&duration), "stall of {duration} ns");
}
