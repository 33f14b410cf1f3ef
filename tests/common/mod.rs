// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gst::prelude::*;

pub const MS: u64 = 1_000_000;

/// CPU seconds (user and system) of `who`: `libc::RUSAGE_SELF` or `libc::RUSAGE_CHILDREN`.
pub fn cpu_seconds(who: i32) -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The test video: 8 s of moving `testsrc2` (320x240, 30 fps) made here with FFmpeg (Debian's
/// `ffmpeg`), where source frames 150..=194 are replaced by frame 149 (a content freeze) and
/// every frame from 60 on is shifted 1.5 s later (a timestamp hole, i.e. a stall); x264.
pub const FPS: u64 = 30;
pub const FRAME: u64 = 1_000_000_000 / FPS;
pub const VIDEO_FRAMES: u64 = 240;

pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().unwrap();
        gstqoe::plugin_register_static().expect("register plugin");
    });
}

/// A folder holding only the plugin cargo built for this test run, for `GST_PLUGIN_PATH`.
/// `cargo test` leaves the cdylib in `deps/`, next to the test binary, among other
/// libraries that GStreamer should not try to load.
pub fn plugin_dir() -> PathBuf {
    // Placed once per process, by rename: a library rewritten in place under a running
    // gst-launch-1.0 that has it mapped crashes that process (the linker writes a new file,
    // so a hard link keeps the old one whole).
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let deps = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let built = [
            deps.join("libgstqoe.so"),
            deps.parent().unwrap().join("libgstqoe.so"),
        ]
        .into_iter()
        .find(|p| p.exists())
        .expect("libgstqoe.so built by cargo next to the test binary");
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("libgstqoe.so.tmp");
        let _ = std::fs::remove_file(&tmp);
        // A hard link costs no disk; a copy only where links are refused (another filesystem).
        if std::fs::hard_link(&built, &tmp).is_err() {
            std::fs::copy(&built, &tmp).unwrap();
        }
        std::fs::rename(&tmp, dir.join("libgstqoe.so")).unwrap();
        dir
    })
    .clone()
}

