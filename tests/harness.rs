// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor` driven by `gst_check::Harness` with a test clock: live stalls, initial
//! buffering, GAP events, missing timestamps, caps changes, flushes, and passthrough.

use gst::prelude::*;
use gst_check::Harness;

mod common;
use common::{MS, init};

const FRAME: u64 = 33_333_333; // 30 fps
const CAPS_64: &str = "video/x-raw,format=I420,width=64,height=48,framerate=30/1";
const CAPS_96: &str = "video/x-raw,format=I420,width=96,height=64,framerate=30/1";

fn ns(t: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(t)
}

/// A harness around `qoemonitor` with a bus, a test clock and PLAYING entered at clock time
/// `playing_at`, so that the element sees a live upstream (the harness answers latency
/// queries as live) and a running clock.
struct Monitor {
    h: Harness,
    bus: gst::Bus,
    width: usize,
    height: usize,
}

impl Monitor {
    fn new(props: &[(&str, &dyn ToValue)], playing_at: u64) -> Monitor {
        init();
        let element = gst::ElementFactory::make("qoemonitor").build().unwrap();
        for (name, value) in props {
            element.set_property_from_value(name, &value.to_value());
        }
        let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        h.use_testclock();
        h.set_time(ns(playing_at)).unwrap();
        // The harness starts the element before the test clock is set: re-enter PLAYING
        // on the test clock, with base time 0 so running time equals clock time.
        element.set_state(gst::State::Paused).unwrap();
        element.set_base_time(gst::ClockTime::ZERO);
        element.set_state(gst::State::Playing).unwrap();
        h.set_src_caps_str(CAPS_64);
        Monitor {
            h,
            bus,
            width: 64,
            height: 48,
        }
    }

    fn set_caps(&mut self, caps: &str, width: usize, height: usize) {
        self.h.set_src_caps_str(caps);
        self.width = width;
        self.height = height;
    }

    /// A frame whose luma is a pattern seeded by `seed` (same seed, same picture).
    fn frame(&self, pts: Option<u64>, seed: u8) -> gst::Buffer {
        let luma = self.width * self.height;
        let mut data = vec![128u8; luma * 3 / 2];
        for (i, px) in data[..luma].iter_mut().enumerate() {
            *px = (i as u8)
                .wrapping_mul(13)
                .wrapping_add(seed.wrapping_mul(31));
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(pts.map(ns));
            b.set_duration(ns(FRAME));
        }
        buffer
    }

    /// Pushes a frame that arrives at clock time `arrival`.
    fn push_at(&mut self, pts: Option<u64>, arrival: u64, seed: u8) {
        self.h.set_time(ns(arrival)).unwrap();
        let buffer = self.frame(pts, seed);
        self.h.push(buffer).unwrap();
        let _ = self.h.pull().unwrap();
    }

    /// Element messages posted so far, with their structures.
    fn messages(&self, name: &str) -> Vec<gst::Structure> {
        let mut out = Vec::new();
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Element]) {
            if let Some(s) = msg.structure()
                && s.name() == name
            {
                out.push(s.to_owned());
            }
        }
        out
    }

    fn stats(&self) -> gst::Structure {
        self.h
            .element()
            .unwrap()
            .property::<Option<gst::Structure>>("stats")
            .expect("stats once started")
    }

    /// Lets the clock run to `t`, firing every wait the element armed on the way.
    fn crank_to(&mut self, t: u64) {
        for _ in 0..1000 {
            match self.pending_wait() {
                Some(due) if due <= t => self.h.crank_single_clock_wait().unwrap(),
                _ => break,
            }
        }
        if self.h.testclock().unwrap().time() < ns(t) {
            self.h.set_time(ns(t)).unwrap();
        }
    }

    fn pending_wait(&self) -> Option<u64> {
        self.h
            .testclock()
            .unwrap()
            .peek_next_pending_id()
            .map(|id| id.time().nseconds())
    }
}

fn time_field(s: &gst::Structure, field: &str) -> u64 {
    s.get::<u64>(field)
        .unwrap_or_else(|e| panic!("{field} in {s}: {e}"))
}

