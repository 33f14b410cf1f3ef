// SPDX-License-Identifier: MPL-2.0
//! The Rust ONNX Runtime scoring path against the PyTorch reference's golden outputs
//! (`tests/fixtures/golden`, made by `onnx/qoe_onnx/fixtures.py`): no PyTorch at test time.
//!
//! Needs ONNX Runtime: `ORT_DYLIB_PATH`, or the onnxruntime wheel that `tests/run.sh`
//! installs in `.cache/venv`.

use std::path::{Path, PathBuf};

use qoe_core::stall::WindowStalls;
use qoe_model::{Scored, Scorer};
use serde_json::Value;

mod common;
use common::{bundle, bundle_copy, fixtures, golden_frames, init_ort, plugin_dir};

fn f32_file(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn golden(name: &str) -> (PathBuf, Value) {
    let dir = fixtures().join("golden").join(name);
    let value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    (dir, value)
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn token_ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Scores every golden sequence of bundle `name` (with the golden stall figures, if any):
/// (sequence name, result, golden entry, golden folder).
fn score_golden(name: &str) -> Vec<(String, Scored, Value, PathBuf)> {
    init_ort();
    let (dir, golden) = golden(name);
    let scorer = Scorer::open(&fixtures().join("bundles").join(name), 2).unwrap();
    // The golden figures are seconds; the tracker counts nanoseconds.
    let ns = |seconds: f64| (seconds * 1e9).round() as u64;
    let stall = golden["stall"].as_object().map(|s| WindowStalls {
        count: s["count"].as_u64().unwrap(),
        total: ns(s["total"].as_f64().unwrap()),
        durations: numbers(&s["durations"]).into_iter().map(ns).collect(),
        initial_buffering: ns(s["initial"].as_f64().unwrap()),
        ratio: s["ratio"].as_f64().unwrap(),
        since_last_stall: ns(s["since"].as_f64().unwrap()),
        sequence: Vec::new(),
    });
    let mut out = Vec::new();
    for (seq, g) in golden["sequences"].as_object().unwrap() {
        let clip = golden_frames(&dir, &g["frames"]);
        let scored = scorer
            .score(&clip, g["fps"].as_f64().unwrap(), stall.as_ref())
            .unwrap();
        out.push((seq.clone(), scored, g.clone(), dir.clone()));
    }
    out
}

fn check_levels(name: &str) {
    for (seq, scored, g, dir) in score_golden(name) {
        let (got, want) = (
            scored.score.expect("level logits always score"),
            g["score"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() < 1e-4,
            "{name}/{seq}: score {got} vs reference {want}"
        );
        for (p, q) in scored
            .probabilities
            .iter()
            .zip(numbers(&g["probabilities"]))
        {
            assert!(
                (p - q).abs() < 1e-4,
                "{name}/{seq}: probabilities {:?}",
                scored.probabilities
            );
        }
        assert_eq!(
            scored.sequence_length,
            g["token_ids"].as_array().unwrap().len(),
            "{name}/{seq}: sequence length"
        );
        // Per stage: the keyframe and motion features equal the reference's.
        for (stage, got) in [
            ("keyframe_embeds", &scored.keyframe_embeds),
            ("motion_feat", &scored.motion_feat),
        ] {
            let want = f32_file(&dir.join(g["tensors"][stage]["file"].as_str().unwrap()));
            assert_eq!(got.len(), want.len(), "{stage}");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{name}/{seq}: {stage} differs by {worst}");
        }
    }
}

#[test]
fn ugc_bundle_scores_like_the_pytorch_reference() {
    check_levels("vqa2-tiny-ugc");
}

#[test]
fn streaming_bundle_with_stall_text_scores_like_the_pytorch_reference() {
    check_levels("vqa2-tiny-streaming");
}

#[test]
fn assistant_bundle_explains_like_the_pytorch_reference() {
    init_ort();
    let (dir, golden) = golden("vqa2-tiny-assistant");
    let scorer = Scorer::open(&fixtures().join("bundles/vqa2-tiny-assistant"), 2).unwrap();
    let question = golden["question"].as_str().unwrap();
    for (seq, g) in golden["sequences"].as_object().unwrap() {
        let clip = golden_frames(&dir, &g["frames"]);
        let max = g["max_new_tokens"].as_u64().unwrap() as usize;
        let (ids, _text) = scorer
            .explain(&clip, g["fps"].as_f64().unwrap(), question, max, None)
            .unwrap();
        assert_eq!(
            ids,
            token_ids(&g["generated_ids"]),
            "{seq}: greedy tokens with the KV cache"
        );
    }
    // An Assistant bundle explains; it does not score.
    let clip = golden_frames(&dir, &golden["sequences"]["a"]["frames"]);
    let e = scorer.score(&clip, 8.0, None).unwrap_err().to_string();
    assert!(e.contains("does not score (score.mode none)"), "{e}");
}

#[test]
fn lmm_vqa_shaped_bundle_answers_like_the_pytorch_reference() {
    for (seq, scored, g, _) in score_golden("lmm-vqa-tiny") {
        assert_eq!(
            scored.generated_ids,
            token_ids(&g["generated_ids"]),
            "{seq}: answer tokens"
        );
        assert_eq!(scored.score, g["score"].as_f64(), "{seq}: parsed score");
    }
}

#[test]
fn cp_llm_shaped_bundle_scores_like_the_pytorch_reference() {
    for (seq, scored, g, _) in score_golden("cp-llm-tiny") {
        let want = numbers(&g["frame_scores"]);
        assert_eq!(scored.frame_scores.len(), want.len());
        for (a, b) in scored.frame_scores.iter().zip(&want) {
            assert!(
                (*a as f64 - b).abs() < 1e-5,
                "{seq}: frame scores {:?} vs {want:?}",
                scored.frame_scores
            );
        }
        assert!(
            (scored.score.unwrap() - g["score"].as_f64().unwrap()).abs() < 1e-4,
            "{seq}"
        );
    }
}

fn open_error(dir: &Path) -> String {
    init_ort();
    match Scorer::open(dir, 1) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_bundles_are_refused_naming_file_and_field() {
    let dir = bundle_copy("vqa2-tiny-ugc", "truncated");
    std::fs::write(dir.join("motion_fast.onnx"), b"not a model").unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("motion_fast.onnx: not a usable ONNX model"),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "missing");
    std::fs::remove_file(dir.join("decoder_score.onnx")).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("parts.decoder_score.file \"decoder_score.onnx\" does not exist"),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "version");
    let manifest = std::fs::read_to_string(dir.join("bundle.json"))
        .unwrap()
        .replace("\"format_version\": 3", "\"format_version\": 7");
    std::fs::write(dir.join("bundle.json"), manifest).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("field format_version is 7; this reader knows 1 to 3"),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "io");
    let manifest = std::fs::read_to_string(dir.join("bundle.json"))
        .unwrap()
        .replace("\"level_logits\"", "\"logits\"");
    std::fs::write(dir.join("bundle.json"), manifest).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains(
            "decoder_score.onnx: outputs are [\"level_logits\"], the manifest declares [\"logits\"]"
        ),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "resize");
    let manifest = std::fs::read_to_string(dir.join("bundle.json"))
        .unwrap()
        .replacen("\"pillow-bicubic\"", "\"bilinear\"", 1);
    std::fs::write(dir.join("bundle.json"), manifest).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains(".resize: unknown variant `bilinear`, expected `pillow-bicubic`"),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "prefix");
    let manifest = std::fs::read_to_string(dir.join("bundle.json"))
        .unwrap()
        .replacen(
            "\"decoder\": {",
            "\"decoder\": {\n    \"prefix_cache\": true,",
            1,
        );
    std::fs::write(dir.join("bundle.json"), manifest).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("decoder.prefix_cache is true, but parts.decoder_score declares no past_key_values.* inputs"),
        "{e}"
    );

    // The fixture's decoder batches: not under an older format version, not without its
    // batch dimension, not without the attention mask.
    let batch_cases: [ManifestCase; 3] = [
        (
            "batch-version",
            |m| m["format_version"] = Value::from(2),
            "parts.decoder_score.batch needs format_version 3 or later (it is 2)",
        ),
        (
            "batch-dim",
            |m| m["parts"]["decoder_score"]["inputs"][0]["shape"][0] = Value::from(1),
            "parts.decoder_score.batch is true, but its inputs \"inputs_embeds\" leads with 1 where every tensor must lead with the batch dimension \"batch\"",
        ),
        (
            "batch-mask",
            |m| {
                let inputs = m["parts"]["decoder_score"]["inputs"]
                    .as_array_mut()
                    .unwrap();
                inputs.retain(|i| i["name"] != "attention_mask");
            },
            "parts.decoder_score.batch is true, but it has no \"attention_mask\" input",
        ),
    ];
    for (tag, edit, want) in batch_cases {
        let dir = bundle_copy("vqa2-tiny-ugc", tag);
        let mut manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).unwrap())
                .unwrap();
        edit(&mut manifest);
        std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
        let e = open_error(&dir);
        assert!(e.contains(want), "{tag}: {e}");
    }

    let dir = bundle_copy("vqa2-tiny-ugc", "constant");
    std::fs::write(dir.join("image_newline.f32"), [0u8; 12]).unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("image_newline.f32: 12 bytes, but constants.image_newline declares shape [64]"),
        "{e}"
    );

    let dir = bundle_copy("vqa2-tiny-ugc", "tokenizer");
    std::fs::write(dir.join("tokenizer.json"), b"{").unwrap();
    let e = open_error(&dir);
    assert!(
        e.contains("tokenizer.json: the tokenizer does not load"),
        "{e}"
    );
}

