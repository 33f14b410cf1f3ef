// SPDX-License-Identifier: MPL-2.0
//! Stall (rebuffering) tracking, free of GStreamer types.
//!
//! All times are nanoseconds of *running time*: the timeline a viewer experiences, which
//! stays monotonic across segment updates and rate changes. The element converts to stream
//! time only when it reports.
//!
//! A stall is playback that stops while it should go on:
//! - a **timestamp gap**: a frame's timestamp is later than the expected one (previous
//!   timestamp + frame period) by more than the threshold;
//! - a **GAP event**: upstream says there is no data for a while;
//! - a **late arrival** (live pipelines only): no frame arrives for longer than the
//!   threshold, measured against the pipeline clock, while PLAYING.
//!
//! One outage is one stall, whichever of these signals sees it first: a live source that
//! stops sending frames usually also opens a timestamp gap and may send GAP events, and all
//! of that is the same stall.
//!
//! (About 970 lines, of which the unit tests are 430.)

use std::collections::VecDeque;

use crate::time::Nanos;

/// How many completed stalls are kept in detail; counts and totals cover every stall.
pub const STALL_HISTORY: usize = 256;
/// How many playback slots the per-frame 0/1 sequence keeps (10 minutes at 60 fps).
pub const SLOT_HISTORY: usize = 36_000;

/// What revealed a stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallCause {
    TimestampGap,
    GapEvent,
    LateArrival,
}

impl StallCause {
    pub fn as_str(self) -> &'static str {
        match self {
            StallCause::TimestampGap => "timestamp-gap",
            StallCause::GapEvent => "gap-event",
            StallCause::LateArrival => "late-arrival",
        }
    }
}

/// A completed stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub start: Nanos,
    pub duration: Nanos,
    pub cause: StallCause,
}

impl Stall {
    pub fn end(&self) -> Nanos {
        self.start + self.duration
    }
}

/// What the caller should report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallEvent {
    Started { start: Nanos, cause: StallCause },
    Ended(Stall),
}

/// One frame as the tracker sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameTiming {
    /// The frame's timestamp in running time, `None` if the buffer has none.
    pub pts: Option<Nanos>,
    /// Buffer duration, if set.
    pub duration: Option<Nanos>,
    /// Running time at which the frame reached the element, `None` when no clock runs
    /// (not PLAYING). Used for live stalls, initial buffering and frames without PTS.
    pub arrival: Option<Nanos>,
}

/// The figures the VQA² streaming scorer and the `qoe-stats` message use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StallSummary {
    /// Stalls so far, the open one included.
    pub count: u64,
    /// Durations of the most recent stalls (at most [`STALL_HISTORY`]), oldest first; an open
    /// stall is included with its duration so far.
    pub durations: Vec<Nanos>,
    /// Total stall time, the open stall's time so far included.
    pub total: Nanos,
    /// Total stall time over watched time (playback plus stalls since the first frame).
    pub ratio: f64,
    /// Time from the PLAYING transition to the first frame; live pipelines only.
    pub initial_buffering: Option<Nanos>,
    /// Time since the last stall ended; `None` before the first stall ends.
    pub since_last_stall: Option<Nanos>,
    /// Whether a stall is going on now.
    pub stalled: bool,
    /// Frames observed.
    pub frames: u64,
}

/// Stall figures of one scoring window (see [`StallTracker::within`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStalls {
    pub count: u64,
    pub durations: Vec<Nanos>,
    pub total: Nanos,
    pub ratio: f64,
    pub initial_buffering: Nanos,
    pub since_last_stall: Nanos,
    pub sequence: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct OpenStall {
    start: Nanos,
    cause: StallCause,
}

#[derive(Debug)]
pub struct StallTracker {
    threshold: Nanos,
    /// Frame period from the caps (1/framerate), `None` for variable or unknown rates.
    nominal_period: Option<Nanos>,
    live: bool,

