// SPDX-License-Identifier: MPL-2.0
//! Frame sampling and rolling windows in stream time, free of GStreamer types: which frames
//! are keyframes, when a window is due, and how to compute per-frame motion features in
//! chunks that equal a whole-clip computation.
//!
//! The element's streaming thread drives the keyframe sampler and the window scheduler; the
//! feature thread drives the motion chunker (`qoe_model::stream`).
//!
//! - **Keyframes**: one frame of every second of stream time, counted from the first frame:
//!   the first at or after a `phase` into the second (zero, VQA²'s rule, or half a second).
//!   With a constant frame rate and no phase these are the reference's indices 0, R, 2R… (R =
//!   round(fps)); dropped or variable-rate frames still give one keyframe per second.
//! - **Windows**: `window` seconds long, one every `hop` seconds, the first once `window`
//!   seconds of stream have passed; at end of stream, a final window ends at the last frame.
//!   Hops are whole seconds, so that every window starts on a keyframe second and the
//!   per-keyframe features computed once serve every window that contains them.
//! - **Motion chunks**: the fast pathway sees ±`context` frames around each frame (18 for
//!   SlowFast-R50, zero-padded at the clip ends). Features of frames `[a, b)` computed from
//!   input `[a − context, b + context)` (clipped to the stream) equal those of the whole
//!   stream, so each frame's feature is computed once and reused by every window.

use crate::time::{Nanos, SECOND};

/// Timestamps this close below a whole second count as that second: containers round
/// (Matroska to milliseconds), and the reference picks frames by index.
pub const SECOND_TOLERANCE: Nanos = 2_000_000;

/// Marks keyframes: the first frame at or after `phase` into each second of stream time.
#[derive(Debug, Default, Clone)]
pub struct KeyframeSampler {
    phase: Nanos,
    origin: Option<Nanos>,
    last_second: Option<u64>,
    last_time: Option<Nanos>,
}

impl KeyframeSampler {
    /// A sampler whose keyframes are the first frames at or after `phase` into each second
    /// (reduced to less than a second); `default()` has no phase.
    pub fn with_phase(phase: Nanos) -> Self {
        KeyframeSampler {
            phase: phase % SECOND,
            ..Default::default()
        }
    }

    /// Counts afresh from the next frame (a new stream or a flushing seek), with the same phase.
    pub fn restart(&mut self) {
        *self = Self::with_phase(self.phase);
    }

    /// Whether the frame at stream time `t` is a keyframe. A frame earlier than the previous
    /// one (a jump back) restarts the count from itself.
    pub fn is_keyframe(&mut self, t: Nanos) -> bool {
        if self.last_time.is_some_and(|last| t < last) {
            self.origin = None;
        }
        self.last_time = Some(t);
        let origin = *self.origin.get_or_insert_with(|| {
            self.last_second = None;
            t
        });
        let Some(since_phase) = (t - origin + SECOND_TOLERANCE).checked_sub(self.phase) else {
            return false; // before the first second's keyframe is due
        };
        let second = since_phase / SECOND;
        if self.last_second.is_some_and(|last| second <= last) {
            return false;
        }
        self.last_second = Some(second);
        true
    }
}

/// A window of stream time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Nanos,
    pub end: Nanos,
}

/// Decides when windows are due.
#[derive(Debug, Clone)]
pub struct WindowScheduler {
    window: Nanos,
    hop: Nanos,
    origin: Option<Nanos>,
    next_end: Nanos,
    last_end: Option<Nanos>,
}

impl WindowScheduler {
    /// `hop` is rounded to whole seconds (at least one) and `window` to at least `hop`.
    pub fn new(window: Nanos, hop: Nanos) -> Self {
        let hop = (hop.div_ceil(SECOND).max(1)) * SECOND;
        let window = window.max(hop);
        WindowScheduler {
            window,
            hop,
            origin: None,
            next_end: 0,
            last_end: None,
        }
    }

    pub fn window(&self) -> Nanos {
        self.window
    }

    pub fn hop(&self) -> Nanos {
        self.hop
    }