/// `bundle_copy(name, tag)` with member `member` of an ensemble: its own copies of the
/// bundle's encoders and projector in folder `member`, and its manifest as `edit` leaves it.
fn ensemble_copy(name: &str, tag: &str, member: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    use qoe_model::bundle::MEMBER_ROLES;
    let dir = bundle_copy(name, tag);
    std::fs::create_dir_all(dir.join(member)).unwrap();
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).unwrap()).unwrap();
    for role in MEMBER_ROLES {
        let mut part = manifest["parts"][role.as_str()].clone();
        let file = part["file"].as_str().unwrap().to_owned();
        std::fs::copy(dir.join(&file), dir.join(member).join(&file)).unwrap();
        part["file"] = Value::from(format!("{member}/{file}"));
        manifest["parts"][format!("{role}@{member}")] = part;
    }
    manifest["ensemble"] = serde_json::json!([member]);
    manifest["format_version"] = Value::from(qoe_model::bundle::FORMAT_VERSION);
    edit(&mut manifest);
    std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
    dir
}

/// An ensemble of a model with a copy of itself scores as the model does (the golden score):
/// the members' features travel together through every stage and are split again exactly.
#[test]
fn an_ensemble_of_one_model_twice_scores_like_the_model() {
    init_ort();
    let (golden_dir, golden) = golden("vqa2-tiny-ugc");
    let scorer = Scorer::open(&ensemble_copy("vqa2-tiny-ugc", "twice", "copy", |_| ()), 2).unwrap();
    for (seq, g) in golden["sequences"].as_object().unwrap() {
        let clip = golden_frames(&golden_dir, &g["frames"]);
        let scored = scorer
            .score(&clip, g["fps"].as_f64().unwrap(), None)
            .unwrap();
        let (got, want) = (scored.score.unwrap(), g["score"].as_f64().unwrap());
        assert!((got - want).abs() < 1e-4, "{seq}: {got} vs {want}");
    }
}