    /// The frame period used for the last frame (for counting stalled playback slots).
    last_period: Option<Nanos>,
    /// Running time at which the next frame's timestamp is due.
    expected_pts: Option<Nanos>,
    /// Running time at which the next frame should arrive (live).
    expected_arrival: Option<Nanos>,
    open: Option<OpenStall>,
    /// Where a hole that GAP events announced began, until time shows whether it lasts
    /// longer than the threshold (a GAP's own duration is upstream's guess).
    pending_gap: Option<Nanos>,

    playing_since: Option<Nanos>,
    first_frame: Option<Nanos>,
    initial_buffering: Option<Nanos>,
    /// Latest running time the tracker knows to have passed.
    latest: Option<Nanos>,

    frames: u64,
    count: u64,
    total: Nanos,
    recent: VecDeque<Stall>,
    last_end: Option<Nanos>,
    /// One entry per playback slot: 0 for a frame shown, 1 for a frame period spent stalled.
    slots: VecDeque<u8>,
}

impl StallTracker {
    pub fn new(threshold: Nanos) -> Self {
        StallTracker {
            threshold,
            nominal_period: None,
            live: false,
            last_period: None,
            expected_pts: None,
            expected_arrival: None,
            open: None,
            pending_gap: None,
            playing_since: None,
            first_frame: None,
            initial_buffering: None,
            latest: None,
            frames: 0,
            count: 0,
            total: 0,
            recent: VecDeque::new(),
            last_end: None,
            slots: VecDeque::new(),
        }
    }

    pub fn set_threshold(&mut self, threshold: Nanos) {
        self.threshold = threshold;
    }

    /// Frame period from the caps; `None` (or a zero framerate) means variable rate.
    pub fn set_nominal_period(&mut self, period: Option<Nanos>) {
        self.nominal_period = period.filter(|p| *p > 0);
    }

    /// Whether arrival times count (live pipelines).
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
        if !live {
            self.expected_arrival = None;
        }
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Latest running time the tracker knows to have passed (frames, GAP events, clock).
    pub fn latest(&self) -> Option<Nanos> {
        self.latest
    }

    pub fn is_stalled(&self) -> bool {
        self.open.is_some()
    }

    /// The pipeline went to PLAYING at running time `now`. Initial buffering is measured from
    /// the last such transition before the first frame, in live pipelines (liveness may be
    /// learnt only when that frame comes).
    pub fn on_playing(&mut self, now: Nanos) {
        if self.first_frame.is_none() {
            self.playing_since = Some(now);
        }
        // Arrival expectations from before a pause are meaningless now.
        self.expected_arrival = None;
        self.bump_latest(now);
    }

    /// The pipeline left PLAYING: time does not run for late arrivals any more.
    pub fn on_paused(&mut self) {
        self.expected_arrival = None;
    }

    /// The period after which the next frame would be late (frame period, else buffer
    /// duration).
    fn period(&self, duration: Option<Nanos>) -> Option<Nanos> {
        match (self.nominal_period, duration) {
            // A buffer that claims to last longer than the frame period of a fixed-rate
            // stream hides a hole (MP4 stretches the frame before a gap): trust the period.
            (Some(p), Some(d)) => Some(p.min(d)),
            (Some(p), None) => Some(p),
            (None, d) => d,
        }
    }

    fn bump_latest(&mut self, t: Nanos) {
        self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
    }

