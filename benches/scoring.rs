// SPDX-License-Identifier: MPL-2.0
//! What rolling-window scoring costs, in one run: `cargo bench --bench scoring`.
//!
//! 20 s of 720p30 `testsrc2` (x264, made with FFmpeg) are decoded to RGB, then scored with the
//! default bundle (micro VQA²-Streaming on SmolLM2-135M; window 8 s, hop 2 s) on one ONNX
//! Runtime thread, two ways:
//! - **cached** (what `qoemonitor` does): each keyframe's and each frame's features once, in
//!   chunks with the motion context, then only the decoder per window;
//! - **uncached**: every window recomputed from its frames.
//!
//! It prints per-stage latency per window, the saving from feature reuse (encoder time
//! uncached / cached; expect about window/hop), the real-time factor per CPU core: seconds of
//! video scored per second of process CPU (goal ≥ 4: one core keeps up with four streams), and
//! the first-start cost of building the decoder graphs from the GGUF
//! (`pipelines/default-bundle.sh`, into a scratch folder). The element's streaming-thread cost
//! with scoring on is in `cargo bench --bench element_cost`.
//!
//! Where the bundle has an int8 sibling (`<bundle>-int8`, which `pipelines/default-bundle.sh`
//! builds for the default one), the two decoders also score the same windows alternately, and
//! it prints their time per window, the ratio and the largest score difference.
//!
//! It also times the keyframe encoder per keyframe, the previous default bundle (the ensemble
//! of two micro towers, read from git at [`OLD_DEFAULT`]) against this one, alternately on the
//! same keyframes in one run.
//!
//! Environment: `QOE_BENCH_BUNDLE` (default models/micro-vqa2-streaming), `QOE_BENCH_THREADS`
//! (ONNX Runtime threads, default 1), `ORT_DYLIB_PATH`.

use std::sync::Arc;
use std::time::Instant;

use qoe_core::time::SECOND;
use qoe_model::Scorer;
use qoe_model::preprocess::RgbImage;
use qoe_model::stream::StageTimes;

#[path = "../tests/common/mod.rs"]
mod common;

const FPS: u64 = 30;
const WINDOW: u64 = 8 * SECOND;
const HOP: u64 = 2 * SECOND;
/// The last commit whose default bundle was the two-model ensemble (runs 20 and 12).
const OLD_DEFAULT: &str = "f6f9245";