/// Runs `gst-launch-1.0 args…` with this build's plugin, as a user would, and returns its
/// stdout and stderr; it must succeed.
pub fn gst_launch(args: &[&str]) -> (String, String) {
    let output = Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .args(args)
        .output()
        .expect("gst-launch-1.0 (Debian package gstreamer1.0-tools)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "gst-launch failed: {stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Runs `pipeline` to EOS and returns the `qoe-*` element messages in bus order.
pub fn run(description: &str) -> Vec<gst::Structure> {
    init();
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
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

pub fn named<'a>(messages: &'a [gst::Structure], name: &str) -> Vec<&'a gst::Structure> {
    messages.iter().filter(|s| s.name() == name).collect()
}

pub fn t(s: &gst::Structure, field: &str) -> u64 {
    s.get::<u64>(field)
        .unwrap_or_else(|e| panic!("{field} in {s}: {e}"))
}

pub fn assert_near(what: &str, got: u64, want: u64, tolerance: u64) {
    assert!(
        got.abs_diff(want) <= tolerance,
        "{what}: got {got} ns, want {want} ns ± {tolerance}"
    );
}

/// Where the stall and freeze are in the test video, in nanoseconds of stream time.
pub const STALL_START: u64 = 60 * 1_000_000_000 / FPS; // 2.0 s
pub const STALL_DURATION: u64 = 1500 * MS;
pub const FREEZE_START: u64 = 149 * 1_000_000_000 / FPS + STALL_DURATION; // frame 149, after the hole
pub const FREEZE_DURATION: u64 = (195 - 149) * 1_000_000_000 / FPS; // 1.533 s

/// Runs FFmpeg (Debian's `ffmpeg`) with `args`, writing `out`.
pub fn ffmpeg(out: &Path, args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg (Debian package ffmpeg) must be installed for these tests");
    assert!(status.success(), "ffmpeg failed to make {}", out.display());
}

/// Runs FFmpeg on the `lavfi` source `lavfi` with `args`, writing `out`.
pub fn ffmpeg_lavfi(out: &Path, lavfi: &str, args: &[&str]) {
    ffmpeg(out, &[&["-f", "lavfi", "-i", lavfi][..], args].concat());
}

/// `name` in the test scratch folder, made once by FFmpeg with `args` (atomically, so an
/// interrupted run leaves nothing half-made behind).
pub fn made_once(name: &str, args: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if !path.exists() {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("mkv");
        let tmp = path.with_extension(format!("part.{extension}"));
        ffmpeg(&tmp, args);
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// `name`, made once from the `lavfi` source `lavfi` with `args`.
pub fn clip(name: &str, lavfi: &str, args: &[&str]) -> PathBuf {
    made_once(name, &[&["-f", "lavfi", "-i", lavfi][..], args].concat())
}

/// `seconds` of moving `testsrc2` at `width`x`height`, 30 fps, in x264 (veryfast), made once:
/// the stream the benches and the load test score.
pub fn testsrc_x264(width: u32, height: u32, seconds: u64) -> PathBuf {
    clip(
        &format!("testsrc2-{width}x{height}p30-{seconds}s.mp4"),
        &format!("testsrc2=size={width}x{height}:rate=30:duration={seconds}"),
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ],
    )
}

/// Scores `frames` (30 fps, starting at frame `offset` and wrapping) with `scorer` as the
/// element does: windows of `window` every `hop`, keyframes at 1 fps, motion frames at the
/// bundle's stride, each frame's features once. Calls `scored` with each window when it is
/// ready, its score and the decoder's seconds for it.
pub fn score_as_the_element_does(
    scorer: &std::sync::Arc<qoe_model::Scorer>,
    frames: &[qoe_model::preprocess::RgbImage],
    offset: usize,
    (window, hop): (u64, u64),
    mut scored: impl FnMut(&qoe_model::stream::ReadyWindow, f64, f64),
) {
    use qoe_core::sampling::{KeyframeSampler, WindowScheduler};
    use qoe_core::time::SECOND;
    const FPS: u64 = 30;
    let time = |i: usize| i as u64 * SECOND / FPS;
    let mut stream =
        qoe_model::stream::StreamScorer::new(scorer.clone(), window, (hop / SECOND * FPS) as usize)
            .unwrap();
    let mut keyframes = KeyframeSampler::with_phase(scorer.keyframe_phase());
    let mut scheduler = WindowScheduler::new(window, hop);
    let mut score_ready = |stream: &mut qoe_model::stream::StreamScorer| {
        for ready in stream.ready() {
            let ready = ready.expect("a full window");
            let due = std::time::Instant::now();
            let score = scorer.score_window(&ready.features).unwrap().score.unwrap();
            scored(&ready, score, due.elapsed().as_secs_f64());
        }
    };
    for i in 0..frames.len() {
        let frame = &frames[(i + offset) % frames.len()];
        for w in scheduler.on_frame(time(i)) {
            stream.request(w, None, 0).unwrap();
        }
        let keyframe = keyframes.is_keyframe(time(i));
        let motion = scorer
            .motion_stride()
            .is_some_and(|stride| (i as u64).is_multiple_of(stride));
        if keyframe || motion {
            stream.add_frame(time(i), frame, keyframe, motion).unwrap();
        }
        score_ready(&mut stream);
    }
    if let Some(w) = scheduler.finish(time(frames.len())) {
        stream.request(w, None, 0).unwrap();
    }
    stream.finish().unwrap();
    score_ready(&mut stream);
}

/// Process CPU seconds so far (user and system).
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::RUSAGE_SELF)
}

/// x264 keeping every frame at its own timestamp (no B-frames, timestamps passed through),
/// so that holes and repeats made by the filters stay where they are.
pub const X264_AS_IS: [&str; 8] = [
    "-c:v",
    "libx264",
    "-pix_fmt",
    "yuv420p",
    "-bf",
    "0",
    "-fps_mode",
    "passthrough",
];

/// `-vf filter`, then [`X264_AS_IS`].
pub fn x264_as_is_after(filter: &str) -> Vec<&str> {
    [&["-vf", filter][..], &X264_AS_IS].concat()
}

/// The test video with a hole and a freeze (see the constants above), in `container`.
pub fn test_video(container: &str) -> PathBuf {
    let filter = [
        "-filter_complex",
        "[0]split[a][b];[a][b]freezeframes=first=150:last=194:replace=149,\
         setpts='PTS+if(gte(N,60),1.5/TB,0)'[v]",
        "-map",
        "[v]",
    ];
    clip(
        &format!("hole-and-freeze.{container}"),
        "testsrc2=size=320x240:rate=30:duration=8",
        &[
            &filter[..],
            &X264_AS_IS,
            &["-video_track_timescale", "90000"],
        ]
        .concat(),
    )
}

/// The checkout's root: these helpers serve the plugin's tests and `qoe-probe`'s.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("meson.build").is_file())
        .expect("the checkout's root holds meson.build")
        .to_path_buf()
}

