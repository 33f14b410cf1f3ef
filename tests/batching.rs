// SPDX-License-Identifier: MPL-2.0
//! Batched scoring across streams (#33), with the default bundle's batching decoder: windows
//! of different lengths from several threads at once score as they do alone.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use qoe_core::stall::WindowStalls;
use qoe_model::batch::BatchOptions;
use qoe_model::{Scored, Scorer, SessionOptions, WindowFeatures};

mod common;

fn open(dir: &Path, batch: BatchOptions) -> Scorer {
    common::init_ort();
    Scorer::open_with(
        dir,
        &SessionOptions {
            threads: 1,
            batch,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Windows that differ in content, in keyframe count and in their stall sentence, so that
/// the decoder's rows differ in length.
fn windows(scorer: &Scorer, count: usize) -> Vec<WindowFeatures> {
    let frames = common::textured_frames(120);
    (0..count)
        .map(|i| {
            let start = 7 * i;
            let length = 30 + 10 * (i % 3); // 3 to 5 keyframes at 10 fps
            let features = scorer
                .clip_features(&frames[start..start + length], 10.0)
                .unwrap();
            let stall = (i % 2 == 1).then(|| WindowStalls {
                count: i as u64 * 7,
                total: i as u64 * 1_234_567_891,
                initial_buffering: 250_000_000,
                ..Default::default()
            });
            WindowFeatures { stall, ..features }
        })
        .collect()
}

fn assert_same(what: &str, batched: &Scored, alone: &Scored) {
    let (b, a) = (batched.score.unwrap(), alone.score.unwrap());
    assert!(
        (b - a).abs() <= 1e-4,
        "{what}: score {b} batched, {a} alone"
    );
    for (pb, pa) in batched.probabilities.iter().zip(&alone.probabilities) {
        assert!(
            (pb - pa).abs() <= 1e-4,
            "{what}: probabilities {:?} batched, {:?} alone",
            batched.probabilities,
            alone.probabilities
        );
    }
    assert_eq!(batched.sequence_length, alone.sequence_length, "{what}");
}

/// Each window scored by a stream of its own, all handed in at once (every stream counted as
/// a user of `scorer`, so that the batch waits for all of them).
fn at_once(scorer: &Arc<Scorer>, features: Vec<WindowFeatures>) -> Vec<qoe_model::Result<Scored>> {
    for _ in 0..features.len() {
        scorer.stream_joined();
    }
    let barrier = Arc::new(Barrier::new(features.len()));
    let threads: Vec<_> = features
        .into_iter()
        .map(|f| {
            let (scorer, barrier) = (scorer.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                scorer.score_window(&f)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Six streams' windows (of different lengths) scored at once through a batching scorer of
/// bundle `dir` equal the same windows scored alone, and go as one decoder call; then a
/// lone stream's window runs at once. `rows` is the decoder rows per window (ensemble models).
fn six_streams_in_one_batch_score_as_alone(dir: &Path, rows: u64) {
    let alone = open(
        dir,
        BatchOptions {
            max_rows: 1,
            ..Default::default()
        },
    );
    assert!(!alone.batches(), "max_rows 1 runs every prefill alone");
    let streams = 6;
    let features = windows(&alone, streams);
    let expected: Vec<Scored> = features
        .iter()
        .map(|f| alone.score_window(f).unwrap())
        .collect();
    let lengths: std::collections::BTreeSet<usize> =
        expected.iter().map(|s| s.sequence_length).collect();
    assert!(
        lengths.len() >= 3,
        "rows must differ in length: {lengths:?}"
    );
    drop(alone);

    // A minute's delay: the batch runs when every stream has handed in its window.
    let batched = Arc::new(open(
        dir,
        BatchOptions {
            max_rows: 16,
            max_delay: Duration::from_secs(60),
        },
    ));
    assert!(batched.batches());
    for (i, (result, alone)) in at_once(&batched, features)
        .into_iter()
        .zip(&expected)
        .enumerate()
    {
        assert_same(&format!("window {i}"), &result.unwrap(), alone);
    }
    let counts = batched.batch_counts().unwrap();
    let all = streams as u64 * rows;
    assert_eq!(
        (counts.batches, counts.rows, counts.largest),
        (1, all, all as usize),
        "every window in one call"
    );

    // A lone stream's window runs at once (an ensemble's rows in one call).
    for _ in 1..streams {
        batched.stream_left();
    }
    let started = std::time::Instant::now();
    let again = batched.score_window(&windows(&batched, 1)[0]).unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_same("lone window", &again, &expected[0]);
    let counts = batched.batch_counts().unwrap();
    assert_eq!((counts.batches, counts.rows), (2, all + rows));
}

/// The default bundle: SmolLM2's decoder after the cached prompt opening.
#[test]
fn default_bundle_windows_of_many_streams_in_one_batch_score_as_alone() {
    let bundle = common::default_bundle();
    let models = qoe_model::bundle::Bundle::load(&bundle)
        .unwrap()
        .models()
        .len();
    six_streams_in_one_batch_score_as_alone(&bundle, models as u64);
}

/// The VQA² exporter's decoders (Qwen2 from PyTorch, whole prompts, no prefix cache).
#[test]
fn vqa2_exported_windows_of_many_streams_in_one_batch_score_as_alone() {
    for name in ["vqa2-tiny-streaming", "vqa2-tiny-ugc"] {
        six_streams_in_one_batch_score_as_alone(&common::bundle(name), 1);
    }
}

/// One stream's bad window in a batch fails that window only: the batch is retried window by
/// window, and the others' scores are their own.
#[test]
fn a_bad_window_in_a_batch_fails_only_its_own_stream() {
    let dir = common::bundle("vqa2-tiny-streaming");
    let alone = open(
        &dir,
        BatchOptions {
            max_rows: 1,
            ..Default::default()
        },
    );
    let streams = 4;
    let features = windows(&alone, streams);
    let expected: Vec<Scored> = features
        .iter()
        .map(|f| alone.score_window(f).unwrap())
        .collect();
    // Rows are the prompt up to the logit position: the longest window's fails.
    let position = alone.bundle().manifest.score.logit_position.unwrap_or(-1);
    let rows: Vec<usize> = expected
        .iter()
        .map(|s| (s.sequence_length as i64 + position + 1) as usize)
        .collect();
    let longest = *rows.iter().max().unwrap();
    assert_eq!(
        rows.iter().filter(|&&r| r == longest).count(),
        1,
        "{rows:?}"
    );
    let bad = rows.iter().position(|&r| r == longest).unwrap();
    let below = *rows.iter().filter(|&&r| r < longest).max().unwrap();
    drop(alone);

    common::init_ort();
    let batched = Arc::new(
        Scorer::open_with_faults(
            &dir,
            &SessionOptions {
                threads: 1,
                batch: BatchOptions {
                    max_rows: 16,
                    max_delay: Duration::from_secs(60),
                },
                ..Default::default()
            },
            qoe_model::scorer::Faults {
                fail_rows_over: Some(below),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    for (i, (result, alone)) in at_once(&batched, features)
        .into_iter()
        .zip(&expected)
        .enumerate()
    {
        if i == bad {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("test fault: a row of more than"), "{e}");
        } else {
            assert_same(&format!("window {i}"), &result.unwrap(), alone);
        }
    }
    let counts = batched.batch_counts().unwrap();
    assert_eq!(
        (counts.batches, counts.rows),
        (1, streams as u64),
        "one batch, then its retries"
    );
}

/// LMM-VQA scores by a generated answer and CP-LLM by a head over keyframes: neither runs
/// a scoring prefill, and their windows are scored one by one.
#[test]
fn bundles_without_a_batching_decoder_score_one_window_at_a_time() {
    for name in ["lmm-vqa-tiny", "cp-llm-tiny"] {
        let scorer = open(&common::bundle(name), BatchOptions::default());
        assert!(!scorer.batches(), "{name}: its decoder does not batch");
        assert_eq!(scorer.batch_counts(), None);
    }
}
