// SPDX-License-Identifier: MPL-2.0
//! Quality scoring inside `qoemonitor`, on real ONNX Runtime sessions of the tiny fixture
//! bundles: golden parity through the element, window timing, cached features equal to a
//! whole-stream computation, stall figures in streaming prompts, bad bundles, sharing.

use std::path::PathBuf;

use gst::prelude::*;
use gst_check::Harness;
use qoe_core::stall::WindowStalls;
use qoe_core::time::SECOND;
use qoe_model::bundle::Role;
use qoe_model::preprocess::RgbImage;
use qoe_model::registry::loaded;
use qoe_model::{Scorer, WindowFeatures};
use serde_json::Value;

mod common;
use common::{MS, bundle, clip, fixtures, golden_frames, init, init_ort};

/// A frame with its presentation time.
struct Frame {
    pts: u64,
    image: RgbImage,
}

/// Pushes RGB `frames` at `fps` through `qoemonitor` with `props`, then EOS; returns the
/// `qoe-quality` messages.
fn score_frames(frames: &[Frame], fps: u32, props: &[(&str, &dyn ToValue)]) -> Vec<gst::Structure> {
    init();
    init_ort();
    let element = gst::ElementFactory::make("qoemonitor").build().unwrap();
    element.set_property("leaky", false);
    for (name, value) in props {
        element.set_property_from_value(name, &value.to_value());
    }
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    let (w, hgt) = (frames[0].image.width, frames[0].image.height);
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGB,width={w},height={hgt},framerate={fps}/1"
    ));
    for frame in frames {
        // RGB rows are padded to 4 bytes in GStreamer's layout.
        let stride = (w * 3).div_ceil(4) * 4;
        let mut data = vec![0u8; stride * hgt];
        for (row, src) in data.chunks_mut(stride).zip(frame.image.data.chunks(w * 3)) {
            row[..w * 3].copy_from_slice(src);
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(frame.pts));
            b.set_duration(gst::ClockTime::from_nseconds(SECOND / fps as u64));
        }
        h.push(buffer).unwrap();
    }
    // EOS waits until the final window is scored.
    assert!(h.push_event(gst::event::Eos::new()));
    let messages: Vec<gst::Structure> = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure().map(|s| s.to_owned()),
            gst::MessageView::Warning(w) => panic!("warning: {} {:?}", w.error(), w.debug()),
            _ => None,
        })
        .filter(|s| s.name() == "qoe-quality")
        .collect();
    drop(h);
    messages
}

fn golden(name: &str) -> (PathBuf, Value) {
    let dir = fixtures().join("golden").join(name);
    let text = std::fs::read_to_string(dir.join("golden.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

/// Every golden clip pushed through the element as one stream ends in one final window whose
/// score is the PyTorch reference's.
fn element_matches_golden(name: &str) {
    let (dir, golden) = golden(name);
    for (seq, g) in golden["sequences"].as_object().unwrap() {
        let Some(want) = g["score"].as_f64() else {
            continue; // the reference's answer held no number
        };
        let fps = g["fps"].as_f64().unwrap() as u32;
        let frames: Vec<Frame> = golden_frames(&dir, &g["frames"])
            .into_iter()
            .enumerate()
            .map(|(i, image)| Frame {
                pts: i as u64 * SECOND / fps as u64,
                image,
            })
            .collect();
        let quality = score_frames(&frames, fps, &[("bundle", &bundle(name).to_str().unwrap())]);
        assert_eq!(
            quality.len(),
            1,
            "{name}/{seq}: one final window: {quality:?}"
        );
        let q = &quality[0];
        let got = q.get::<f64>("score").unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "{name}/{seq}: element {got} vs reference {want}"
        );
        assert_eq!(q.get::<u64>("window-start").unwrap(), 0);
        assert_eq!(
            q.get::<u64>("window-end").unwrap(),
            frames.len() as u64 * SECOND / fps as u64
        );
        assert!(!q.get::<bool>("stale").unwrap());
        assert_eq!(q.get::<&str>("provider").unwrap(), "cpu");
    }
}

#[test]
fn element_scores_like_the_pytorch_reference_vqa2() {
    element_matches_golden("vqa2-tiny-ugc");
}

#[test]
fn element_scores_like_the_pytorch_reference_lmm_vqa() {
    element_matches_golden("lmm-vqa-tiny");
}

#[test]
fn element_scores_like_the_pytorch_reference_cp_llm() {
    element_matches_golden("cp-llm-tiny");
}

/// 9 s of real x264 video at 8 fps, decoded to RGB.
fn decoded_clip() -> Vec<Frame> {
    init();
    let path = clip(
        "scoring-8fps.mkv",
        "testsrc2=size=96x72:rate=8:duration=9",
        &["-c:v", "libx264", "-g", "16", "-pix_fmt", "yuv420p"],
    );
    let frames: Vec<Frame> = common::decode_rgb(&path)
        .into_iter()
        .map(|(pts, image)| Frame { pts, image })
        .collect();
    assert_eq!(frames.len(), 72);
    frames
}

/// The features of window `[start, end)` taken from one whole-stream computation, as the
/// reference would compute the stream in one go; at 8 fps keyframe `k` is frame
/// `8k + keyframe_offset`.
fn uncached_window(
    whole: &WindowFeatures,
    frames: &[Frame],
    (start, end): (u64, u64),
    keyframe_offset: usize,
    stall: Option<WindowStalls>,
) -> WindowFeatures {
    let inside: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].pts >= start && frames[i].pts < end)
        .collect();
    // The golden rule: one keyframe per second of stream time, at the same frame of each.
    let keyframes = inside
        .iter()
        .filter(|&&i| i % 8 == keyframe_offset)
        .map(|&i| whole.keyframes[i / 8].clone())
        .collect();
    let mut motion: Vec<_> = inside.iter().map(|&i| whole.motion[i].clone()).collect();
    motion.truncate(motion.len() / 4 * 4);
    WindowFeatures {
        keyframes,
        motion,
        stall,
    }
}