#[test]
fn live_stall_is_reported_while_it_goes_on_and_ends_with_the_next_frame() {
    let mut m = Monitor::new(&[], 0);
    for i in 0..10 {
        m.push_at(Some(i * FRAME), i * FRAME, i as u8);
    }
    let due = 10 * FRAME;
    // The clock declares the stall one threshold past the frame's due time, not before.
    m.crank_to(due + 249 * MS);
    assert!(m.messages("qoe-stall").is_empty());
    m.crank_to(due + 250 * MS);
    // While stalled, nothing more is waited for.
    assert_eq!(m.pending_wait(), None);
    let started = m.messages("qoe-stall");
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].get::<&str>("event").unwrap(), "start");
    assert_eq!(started[0].get::<&str>("cause").unwrap(), "late-arrival");
    assert_eq!(time_field(&started[0], "start"), due);
    assert!(m.stats().get::<bool>("stalled").unwrap());

    // Frames resume 1.2 s after they were due; the live source timestamps by the clock, so
    // PTS jumps too, and it is still one stall.
    let resume = due + 1200 * MS;
    m.push_at(Some(resume), resume, 50);
    let ended = m.messages("qoe-stall");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].get::<&str>("event").unwrap(), "end");
    assert_eq!(time_field(&ended[0], "duration"), 1200 * MS);
    assert_eq!(time_field(&ended[0], "running-time"), resume);
    let stats = m.stats();
    assert_eq!(stats.get::<u64>("stalls").unwrap(), 1);
    assert_eq!(time_field(&stats, "stall-time"), 1200 * MS);
    assert!(!stats.get::<bool>("stalled").unwrap());
    assert!(stats.get::<bool>("live").unwrap());
}

#[test]
fn frames_in_time_never_trigger_the_clock_stall() {
    let mut m = Monitor::new(&[], 0);
    let mut arrival = 0;
    for i in 0..60 {
        // Frames arrive up to 180 ms late, in bursts, never a threshold after the last one.
        arrival = (i * FRAME + (i % 7) * 30 * MS).max(arrival);
        m.crank_to(arrival);
        m.push_at(Some(i * FRAME), arrival, i as u8);
        assert!(
            m.pending_wait().is_some(),
            "the element keeps watching for late frames"
        );
    }
    assert!(m.messages("qoe-stall").is_empty());
}

#[test]
fn initial_buffering_is_playing_to_first_frame() {
    let mut m = Monitor::new(&[], 2000 * MS);
    m.push_at(Some(2700 * MS), 2700 * MS, 0);
    assert_eq!(time_field(&m.stats(), "initial-buffering"), 700 * MS);
}

#[test]
fn stall_threshold_property_is_used() {
    let mut m = Monitor::new(&[("stall-threshold", &(100 * MS))], 0);
    m.push_at(Some(0), 0, 0);
    m.crank_to(FRAME + 99 * MS);
    assert!(m.messages("qoe-stall").is_empty());
    m.crank_to(FRAME + 100 * MS);
    assert_eq!(
        m.messages("qoe-stall").len(),
        1,
        "late-arrival stall at 100 ms"
    );
    m.push_at(Some(FRAME), FRAME + 100 * MS, 1);
    assert_eq!(m.messages("qoe-stall").len(), 1, "its end");
    // A 150 ms timestamp gap is a stall at this threshold.
    m.push_at(Some(2 * FRAME + 150 * MS), 2 * FRAME + 120 * MS, 2);
    assert_eq!(
        m.messages("qoe-stall").len(),
        2,
        "timestamp-gap stall start and end"
    );
    assert_eq!(m.stats().get::<u64>("stalls").unwrap(), 2);
}

/// A GAP only announces a hole: the stall starts once the stream has gone on past the
/// threshold without a frame (here a second GAP), at the hole's start, and never for a GAP
/// that a frame follows within the threshold.
#[test]
fn gap_event_stall_starts_once_the_hole_outlasts_the_threshold() {
    let mut m = Monitor::new(&[], 0);
    for i in 0..5 {
        m.push_at(Some(i * FRAME), i * FRAME, i as u8);
    }
    let hole = 5 * FRAME;
    let gap = |start: u64| {
        gst::event::Gap::builder(ns(start))
            .duration(ns(1000 * MS))
            .build()
    };
    assert!(m.h.push_event(gap(hole)));
    assert!(
        m.messages("qoe-stall").is_empty(),
        "announced, not yet seen"
    );
    assert!(m.h.push_event(gap(hole + 500 * MS)));
    let started = m.messages("qoe-stall");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].get::<&str>("cause").unwrap(), "gap-event");
    assert_eq!(time_field(&started[0], "start"), hole);
    m.push_at(Some(hole + 1000 * MS), hole + 1000 * MS, 9);
    let ended = m.messages("qoe-stall");
    assert_eq!(ended.len(), 1);
    assert_eq!(time_field(&ended[0], "duration"), 1000 * MS);

    // A GAP that a frame follows within the threshold is no stall, however long it claims.
    let next = hole + 1000 * MS + FRAME;
    assert!(m.h.push_event(gap(next)));
    m.push_at(Some(next + FRAME / 2), next + FRAME / 2, 10);
    assert!(m.messages("qoe-stall").is_empty());
    assert_eq!(m.stats().get::<u64>("stalls").unwrap(), 1);
}

