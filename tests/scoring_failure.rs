// SPDX-License-Identifier: MPL-2.0
//! A model that starts failing (a scorer with test faults, from qoe-model's `test-faults`
//! feature, shared with the element while this test holds it): one warning, later windows
//! flagged stale with the last good figures, the quality metrics holding their last good
//! values, and stall tracking and the stream going on.

mod common;
use common::{bundle, faulty_scorer, init, init_ort, play_collecting};

#[test]
fn a_failing_model_goes_stale_and_the_stream_goes_on() {
    init();
    init_ort();
    // Held for the whole test: the element opens this bundle and gets this faulty scorer.
    let _faulty = faulty_scorer(
        "cp-llm-tiny",
        qoe_model::scorer::Faults {
            fail_from_window: Some(3),
            ..Default::default()
        },
    );
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=180 ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! qoemonitor stream-id=failing bundle={} window=1000000000 hop=1000000000 leaky=false \
         ! fakesink",
        bundle("cp-llm-tiny").display()
    ))
    .unwrap();
    let mut metrics_mid = None;
    let common::Posted {
        quality,
        warnings,
        stats,
        ..
    } = play_collecting(&pipeline, |n| {
        if n == 4 {
            metrics_mid = Some(gstqoe::metrics::render());
        }
    });

    // Six 1 s windows: two good, then four failures, each repeating the last good figures.
    assert_eq!(quality.len(), 6, "{quality:?}");
    let stale: Vec<bool> = quality.iter().map(|q| q.get("stale").unwrap()).collect();
    assert_eq!(stale, [false, false, true, true, true, true]);
    let last_good = quality[1].get::<f64>("score").unwrap();
    for q in &quality[2..] {
        assert_eq!(q.get::<f64>("score").unwrap(), last_good);
    }
    assert_eq!(warnings.len(), 1, "one warning for one error: {warnings:?}");
    assert!(
        warnings[0].contains("Quality scoring failed"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("window 3 fails"), "{warnings:?}");

    let stats = stats.unwrap();
    assert_eq!(
        stats.get::<u64>("frames").unwrap(),
        180,
        "the stream went on"
    );
    assert_eq!(stats.get::<u64>("windows-scored").unwrap(), 2);
    assert!(stats.get::<bool>("stale").unwrap());

    // While stale, the quality series hold the last good score and the stale gauge is up.
    let text = metrics_mid.unwrap();
    let sample = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(sample("qoe_quality_stale{stream=\"failing\"}"), 1.0);
    assert!((sample("qoe_quality_score{stream=\"failing\"}") - last_good).abs() < 1e-9);
    assert_eq!(sample("qoe_windows_scored_total{stream=\"failing\"}"), 2.0);
}