    /// A frame passed. Returns the stall events it reveals (at most a start and an end).
    pub fn on_frame(&mut self, frame: FrameTiming) -> Vec<StallEvent> {
        let mut events = Vec::new();
        let period = self.period(frame.duration);
        self.last_period = period.or(self.last_period);
        // Without a timestamp, the arrival time is the frame's time.
        let at = frame.pts.or(frame.arrival);

        if self.first_frame.is_none() {
            self.first_frame = at;
            if let (true, Some(since), Some(arrival)) =
                (self.live, self.playing_since, frame.arrival)
            {
                self.initial_buffering = Some(arrival.saturating_sub(since));
            }
        }

        let pending_gap = self.pending_gap.take();
        if let (Some(hole), Some(at)) = (pending_gap, at)
            && at > hole
            && at - hole > self.threshold
            && self.open.is_none()
        {
            // The hole GAP events announced lasted: one stall, told as the GAP's.
            let stall = Stall {
                start: hole,
                duration: at - hole,
                cause: StallCause::GapEvent,
            };
            events.push(StallEvent::Started {
                start: stall.start,
                cause: stall.cause,
            });
            self.count += 1;
            events.push(StallEvent::Ended(self.record(stall)));
        } else if let Some(open) = self.open.take() {
            // The stall ends when playback resumes, measured on the timeline it began on.
            let end = match open.cause {
                StallCause::LateArrival => frame.arrival.or(at),
                _ => at.or(frame.arrival),
            }
            .unwrap_or(open.start)
            .max(open.start);
            events.push(StallEvent::Ended(self.close(open, end)));
        } else if let (Some(pts), Some(expected)) = (frame.pts, self.expected_pts)
            && pts > expected
            && pts - expected > self.threshold
        {
            let stall = Stall {
                start: expected,
                duration: pts - expected,
                cause: StallCause::TimestampGap,
            };
            events.push(StallEvent::Started {
                start: stall.start,
                cause: stall.cause,
            });
            self.count += 1;
            events.push(StallEvent::Ended(self.record(stall)));
        }
        // A timestamp before the expected one (backwards jump, overlap) is a
        // discontinuity, never a negative stall: expectations restart from this frame.

        if let Some(at) = at {
            self.expected_pts = period.map(|p| at + p).or(Some(at));
            self.bump_latest(at);
        }
        if self.live
            && let Some(arrival) = frame.arrival
        {
            self.expected_arrival = Some(arrival + period.unwrap_or(0));
            self.bump_latest(arrival);
        }
        self.frames += 1;
        self.push_slot(0);
        events
    }

    /// A GAP event: no data from `start` for `duration` (unknown when `None`).
    ///
    /// The hole counts from where the next frame was due. A GAP only announces it: the stall
    /// starts once the stream has gone on past the threshold without a frame (a later GAP
    /// event, the clock in live pipelines, or the next frame), so that no stall shorter than
    /// the threshold is ever reported, even when a demuxer sends its GAP before the last frame
    /// ahead of the hole. A run of short GAP events that adds up to a stall is one stall.
    pub fn on_gap(&mut self, start: Nanos, _duration: Option<Nanos>) -> Option<StallEvent> {
        self.bump_latest(start);
        if self.open.is_some() {
            return None; // extends the stall already open
        }
        let hole = *self
            .pending_gap
            .get_or_insert(self.expected_pts.filter(|e| *e <= start).unwrap_or(start));
        if start.saturating_sub(hole) <= self.threshold {
            return None;
        }
        self.pending_gap = None;
        Some(self.open_stall(hole, StallCause::GapEvent))
    }

    /// When a live stall would be declared if no frame comes: the running time to wait for.
    pub fn arrival_deadline(&self) -> Option<Nanos> {
        if !self.live || self.open.is_some() {
            return None;
        }
        let late = self.expected_arrival.map(|e| e + self.threshold);
        let gap = self.pending_gap.map(|h| h + self.threshold);
        late.into_iter().chain(gap).min()
    }

    /// The clock says it is `now` (running time). Opens a stall if a hole that GAP events
    /// announced, or the wait for the next frame, has lasted longer than the threshold.
    pub fn on_clock(&mut self, now: Nanos) -> Option<StallEvent> {
        self.bump_latest(now);
        if now < self.arrival_deadline()? {
            return None;
        }
        if let Some(hole) = self.pending_gap.take()
            && now >= hole + self.threshold
        {
            return Some(self.open_stall(hole, StallCause::GapEvent));
        }
        let start = self.expected_arrival?;
        Some(self.open_stall(start, StallCause::LateArrival))
    }

    fn open_stall(&mut self, start: Nanos, cause: StallCause) -> StallEvent {
        self.open = Some(OpenStall { start, cause });
        self.count += 1;
        StallEvent::Started { start, cause }
    }