/// A test case: a tag, a change to a good manifest, what the error says.
type ManifestCase = (&'static str, fn(&mut Value), &'static str);

#[test]
fn bad_ensembles_are_refused_naming_the_field() {
    let cases: [ManifestCase; 6] = [
        (
            "version",
            |m| m["format_version"] = Value::from(1),
            "ensemble needs format_version 2 (it is 1)",
        ),
        (
            "member-part",
            |m| {
                m["parts"]
                    .as_object_mut()
                    .unwrap()
                    .remove("motion_projector@b");
            },
            "ensemble member \"b\" needs parts.motion_projector and parts.motion_projector@b",
        ),
        (
            "stray-part",
            |m| m["ensemble"] = serde_json::json!([]),
            "parts.keyframe_encoder@b names an ensemble member, but the manifest has no ensemble",
        ),
        (
            "name",
            |m| m["ensemble"] = serde_json::json!(["b", "b"]),
            "ensemble[1] \"b\" must be a new, non-empty name without @ or /",
        ),
        (
            "file",
            |m| m["parts"]["motion_encoder@b"]["file"] = Value::from("b/gone.onnx"),
            "parts.motion_encoder@b.file \"b/gone.onnx\" does not exist",
        ),
        (
            "outputs",
            |m| m["parts"]["keyframe_encoder@b"]["outputs"][0]["name"] = Value::from("tokens"),
            "parts.keyframe_encoder@b must declare the inputs and outputs of parts.keyframe_encoder",
        ),
    ];
    for (tag, edit, want) in cases {
        // Tags of their own: a parallel test copies the bundle as "version" too.
        let e = open_error(&ensemble_copy(
            "vqa2-tiny-ugc",
            &format!("ensemble-{tag}"),
            "b",
            edit,
        ));
        assert!(e.contains(want), "{tag}: {e}");
    }
}

