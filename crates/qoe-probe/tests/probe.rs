// SPDX-License-Identifier: MPL-2.0
//! `qoe-probe`, run as a user runs it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "../../../tests/common/mod.rs"]
mod common;
use common::*;

/// Runs qoe-probe; stalls and freezes only (`--no-quality`) unless `args` name a bundle: the
/// default bundle's scoring has tests of its own.
fn probe(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qoe-probe"));
    if !args.contains(&"--bundle") {
        command.arg("--no-quality");
    }
    command.args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn prints_events_and_a_summary() {
    let video = test_video("mkv");
    let out = probe(&[video.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("watching") && stdout.contains("as stream 'hole-and-freeze'"),
        "{stdout}"
    );
    assert!(stdout.contains("stall started (timestamp-gap)"), "{stdout}");
    assert!(stdout.contains("stall ended after 1.5"), "{stdout}");
    assert!(
        stdout.contains("picture frozen") && stdout.contains("freeze ended after 1.5"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("frames: {VIDEO_FRAMES}")),
        "{stdout}"
    );
    assert!(stdout.contains("stalls: 1, total 1.5"), "{stdout}");
    assert!(stdout.contains("freezes: 1, total 1.5"), "{stdout}");
    assert!(stdout.contains("quality: not scored"), "{stdout}");
    // Not a terminal: progress comes as plain lines on stderr.
    assert!(stderr.contains("progress"), "{stderr}");
}

/// Black segments and rendition switches get their own lines.
#[test]
fn prints_black_segments_and_rendition_switches() {
    let black = clip(
        "probe-black.mkv",
        "testsrc2=size=320x240:rate=30:duration=6",
        &[
            "-vf",
            "drawbox=c=black:t=fill:enable='between(t,2,4.499)'",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let out = probe(&[black.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("    2.000 s  picture black"), "{stdout}");
    assert!(stdout.contains("black ended after 2.500 s"), "{stdout}");

    let out = probe(&[abr_clip().to_str().unwrap(), "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let switches: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"rendition\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let directions: Vec<&str> = switches
        .iter()
        .map(|s| s["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["up", "down", "up"], "{stdout}");
    assert_eq!(switches[0]["to"], serde_json::json!([1280, 720]));
}

#[test]
fn json_lines() {
    let video = test_video("mkv");
    let out = probe(&[
        video.to_str().unwrap(),
        "--json",
        "--stream-id",
        "edge \"7\"",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{stdout}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"type\":\"stall\""))
            .count(),
        2
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"type\":\"freeze\""))
            .count(),
        2
    );
    let summary = lines.last().unwrap();
    assert!(summary.contains("\"type\":\"summary\""), "{summary}");
    assert!(
        summary.contains(&format!("\"frames\":{VIDEO_FRAMES}")),
        "{summary}"
    );
    assert!(summary.contains("\"stalls\":1,"), "{summary}");
    assert!(
        summary.contains("\"stream_id\":\"edge \\\"7\\\"\""),
        "escaped: {summary}"
    );
    assert!(summary.contains("\"initial_buffering\":null"), "{summary}");
}

#[test]
fn report_draws_the_stall_and_the_freeze() {
    let video = test_video("mkv");
    let report = tmp("report.svg");
    let out = probe(&[
        video.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("class=\"stalls\"").count(), 1, "{svg}");
    assert_eq!(svg.matches("class=\"freezes\"").count(), 1, "{svg}");
    assert!(svg.contains("stalls: 1.500 s at 2.000 s"), "{svg}");

    // Rendered as a viewer sees it (rsvg-convert, Debian's librsvg2-bin), each span shows in
    // its colour at its place: the middle of its rectangle, read back through FFmpeg.
    let png = tmp("report.png");
    let rendered = Command::new("rsvg-convert")
        .args([
            "-f",
            "png",
            "-o",
            png.to_str().unwrap(),
            report.to_str().unwrap(),
        ])
        .status()
        .expect("rsvg-convert (Debian package librsvg2-bin)");
    assert!(rendered.success());
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-i", png.to_str().unwrap()])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap()
        .stdout;
    let attribute = |text: &str, name: &str| -> f64 {
        let rest = &text[text.find(&format!(" {name}=\"")).unwrap() + name.len() + 3..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    let (width, height) = (
        attribute(&svg, "width") as usize,
        attribute(&svg, "height") as usize,
    );
    assert_eq!(raw.len(), width * height * 3, "a {width}x{height} picture");
    // Drawn at 0.8 opacity over the lane's #f7f7f7.
    for (class, colour) in [("stalls", [221, 81, 81]), ("freezes", [168, 132, 201])] {
        let rect = &svg[svg.find(&format!("class=\"{class}\"")).unwrap()..];
        let x = attribute(rect, "x") + attribute(rect, "width") / 2.0;
        let y = attribute(rect, "y") + attribute(rect, "height") / 2.0;
        let at = (y as usize * width + x as usize) * 3;
        let pixel = &raw[at..at + 3];
        assert!(
            pixel.iter().zip(colour).all(|(p, c)| p.abs_diff(c) <= 8),
            "{class} at ({x}, {y}): {pixel:?}, expected about {colour:?}"
        );
    }
}

#[test]
fn bad_inputs_fail_clearly() {
    let missing = probe(&["/no/such/video.mp4"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing)
            .1
            .contains("cannot open /no/such/video.mp4: no such file"),
        "{:?}",
        text(&missing)
    );

    let garbage = tmp("garbage.mp4");
    std::fs::write(&garbage, b"this is not a video").unwrap();
    let out = probe(&[garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("cannot decode"), "{:?}", text(&out));

    let audio = clip(
        "tone.mka",
        "sine=frequency=440:duration=1",
        &["-c:a", "flac"],
    );
    let out = probe(&[audio.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("no video stream in"),
        "{:?}",
        text(&out)
    );

    let usage = probe(&["--frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(
        text(&usage).1.contains("unknown option --frobnicate") && text(&usage).1.contains("usage:")
    );
    let bundle = probe(&["x.mp4", "--bundle", "models/vqa2"]);
    assert_eq!(bundle.status.code(), Some(2));
    assert!(
        text(&bundle)
            .1
            .contains("--bundle models/vqa2: not a model bundle (no bundle.json in it)"),
        "{:?}",
        text(&bundle)
    );

    // A failed start is one line, with no GStreamer CRITICAL and no source location.
    let broken = tmp("broken-bundle");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("bundle.json"),
        "{\"format\": \"gst-qoe-bundle\"",
    )
    .unwrap();
    let video = test_video("mkv");
    for args in [
        &[
            video.to_str().unwrap(),
            "--bundle",
            broken.to_str().unwrap(),
        ][..],
        &["foo://bar"][..],
    ] {
        let out = probe(args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            !stderr.contains("CRITICAL") && !stderr.contains(".rs(") && !stderr.contains(".c("),
            "{stderr}"
        );
    }
    let out = probe(&[
        video.to_str().unwrap(),
        "--bundle",
        broken.to_str().unwrap(),
    ]);
    assert!(
        text(&out).1.contains(&format!(
            "Cannot load the model bundle {}: {}: not JSON",
            broken.display(),
            broken.join("bundle.json").display()
        )),
        "{}",
        text(&out).1
    );

    // With --json, failures are JSON objects on stdout too, and nothing else is printed.
    for (args, code, reason) in [
        (
            &["/no/such/video.mp4", "--json"][..],
            1,
            "cannot open /no/such/video.mp4: no such file",
        ),
        (
            &["--json", "--frobnicate"][..],
            2,
            "unknown option --frobnicate",
        ),
    ] {
        let out = probe(args);
        assert_eq!(out.status.code(), Some(code));
        let (stdout, stderr) = text(&out);
        let error: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(error["type"], "error", "{stdout}");
        assert_eq!(error["exit_code"], code, "{stdout}");
        assert!(
            error["message"].as_str().unwrap().contains(reason),
            "{stdout}"
        );
        assert!(!stderr.contains("qoe-probe:"), "{stderr}");
    }
}

#[test]
fn version_and_options_with_equals() {
    let out = probe(&["--version"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.starts_with(&format!(
            "qoe-probe {} (GStreamer 1.",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    let video = test_video("mkv");
    let out = probe(&[video.to_str().unwrap(), "--stall-threshold=5000", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // A 5 s threshold: the clip's hole is no stall.
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["stalls"], 0, "{stdout}");
}

#[test]
fn realtime_run_serves_metrics_and_ctrl_c_still_summarises() {
    let video = clip(
        "ten-seconds.mkv",
        "testsrc2=size=320x240:rate=30:duration=10",
        &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_qoe-probe"))
        .args([
            video.to_str().unwrap(),
            "--no-quality",
            "--realtime",
            "--stream-id",
            "rt",
            "--metrics-address",
            &address,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut scrape = String::new();
    {
        use std::io::Write;
        let mut s =
            std::net::TcpStream::connect(&address).expect("metrics endpoint up during the run");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        s.read_to_string(&mut scrape).unwrap();
    }
    let frames: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("qoe_frames_total{stream=\"rt\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{scrape}"));
    // Real time: about 1.5 s worth of 30 fps so far, not the whole file.
    assert!(
        (20.0..=70.0).contains(&frames),
        "{frames} frames after 1.5 s"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("summary:"), "{stdout}");
    let shown: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("frames: "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(shown < 200, "stopped early by Ctrl-C, {shown} frames");
}

#[test]
fn scores_quality_with_a_bundle() {
    init_ort();
    let video = test_video("mkv");
    let report = tmp("scored.svg");
    let bundle = bundle("vqa2-tiny-streaming");
    let out = probe(&[
        video.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let quality: Vec<&str> = stdout.lines().filter(|l| l.contains(" quality ")).collect();
    // 9.5 s of stream: a window ends at 8 s, the final one at 9.5 s.
    assert_eq!(quality.len(), 2, "{stdout}");
    assert!(quality[0].contains("for 0.000–8.000 s"), "{stdout}");
    assert!(quality[1].contains("for 1.500–9.500 s"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains("quality: 2 windows, mean"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // Time in level covers the 9.5 s of stream once.
    let seconds: f64 = summary
        .split("time in level: ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|part| part.split(' ').nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((seconds - 9.5).abs() < 0.05, "{summary}");
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(svg.contains("<polyline"), "the score line is drawn");

    let json = probe(&[
        video.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--json",
    ]);
    let (stdout, _) = text(&json);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let scored: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "quality").collect();
    assert_eq!(scored.len(), 2);
    let p = scored[0]["probabilities"].as_object().unwrap();
    assert_eq!(p.len(), 5);
    let total: f64 = p.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4);
    let summary = lines.last().unwrap();
    assert_eq!(summary["quality"]["windows"], 2);
}

#[test]
fn a_bad_bundle_is_a_clear_error() {
    init_ort();
    let video = test_video("mkv");
    let dir = tmp("not-a-bundle");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bundle.json"), "{\"format\": \"gst-qoe-bundle\"").unwrap();
    let out = probe(&[video.to_str().unwrap(), "--bundle", dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("Cannot load the model bundle"), "{stderr}");
    assert!(stderr.contains("bundle.json"), "{stderr}");
}

/// A file cut in half (its index at the start, so it plays) ends short of the duration it
/// declares: the summary says so and the exit code is 3. The whole file is complete.
#[test]
fn a_truncated_file_is_reported_incomplete() {
    let whole = clip(
        "probe-whole.mp4",
        "testsrc2=size=320x240:rate=30:duration=6",
        &[
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ],
    );
    let bytes = std::fs::read(&whole).unwrap();
    let half = whole.with_file_name("probe-half.mp4");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();

    let out = probe(&[half.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("INCOMPLETE: playback ended at") && stdout.contains("of the 6.000 s"),
        "{stdout}"
    );
    let out = probe(&[half.to_str().unwrap(), "--json"]);
    let summary = text(&out).0.lines().last().unwrap().to_owned();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["incomplete"]["declared_duration"], 6.0, "{summary}");

    let out = probe(&[whole.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let summary = text(&out).0.lines().last().unwrap().to_owned();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(summary["incomplete"].is_null(), "{summary}");
}

/// A refused connection is named as one, not as a missing video stream.
#[test]
fn a_refused_connection_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = probe(&[&format!("http://127.0.0.1:{port}/live.ts")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}"))
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("no video stream"), "{stderr}");
}

/// A picture below the bundle's minimum size (24 pixels a side by default) is not given a
/// level: the summary says it is too small to score.
#[test]
fn a_tiny_picture_is_too_small_to_score() {
    init_ort();
    let tiny = clip(
        "probe-16x16.mkv",
        "testsrc2=size=16x16:rate=30:duration=3",
        &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    );
    let bundle = bundle("cp-llm-tiny");
    let out = probe(&[tiny.to_str().unwrap(), "--bundle", bundle.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains(" quality 0."), "{stdout}");
    assert!(stdout.contains("quality: too small to score"), "{stdout}");
    assert!(stderr.contains("16x16, is too small to score"), "{stderr}");
}