    fn close(&mut self, open: OpenStall, end: Nanos) -> Stall {
        self.record(Stall {
            start: open.start,
            duration: end - open.start,
            cause: open.cause,
        })
    }

    fn record(&mut self, stall: Stall) -> Stall {
        self.total += stall.duration;
        if self.recent.len() == STALL_HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(stall);
        self.last_end = Some(stall.end());
        self.bump_latest(stall.end());
        let stalled_slots = match self.last_period {
            // Nearest whole number of frame periods, at least one.
            Some(p) => ((stall.duration + p / 2) / p).max(1),
            None => 1,
        };
        for _ in 0..stalled_slots.min(SLOT_HISTORY as u64) {
            self.push_slot(1);
        }
        stall
    }

    fn push_slot(&mut self, value: u8) {
        if self.slots.len() == SLOT_HISTORY {
            self.slots.pop_front();
        }
        self.slots.push_back(value);
    }

    /// A flush (seek) or a new stream: expectations restart and an open stall ends at the
    /// latest time known, without a stall being reported for the jump.
    pub fn on_discontinuity(&mut self) -> Option<StallEvent> {
        self.expected_pts = None;
        self.expected_arrival = None;
        self.pending_gap = None;
        let open = self.open.take()?;
        let end = self.latest.unwrap_or(open.start).max(open.start);
        Some(StallEvent::Ended(self.close(open, end)))
    }

    /// End of stream: an open stall ends at the latest time known (a hole that GAP events
    /// announced counts if the stream went on past the threshold without a frame).
    pub fn finish(&mut self) -> Vec<StallEvent> {
        let mut events = Vec::new();
        if let (Some(hole), Some(latest)) = (self.pending_gap, self.latest)
            && self.open.is_none()
            && latest.saturating_sub(hole) > self.threshold
        {
            events.push(self.open_stall(hole, StallCause::GapEvent));
        }
        events.extend(self.on_discontinuity());
        events
    }

    /// The figures so far; `now` (running time) measures an open stall and the time since
    /// the last stall.
    pub fn summary(&self, now: Option<Nanos>) -> StallSummary {
        let now = match (now, self.latest) {
            (Some(n), Some(l)) => Some(n.max(l)),
            (n, l) => n.or(l),
        };
        let mut durations: Vec<Nanos> = self.recent.iter().map(|s| s.duration).collect();
        let mut total = self.total;
        if let Some(open) = self.open {
            let so_far = now.unwrap_or(open.start).saturating_sub(open.start);
            durations.push(so_far);
            total += so_far;
        }
        if durations.len() > STALL_HISTORY {
            durations.remove(0);
        }
        let watched = match (self.first_frame, now) {
            (Some(first), Some(now)) => now.saturating_sub(first),
            _ => 0,
        };
        let ratio = if watched > 0 {
            (total as f64 / watched as f64).min(1.0)
        } else {
            0.0
        };
        StallSummary {
            count: self.count,
            durations,
            total,
            ratio,
            initial_buffering: self.initial_buffering,
            since_last_stall: if self.open.is_some() {
                None
            } else {
                self.last_end
                    .zip(now)
                    .map(|(end, now)| now.saturating_sub(end))
            },
            stalled: self.open.is_some(),
            frames: self.frames,
        }
    }

