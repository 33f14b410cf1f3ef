// SPDX-License-Identifier: MPL-2.0
//! Frame cadence, free of GStreamer types: frames missing in short holes that are not stalls
//! (stutter), and in live pipelines the jitter of frame arrival.
//!
//! A frame whose timestamp comes `n` frame periods after the one expected (rounded, `n` ≥ 1)
//! shows that `n` frames were dropped upstream, as long as the hole is no longer than the
//! stall threshold; longer holes are stalls ([`crate::stall`]). The jitter is how far each
//! frame's arrival interval strays from the frame period, over the last
//! [`JITTER_FRAMES`] frames.

use std::collections::VecDeque;

use crate::time::Nanos;

/// Arrival intervals kept for the jitter figures.
pub const JITTER_FRAMES: usize = 300;

/// Quantiles of the arrival jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jitter {
    pub p50: Nanos,
    pub p99: Nanos,
}

#[derive(Debug)]
pub struct Cadence {
    threshold: Nanos,
    expected_pts: Option<Nanos>,
    last_arrival: Option<Nanos>,
    frames: u64,
    missing: u64,
    deviations: VecDeque<Nanos>,
}

impl Cadence {
    /// `threshold`: the stall threshold; holes longer than it are not counted here.
    pub fn new(threshold: Nanos) -> Self {
        Cadence {
            threshold,
            expected_pts: None,
            last_arrival: None,
            frames: 0,
            missing: 0,
            deviations: VecDeque::with_capacity(JITTER_FRAMES),
        }
    }

    pub fn set_threshold(&mut self, threshold: Nanos) {
        self.threshold = threshold;
    }

    /// A frame with timestamp `pts` that arrived at `arrival` (live pipelines), in a stream
    /// of frame period `period`. Returns how many frames it shows to be missing before it.
    pub fn on_frame(
        &mut self,
        pts: Option<Nanos>,
        arrival: Option<Nanos>,
        period: Option<Nanos>,
    ) -> u64 {
        self.frames += 1;
        let mut missing = 0;
        if let (Some(pts), Some(expected), Some(period)) = (pts, self.expected_pts, period)
            && period > 0
            && pts > expected
        {
            let hole = pts - expected;
            if hole <= self.threshold {
                missing = (hole + period / 2) / period;
                self.missing += missing;
            }
        }
        if let (Some(arrival), Some(last), Some(period)) = (arrival, self.last_arrival, period) {
            if self.deviations.len() == JITTER_FRAMES {
                self.deviations.pop_front();
            }
            self.deviations
                .push_back(arrival.saturating_sub(last).abs_diff(period));
        }
        if let (Some(pts), Some(period)) = (pts, period) {
            // A jump back restarts the expectation from this frame.
            self.expected_pts = Some(pts + period);
        }
        self.last_arrival = arrival.or(self.last_arrival);
        missing
    }

    /// A flush, a new stream or a pause: expectations restart.
    pub fn on_discontinuity(&mut self) {
        self.expected_pts = None;
        self.last_arrival = None;
    }

    /// Frames missing in short holes so far.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Missing frames over frames expected (seen and missing), 0..1.
    pub fn missing_ratio(&self) -> f64 {
        let expected = self.frames + self.missing;
        if expected == 0 {
            0.0
        } else {
            self.missing as f64 / expected as f64
        }
    }

    /// The median and 99th percentile of the arrival jitter; `None` until two frames
    /// arrived in a live pipeline.
    pub fn jitter(&self) -> Option<Jitter> {
        if self.deviations.is_empty() {
            return None;
        }
        let mut sorted: Vec<Nanos> = self.deviations.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some(Jitter {
            p50: at(0.5),
            p99: at(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const FRAME: Nanos = 33_333_333;

    #[test]
    fn every_fifth_frame_missing() {
        let mut c = Cadence::new(250 * MS);
        let mut missing = 0;
        for i in (0..300u64).filter(|i| i % 5 != 4) {
            missing += c.on_frame(Some(i * FRAME), None, Some(FRAME));
        }
        // Frames 4, 9, …, 294 are gone (the last, 299, is past the end: nothing shows it).
        assert_eq!(missing, 59);
        assert_eq!(c.missing(), 59);
        assert!((c.missing_ratio() - 59.0 / 299.0).abs() < 1e-9);
        assert_eq!(c.jitter(), None, "not live");
    }

    #[test]
    fn bursts_of_two_and_stalls_apart() {
        let mut c = Cadence::new(250 * MS);
        let mut pts = 0;
        for i in 0..100u64 {
            c.on_frame(Some(pts), None, Some(FRAME));
            // Every 10th frame, two frames are lost.
            pts += if i % 10 == 9 { 3 * FRAME } else { FRAME };
        }
        assert_eq!(c.missing(), 18);
        // A 1 s hole is a stall, not dropped frames.
        c.on_frame(Some(pts + 1000 * MS), None, Some(FRAME));
        assert_eq!(c.missing(), 18);
    }

    #[test]
    fn rounding_and_jumps() {
        let mut c = Cadence::new(250 * MS);
        c.on_frame(Some(0), None, Some(FRAME));
        // Millisecond-rounded timestamps (Matroska) are no drop.
        assert_eq!(c.on_frame(Some(33 * MS), None, Some(FRAME)), 0);
        assert_eq!(c.on_frame(Some(67 * MS), None, Some(FRAME)), 0);
        // A jump back is no drop either, nor is the frame after it.
        assert_eq!(c.on_frame(Some(0), None, Some(FRAME)), 0);
        assert_eq!(c.on_frame(Some(FRAME), None, Some(FRAME)), 0);
        c.on_discontinuity();
        assert_eq!(c.on_frame(Some(10_000 * MS), None, Some(FRAME)), 0);
        // Without a frame rate nothing is counted.
        let mut v = Cadence::new(250 * MS);
        v.on_frame(Some(0), None, None);
        assert_eq!(v.on_frame(Some(3 * FRAME), None, None), 0);
    }

    #[test]
    fn live_arrival_jitter_quantiles() {
        let mut c = Cadence::new(250 * MS);
        let mut arrival = 0;
        for i in 0..200u64 {
            // Every 50th frame arrives 20 ms late (and the next one 20 ms early).
            let late = if i % 50 == 25 { 20 * MS } else { 0 };
            c.on_frame(Some(i * FRAME), Some(arrival + late), Some(FRAME));
            arrival += FRAME;
        }
        let j = c.jitter().unwrap();
        assert_eq!(j.p50, 0);
        assert_eq!(j.p99, 20 * MS);
    }
}