#[test]
fn windows_come_at_their_times_and_cached_features_equal_a_whole_stream_computation() {
    cached_windows_equal_a_whole_stream_computation(&bundle("vqa2-tiny-ugc"), 0);
}

/// The same with the keyframes half a second into each second: frame 4 of each second's 8.
#[test]
fn middle_of_second_keyframes_are_the_same_frames_streamed_and_whole() {
    let dir = common::bundle_copy("vqa2-tiny-ugc", "middle");
    let path = dir.join("bundle.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace("first-frame-of-each-second", "middle-frame-of-each-second");
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    cached_windows_equal_a_whole_stream_computation(&dir, 4);
}

fn cached_windows_equal_a_whole_stream_computation(dir: &std::path::Path, keyframe_offset: usize) {
    init_ort();
    let frames = decoded_clip();
    let quality = score_frames(
        &frames,
        8,
        &[
            ("bundle", &dir.to_str().unwrap()),
            ("window", &(4 * SECOND)),
            ("hop", &(2 * SECOND)),
        ],
    );
    let spans: Vec<(u64, u64)> = quality
        .iter()
        .map(|q| {
            (
                q.get::<u64>("window-start").unwrap(),
                q.get::<u64>("window-end").unwrap(),
            )
        })
        .collect();
    // A window every 2 s once 4 s have passed; at EOS a final one ends with the last frame.
    assert_eq!(
        spans,
        vec![
            (0, 4 * SECOND),
            (2 * SECOND, 6 * SECOND),
            (4 * SECOND, 8 * SECOND),
            (5 * SECOND, 9 * SECOND)
        ]
    );
    for q in &quality {
        assert_eq!(q.get::<u32>("keyframes").unwrap(), 4, "{q}");
        assert_eq!(q.get::<u32>("motion-frames").unwrap(), 32, "{q}");
        assert!(q.get::<f64>("inference-time").unwrap() > 0.0);
    }

    let scorer = Scorer::open(dir, 2).unwrap();
    // The whole-clip computation takes the manifest's rule too: the same frame of each second.
    let picked = qoe_model::scorer::keyframe_indices(frames.len(), 8.0, scorer.keyframe_phase());
    assert_eq!(picked, (keyframe_offset..72).step_by(8).collect::<Vec<_>>());
    let images: Vec<RgbImage> = frames.iter().map(|f| f.image.clone()).collect();
    let whole = scorer.clip_features(&images, 8.0).unwrap();
    for (q, (start, end)) in quality.iter().zip(spans) {
        let features = uncached_window(&whole, &frames, (start, end), keyframe_offset, None);
        let want = scorer.score_window(&features).unwrap().score.unwrap();
        let got = q.get::<f64>("score").unwrap();
        assert!(
            (got - want).abs() < 1e-5,
            "window {start}..{end}: cached {got} vs whole-stream {want}"
        );
    }
}

#[test]
fn streaming_prompt_carries_the_windows_stalls() {
    init_ort();
    // The same clip with a 1.5 s hole in its timestamps after 3 s (a stall).
    let mut frames = decoded_clip();
    frames.truncate(48);
    for f in frames.iter_mut().skip(24) {
        f.pts += 1500 * MS;
    }
    let dir = bundle("vqa2-tiny-streaming");
    let quality = score_frames(
        &frames,
        8,
        &[
            ("bundle", &dir.to_str().unwrap()),
            ("window", &(8 * SECOND)),
            ("hop", &(2 * SECOND)),
        ],
    );
    assert_eq!(quality.len(), 1, "{quality:?}");
    let q = &quality[0];
    assert_eq!(q.get::<u64>("window-end").unwrap(), 7500 * MS);

    let scorer = Scorer::open(&dir, 2).unwrap();
    let images: Vec<RgbImage> = frames.iter().map(|f| f.image.clone()).collect();
    let whole = scorer.clip_features(&images, 8.0).unwrap();
    // What the tracker saw: one stall of 1.5 s (the hole less nothing: the threshold only
    // decides whether it counts), ended 3 s before the window's end.
    let stall = WindowStalls {
        count: 1,
        total: 1500 * MS,
        durations: vec![1500 * MS],
        initial_buffering: 0,
        ratio: 1.5 / 7.5,
        since_last_stall: 3 * SECOND,
        sequence: Vec::new(),
    };
    // Keyframes: the first frame of each second of stream time, so after the hole frames
    // 24 (4.5 s), 28 (5 s), 36 and 44 as well as 0, 8 and 16.
    let keyframe_images: Vec<RgbImage> = [0, 8, 16, 24, 28, 36, 44]
        .iter()
        .map(|&i| scorer.prepare(Role::KeyframeEncoder, &images[i]).unwrap())
        .collect();
    let keyframes = scorer
        .encode_pictures(
            Role::KeyframeEncoder,
            &keyframe_images.iter().collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(q.get::<u32>("keyframes").unwrap(), 7);
    let features = WindowFeatures {
        keyframes,
        motion: whole.motion.clone(),
        stall: Some(stall.clone()),
    };
    let want = scorer.score_window(&features).unwrap().score.unwrap();
    let without = scorer
        .score_window(&WindowFeatures {
            stall: None,
            ..features
        })
        .unwrap()
        .score
        .unwrap();
    let got = q.get::<f64>("score").unwrap();
    assert!(
        (got - want).abs() < 1e-5,
        "element {got} vs prompt with the stall {want} (without: {without})"
    );
    assert!(
        (want - without).abs() > 1e-6,
        "the stall text changes the score"
    );
}

/// A copy of fixture bundle `name` with `file` cut to half its length.
fn truncated_bundle(name: &str, file: &str) -> PathBuf {
    let src = bundle(name);
    let dst = common::bundle_copy(name, "truncated");
    let bytes = std::fs::read(src.join(file)).unwrap();
    std::fs::write(dst.join(file), &bytes[..bytes.len() / 2]).unwrap();
    dst
}

#[test]
fn a_corrupt_bundle_fails_the_state_change_with_the_reason() {
    init();
    init_ort();
    let dir = truncated_bundle("vqa2-tiny-ugc", "decoder_score.onnx");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=5 ! qoemonitor bundle={} ! fakesink",
        dir.display()
    ))
    .unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let bus = pipeline.bus().unwrap();
    let error = bus
        .iter_timed(gst::ClockTime::from_seconds(5))
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(format!("{} {:?}", e.error(), e.debug())),
            _ => None,
        })
        .expect("an error message");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.contains("Cannot load the model bundle"), "{error}");
    assert!(
        error.contains("decoder_score.onnx: not a usable ONNX model"),
        "{error}"
    );
}

