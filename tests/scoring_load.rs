// SPDX-License-Identifier: MPL-2.0
//! A model made slow on purpose (a scorer with test faults, from qoe-model's `test-faults`
//! feature, shared with the element while this test holds it): windows are dropped and
//! counted, while buffers keep flowing at the live source's full rate.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;

mod common;
use common::{bundle, init, init_ort};

#[test]
fn a_slow_model_drops_windows_and_never_holds_up_buffers() {
    init();
    init_ort();
    // Held for the whole test: the element opens this bundle and gets this slow scorer.
    let _slow = common::faulty_scorer(
        "cp-llm-tiny",
        qoe_model::scorer::Faults {
            window_delay: Some(std::time::Duration::from_millis(2500)),
            ..Default::default()
        },
    );
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers=180 ! video/x-raw,format=I420,width=160,height=120,framerate=30/1 \
         ! qoemonitor name=m bundle={} window=1000000000 hop=1000000000 stats-interval=0 \
         ! fakesink name=sink sync=true signal-handoffs=true",
        bundle("cp-llm-tiny").display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .connect("handoff", false, move |_| {
            seen.lock().unwrap().push(Instant::now());
            None
        });
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut stats = None;
    let mut scored = 0;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => match e.structure() {
                Some(s) if s.name() == "qoe-stats" => stats = Some(s.to_owned()),
                Some(s) if s.name() == "qoe-quality" => scored += 1,
                _ => {}
            },
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();

    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 180, "every buffer went through");
    // 180 frames of a live 30 fps source take 6 s; the model needs 2.5 s per window.
    let flowing = arrivals[179].duration_since(arrivals[0]).as_secs_f64();
    assert!(
        flowing < 6.5,
        "buffers took {flowing:.2} s for 6 s of video: the pipeline waited on the model"
    );
    let worst_gap = arrivals
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .fold(0.0, f64::max);
    assert!(
        worst_gap < 0.25,
        "a {worst_gap:.3} s pause in the buffer flow"
    );

    let stats = stats.expect("final qoe-stats");
    let dropped = stats.get::<u64>("windows-dropped").unwrap();
    let done = stats.get::<u64>("windows-scored").unwrap();
    assert!(dropped >= 1, "the queue overflowed and said so: {stats}");
    assert!(
        done >= 1,
        "the slow model still scored some windows: {stats}"
    );
    assert_eq!(done, scored as u64);
    assert!(
        done + dropped <= 6,
        "at most one window per second of video: {stats}"
    );
    eprintln!(
        "slow model: {done} windows scored, {dropped} dropped, {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
