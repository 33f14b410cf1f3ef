// SPDX-License-Identifier: MPL-2.0
//! Black-picture detection, free of GStreamer types, as FFmpeg's `blackdetect` does it: a
//! frame is black when at least `ratio` of its pixels are at or below a luma level (the
//! `pixel_threshold` fraction of the luma range: 16–235 for limited range, 0–255 for full),
//! and a run of black frames lasting at least the minimum duration is a black segment. It
//! starts at its first black frame and ends at the first frame that is not black.
//!
//! It reads the freeze detector's luma thumbnail ([`crate::freeze::Thumbnail`]): each cell is
//! the mean of a few neighbouring pixels of one row, so a thin bright line below a cell's
//! width counts less than it would per pixel.

use crate::episode::{EpisodeEvent, Episodes, Span};
use crate::freeze::Thumbnail;
use crate::time::Nanos;

/// Which luma values are black and white.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LumaRange {
    /// 0–255.
    #[default]
    Full,
    /// 16–235 (most broadcast and streaming video).
    Limited,
}

/// A completed black segment.
pub type Black = Span;
/// A black segment starts (once it has lasted the minimum) or ends.
pub type BlackEvent = EpisodeEvent;

#[derive(Debug)]
pub struct BlackDetector {
    pixel_threshold: f64,
    ratio: f64,
    min_duration: Nanos,
    /// The current run of black frames.
    episodes: Episodes,
}

impl BlackDetector {
    /// `pixel_threshold`: the luma level (fraction of the range, 0..1) at or below which a
    /// pixel is black; `ratio`: the share of black pixels (0..1) that makes a frame black.
    pub fn new(pixel_threshold: f64, ratio: f64, min_duration: Nanos) -> Self {
        BlackDetector {
            pixel_threshold,
            ratio,
            min_duration,
            episodes: Episodes::default(),
        }
    }

    pub fn set_pixel_threshold(&mut self, pixel_threshold: f64) {
        self.pixel_threshold = pixel_threshold;
    }

    pub fn set_ratio(&mut self, ratio: f64) {
        self.ratio = ratio;
    }

    pub fn set_min_duration(&mut self, min_duration: Nanos) {
        self.min_duration = min_duration;
    }

    /// Whether a black segment is going on.
    pub fn is_black(&self) -> bool {
        self.episodes.is_on()
    }

    /// Whether `thumb` is a black picture in `range`.
    pub fn is_black_picture(&self, thumb: &Thumbnail, range: LumaRange) -> bool {
        if thumb.cells.is_empty() || thumb.cell_pixels == 0 {
            return false;
        }
        let (low, high) = match range {
            LumaRange::Full => (0.0, 255.0),
            LumaRange::Limited => (16.0, 235.0),
        };
        // A cell is a sum of `cell_pixels` values: compare sums, no division per cell.
        let level = (low + self.pixel_threshold * (high - low)) * thumb.cell_pixels as f64;
        let level = level.floor() as u32;
        let dark = thumb.cells.iter().filter(|&&c| c <= level).count();
        dark as f64 >= self.ratio * thumb.cells.len() as f64
    }

    /// A frame shown at `time` for `duration`, its thumbnail `thumb`. Returns the event it
    /// causes, if any.
    pub fn observe(
        &mut self,
        time: Nanos,
        duration: Nanos,
        thumb: &Thumbnail,
        range: LumaRange,
    ) -> Option<BlackEvent> {
        self.episodes.saw_frame_until(time + duration);
        if !self.is_black_picture(thumb, range) {
            return self.episodes.end_at(time);
        }
        // A frame earlier than the run's start (a jump back) starts a new run.
        let start = match self.episodes.run_start() {
            Some(start) if time >= start => start,
            _ => {
                if let Some(ended) = self.episodes.restart(time) {
                    return Some(ended);
                }
                time
            }
        };
        // A run counts once it has lasted the minimum, the frame on screen included.
        if time + duration - start >= self.min_duration {
            return self.episodes.lasted();
        }
        None
    }