#[test]
fn elements_share_one_model_per_bundle_and_provider() {
    use qoe_model::{Provider, SessionOptions, shared_scorer};
    init_ort();
    let dir = fixtures().join("bundles/cp-llm-tiny");
    let cpu = SessionOptions {
        threads: 1,
        ..Default::default()
    };
    let a = shared_scorer(&dir, &cpu).unwrap();
    assert_eq!(a.provider(), Provider::Cpu);
    // The same folder by another path is the same bundle; threads and their priority do not
    // split the share.
    let b = shared_scorer(
        &dir.join("../cp-llm-tiny"),
        &SessionOptions {
            threads: 2,
            priority: qoe_model::Priority::Idle,
            ..cpu.clone()
        },
    )
    .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "one model for both");
    drop((a, b));
    let c = shared_scorer(&dir, &cpu).unwrap();
    assert_eq!(
        std::sync::Arc::strong_count(&c),
        1,
        "reopened once nobody held it"
    );

    // This machine's ONNX Runtime is the CPU build: auto falls through TensorRT and CUDA…
    let auto = shared_scorer(
        &dir,
        &SessionOptions {
            provider: Provider::Auto,
            ..cpu.clone()
        },
    )
    .unwrap();
    assert_eq!(
        auto.provider(),
        Provider::Cpu,
        "auto settles on the CPU here"
    );
    // …while an explicit GPU provider is an error that says why, never a silent fallback.
    for (provider, name) in [
        (Provider::Cuda, "CUDAExecutionProvider"),
        (Provider::TensorRt, "TensorrtExecutionProvider"),
    ] {
        let e = shared_scorer(
            &dir,
            &SessionOptions {
                provider,
                ..cpu.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("{name} cannot start")), "{e}");
    }
    let e = "metal".parse::<Provider>().unwrap_err().to_string();
    assert!(
        e.contains("\"metal\" is not one of cpu, cuda, tensorrt, auto"),
        "{e}"
    );
}