/// The committed fixtures: bundles and golden data.
pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// A tiny fixture bundle's folder.
pub fn bundle(name: &str) -> PathBuf {
    fixtures().join("bundles").join(name)
}

/// A fresh copy of fixture bundle `name` in this process's scratch folder, tagged `tag`
/// (for tests that break or own a bundle).
pub fn bundle_copy(name: &str, tag: &str) -> PathBuf {
    let dst =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(bundle(name)).unwrap().flatten() {
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

/// Points `ORT_DYLIB_PATH` at the ONNX Runtime that `tests/run.sh` installs in `.cache/venv`,
/// unless it is set already: the tests run on the pinned runtime, never on a system one.
pub fn init_ort() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return;
        }
        let path = qoe_model::locate::checkout_runtime().expect("ONNX Runtime: set ORT_DYLIB_PATH or run tests/run.sh (it installs onnxruntime in .cache/venv)");
        // SAFETY: set once, before this process starts ONNX Runtime or reads the variable.
        unsafe { std::env::set_var("ORT_DYLIB_PATH", path) };
    });
}

/// Golden frames (`tests/fixtures/golden/frames`) as RGB pictures: `spec` is a golden
/// sequence's `frames` entry, relative to `golden_dir`.
pub fn golden_frames(
    golden_dir: &Path,
    spec: &serde_json::Value,
) -> Vec<qoe_model::preprocess::RgbImage> {
    let shape: Vec<usize> = spec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data = std::fs::read(golden_dir.join(spec["file"].as_str().unwrap())).unwrap();
    let (n, h, w) = (shape[0], shape[1], shape[2]);
    (0..n)
        .map(|i| qoe_model::preprocess::RgbImage {
            width: w,
            height: h,
            data: data[i * h * w * 3..][..h * w * 3].to_vec(),
        })
        .collect()
}

/// Decodes the video file at `path` to RGB pictures with their PTS (nanoseconds).
pub fn decode_rgb(path: &Path) -> Vec<(u64, qoe_model::preprocess::RgbImage)> {
    use gst_video::prelude::*;
    init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! fakesink name=sink signal-handoffs=true sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = frames.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let pad = args[2].get::<gst::Pad>().unwrap();
            let info = gst_video::VideoInfo::from_caps(&pad.current_caps().unwrap()).unwrap();
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, &info).unwrap();
            let (w, h) = (info.width() as usize, info.height() as usize);
            let stride = frame.plane_stride()[0] as usize;
            let data = frame
                .plane_data(0)
                .unwrap()
                .chunks(stride)
                .take(h)
                .flat_map(|row| row[..w * 3].to_vec())
                .collect();
            let image = qoe_model::preprocess::RgbImage {
                width: w,
                height: h,
                data,
            };
            collected
                .lock()
                .unwrap()
                .push((buffer.pts().unwrap().nseconds(), image));
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    for msg in pipeline.bus().unwrap().iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}: {}", path.display(), e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    std::mem::take(&mut *frames.lock().unwrap())
}