    /// The stalls seen inside `[start, end)` of running time, for a streaming scorer's prompt
    /// about that window: stalls clipped to the window, the initial buffering if the window
    /// starts with the stream, the time since the last stall ended (the window's length if
    /// none did), and the window's share of the per-slot sequence.
    pub fn within(&self, start: Nanos, end: Nanos) -> WindowStalls {
        let open = self.open.map(|o| Stall {
            start: o.start,
            duration: end.saturating_sub(o.start),
            cause: o.cause,
        });
        let mut w = WindowStalls::default();
        let mut last_end = None;
        for s in self.recent.iter().chain(open.iter()) {
            let overlap = s.end().min(end).saturating_sub(s.start.max(start));
            if overlap > 0 {
                w.count += 1;
                w.durations.push(overlap);
                w.total += overlap;
            }
            if s.end() <= end && s.end() > start {
                last_end = Some(last_end.map_or(s.end(), |l: Nanos| l.max(s.end())));
            }
        }
        w.initial_buffering = match self.first_frame {
            Some(first) if start <= first => self.initial_buffering.unwrap_or(0),
            _ => 0,
        };
        w.since_last_stall = match (open, last_end) {
            (Some(o), _) if o.start < end => 0,
            (_, Some(last)) => end - last,
            _ => end.saturating_sub(start),
        };
        w.ratio = if end > start {
            (w.total as f64 / (end - start) as f64).min(1.0)
        } else {
            0.0
        };
        let slots = match self.last_period {
            Some(p) if p > 0 => ((end.saturating_sub(start)) / p) as usize,
            _ => 0,
        };
        let skip = self.slots.len().saturating_sub(slots);
        w.sequence = self.slots.iter().skip(skip).copied().collect();
        w
    }

    /// Completed stalls, oldest first (at most [`STALL_HISTORY`]).
    pub fn stalls(&self) -> impl Iterator<Item = &Stall> {
        self.recent.iter()
    }

    /// The per-slot 0/1 stall sequence, oldest first (at most [`SLOT_HISTORY`] slots).
    pub fn slots(&self) -> impl Iterator<Item = u8> + '_ {
        self.slots.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const FRAME: Nanos = 33_333_333;

    fn frame(pts: Nanos) -> FrameTiming {
        FrameTiming {
            pts: Some(pts),
            duration: Some(FRAME),
            arrival: None,
        }
    }

    fn tracker() -> StallTracker {
        let mut t = StallTracker::new(250 * MS);
        t.set_nominal_period(Some(FRAME));
        t
    }

    #[test]
    fn continuous_frames_never_stall() {
        let mut t = tracker();
        for i in 0..300 {
            assert!(t.on_frame(frame(i * FRAME)).is_empty());
        }
        let s = t.summary(None);
        assert_eq!(s.count, 0);
        assert_eq!(s.total, 0);
        assert_eq!(s.frames, 300);
        assert!(t.slots().all(|v| v == 0));
    }

    #[test]
    fn timestamp_gap_above_threshold_is_one_stall_of_the_gap() {
        let mut t = tracker();
        for i in 0..30 {
            t.on_frame(frame(i * FRAME));
        }
        let expected = 30 * FRAME;
        let resume = expected + 1500 * MS;
        let ev = t.on_frame(frame(resume));
        assert_eq!(
            ev,
            vec![
                StallEvent::Started {
                    start: expected,
                    cause: StallCause::TimestampGap
                },
                StallEvent::Ended(Stall {
                    start: expected,
                    duration: 1500 * MS,
                    cause: StallCause::TimestampGap
                }),
            ]
        );
        let s = t.summary(Some(resume + FRAME));
        assert_eq!(s.count, 1);
        assert_eq!(s.durations, vec![1500 * MS]);
        assert_eq!(s.since_last_stall, Some(FRAME));
        // 1.5 s stalled out of 1 s played + 1.5 s stalled + the last frame.
        let watched = resume + FRAME;
        assert!((s.ratio - 1500.0 * MS as f64 / watched as f64).abs() < 1e-9);
        // 1.5 s at 30 fps is 45 stalled slots between frames 30 and 31.
        let slots: Vec<u8> = t.slots().collect();
        assert_eq!(slots.len(), 31 + 45);
        assert_eq!(slots.iter().filter(|v| **v == 1).count(), 45);
        assert_eq!(slots[30], 1);
        assert_eq!(*slots.last().unwrap(), 0);
    }

    #[test]
    fn gap_below_threshold_is_not_a_stall() {
        let mut t = tracker();
        t.on_frame(frame(0));
        assert!(t.on_frame(frame(FRAME + 200 * MS)).is_empty());
        assert_eq!(t.summary(None).count, 0);
    }

