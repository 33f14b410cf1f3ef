// SPDX-License-Identifier: MPL-2.0
//! Manifests changed one field at a time, as an attacker or a broken exporter would: each is
//! refused when the bundle loads (READY→PAUSED), naming the field, instead of panicking,
//! allocating without bound or opening files outside the bundle later.

use serde_json::{Value, json};

mod common;
use common::bundle_copy;

/// A change to a manifest, with a name and what the error must say.
type Case = (&'static str, Box<dyn FnOnce(&mut Value)>, &'static str);

/// A copy of bundle `name`, tagged `tag`, with its manifest edited by `edit`.
fn edited_copy(name: &str, tag: &str, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let dir = bundle_copy(name, tag);
    let path = dir.join("bundle.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, manifest.to_string()).unwrap();
    dir
}

/// The error of loading `name` with its manifest edited by `edit`.
fn load_error(name: &str, tag: &str, edit: impl FnOnce(&mut Value)) -> String {
    let dir = edited_copy(name, tag, edit);
    match qoe_model::bundle::Bundle::load(&dir) {
        Ok(_) => panic!("{tag}: the bundle loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sizes_and_counts_out_of_bounds_are_refused_naming_the_field() {
    let cases: Vec<Case> = vec![
        (
            "hidden-zero",
            Box::new(|m| m["decoder"]["hidden_size"] = json!(0)),
            "decoder.hidden_size is 0",
        ),
        (
            "hidden-huge",
            Box::new(|m| m["decoder"]["hidden_size"] = json!(1_000_000_000_000u64)),
            "decoder.hidden_size is 1000000000000",
        ),
        (
            "size-zero",
            Box::new(|m| m["preprocess"]["keyframe_encoder"]["size"] = json!([0, 0])),
            "preprocess.keyframe_encoder.size is [0, 0]",
        ),
        (
            "size-max",
            Box::new(|m| m["preprocess"]["keyframe_encoder"]["size"] = json!([u64::MAX, u64::MAX])),
            "preprocess.keyframe_encoder.size is [18446744073709551615",
        ),
        (
            "size-billion",
            Box::new(|m| {
                m["preprocess"]["motion_encoder"]["size"] = json!([1_000_000_000, 1_000_000_000])
            }),
            "preprocess.motion_encoder.size is [1000000000, 1000000000]",
        ),
        (
            "std-zero",
            Box::new(|m| m["preprocess"]["keyframe_encoder"]["std"] = json!([0.0, 0.5, 0.5])),
            "preprocess.keyframe_encoder.mean/std",
        ),
        (
            "stride-zero",
            Box::new(|m| m["sampling"]["motion"]["stride"] = json!(0)),
            "sampling.motion.stride is 0",
        ),
        (
            "keyframe-rule",
            Box::new(|m| m["sampling"]["keyframes"]["rule"] = json!("every-other-frame")),
            "sampling.keyframes.rule: unknown variant `every-other-frame`",
        ),
        (
            "no-prompt",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("prompt");
            }),
            "prompt is missing",
        ),
        (
            "unknown-embed",
            Box::new(|m| m["prompt"]["segments"][1] = json!({"embed": "audio"})),
            "prompt.segments[1]",
        ),
        (
            "no-levels",
            Box::new(|m| m["score"]["levels"] = json!([])),
            "score.levels is empty",
        ),
        (
            "constant-overflow",
            Box::new(|m| m["constants"]["image_newline"]["shape"] = json!([(1u64 << 62) + 64])),
            "constants.image_newline.shape [4611686018427387968] is too large",
        ),
        (
            "score-mode",
            Box::new(|m| m["score"]["mode"] = json!("vibes")),
            "score.mode: unknown variant `vibes`",
        ),
        (
            "role",
            Box::new(|m| {
                let parts = m["parts"].as_object_mut().unwrap();
                let part = parts.remove("motion_projector").unwrap();
                parts.insert("motion_projektor".into(), part);
            }),
            "\"motion_projektor\" is not a known role",
        ),
    ];
    for (tag, edit, want) in cases {
        let e = load_error("vqa2-tiny-streaming", tag, edit);
        assert!(e.contains(want), "{tag}: {e}");
        assert!(e.contains("bundle.json"), "{tag}: names the manifest: {e}");
    }
}

/// LMM-VQA's motion chunks start where each second does, so its keyframes cannot move.
#[test]
fn a_keyframe_rule_other_than_the_first_frame_is_refused_outside_vqa2() {
    let e = load_error("lmm-vqa-tiny", "lmm-middle", |m| {
        m["sampling"]["keyframes"]["rule"] = json!("middle-frame-of-each-second")
    });
    assert!(
        e.contains("sampling.keyframes.rule is middle-frame-of-each-second; a lmm-vqa bundle"),
        "{e}"
    );
    // A VQA² bundle takes it.
    let dir = edited_copy("vqa2-tiny-streaming", "vqa2-middle", |m| {
        m["sampling"]["keyframes"]["rule"] = json!("middle-frame-of-each-second")
    });
    let bundle = qoe_model::bundle::Bundle::load(&dir).unwrap();
    assert_eq!(
        bundle.manifest.sampling.keyframes.rule.phase(),
        qoe_core::time::SECOND / 2
    );
}

#[test]
fn paths_outside_the_bundle_folder_are_refused() {
    let escapes = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "graphs/../../x.onnx",
        "",
    ];
    for (i, path) in escapes.into_iter().enumerate() {
        let cases: [Case; 3] = [
            (
                "part",
                Box::new(move |m| m["parts"]["keyframe_encoder"]["file"] = json!(path)),
                "parts.keyframe_encoder.file",
            ),
            (
                "tokenizer",
                Box::new(move |m| m["tokenizer"] = json!(path)),
                "tokenizer",
            ),
            (
                "constant",
                Box::new(move |m| m["constants"]["image_newline"]["file"] = json!(path)),
                "constants.image_newline.file",
            ),
        ];
        for (what, edit, field) in cases {
            let e = load_error("vqa2-tiny-streaming", &format!("escape-{what}-{i}"), edit);
            assert!(
                e.contains(&format!(
                    "{field} \"{path}\" must be a relative path inside the bundle folder"
                )),
                "{what} {path:?}: {e}"
            );
        }
    }
    // A symbolic link inside the folder is the author's choice (the sibling bundles in
    // models/ share graphs that way), and a path through a subfolder is fine.
    let dir = bundle_copy("vqa2-tiny-streaming", "symlink");
    std::fs::create_dir_all(dir.join("graphs")).unwrap();
    std::fs::rename(
        dir.join("keyframe_encoder.onnx"),
        dir.join("graphs/keyframe_encoder.onnx"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "graphs/keyframe_encoder.onnx",
        dir.join("keyframe_encoder.onnx"),
    )
    .unwrap();
    qoe_model::bundle::Bundle::load(&dir).expect("a link inside the folder loads");
}
