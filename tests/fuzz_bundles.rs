// SPDX-License-Identifier: MPL-2.0
//! Fuzzing the bundle loader and the scorer's opening, in the normal test suite and bounded
//! in time: the committed corpus (`tests/fixtures/fuzz/bundle-mutations.txt`), then manifests
//! mutated at random (a fixed seed, so that a failure reproduces; `QOE_FUZZ_CASES` and
//! `QOE_FUZZ_SEED` run more or others), then graph, tokenizer and constant files truncated or
//! replaced by garbage. Every case must end in a bundle or an error naming the manifest or
//! file: no panic, no abort, no hang.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use qoe_model::preprocess::RgbImage;
use serde_json::{Value, json};

mod common;
use common::{bundle_copy, init_ort};

/// A small deterministic generator (64-bit LCG).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every JSON pointer into `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

/// Sets (or with `None` removes) the value at `pointer`.
fn mutate(manifest: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer has a slash");
    let key = key.replace("~1", "/").replace("~0", "~");
    let Some(parent) = manifest.pointer_mut(parent) else {
        return;
    };
    match (parent, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(key, v);
        }
        (Value::Object(map), None) => {
            map.remove(&key);
        }
        (Value::Array(items), v) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                match v {
                    Some(v) => items[i] = v,
                    None => {
                        items.remove(i);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Values hostile to a reader of sizes, counts, names and paths.
fn hostile(random: &mut Random) -> Option<Value> {
    let pool = [
        json!(0),
        json!(-1),
        json!(1),
        json!(7),
        json!(4097),
        json!(1_000_000_000_000u64),
        json!(u64::MAX),
        json!(1e308),
        json!(0.5),
        json!(""),
        json!("../outside"),
        json!("/etc/passwd"),
        json!("keyframe_encoder@x"),
        json!("x".repeat(10_000)),
        json!(null),
        json!(true),
        json!([]),
        json!([0, 0]),
        json!([u64::MAX, 2]),
        json!({}),
        json!({"embed": "motion"}),
    ];
    let pick = random.below(pool.len() + 1);
    pool.get(pick).cloned()
}

/// Loads the bundle in `dir` and, with `score`, opens it on ONNX Runtime and scores a short
/// clip with it; a panic fails.
fn survives(dir: &Path, score: bool, case: &str) {
    let clip: Vec<RgbImage> = (0..16u8)
        .map(|i| RgbImage {
            width: 32,
            height: 24,
            data: (0..32 * 24 * 3)
                .map(|k| (k as u8).wrapping_mul(i))
                .collect(),
        })
        .collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let loaded = qoe_model::bundle::Bundle::load(dir);
        if let Err(e) = &loaded {
            let e = e.to_string();
            assert!(e.contains(&dir.display().to_string()), "{case}: {e}");
        }
        if score
            && loaded.is_ok()
            && let Ok(scorer) = qoe_model::Scorer::open(dir, 1)
        {
            let _ = scorer.score(&clip, 8.0, None);
        }
    }));
    assert!(outcome.is_ok(), "{case}: panicked");
}

fn write_manifest(dir: &Path, manifest: &Value) {
    std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
}

#[test]
fn corpus_and_random_manifests_never_panic() {
    init_ort();
    let dir = bundle_copy("vqa2-tiny-streaming", "fuzz");
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).unwrap()).unwrap();

    let corpus =
        std::fs::read_to_string(common::fixtures().join("fuzz/bundle-mutations.txt")).unwrap();
    let mut seeds = 0;
    for line in corpus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut manifest = original.clone();
        for edit in line.split(" ; ") {
            let (pointer, value) = edit.split_once('\t').expect("pointer<TAB>value");
            let value = (value != "DELETE").then(|| serde_json::from_str(value).unwrap());
            mutate(&mut manifest, pointer, value);
        }
        write_manifest(&dir, &manifest);
        survives(&dir, true, line);
        seeds += 1;
    }
    assert!(seeds >= 20, "the corpus was read");

    let cases: usize = std::env::var("QOE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500);
    let seed = std::env::var("QOE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(35);
    let mut random = Random(seed);
    let mut all = Vec::new();
    pointers(&original, String::new(), &mut all);
    let started = Instant::now();
    for case in 0..cases {
        let mut manifest = original.clone();
        let mut edits = Vec::new();
        for _ in 0..1 + random.below(3) {
            let pointer = all[random.below(all.len())].clone();
            let value = hostile(&mut random);
            edits.push(format!("{pointer} = {value:?}"));
            mutate(&mut manifest, &pointer, value);
        }
        write_manifest(&dir, &manifest);
        // Opening on ONNX Runtime costs more: every 50th case that loads.
        survives(
            &dir,
            case % 50 == 0,
            &format!("seed {seed} case {case}: {edits:?}"),
        );
        // A hang would show here as a run far over its budget.
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{case} cases took too long"
        );
    }
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    init_ort();
    let mut random = Random(36);
    let files = [
        "keyframe_encoder.onnx",
        "motion_fast.onnx",
        "decoder_score.onnx",
        "tokenizer.json",
        "image_newline.f32",
    ];
    for (i, file) in files.iter().enumerate() {
        for how in ["truncated", "garbage", "empty"] {
            let dir = bundle_copy("vqa2-tiny-streaming", &format!("fuzz-file-{i}-{how}"));
            let path = dir.join(file);
            let bytes = std::fs::read(&path).unwrap();
            let broken = match how {
                "truncated" => bytes[..random.below(bytes.len().max(1))].to_vec(),
                "garbage" => (0..bytes.len().min(4096))
                    .map(|_| random.next() as u8)
                    .collect(),
                _ => Vec::new(),
            };
            std::fs::write(&path, broken).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| qoe_model::Scorer::open(&dir, 1)));
            let opened = outcome.unwrap_or_else(|_| panic!("{file} {how}: panicked"));
            if file.ends_with(".f32") && how == "garbage" {
                // Garbage of the right size is float data: refused only if not finite.
                continue;
            }
            let e = opened
                .err()
                .unwrap_or_else(|| panic!("{file} {how}: opened"))
                .to_string();
            assert!(e.contains(file), "{file} {how}: {e}");
        }
    }
}