#[test]
fn elements_with_the_same_bundle_share_one_model() {
    init();
    init_ort();
    // A copy of its own, so that no other test shares this model.
    let dir = common::bundle_copy("cp-llm-tiny", "shared");
    let branch = |i: usize| {
        format!(
            "videotestsrc num-buffers=30 ! qoemonitor name=m{i} bundle={} ! fakesink ",
            dir.display()
        )
    };
    let pipeline = gst::parse::launch(&(0..3).map(branch).collect::<String>())
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    assert!(pipeline.state(gst::ClockTime::from_seconds(30)).0.is_ok());
    let canonical = std::fs::canonicalize(&dir).unwrap();
    let models: Vec<_> = loaded()
        .into_iter()
        .filter(|m| m.dir == canonical)
        .collect();
    assert_eq!(models.len(), 1, "three elements, one model: {models:?}");
    assert!(models[0].holders >= 3, "{models:?}");
    for i in 0..3 {
        let m = pipeline.by_name(&format!("m{i}")).unwrap();
        assert_eq!(
            m.property::<Option<String>>("provider").as_deref(),
            Some("cpu")
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    // Released at NULL: no model of that bundle stays in memory.
    assert!(
        loaded().iter().all(|m| m.dir != canonical),
        "{:?}",
        loaded()
    );
}

#[test]
fn gst_launch_scores_a_real_video() {
    init_ort();
    let video = common::test_video("mkv");
    let location = format!("location={}", video.display());
    let bundle = format!("bundle={}", bundle("vqa2-tiny-streaming").display());
    let (stdout, _) = common::gst_launch(&[
        "-m",
        "filesrc",
        &location,
        "!",
        "decodebin",
        "!",
        "videoconvert",
        "!",
        "qoemonitor",
        &bundle,
        "leaky=false",
        "stream-id=lobby-cam",
        "!",
        "fakesink",
    ]);
    let quality: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("qoe-quality"))
        .collect();
    // 9.5 s of video (8 s of frames and a 1.5 s hole): windows end at 8 s and at the end.
    assert_eq!(quality.len(), 2, "{stdout}");
    for line in &quality {
        for field in [
            "score=(double)",
            "level=(string)",
            "probabilities=(structure)",
            "stream-id=(string)lobby-cam",
            "provider=(string)cpu",
            "stale=(boolean)false",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
    let stall = stdout.find("qoe-stall, event=(string)start").unwrap();
    assert!(
        stall < stdout.find("qoe-quality").unwrap(),
        "stalls are reported at once"
    );
}

#[test]
fn assistant_bundles_explain_in_their_own_message() {
    init();
    init_ort();
    let (dir, golden) = golden("vqa2-tiny-assistant");
    let g = &golden["sequences"]["a"];
    let frames: Vec<Frame> = golden_frames(&dir, &g["frames"])
        .into_iter()
        .enumerate()
        .map(|(i, image)| Frame {
            pts: i as u64 * SECOND / 8,
            image,
        })
        .collect();
    let element = gst::ElementFactory::make("qoemonitor")
        .property("bundle", bundle("vqa2-tiny-assistant").to_str().unwrap())
        .property_from_str("explain", "always")
        .property("explain-question", golden["question"].as_str().unwrap())
        .property(
            "explain-max-tokens",
            g["max_new_tokens"].as_u64().unwrap() as u32,
        )
        .property("leaky", false)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=64,height=48,framerate=8/1");
    for frame in &frames {
        let stride = 64 * 3;
        let mut buffer = gst::Buffer::from_mut_slice(frame.image.data.clone());
        assert_eq!(frame.image.data.len(), stride * 48);
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(frame.pts));
        h.push(buffer).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let explanation = bus
        .iter_timed(gst::ClockTime::from_seconds(30))
        .find_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == "qoe-explanation")
                .map(|s| s.to_owned()),
            _ => None,
        })
        .expect("a qoe-explanation message");
    let text = explanation.get::<String>("text").unwrap();
    let ids: Vec<u32> = g["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tokenizer =
        tokenizers::Tokenizer::from_file(bundle("vqa2-tiny-assistant").join("tokenizer.json"))
            .unwrap();
    assert_eq!(
        text,
        tokenizer.decode(&ids, true).unwrap(),
        "the reference's answer"
    );
    assert_eq!(explanation.get::<u64>("window-end").unwrap(), 2500 * MS);
}

#[test]
fn feature_caches_stay_bounded_on_a_long_stream() {
    use qoe_core::sampling::{KeyframeSampler, WindowScheduler};
    use qoe_model::stream::StreamScorer;
    init_ort();
    let scorer = std::sync::Arc::new(Scorer::open(&bundle("vqa2-tiny-ugc"), 2).unwrap());
    let (fps, window, hop, chunk) = (2u64, 4 * SECOND, 2 * SECOND, 4);
    let mut stream = StreamScorer::new(scorer, window, chunk).unwrap();
    let (mut keyframes, mut scheduler) = (
        KeyframeSampler::default(),
        WindowScheduler::new(window, hop),
    );
    let image = RgbImage {
        width: 32,
        height: 24,
        data: (0..32 * 24 * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let (mut requested, mut scored, mut most) = (0, 0, (0, 0, 0));
    // A minute of stream: far more than any window holds.
    for i in 0..60 * fps {
        let t = i * SECOND / fps;
        for w in scheduler.on_frame(t) {
            stream.request(w, None, 0).unwrap();
            requested += 1;
        }
        stream
            .add_frame(t, &image, keyframes.is_keyframe(t), true)
            .unwrap();
        scored += stream.ready().into_iter().filter(|r| r.is_ok()).count();
        let held = stream.held();
        most = (
            most.0.max(held.keyframes),
            most.1.max(held.motion),
            most.2.max(held.inputs),
        );
    }
    assert_eq!(requested, 28, "a window every 2 s after the first 4 s");
    // The last windows still wait for their motion context (18 frames = 9 s here).
    assert!(scored >= requested - 6, "{scored} of {requested} scored");
    // What the oldest waiting window needs, plus one chunk of inputs with its context.
    let waiting = (18 + chunk) as u64 / fps + window / SECOND + 1;
    assert!(most.0 as u64 <= waiting + 1, "keyframes held: {most:?}");
    assert!(
        most.1 as u64 <= waiting * fps + 1,
        "motion features held: {most:?}"
    );
    assert!(most.2 <= chunk + 2 * 18 + 1, "motion inputs held: {most:?}");
}