    #[test]
    fn backwards_timestamps_are_a_discontinuity_not_a_negative_stall() {
        let mut t = tracker();
        for i in 0..10 {
            t.on_frame(frame(i * FRAME));
        }
        assert!(t.on_frame(frame(2 * FRAME)).is_empty());
        assert!(t.on_frame(frame(3 * FRAME)).is_empty());
        assert_eq!(t.summary(None).count, 0);
    }

    #[test]
    fn long_buffer_duration_at_fixed_rate_still_reveals_the_hole() {
        let mut t = tracker();
        t.on_frame(frame(0));
        // The frame before the hole claims to last the whole hole.
        t.on_frame(FrameTiming {
            pts: Some(FRAME),
            duration: Some(FRAME + 1000 * MS),
            arrival: None,
        });
        let ev = t.on_frame(frame(2 * FRAME + 1000 * MS));
        assert_eq!(ev.len(), 2);
        assert_eq!(t.summary(None).total, 1000 * MS);
    }

    #[test]
    fn variable_rate_uses_buffer_duration() {
        let mut t = StallTracker::new(250 * MS);
        t.on_frame(FrameTiming {
            pts: Some(0),
            duration: Some(500 * MS),
            arrival: None,
        });
        assert!(
            t.on_frame(FrameTiming {
                pts: Some(500 * MS),
                duration: Some(40 * MS),
                arrival: None
            })
            .is_empty()
        );
        let ev = t.on_frame(FrameTiming {
            pts: Some(840 * MS),
            duration: None,
            arrival: None,
        });
        assert_eq!(ev.len(), 2, "300 ms hole after a 40 ms frame");
    }

    #[test]
    fn gap_event_starts_the_stall_and_next_frame_ends_it() {
        let mut t = tracker();
        for i in 0..10 {
            t.on_frame(frame(i * FRAME));
        }
        let hole = 10 * FRAME;
        // A GAP announces the hole; the stream going on past the threshold without a frame
        // (here a second GAP) starts the stall where the hole began.
        assert_eq!(t.on_gap(hole, Some(1000 * MS)), None);
        assert!(!t.is_stalled());
        assert_eq!(
            t.on_gap(hole + 1000 * MS, Some(500 * MS)),
            Some(StallEvent::Started {
                start: hole,
                cause: StallCause::GapEvent
            })
        );
        assert!(t.is_stalled());
        let ev = t.on_frame(frame(hole + 1500 * MS));
        assert_eq!(
            ev,
            vec![StallEvent::Ended(Stall {
                start: hole,
                duration: 1500 * MS,
                cause: StallCause::GapEvent
            })]
        );
        assert_eq!(t.summary(None).count, 1);
    }

    #[test]
    fn short_gap_events_add_up() {
        let mut t = tracker();
        t.on_frame(frame(0));
        // Per-frame GAP events, each shorter than the threshold.
        let mut events = Vec::new();
        for i in 1..=12 {
            events.extend(t.on_gap(i * FRAME, Some(FRAME)));
        }
        // The GAPs showed the hole past the threshold at the 9th (8 × 33 ms > 250 ms).
        assert_eq!(
            events,
            vec![StallEvent::Started {
                start: FRAME,
                cause: StallCause::GapEvent
            }]
        );
        let ev = t.on_frame(frame(13 * FRAME));
        assert_eq!(
            ev,
            vec![StallEvent::Ended(Stall {
                start: FRAME,
                duration: 12 * FRAME,
                cause: StallCause::GapEvent
            })]
        );
    }

    /// A demuxer's GAP that comes before the last frame ahead of the hole (matroskademux
    /// does this), announcing the whole hole: the frame that follows 0.67 ms later is no
    /// stall, and the hole itself is one timestamp-gap stall.
    #[test]
    fn a_gap_event_before_the_last_frame_reports_no_short_stall() {
        let mut t = tracker();
        for i in 0..86 {
            t.on_frame(frame(i * FRAME));
        }
        let last = 86 * FRAME; // 2.8667 s
        assert_eq!(t.on_gap(last - 670_000, Some(2500 * MS)), None);
        assert!(t.on_frame(frame(last)).is_empty(), "no 0.67 ms stall");
        let ev = t.on_frame(frame(last + FRAME + 2500 * MS));
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(
            ev[1],
            StallEvent::Ended(Stall {
                start: last + FRAME,
                duration: 2500 * MS,
                cause: StallCause::TimestampGap
            })
        );
        assert_eq!(t.summary(None).count, 1);
    }