#[test]
fn buffers_without_pts_are_timed_by_arrival() {
    let mut m = Monitor::new(&[], 0);
    for i in 0..5 {
        m.push_at(None, i * FRAME, i as u8);
    }
    // Arrival stops: the clock declares the stall.
    m.crank_to(5 * FRAME + 300 * MS);
    m.push_at(None, 5 * FRAME + 600 * MS, 7);
    let events = m.messages("qoe-stall");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(time_field(&events[0], "start"), 5 * FRAME);
    assert_eq!(time_field(&events[1], "duration"), 600 * MS);
    assert_eq!(m.stats().get::<u64>("frames").unwrap(), 6);
}

#[test]
fn backwards_pts_is_a_discontinuity_not_a_stall() {
    let mut m = Monitor::new(&[], 0);
    for i in 0..10 {
        m.push_at(Some(i * FRAME), i * FRAME, i as u8);
    }
    for i in 0..10 {
        m.push_at(Some(i * FRAME), (10 + i) * FRAME, i as u8);
    }
    assert!(m.messages("qoe-stall").is_empty());
    assert_eq!(m.stats().get::<u64>("stalls").unwrap(), 0);
}

#[test]
fn flushing_seek_resets_expectations_without_a_stall() {
    let mut m = Monitor::new(&[], 0);
    for i in 0..10 {
        m.push_at(Some(i * FRAME), i * FRAME, i as u8);
    }
    assert!(m.h.push_event(gst::event::FlushStart::new()));
    assert!(m.h.push_event(gst::event::FlushStop::new(true)));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(ns(60_000 * MS));
    segment.set_time(ns(60_000 * MS));
    assert!(m.h.push_event(gst::event::Segment::new(&segment)));
    // After the seek the stream continues 60 s later in stream time.
    for i in 0..10 {
        m.push_at(
            Some(60_000 * MS + i * FRAME),
            (10 + i) * FRAME,
            20 + i as u8,
        );
    }
    assert!(m.messages("qoe-stall").is_empty());
    assert_eq!(m.stats().get::<u64>("frames").unwrap(), 20);
}

#[test]
fn caps_change_resets_the_freeze_reference_and_keeps_counting() {
    let mut m = Monitor::new(&[("freeze-min-duration", &(500 * MS))], 0);
    for i in 0..30 {
        m.push_at(Some(i * FRAME), i * FRAME, 3); // one still picture
    }
    let started = m.messages("qoe-freeze");
    assert_eq!(started.len(), 1);
    assert_eq!(time_field(&started[0], "start"), 0);
    // A new resolution ends the freeze where the last frame ended...
    m.set_caps(CAPS_96, 96, 64);
    m.push_at(Some(30 * FRAME), 30 * FRAME, 3);
    let ended = m.messages("qoe-freeze");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(time_field(&ended[0], "duration"), 30 * FRAME);
    // ...and the new picture is a fresh reference that can freeze again.
    for i in 31..60 {
        m.push_at(Some(i * FRAME), i * FRAME, 3);
    }
    let again = m.messages("qoe-freeze");
    assert_eq!(again.len(), 1);
    assert_eq!(time_field(&again[0], "start"), 30 * FRAME);
    let stats = m.stats();
    assert_eq!(stats.get::<u64>("frames").unwrap(), 60);
    assert_eq!(stats.get::<u64>("freezes").unwrap(), 2);
}

#[test]
fn buffers_pass_through_untouched() {
    let mut m = Monitor::new(&[], 0);
    m.h.set_time(ns(0)).unwrap();
    let input = m.frame(Some(0), 5);
    let expected = input.map_readable().unwrap().to_vec();
    m.h.push(input.clone()).unwrap();
    let output = m.h.pull().unwrap();
    assert_eq!(
        output.as_ptr(),
        input.as_ptr(),
        "passthrough hands on the same buffer"
    );
    assert_eq!(
        output.map_readable().unwrap().as_slice(),
        expected.as_slice()
    );
    assert_eq!(output.pts(), Some(ns(0)));
}

