// SPDX-License-Identifier: MPL-2.0
//! The last line of defence: model code that panics (a scorer with test faults, from
//! qoe-model's `test-faults` feature, shared with the element while this test holds it). The
//! panic is caught: one warning, the window goes stale, the panic is counted, later windows
//! score again, and the stream reaches EOS.

mod common;
use common::{bundle, faulty_scorer, init, init_ort, play_collecting};

#[test]
fn a_panicking_model_is_a_warning_and_the_stream_goes_on() {
    init();
    init_ort();
    let _faulty = faulty_scorer(
        "cp-llm-tiny",
        qoe_model::scorer::Faults {
            panic_at_window: Some(2),
            ..Default::default()
        },
    );
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=150 ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! qoemonitor bundle={} window=1000000000 hop=1000000000 leaky=false \
         ! fakesink",
        bundle("cp-llm-tiny").display()
    ))
    .unwrap();
    let common::Posted {
        quality,
        warnings,
        stats,
        eos,
    } = play_collecting(&pipeline, |_| {});
    assert!(eos, "EOS flowed");
    let stale: Vec<bool> = quality.iter().map(|q| q.get("stale").unwrap()).collect();
    assert_eq!(stale, [false, true, false, false, false], "{quality:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("the scorer panicked: test fault: window 2 panics"),
        "{warnings:?}"
    );
    let stats = stats.unwrap();
    assert_eq!(stats.get::<u64>("frames").unwrap(), 150);
    assert_eq!(stats.get::<u64>("model-panics").unwrap(), 1);
    assert_eq!(stats.get::<u64>("windows-scored").unwrap(), 4);
}