fn main() {
    gst::init().unwrap();
    common::init_ort();
    let bundle = std::env::var("QOE_BENCH_BUNDLE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/micro-vqa2-streaming")
        });
    let threads: usize = std::env::var("QOE_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    eprintln!("encoding and decoding 20 s of 720p30 (once) ...");
    let clip = common::testsrc_x264(1280, 720, 20);
    let frames: Vec<RgbImage> = common::decode_rgb(&clip)
        .into_iter()
        .map(|(_, image)| image)
        .collect();
    let seconds = frames.len() as f64 / FPS as f64;
    let scorer = Arc::new(Scorer::open(&bundle, threads).unwrap_or_else(|e| {
        panic!("{e} (the default bundle's decoder graphs: bash pipelines/default-bundle.sh)")
    }));
    let time = |i: usize| i as u64 * SECOND / FPS;

    // Cached, as the element does it.
    let cpu0 = common::process_cpu_seconds();
    let (mut cached, mut decoder, mut windows) = (StageTimes::default(), 0.0, Vec::new());
    common::score_as_the_element_does(&scorer, &frames, 0, (WINDOW, HOP), |ready, score, took| {
        decoder += took;
        cached.preprocess += ready.spent.preprocess;
        cached.vision += ready.spent.vision;
        cached.motion += ready.spent.motion;
        windows.push((ready.window, score));
    });
    let cached_cpu = common::process_cpu_seconds() - cpu0;
    let n = windows.len() as f64;

    // Uncached: every window from its own frames.
    let cpu0 = common::process_cpu_seconds();
    let (mut features_uncached, mut decoder_uncached) = (0.0, 0.0);
    let mut window_features = Vec::new();
    for (w, _) in &windows {
        let inside: Vec<RgbImage> = (0..frames.len())
            .filter(|&i| time(i) >= w.start && time(i) < w.end)
            .map(|i| frames[i].clone())
            .collect();
        let t0 = Instant::now();
        let features = scorer.clip_features(&inside, FPS as f64).unwrap();
        features_uncached += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        scorer.score_window(&features).unwrap();
        decoder_uncached += t0.elapsed().as_secs_f64();
        window_features.push(features);
    }
    let uncached_cpu = common::process_cpu_seconds() - cpu0;

    let ms = |s: f64| s / n * 1e3;
    let models = scorer.bundle().models().len();
    println!(
        "{} ({models} model{}) on {} frames of 720p30 ({seconds:.0} s), window 8 s, hop 2 s: {} windows",
        scorer.bundle().manifest.name,
        if models == 1 {
            ""
        } else {
            "s: vision, motion and decoder run per model"
        },
        frames.len(),
        windows.len()
    );
    println!("per window, cached (as qoemonitor runs it; features spread over the windows):");
    println!("  preprocess (resize)  {:8.1} ms", ms(cached.preprocess));
    println!("  vision               {:8.1} ms", ms(cached.vision));
    println!("  motion               {:8.1} ms", ms(cached.motion));
    println!("  decoder              {:8.1} ms", ms(decoder));
    let encoders_cached = cached.preprocess + cached.vision + cached.motion;
    println!("per window, uncached (every window from its frames):");
    println!("  features             {:8.1} ms", ms(features_uncached));
    println!("  decoder              {:8.1} ms", ms(decoder_uncached));
    println!(
        "feature reuse saving: {:.2}x less encoder time (expect about window/hop = 4), \
         {:.2}x less process CPU",
        features_uncached / encoders_cached,
        uncached_cpu / cached_cpu
    );
    println!(
        "real-time factor per CPU core (cached, {threads} ONNX Runtime thread(s)): {:.2} s of video \
         per CPU second (goal >= 4); {:.2} per wall second of one stream's work",
        seconds / cached_cpu,
        seconds / (encoders_cached + decoder)
    );
    let int8 = bundle.with_file_name(format!(
        "{}-int8",
        bundle.file_name().unwrap().to_string_lossy()
    ));
    if int8.join("decoder_score.onnx").is_file() {
        let quantized = Scorer::open(&int8, threads).unwrap();
        let (mut fp32_s, mut int8_s, mut largest) = (0.0, 0.0, 0.0f64);
        for _round in 0..3 {
            for features in &window_features {
                let t0 = Instant::now();
                let a = scorer.score_window(features).unwrap().score.unwrap();
                fp32_s += t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                let b = quantized.score_window(features).unwrap().score.unwrap();
                int8_s += t0.elapsed().as_secs_f64();
                largest = largest.max((a - b).abs());
            }
        }
        let per = |s: f64| s / (3.0 * window_features.len() as f64) * 1e3;
        println!(
            "decoder, fp32 and int8 ({}) alternately on the same windows: {:.1} and {:.1} ms a \
             window (int8/fp32 {:.2}), largest score difference {largest:.3}",
            quantized.bundle().manifest.name,
            per(fp32_s),
            per(int8_s),
            int8_s / fp32_s
        );
    }
    keyframe_encoders(&scorer, &bundle, &frames, threads);
    first_start();
}