#[test]
fn stats_are_posted_every_interval_and_at_eos() {
    let mut m = Monitor::new(
        &[("stats-interval", &(500 * MS)), ("stream-id", &"cam-7")],
        0,
    );
    for i in 0..62 {
        m.push_at(Some(i * FRAME), i * FRAME, i as u8);
    }
    let periodic = m.messages("qoe-stats");
    // Just over 2 s of frames at 500 ms intervals.
    let times: Vec<u64> = periodic
        .iter()
        .map(|s| time_field(s, "stream-time"))
        .collect();
    assert_eq!(times.len(), 4, "{times:?}");
    for (k, t) in times.iter().enumerate() {
        let due = (k as u64 + 1) * 500 * MS;
        assert!(*t >= due && *t < due + FRAME, "stats {k} at {t}");
    }
    assert_eq!(periodic[0].get::<&str>("stream-id").unwrap(), "cam-7");
    assert!(m.h.push_event(gst::event::Eos::new()));
    let last = m.messages("qoe-stats");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].get::<u64>("frames").unwrap(), 62);
}

#[test]
fn unsupported_caps_are_refused_with_a_warning_that_says_why() {
    init();
    let mut h = Harness::new("qoemonitor");
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    h.set_src_caps_str("video/x-raw,format=v210,width=64,height=48,framerate=30/1");
    let buffer = gst::Buffer::with_size(64 * 48 * 3).unwrap();
    assert_eq!(h.push(buffer), Err(gst::FlowError::NotNegotiated));
    let msg = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning explains the refusal");
    let gst::MessageView::Warning(w) = msg.view() else {
        unreachable!()
    };
    assert!(
        w.error()
            .to_string()
            .contains("cannot read video/x-raw, format=(string)v210"),
        "{}",
        w.error()
    );
    let debug = w.debug().unwrap();
    assert!(
        debug.contains("I420") && debug.contains("videoconvert"),
        "{debug}"
    );
}

/// Frames the decoder flags corrupted or discontinuous are counted, in the stats and the
/// metrics; the picture checks go on over them.
#[test]
fn corrupted_and_discont_buffers_are_counted() {
    let mut m = Monitor::new(&[("stream-id", &"flags")], 0);
    for i in 0..10u64 {
        let mut buffer = m.frame(Some(i * FRAME), i as u8);
        {
            let b = buffer.get_mut().unwrap();
            if i % 3 == 1 {
                b.set_flags(gst::BufferFlags::CORRUPTED);
            }
            if i == 0 || i == 5 {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        m.h.set_time(ns(i * FRAME)).unwrap();
        m.h.push(buffer).unwrap();
        let _ = m.h.pull().unwrap();
    }
    let stats = m.stats();
    assert_eq!(stats.get::<u64>("corrupted-buffers").unwrap(), 3, "{stats}");
    assert_eq!(stats.get::<u64>("discont-buffers").unwrap(), 2, "{stats}");
    assert_eq!(stats.get::<u64>("frames").unwrap(), 10);
    // The metrics follow at the next refresh (every 500 ms of stream time, and at EOS).
    assert!(m.h.push_event(gst::event::Eos::new()));
    let text = gstqoe::metrics::render();
    assert!(
        text.contains("qoe_corrupted_buffers_total{stream=\"flags\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("qoe_discont_buffers_total{stream=\"flags\"} 2"),
        "{text}"
    );
}

/// A timestamped stream where some buffers lack a timestamp (every 3rd, or at random): each
/// is placed a frame period after the one before, never a stall, however far its arrival
/// is from its place (a file decodes faster than real time).
#[test]
fn buffers_missing_a_timestamp_in_a_timestamped_stream_are_interpolated() {
    // A quarter of the buffers, picked by a fixed pseudo-random sequence.
    let mut seed = 7u64;
    let random: Vec<bool> = (0..300)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33).is_multiple_of(4)
        })
        .collect();
    let every_third: Vec<bool> = (0..300u64).map(|i| i % 3 == 2).collect();
    for (what, missing) in [("every 3rd", every_third), ("random quarter", random)] {
        let mut m = Monitor::new(&[], 0);
        for i in 0..300u64 {
            // Decoded four times faster than real time.
            let pts = (!missing[i as usize]).then_some(i * FRAME);
            m.push_at(pts, i * FRAME / 4, i as u8);
        }
        let stats = m.stats();
        assert_eq!(stats.get::<u64>("stalls").unwrap(), 0, "{what}: {stats}");
        assert_eq!(stats.get::<f64>("stall-ratio").unwrap(), 0.0, "{what}");
        assert_eq!(stats.get::<u64>("frames-missing").unwrap(), 0, "{what}");
        assert!(m.messages("qoe-stall").is_empty(), "{what}");
        assert_eq!(stats.get::<u64>("frames").unwrap(), 300);
    }
}