    #[test]
    fn gap_event_stall_is_confirmed_by_the_clock_in_live_pipelines() {
        let mut t = tracker();
        t.set_live(true);
        t.on_frame(live_frame(0, 0));
        assert_eq!(t.on_gap(FRAME, None), None);
        // The deadline is the hole's start plus the threshold, before the late-arrival one.
        assert_eq!(t.arrival_deadline(), Some(FRAME + 250 * MS));
        assert_eq!(t.on_clock(FRAME + 100 * MS), None);
        assert_eq!(
            t.on_clock(FRAME + 250 * MS),
            Some(StallEvent::Started {
                start: FRAME,
                cause: StallCause::GapEvent
            })
        );
        let ev = t.on_frame(live_frame(FRAME + 600 * MS, FRAME + 600 * MS));
        assert_eq!(
            ev,
            vec![StallEvent::Ended(Stall {
                start: FRAME,
                duration: 600 * MS,
                cause: StallCause::GapEvent
            })]
        );
    }

    #[test]
    fn a_gap_that_lasts_is_one_stall_told_by_the_next_frame() {
        let mut t = tracker();
        t.on_frame(frame(0));
        assert_eq!(t.on_gap(FRAME, Some(1000 * MS)), None);
        let ev = t.on_frame(frame(FRAME + 1000 * MS));
        assert_eq!(
            ev,
            vec![
                StallEvent::Started {
                    start: FRAME,
                    cause: StallCause::GapEvent
                },
                StallEvent::Ended(Stall {
                    start: FRAME,
                    duration: 1000 * MS,
                    cause: StallCause::GapEvent
                })
            ]
        );
        assert_eq!(t.summary(None).count, 1);
    }

    #[test]
    fn short_gap_event_alone_is_not_a_stall() {
        let mut t = tracker();
        t.on_frame(frame(0));
        assert_eq!(t.on_gap(FRAME, Some(FRAME)), None);
        assert!(t.on_frame(frame(2 * FRAME)).is_empty());
        assert_eq!(t.summary(None).count, 0);
    }

    fn live_frame(pts: Nanos, arrival: Nanos) -> FrameTiming {
        FrameTiming {
            pts: Some(pts),
            duration: Some(FRAME),
            arrival: Some(arrival),
        }
    }

    #[test]
    fn late_arrival_is_reported_while_it_goes_on_and_counted_once() {
        let mut t = tracker();
        t.set_live(true);
        t.on_playing(0);
        t.on_frame(live_frame(0, 400 * MS));
        assert_eq!(t.summary(None).initial_buffering, Some(400 * MS));
        t.on_frame(live_frame(FRAME, 400 * MS + FRAME));
        let due = 400 * MS + 2 * FRAME;
        assert_eq!(t.arrival_deadline(), Some(due + 250 * MS));
        assert_eq!(t.on_clock(due + 100 * MS), None);
        assert_eq!(
            t.on_clock(due + 250 * MS),
            Some(StallEvent::Started {
                start: due,
                cause: StallCause::LateArrival
            })
        );
        // Still going on: the summary measures it so far.
        let s = t.summary(Some(due + 700 * MS));
        assert!(s.stalled);
        assert_eq!(s.total, 700 * MS);
        assert_eq!(t.arrival_deadline(), None);
        // The source timestamps by the clock, so the next frame also jumps in PTS: one stall.
        let ev = t.on_frame(live_frame(2 * FRAME + 1000 * MS, due + 1000 * MS));
        assert_eq!(
            ev,
            vec![StallEvent::Ended(Stall {
                start: due,
                duration: 1000 * MS,
                cause: StallCause::LateArrival
            })]
        );
        assert_eq!(t.summary(None).count, 1);
    }