/// An adaptive stream in miniature: four 1 s MPEG-TS segments of 360p, 720p, 480p and
/// 1080p, joined as a player's buffer joins them.
pub fn abr_clip() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join("abr.ts");
    if out.exists() {
        return out;
    }
    let mut list = String::new();
    for (i, size) in ["640x360", "1280x720", "854x480", "1920x1080"]
        .iter()
        .enumerate()
    {
        let segment = clip(
            &format!("abr-{i}.ts"),
            &format!("testsrc2=size={size}:rate=30:duration=1"),
            &[
                &X264_AS_IS[..6],
                &["-output_ts_offset", &i.to_string(), "-muxdelay", "0"],
            ]
            .concat(),
        );
        list.push_str(&format!("file '{}'\n", segment.display()));
    }
    let list_path = dir.join("abr.txt");
    std::fs::write(&list_path, list).unwrap();
    let list_path = list_path.display().to_string();
    made_once(
        "abr.ts",
        &["-f", "concat", "-safe", "0", "-i", &list_path, "-c", "copy"],
    )
}

/// A scorer of fixture bundle `name` with test `faults` (qoe-model's `test-faults` feature):
/// while the result is held, every element of this process that opens the bundle gets it.
/// Tests that use one run in a test binary of their own.
pub fn faulty_scorer(name: &str, faults: qoe_model::scorer::Faults) -> qoe_model::SharedScorer {
    qoe_model::registry::shared_scorer_with_faults(
        &bundle(name),
        &qoe_model::SessionOptions::default(),
        faults,
    )
    .unwrap()
}

/// What a pipeline posted until EOS (at most 60 s).
#[derive(Debug, Default)]
pub struct Posted {
    pub quality: Vec<gst::Structure>,
    pub warnings: Vec<String>,
    /// The last `qoe-stats`.
    pub stats: Option<gst::Structure>,
    pub eos: bool,
}

/// Plays `pipeline` to EOS, collecting what it posts; `on_quality(n)` runs as the `n`-th
/// `qoe-quality` message (1 is the first) arrives. A pipeline error fails the test.
pub fn play_collecting(pipeline: &gst::Element, mut on_quality: impl FnMut(usize)) -> Posted {
    let mut posted = Posted::default();
    pipeline.set_state(gst::State::Playing).unwrap();
    for msg in pipeline
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(60))
    {
        match msg.view() {
            gst::MessageView::Element(e) => match e.structure() {
                Some(s) if s.name() == "qoe-quality" => {
                    posted.quality.push(s.to_owned());
                    on_quality(posted.quality.len());
                }
                Some(s) if s.name() == "qoe-stats" => posted.stats = Some(s.to_owned()),
                _ => {}
            },
            gst::MessageView::Warning(w) => {
                posted
                    .warnings
                    .push(format!("{} {:?}", w.error(), w.debug()))
            }
            gst::MessageView::Eos(_) => {
                posted.eos = true;
                break;
            }
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    posted
}

/// models/NAME, once `pipelines/default-bundle.sh` has built its decoder graphs.
pub fn built_bundle(name: &str) -> PathBuf {
    let dir = repo().join("models").join(name);
    assert!(
        dir.join("decoder_score.onnx").is_file(),
        "{}: the decoder graphs are not built; run `bash pipelines/default-bundle.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// The default bundle, built.
pub fn default_bundle() -> PathBuf {
    built_bundle(qoe_model::locate::DEFAULT_BUNDLE)
}

/// `count` frames of a moving textured gradient, 320×180: content that a model scores the
/// same way wherever it runs.
pub fn textured_frames(count: usize) -> Vec<qoe_model::preprocess::RgbImage> {
    (0..count)
        .map(|t| {
            let (width, height) = (320, 180);
            let mut data = Vec::with_capacity(width * height * 3);
            for y in 0..height {
                for x in 0..width {
                    let v = ((x + 3 * t) ^ (y * 2)) as u8;
                    data.extend_from_slice(&[
                        v,
                        (x as u8).wrapping_add(t as u8),
                        (y * 255 / height) as u8,
                    ]);
                }
            }
            qoe_model::preprocess::RgbImage {
                width,
                height,
                data,
            }
        })
        .collect()
}