    /// A caps change, a flush or the end of stream: an open black segment ends where the
    /// last frame ended.
    pub fn finish(&mut self) -> Option<BlackEvent> {
        self.episodes.finish()
    }

    /// Black segments so far, the open one included.
    pub fn count(&self) -> u64 {
        self.episodes.count()
    }

    /// Total black time, the open segment's time so far included.
    pub fn total(&self) -> Nanos {
        self.episodes.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const FRAME: Nanos = 40 * MS;

    /// A 16×9 thumbnail of 4-pixel cells, every pixel at `luma`, `bright` cells at 200.
    fn thumb(luma: u32, bright: usize) -> Thumbnail {
        let mut cells = vec![4 * luma; 144];
        for cell in cells.iter_mut().take(bright) {
            *cell = 4 * 200;
        }
        Thumbnail {
            width: 16,
            height: 9,
            cell_pixels: 4,
            cells,
        }
    }

    fn detector() -> BlackDetector {
        BlackDetector::new(0.10, 0.98, 2000 * MS)
    }

    #[test]
    fn levels_follow_the_range() {
        let d = detector();
        // Limited range: black is at or below 16 + 0.1 × 219 = 37.9.
        assert!(d.is_black_picture(&thumb(16, 0), LumaRange::Limited));
        assert!(d.is_black_picture(&thumb(37, 0), LumaRange::Limited));
        assert!(!d.is_black_picture(&thumb(40, 0), LumaRange::Limited));
        // Full range: at or below 25.5.
        assert!(d.is_black_picture(&thumb(25, 0), LumaRange::Full));
        assert!(!d.is_black_picture(&thumb(30, 0), LumaRange::Full));
        // 2 bright cells of 144 (1.4 %) still black at 98 %; 3 (2.1 %) not.
        assert!(d.is_black_picture(&thumb(16, 2), LumaRange::Limited));
        assert!(!d.is_black_picture(&thumb(16, 3), LumaRange::Limited));
    }

    #[test]
    fn a_black_segment_starts_at_its_first_frame_and_ends_at_the_next_picture() {
        let mut d = detector();
        let mut events = Vec::new();
        for i in 0..10 {
            events.extend(d.observe(i * FRAME, FRAME, &thumb(120, 0), LumaRange::Limited));
        }
        // 3 s of black from frame 10, then picture again.
        for i in 10..85 {
            events.extend(d.observe(i * FRAME, FRAME, &thumb(16, 0), LumaRange::Limited));
        }
        assert!(d.is_black());
        events.extend(d.observe(85 * FRAME, FRAME, &thumb(120, 0), LumaRange::Limited));
        assert_eq!(
            events,
            vec![
                BlackEvent::Started { start: 10 * FRAME },
                BlackEvent::Ended(Black {
                    start: 10 * FRAME,
                    duration: 75 * FRAME
                })
            ]
        );
        assert_eq!((d.count(), d.total()), (1, 75 * FRAME));
    }

    #[test]
    fn black_shorter_than_the_minimum_is_no_segment() {
        let mut d = detector();
        let mut events = Vec::new();
        for i in 0..100 {
            let luma = if (20..30).contains(&i) { 16 } else { 120 };
            events.extend(d.observe(i * FRAME, FRAME, &thumb(luma, 0), LumaRange::Limited));
        }
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn the_minimum_counts_the_last_frame_on_screen() {
        // 50 frames of 40 ms are exactly 2 s of black.
        let mut d = detector();
        let mut events = Vec::new();
        for i in 0..50 {
            events.extend(d.observe(i * FRAME, FRAME, &thumb(16, 0), LumaRange::Limited));
        }
        assert_eq!(events, vec![BlackEvent::Started { start: 0 }]);
        assert_eq!(
            d.finish(),
            Some(BlackEvent::Ended(Black {
                start: 0,
                duration: 50 * FRAME
            }))
        );
        assert_eq!(d.finish(), None);
    }
}