    /// A frame at stream time `t` arrived; returns the windows that are complete before it.
    /// (A frame at or after a window's end proves no earlier frame is still coming.)
    pub fn on_frame(&mut self, t: Nanos) -> Vec<Window> {
        let origin = *self.origin.get_or_insert_with(|| {
            self.next_end = t + self.window;
            t
        });
        let mut due = Vec::new();
        while t >= self.next_end {
            due.push(Window {
                start: self.next_end - self.window,
                end: self.next_end,
            });
            self.last_end = Some(self.next_end);
            self.next_end += self.hop;
        }
        debug_assert!(self.next_end >= origin);
        due
    }

    /// End of stream after the last frame ended at `end`: the final window, unless the last
    /// window already covered it. Shorter than `window` when the stream was.
    pub fn finish(&mut self, end: Nanos) -> Option<Window> {
        let origin = self.origin?;
        if self.last_end.is_some_and(|last| last >= end) || end <= origin {
            return None;
        }
        self.last_end = Some(end);
        Some(Window {
            start: end.saturating_sub(self.window).max(origin),
            end,
        })
    }
}

/// One computation of motion features: the frames fed in and the frames whose features come
/// out (indices into the stream's frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MotionChunk {
    pub input: (usize, usize),
    pub output: (usize, usize),
}

/// Plans motion-feature chunks over a growing stream of frames.
#[derive(Debug, Clone)]
pub struct MotionChunker {
    context: usize,
    chunk: usize,
    done: usize,
}

impl MotionChunker {
    /// `context`: frames of context each side; `chunk`: frames of output per computation.
    pub fn new(context: usize, chunk: usize) -> Self {
        MotionChunker {
            context,
            chunk: chunk.max(1),
            done: 0,
        }
    }