/// The keyframe encoder's time per keyframe: the previous default bundle (from git at
/// [`OLD_DEFAULT`], its small graphs beside this bundle's decoder) against `scorer`'s,
/// alternately on the same keyframes, one keyframe per call as the element runs them.
fn keyframe_encoders(
    scorer: &Scorer,
    bundle: &std::path::Path,
    frames: &[RgbImage],
    threads: usize,
) {
    use qoe_model::bundle::Role;
    let Some(old_folder) = old_default(bundle) else {
        println!(
            "keyframe encoder, old default against this one: not measured (no git history at {OLD_DEFAULT})"
        );
        return;
    };
    let old = Scorer::open(&old_folder, threads).unwrap();
    let keyframes: Vec<&RgbImage> = frames.iter().step_by(FPS as usize).collect();
    let prepare = |s: &Scorer| -> Vec<RgbImage> {
        keyframes
            .iter()
            .map(|k| s.prepare(Role::KeyframeEncoder, k).unwrap())
            .collect()
    };
    let (old_prepared, new_prepared) = (prepare(&old), prepare(scorer));
    let (mut old_s, mut new_s) = (0.0, 0.0);
    const ROUNDS: usize = 3;
    for _round in 0..ROUNDS {
        for (a, b) in old_prepared.iter().zip(&new_prepared) {
            let t0 = Instant::now();
            old.encode_pictures(Role::KeyframeEncoder, &[a]).unwrap();
            old_s += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            scorer.encode_pictures(Role::KeyframeEncoder, &[b]).unwrap();
            new_s += t0.elapsed().as_secs_f64();
        }
    }
    let per = |s: f64| s / (ROUNDS * keyframes.len()) as f64 * 1e3;
    println!(
        "keyframe encoder per keyframe, alternately on {} keyframes: old default ({OLD_DEFAULT}, {} \
         model(s)) {:.1} ms, this bundle ({} model(s)) {:.1} ms (this/old {:.2})",
        keyframes.len(),
        old.bundle().models().len(),
        per(old_s),
        scorer.bundle().models().len(),
        per(new_s),
        new_s / old_s
    );
    let _ = std::fs::remove_dir_all(old_folder);
}

/// The default bundle as it was at [`OLD_DEFAULT`]: its manifest and small graphs from git in a
/// scratch folder, linked to `bundle`'s decoder graphs and tokenizer. None without the history.
fn old_default(bundle: &std::path::Path) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let folder = std::env::temp_dir().join(format!("qoe-old-default-{}", std::process::id()));
    std::fs::create_dir_all(folder.join("rgb")).ok()?;
    for file in [
        "bundle.json",
        "keyframe_encoder.onnx",
        "motion_fast.onnx",
        "motion_projector.onnx",
        "rgb/keyframe_encoder.onnx",
        "rgb/motion_fast.onnx",
        "rgb/motion_projector.onnx",
    ] {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args([
                "show",
                &format!("{OLD_DEFAULT}:models/micro-vqa2-streaming/{file}"),
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&folder);
            return None;
        }
        std::fs::write(folder.join(file), out.stdout).ok()?;
    }
    for file in ["decoder_score.onnx", "embed_tokens.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(
            std::fs::canonicalize(bundle.join(file)).ok()?,
            folder.join(file),
        )
        .ok()?;
    }
    Some(folder)
}

/// The first-start cost: building the default bundle's decoder graphs from the GGUF, as
/// `pipelines/default-bundle.sh` does, into a scratch folder.
fn first_start() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    let scratch = std::env::temp_dir().join(format!("qoe-first-start-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let t0 = Instant::now();
    let status = std::process::Command::new(&python)
        .args(["-m", "qoe_onnx.micro.bundle", "--decoder"])
        .arg(&scratch)
        .env("PYTHONPATH", root.join("onnx"))
        .stderr(std::process::Stdio::null())
        .status();
    let wall = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&scratch);
    match status {
        Ok(s) if s.success() => println!(
            "first start: building the decoder graphs from the GGUF took {wall:.1} s (once per machine)"
        ),
        _ => println!(
            "first start: not measured ({} cannot build the decoder graphs)",
            python.display()
        ),
    }
}