    #[test]
    fn arrival_is_ignored_when_not_live() {
        let mut t = tracker();
        t.on_playing(0);
        t.on_frame(live_frame(0, 0));
        assert_eq!(t.arrival_deadline(), None);
        assert_eq!(t.on_clock(10_000 * MS), None);
        assert_eq!(t.summary(None).initial_buffering, None);
    }

    #[test]
    fn frames_without_pts_use_arrival_time() {
        let mut t = tracker();
        t.set_live(true);
        t.on_playing(0);
        t.on_frame(FrameTiming {
            pts: None,
            duration: None,
            arrival: Some(0),
        });
        t.on_frame(FrameTiming {
            pts: None,
            duration: None,
            arrival: Some(FRAME),
        });
        t.on_clock(2 * FRAME + 300 * MS);
        let ev = t.on_frame(FrameTiming {
            pts: None,
            duration: None,
            arrival: Some(2 * FRAME + 600 * MS),
        });
        assert_eq!(
            ev,
            vec![StallEvent::Ended(Stall {
                start: 2 * FRAME,
                duration: 600 * MS,
                cause: StallCause::LateArrival
            })]
        );
    }

    #[test]
    fn discontinuity_resets_expectations_without_a_stall() {
        let mut t = tracker();
        for i in 0..10 {
            t.on_frame(frame(i * FRAME));
        }
        assert_eq!(t.on_discontinuity(), None);
        assert!(t.on_frame(frame(60_000 * MS)).is_empty());
        assert_eq!(t.summary(None).count, 0);
    }

    #[test]
    fn finish_closes_an_open_stall_at_the_latest_time() {
        let mut t = tracker();
        t.on_frame(frame(0));
        t.on_gap(FRAME, None);
        t.on_gap(FRAME + 2000 * MS, None);
        assert_eq!(
            t.finish(),
            vec![StallEvent::Ended(Stall {
                start: FRAME,
                duration: 2000 * MS,
                cause: StallCause::GapEvent
            })]
        );
        assert!(!t.is_stalled());
        assert_eq!(t.finish(), vec![]);
    }

    #[test]
    fn history_is_bounded() {
        let mut t = tracker();
        let mut pts = 0;
        for _ in 0..(STALL_HISTORY + 50) {
            t.on_frame(frame(pts));
            pts += FRAME + 300 * MS;
        }
        let s = t.summary(None);
        assert_eq!(s.count, (STALL_HISTORY + 49) as u64);
        assert_eq!(s.durations.len(), STALL_HISTORY);
        assert_eq!(t.stalls().count(), STALL_HISTORY);
        assert!(t.slots().count() <= SLOT_HISTORY);
    }

    #[test]
    fn window_figures_clip_stalls_to_the_window() {
        const MS: Nanos = 1_000_000;
        let mut t = StallTracker::new(250 * MS);
        t.set_nominal_period(Some(40 * MS));
        let mut pts = 0;
        // 4 s of frames, a 1 s timestamp gap at 1 s, then 3 more seconds.
        while pts < 4000 * MS {
            if pts == 1000 * MS {
                pts += 1000 * MS;
            }
            t.on_frame(FrameTiming {
                pts: Some(pts),
                duration: Some(40 * MS),
                arrival: None,
            });
            pts += 40 * MS;
        }
        let all = t.within(0, 4000 * MS);
        assert_eq!(all.count, 1);
        assert_eq!(all.total, 1000 * MS);
        assert!((all.ratio - 0.25).abs() < 1e-9);
        assert_eq!(all.since_last_stall, 2000 * MS);
        let clipped = t.within(1500 * MS, 3500 * MS);
        assert_eq!(clipped.durations, vec![500 * MS]);
        assert_eq!(clipped.since_last_stall, 1500 * MS);
        let clean = t.within(2500 * MS, 4000 * MS);
        assert_eq!((clean.count, clean.total), (0, 0));
        assert_eq!(clean.since_last_stall, 1500 * MS);
        assert_eq!(clean.sequence.len(), 37, "one slot per frame period");
    }
}