    /// Frames whose features are computed so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// The next chunk, given `available` frames so far and whether the stream has ended; `None`
    /// until enough frames (output plus right context) have arrived.
    pub fn next(&mut self, available: usize, ended: bool) -> Option<MotionChunk> {
        if self.done >= available {
            return None;
        }
        let end = (self.done + self.chunk).min(available);
        let full = end - self.done == self.chunk && end + self.context <= available;
        if !full && !ended {
            return None;
        }
        let chunk = MotionChunk {
            input: (
                self.done.saturating_sub(self.context),
                (end + self.context).min(available),
            ),
            output: (self.done, end),
        };
        self.done = end;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Nanos = SECOND / 30;

    #[test]
    fn keyframes_are_the_first_frame_of_each_second() {
        // Exact timestamps, truncated ones, and Matroska's millisecond rounding all pick the
        // reference's indices 0, R, 2R…
        for stamp in [
            |i: u64| i * SECOND / 30,
            |i: u64| i * FRAME,
            |i: u64| (i * 1000 / 30) * 1_000_000,
        ] {
            let mut k = KeyframeSampler::default();
            let picked: Vec<u64> = (0..95)
                .filter(|&i| k.is_keyframe(5 * SECOND + stamp(i)))
                .collect();
            assert_eq!(picked, vec![0, 30, 60, 90]);
        }
    }

    #[test]
    fn keyframes_with_a_phase_are_the_first_frame_past_it_in_each_second() {
        // Half a second in: frame 15 of each second at 30 fps (exactly 0.5 s), frame 13 at
        // 25 fps (0.52 s; frame 12 is 0.48 s), as `spec.keyframe_offset` picks indices.
        for (fps, expected) in [(30, vec![15, 45, 75]), (25, vec![13, 38, 63])] {
            let mut k = KeyframeSampler::with_phase(SECOND / 2);
            let picked: Vec<u64> = (0..3 * fps)
                .filter(|&i| k.is_keyframe(7 * SECOND + i * SECOND / fps))
                .collect();
            assert_eq!(picked, expected, "{fps} fps");
        }
        // Matroska's millisecond timestamps pick the same frames.
        let mut k = KeyframeSampler::with_phase(SECOND / 2);
        let picked: Vec<u64> = (0..60)
            .filter(|&i| k.is_keyframe((i * 1000 / 30) * 1_000_000))
            .collect();
        assert_eq!(picked, vec![15, 45]);
        // A phase of a second or more is reduced to within the second.
        let mut k = KeyframeSampler::with_phase(SECOND + SECOND / 2);
        assert!(!k.is_keyframe(0));
        assert!(k.is_keyframe(SECOND / 2));
    }

    #[test]
    fn keyframes_survive_drops_and_jumps_back() {
        let mut k = KeyframeSampler::default();
        assert!(k.is_keyframe(0));
        assert!(!k.is_keyframe(SECOND / 2));
        // The frames of second 1 were dropped: the first one of second 2 is a keyframe.
        assert!(k.is_keyframe(2 * SECOND + FRAME));
        assert!(!k.is_keyframe(2 * SECOND + 5 * FRAME));
        // A jump back restarts the count from that frame.
        assert!(k.is_keyframe(SECOND / 4));
        assert!(!k.is_keyframe(SECOND));
        assert!(k.is_keyframe(SECOND / 4 + SECOND));
    }

    #[test]
    fn windows_come_every_hop_after_the_first_full_window() {
        let mut s = WindowScheduler::new(8 * SECOND, 2 * SECOND);
        let mut windows = Vec::new();
        for i in 0..(13 * 30) {
            windows.extend(s.on_frame(i * FRAME));
        }
        let secs: Vec<(u64, u64)> = windows
            .iter()
            .map(|w| (w.start / SECOND, w.end / SECOND))
            .collect();
        assert_eq!(secs, vec![(0, 8), (2, 10), (4, 12)]);
        // The stream ends at 13 s: a final window up to its end.
        assert_eq!(
            s.finish(13 * SECOND),
            Some(Window {
                start: 5 * SECOND,
                end: 13 * SECOND
            })
        );
        assert_eq!(s.finish(13 * SECOND), None);
    }

    #[test]
    fn short_stream_gets_one_partial_window_at_the_end() {
        let mut s = WindowScheduler::new(8 * SECOND, 2 * SECOND);
        for i in 0..90 {
            assert!(s.on_frame(SECOND + i * FRAME).is_empty());
        }
        assert_eq!(
            s.finish(4 * SECOND),
            Some(Window {
                start: SECOND,
                end: 4 * SECOND
            })
        );
    }

    #[test]
    fn a_gap_in_the_stream_releases_every_window_it_passes() {
        let mut s = WindowScheduler::new(4 * SECOND, SECOND);
        s.on_frame(0);
        let due = s.on_frame(7 * SECOND);
        assert_eq!(due.len(), 4, "{due:?}");
        assert_eq!(
            due[3],
            Window {
                start: 3 * SECOND,
                end: 7 * SECOND
            }
        );
    }

    #[test]
    fn hop_is_whole_seconds() {
        let s = WindowScheduler::new(8 * SECOND, SECOND / 2);
        assert_eq!(s.hop(), SECOND);
        assert_eq!(
            WindowScheduler::new(SECOND, 3 * SECOND + 1).hop(),
            4 * SECOND
        );
        assert_eq!(
            WindowScheduler::new(SECOND, 3 * SECOND).window(),
            3 * SECOND
        );
    }

    #[test]
    fn motion_chunks_wait_for_right_context_and_cover_every_frame_once() {
        let mut c = MotionChunker::new(18, 32);
        assert_eq!(
            c.next(40, false),
            None,
            "32 outputs need 18 frames after them"
        );
        assert_eq!(
            c.next(50, false),
            Some(MotionChunk {
                input: (0, 50),
                output: (0, 32)
            })
        );
        assert_eq!(c.next(60, false), None);
        assert_eq!(
            c.next(82, false),
            Some(MotionChunk {
                input: (14, 82),
                output: (32, 64)
            })
        );
        // End of stream: the rest, zero-padded at the true end.
        assert_eq!(
            c.next(75 + 7, true),
            Some(MotionChunk {
                input: (46, 82),
                output: (64, 82)
            })
        );
        assert_eq!(c.next(82, true), None);
        assert_eq!(c.done(), 82);
    }
}
