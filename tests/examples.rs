// SPDX-License-Identifier: MPL-2.0
//! Every example pipeline in `pipelines/` runs through `pipelines/launch.sh` (gst-launch-1.0),
//! as a user would run it, with local stand-ins for network sources: an in-process RTSP
//! server for the camera, a loopback HTTP server for HLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gst_rtsp_server::prelude::*;

mod common;
use common::*;
#[path = "common/triton.rs"]
mod triton;

/// Runs `launch.sh name vars…`; returns its output, killing it after `limit`.
fn launch(name: &str, vars: &[String], limit: Duration) -> String {
    let mut child = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/launch.sh"))
        .arg(name)
        .args(vars)
        .arg("METRICS=127.0.0.1:0") // a free port: never collide with a real exporter
        .env("QOE_PLUGIN_DIR", plugin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}{}", reader.join().unwrap(), err_reader.join().unwrap());
    assert!(
        status.is_some(),
        "{name} did not finish within {limit:?}:\n{output}"
    );
    assert!(status.unwrap().success(), "{name} failed:\n{output}");
    assert!(
        output.contains("Got EOS from element"),
        "{name} did not reach EOS:\n{output}"
    );
    assert!(!output.contains("ERROR"), "{name}:\n{output}");
    output
}

/// The final `qoe-stats` line of `stream` (the one with the most frames).
fn final_stats<'a>(output: &'a str, stream: &str) -> &'a str {
    let tag = format!("stream-id=(string){stream},");
    output
        .lines()
        .filter(|l| l.contains("qoe-stats") && l.contains(&tag))
        .max_by_key(|l| field(l, "frames"))
        .unwrap_or_else(|| panic!("no qoe-stats for {stream}:\n{output}"))
}

fn field(line: &str, name: &str) -> u64 {
    let key = format!(" {name}=(guint64)");
    let rest = &line[line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len()..];
    rest.split([',', ';']).next().unwrap().parse().unwrap()
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn file_example_reports_the_hole() {
    let output = launch(
        "file",
        &[format!("URI={}", uri(&test_video("mkv")))],
        Duration::from_secs(60),
    );
    assert!(
        output.contains("qoe-stall, event=(string)start, cause=(string)timestamp-gap"),
        "{output}"
    );
    let stats = final_stats(&output, "file");
    assert_eq!(field(stats, "frames"), VIDEO_FRAMES);
    assert_eq!(field(stats, "stalls"), 1);
    // Scored with the default bundle, found by name; every window of the 9.5 s clip (one).
    assert!(output.contains("qoe-quality, "), "{output}");
    assert!(output.contains("stale=(boolean)false"), "{output}");
}

#[test]
fn remote_example_scores_on_an_inference_server() {
    // The server holds a tiny fixture bundle's graphs; the default bundle's are in
    // tests/remote.rs.
    let dir = bundle("vqa2-tiny-streaming");
    let server =
        triton::Triton::start(&triton::repository("example", &[&dir]), triton::free_port());
    let output = launch(
        "remote",
        &[
            format!("URI={}", uri(&test_video("mkv"))),
            format!("BUNDLE={}", dir.display()),
            format!("SERVER={}", server.grpc_url()),
        ],
        Duration::from_secs(60),
    );
    let stats = final_stats(&output, "remote");
    assert_eq!(field(stats, "frames"), VIDEO_FRAMES);
    assert!(output.contains("qoe-quality, "), "{output}");
    assert!(output.contains("stale=(boolean)false"), "{output}");
    assert!(!output.contains("stale=(boolean)true"), "{output}");
}

#[test]
fn tee_example_monitors_beside_playback() {
    let output = launch(
        "tee-leaky",
        // A player plays in real time; the monitor branch must keep up with it.
        &[
            format!("URI={}", uri(&test_video("mkv"))),
            "SINK=fakesink sync=true".into(),
        ],
        Duration::from_secs(60),
    );
    let stats = final_stats(&output, "player");
    assert_eq!(
        field(stats, "frames"),
        VIDEO_FRAMES,
        "the leaky queue dropped nothing"
    );
    assert_eq!(field(stats, "stalls"), 1);
}

#[test]
fn multi_stream_example_watches_three_streams_in_one_process() {
    let video = uri(&test_video("mkv"));
    let output = launch(
        "multi-stream",
        &[
            format!("URI1={video}"),
            format!("URI2={video}"),
            format!("URI3={video}"),
        ],
        Duration::from_secs(60),
    );
    for stream in ["wall-1", "wall-2", "wall-3"] {
        assert_eq!(
            field(final_stats(&output, stream), "frames"),
            VIDEO_FRAMES,
            "{stream}"
        );
    }
}

/// Serves the files of `dir` over HTTP on loopback, one request per connection,, for as long as the test runs.
fn serve_dir(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header.trim().is_empty() {
                        break;
                    }
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let file = dir.join(path.split('?').next().unwrap());
                let response = match std::fs::read(&file) {
                    Ok(body) => {
                        let kind = if path.ends_with(".m3u8") {
                            "application/vnd.apple.mpegurl"
                        } else {
                            "video/mp2t"
                        };
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                            .into_bytes();
                        r.extend(body);
                        r
                    }
                    Err(_) => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = conn.write_all(&response);
            });
        }
    });
    port
}

#[test]
fn hls_example_plays_a_stream_from_a_local_http_server() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hls");
    if !dir.join("index.m3u8").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        ffmpeg_lavfi(
            &dir.join("index.m3u8"),
            "testsrc2=size=320x240:rate=30:duration=4",
            &[
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "30",
                "-f",
                "hls",
                "-hls_time",
                "1",
                "-hls_playlist_type",
                "vod",
            ],
        );
    }
    let port = serve_dir(dir);
    let output = launch(
        "hls",
        &[
            format!("URI=http://127.0.0.1:{port}/index.m3u8"),
            "STREAM=cdn-probe".into(),
        ],
        Duration::from_secs(60),
    );
    let stats = final_stats(&output, "cdn-probe");
    assert_eq!(field(stats, "frames"), 120);
    assert_eq!(
        field(stats, "stalls"),
        0,
        "a local server keeps up: {stats}"
    );
}

#[test]
fn rtsp_camera_example_watches_a_live_camera() {
    init();
    // A stand-in camera: 3 s of live H.264 over RTSP on loopback.
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service("0");
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(
        "( videotestsrc is-live=true num-buffers=90 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency key-int-max=15 ! rtph264pay name=pay0 pt=96 )",
    );
    server.mount_points().unwrap().add_factory("/cam", factory);
    let context = glib::MainContext::new();
    let _source = server.attach(Some(&context)).unwrap();
    let port = server.bound_port();
    let main_loop = glib::MainLoop::new(Some(&context), false);
    let looping = main_loop.clone();
    let thread = std::thread::spawn(move || looping.run());

    let output = launch(
        "rtsp-camera",
        &[
            format!("URI=rtsp://127.0.0.1:{port}/cam"),
            "STREAM=gate-1".into(),
            "LATENCY=100".into(),
        ],
        Duration::from_secs(30),
    );
    main_loop.quit();
    thread.join().unwrap();
    let stats = final_stats(&output, "gate-1");
    assert!(stats.contains("live=(boolean)true"), "{stats}");
    assert!(field(stats, "frames") >= 80, "{stats}");
    assert_ne!(
        field(stats, "initial-buffering"),
        u64::MAX,
        "initial buffering measured: {stats}"
    );
}
