// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor` in a real live pipeline against the system clock. Kept in its own test
//! binary so that no other test competes for the CPU while it measures an outage.

use gst::prelude::*;

mod common;
use common::*;

/// A live source that stops sending for a second: the stall is reported while it lasts,
/// against the real pipeline clock, and ends when frames come back.
#[test]
fn live_source_outage_is_reported_while_it_lasts() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true pattern=ball name=src ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! qoemonitor name=q ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let bus = pipeline.bus().unwrap();
    let monitor = pipeline.by_name("q").unwrap();
    let src_pad = pipeline.by_name("src").unwrap().static_pad("src").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let stall_messages = |timeout_ms: u64| -> Vec<gst::Structure> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                break;
            };
            match msg.view() {
                gst::MessageView::Element(e)
                    if e.structure().is_some_and(|s| s.name() == "qoe-stall") =>
                {
                    out.push(e.structure().unwrap().to_owned())
                }
                gst::MessageView::Error(e) => panic!("{}", e.error()),
                _ => {}
            }
        }
        out
    };

    assert!(
        stall_messages(1000).is_empty(),
        "no stall while frames flow"
    );
    let probe = src_pad
        .add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    let during = stall_messages(1000);
    assert_eq!(
        during.len(),
        1,
        "stall start reported during the outage: {during:?}"
    );
    assert_eq!(during[0].get::<&str>("event").unwrap(), "start");
    assert_eq!(during[0].get::<&str>("cause").unwrap(), "late-arrival");
    let stats = monitor.property::<Option<gst::Structure>>("stats").unwrap();
    assert!(stats.get::<bool>("stalled").unwrap());
    assert!(stats.get::<bool>("live").unwrap());
    assert_ne!(
        t(&stats, "initial-buffering"),
        u64::MAX,
        "initial buffering measured when live"
    );

    src_pad.remove_probe(probe);
    let after = stall_messages(500);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(after.len(), 1, "stall end after the outage: {after:?}");
    let duration = t(&after[0], "duration");
    // Blocked for about 1 s (plus scheduling); the stall began one frame after the last one.
    assert!(
        (800 * MS..1400 * MS).contains(&duration),
        "stall of {duration} ns"
    );
}
