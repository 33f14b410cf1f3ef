// SPDX-License-Identifier: MPL-2.0
//! Rendition (resolution) switches, free of GStreamer types: adaptive streaming changes the
//! picture size when it changes rendition. Each change of size after the first is a switch,
//! up or down by pixel count, and the time shown at each rendition is kept per height label
//! ("720p"), at most [`MAX_LABELS`] of them (later ones count as "other"), so that metric
//! labels stay bounded.

use crate::time::Nanos;

/// Distinct height labels kept; more fall into [`OTHER`].
pub const MAX_LABELS: usize = 8;
/// The label for heights past [`MAX_LABELS`].
pub const OTHER: &str = "other";

/// A picture size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    /// The height label of this size: "1080p".
    pub fn label(self) -> String {
        format!("{}p", self.height)
    }

    fn pixels(self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// A change of rendition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub from: Size,
    pub to: Size,
    pub direction: Direction,
}

#[derive(Debug, Default)]
pub struct Renditions {
    current: Option<Size>,
    switches: u64,
    up: u64,
    down: u64,
    /// Time shown per label, in the order first seen.
    time_at: Vec<(String, Nanos)>,
}

impl Renditions {
    /// The negotiated picture size. Returns the switch it makes, if any.
    pub fn on_size(&mut self, size: Size) -> Option<Switch> {
        let from = self.current.replace(size)?;
        if from == size {
            return None;
        }
        // Same pixel count, other shape: count it as up (a change all the same).
        let direction = if size.pixels() >= from.pixels() {
            Direction::Up
        } else {
            Direction::Down
        };
        self.switches += 1;
        match direction {
            Direction::Up => self.up += 1,
            Direction::Down => self.down += 1,
        }
        Some(Switch {
            from,
            to: size,
            direction,
        })
    }

    /// A frame of the current rendition shown for `duration`.
    pub fn on_frame(&mut self, duration: Nanos) {
        let Some(size) = self.current else { return };
        let label = size.label();
        let slot = match self.time_at.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None if self.time_at.len() < MAX_LABELS => {
                self.time_at.push((label, 0));
                self.time_at.len() - 1
            }
            None => match self.time_at.iter().position(|(l, _)| l == OTHER) {
                Some(i) => i,
                None => {
                    // The last slot becomes "other", keeping what it had.
                    let last = self.time_at.len() - 1;
                    self.time_at[last].0 = OTHER.to_owned();
                    last
                }
            },
        };
        self.time_at[slot].1 += duration;
    }

    pub fn current(&self) -> Option<Size> {
        self.current
    }

    /// Switches so far, up and down.
    pub fn switches(&self) -> (u64, u64) {
        (self.up, self.down)
    }

    /// Time shown per height label.
    pub fn time_at(&self) -> &[(String, Nanos)] {
        &self.time_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;

    fn size(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    #[test]
    fn three_switches_and_time_at_each() {
        let mut r = Renditions::default();
        assert_eq!(
            r.on_size(size(640, 360)),
            None,
            "the first size is no switch"
        );
        r.on_frame(2 * SECOND);
        let up = r.on_size(size(1280, 720)).unwrap();
        assert_eq!(up.direction, Direction::Up);
        r.on_frame(3 * SECOND);
        assert_eq!(r.on_size(size(1280, 720)), None, "same size, no switch");
        let down = r.on_size(size(854, 480)).unwrap();
        assert_eq!((down.from, down.to), (size(1280, 720), size(854, 480)));
        assert_eq!(down.direction, Direction::Down);
        r.on_frame(SECOND);
        r.on_size(size(1920, 1080)).unwrap();
        r.on_frame(SECOND);
        assert_eq!(r.switches(), (2, 1));
        assert_eq!(
            r.time_at(),
            &[
                ("360p".to_owned(), 2 * SECOND),
                ("720p".to_owned(), 3 * SECOND),
                ("480p".to_owned(), SECOND),
                ("1080p".to_owned(), SECOND),
            ]
        );
    }

    #[test]
    fn labels_are_bounded() {
        let mut r = Renditions::default();
        for h in 1..=20u32 {
            r.on_size(size(h * 16, h * 9));
            r.on_frame(SECOND);
        }
        assert_eq!(r.time_at().len(), MAX_LABELS);
        assert_eq!(r.time_at()[MAX_LABELS - 1].0, OTHER);
        let total: Nanos = r.time_at().iter().map(|(_, t)| t).sum();
        assert_eq!(total, 20 * SECOND, "no time lost");
    }
}