#[test]
fn tensorrt_engine_cache_is_keyed_by_model_and_runtime() {
    use qoe_model::session::tensorrt_cache_key;
    init_ort();
    let dir = fixtures().join("bundles/cp-llm-tiny");
    let a = tensorrt_cache_key(&dir.join("high_level.onnx"), 0).unwrap();
    let b = tensorrt_cache_key(&dir.join("low_level.onnx"), 0).unwrap();
    assert_ne!(a, b, "a different model, a different engine");
    assert_eq!(
        a,
        tensorrt_cache_key(&dir.join("high_level.onnx"), 0).unwrap()
    );
    assert!(a.contains("libonnxruntime") && a.ends_with("_fp32"), "{a}");
    let e = tensorrt_cache_key(&dir.join("missing.onnx"), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.onnx"), "{e}");
}

/// ONNX Runtime's intra-op threads start at the model's priority (nice 19 for `low`).
#[test]
#[cfg(target_os = "linux")]
fn inference_threads_start_at_the_models_priority() {
    use qoe_model::{Priority, Scorer, SessionOptions};
    init_ort();
    let nices_of_ort_threads = || -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "qoe-ort")
            })
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                // Fields after the parenthesised name: state is field 3, nice field 19.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(16)?.parse().ok()
            })
            .collect()
    };
    let before = nices_of_ort_threads().len();
    let scorer = Scorer::open_with(
        &fixtures().join("bundles/cp-llm-tiny"),
        &SessionOptions {
            threads: 3,
            priority: Priority::Low,
            ..Default::default()
        },
    )
    .unwrap();
    let nices = nices_of_ort_threads();
    assert!(
        nices.len() > before,
        "a 3-thread session starts pool threads ({} before, {} after)",
        before,
        nices.len()
    );
    assert!(nices.iter().all(|n| *n == 19), "{nices:?}");
    drop(scorer);
}

/// gst-launch with `bundle`, ONNX Runtime named by `ORT_DYLIB_PATH=library`: it must fail,
/// and its output is returned.
fn launch_failing_with_runtime(library: &Path, bundle: &str) -> String {
    let output = std::process::Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("ORT_DYLIB_PATH", library)
        .args([
            "videotestsrc",
            "num-buffers=5",
            "!",
            "qoemonitor",
            &format!("bundle={bundle}"),
            "!",
            "fakesink",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    text
}

#[test]
fn a_runtime_that_does_not_load_is_one_line_naming_the_place() {
    let bundle = bundle("vqa2-tiny-ugc");
    let bundle = bundle.to_str().unwrap();
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    let text = launch_failing_with_runtime(missing, bundle);
    let line = text
        .lines()
        .find(|l| l.contains("cannot load ONNX Runtime 1."))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so.1.31.1: failed to load"),
        "{line}"
    );
    // An ONNX Runtime too old for `ort`: a stand-in library built here whose only symbol,
    // OrtGetApiBase, reports version 1.10.0 (no old build of the real one is at hand).
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("old-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("old_ort.c");
    std::fs::write(
        &source,
        "typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } Base;\n\
         static const void *get_api(unsigned v) { (void)v; return 0; }\n\
         static const char *version(void) { return \"1.10.0\"; }\n\
         static const Base base = { get_api, version };\n\
         const Base *OrtGetApiBase(void) { return &base; }\n",
    )
    .unwrap();
    let old = dir.join("libonnxruntime.so.1.10.0");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&old)
        .arg(&source)
        .status()
        .expect("cc (gcc)");
    assert!(built.success());
    let text = launch_failing_with_runtime(&old, bundle);
    assert!(
        text.contains("expected version >= '1.") && text.contains("but got '1.10.0'"),
        "{text}"
    );
    // A library that is not ONNX Runtime at all.
    let not_ort = Path::new("/lib/x86_64-linux-gnu/libz.so.1");
    if not_ort.exists() {
        let text = launch_failing_with_runtime(not_ort, bundle);
        assert!(
            text.contains("libz.so.1 does not export `OrtGetApiBase`"),
            "{text}"
        );
    }
}
