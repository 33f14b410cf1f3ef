// SPDX-License-Identifier: MPL-2.0
//! Content-freeze detection, free of GStreamer types.
//!
//! A freeze is frames that keep coming while the picture does not change. As FFmpeg's
//! `freezedetect` does, each frame is compared with the last frame that was *not* frozen (the
//! reference), by mean absolute luma difference (MAFD). A run of unchanged frames lasting at
//! least the minimum duration is a freeze; it starts at the reference frame and ends at the
//! first frame that differs.
//!
//! Encoders keep refining a still picture for a few frames after it stops (x264 sharpens it
//! at lower quantisers as it sees it stay), so the difference to the reference can creep
//! past the threshold while no frame differs visibly from the one before. A frame therefore
//! also counts as unchanged when it differs from the previous frame by no more than the
//! threshold and from the reference by no more than a drift limit, which follows the motion
//! level just before the picture stopped (a quarter of it, between one and ten thresholds):
//! after motion the freeze starts at its first repeated picture, and a slow fade or pan,
//! whose motion level is itself tiny, is judged as FFmpeg does.
//!
//! The comparison runs on a cheap luma thumbnail: every `step_y`-th row is read, and each
//! thumbnail cell is the sum of `step_x` neighbouring pixels of that row. On 1080p that reads
//! 90 of 1080 rows, about a tenth of a decoded frame's luma, in contiguous runs.

use std::collections::VecDeque;

use crate::episode::{EpisodeEvent, Episodes, Span};
use crate::time::Nanos;

/// Recent frame-to-frame differences kept for the motion level.
const MOTION_FRAMES: usize = 5;
/// The drift limit is the motion level over this, at least one threshold and at most this
/// many thresholds.
const DRIFT_SHARE: f64 = 4.0;
const DRIFT_MAX_THRESHOLDS: f64 = 10.0;

/// The thumbnail is at most this many cells wide and high.
pub const THUMB_MAX_WIDTH: usize = 160;
pub const THUMB_MAX_HEIGHT: usize = 90;

/// Where a picture's luma comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LumaLayout {
    /// 8-bit luma at byte `offset` of every `pixel_stride`-byte pixel: a planar Y plane
    /// (1, 0), YUY2 (2, 0), UYVY (2, 1), AYUV (4, 1).
    Luma8 { pixel_stride: usize, offset: usize },
    /// 16-bit little-endian luma at byte `offset` of every `pixel_stride`-byte pixel, with
    /// `depth` significant bits starting at bit `shift` (I420_10LE: 10, 0; P010_10LE: 10, 6).
    Luma16Le {
        pixel_stride: usize,
        offset: usize,
        shift: u32,
        depth: u32,
    },
    /// 8-bit RGB: luma is computed from the components at byte offsets `r`, `g`, `b`.
    Rgb8 {
        pixel_stride: usize,
        r: usize,
        g: usize,
        b: usize,
    },
}

/// A borrowed picture plane that holds luma.
#[derive(Clone, Copy, Debug)]
pub struct LumaPlane<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    pub layout: LumaLayout,
}

/// Subsampled luma: each cell is the sum of `cell_pixels` 8-bit luma values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thumbnail {
    pub width: usize,
    pub height: usize,
    pub cell_pixels: u32,
    pub cells: Vec<u32>,
}

/// Why a plane cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneError(pub String);

impl std::fmt::Display for PlaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl LumaLayout {
    fn bytes_per_pixel(&self) -> usize {
        match *self {
            LumaLayout::Luma8 {
                pixel_stride,
                offset,
            } => pixel_stride.max(offset + 1),
            LumaLayout::Luma16Le {
                pixel_stride,
                offset,
                ..
            } => pixel_stride.max(offset + 2),
            LumaLayout::Rgb8 {
                pixel_stride,
                r,
                g,
                b,
            } => pixel_stride.max(r.max(g).max(b) + 1),
        }
    }
}

impl Thumbnail {
    /// Fills the thumbnail from `plane`, reusing its allocation.
    pub fn fill(&mut self, plane: &LumaPlane) -> Result<(), PlaneError> {
        let LumaPlane {
            data,
            width,
            height,
            stride,
            layout,
        } = *plane;
        if width == 0 || height == 0 {
            return Err(PlaneError(format!("empty picture {width}x{height}")));
        }
        let row_bytes = width * layout.bytes_per_pixel();
        if stride < row_bytes || data.len() < (height - 1) * stride + row_bytes {
            return Err(PlaneError(format!(
                "plane of {} bytes is too small for {width}x{height} with stride {stride}",
                data.len()
            )));
        }
        let step_x = width.div_ceil(THUMB_MAX_WIDTH);
        let step_y = height.div_ceil(THUMB_MAX_HEIGHT);
        self.width = width / step_x;
        self.height = height / step_y;
        self.cell_pixels = step_x as u32;
        self.cells.clear();
        self.cells.reserve(self.width * self.height);
        for ty in 0..self.height {
            let row = &data[ty * step_y * stride..][..row_bytes];
            let (cells, width) = (&mut self.cells, self.width);
            match layout {
                LumaLayout::Luma8 {
                    pixel_stride: 1,
                    offset: 0,
                } => {
                    // The common planar case: a plain sum the compiler vectorises.
                    cells.extend(
                        row.chunks_exact(step_x)
                            .take(width)
                            .map(|c| c.iter().map(|&v| v as u32).sum::<u32>()),
                    );
                }
                LumaLayout::Luma8 {
                    pixel_stride,
                    offset,
                } => sum_cells(cells, row, width, step_x, pixel_stride, |p| {
                    p[offset] as u32
                }),
                LumaLayout::Luma16Le {
                    pixel_stride,
                    offset,
                    shift,
                    depth,
                } => {
                    let mask = (1u32 << depth.min(16)) - 1;
                    let down = depth.saturating_sub(8);
                    sum_cells(cells, row, width, step_x, pixel_stride, |p| {
                        let v = u16::from_le_bytes([p[offset], p[offset + 1]]) as u32;
                        ((v >> shift) & mask) >> down
                    })
                }
                LumaLayout::Rgb8 {
                    pixel_stride,
                    r,
                    g,
                    b,
                } => {
                    // BT.601 luma in fixed point; weights sum to 256.
                    sum_cells(cells, row, width, step_x, pixel_stride, |p| {
                        (77 * p[r] as u32 + 150 * p[g] as u32 + 29 * p[b] as u32) >> 8
                    })
                }
            }
        }
        Ok(())
    }

    /// Mean absolute difference per pixel, as a fraction of full scale (0..=1); `None` if the
    /// thumbnails are not comparable.
    pub fn mafd(&self, other: &Thumbnail) -> Option<f64> {
        if self.width != other.width
            || self.height != other.height
            || self.cell_pixels != other.cell_pixels
            || self.cells.is_empty()
        {
            return None;
        }
        let sum: u64 = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(&a, &b)| a.abs_diff(b) as u64)
            .sum();
        Some(sum as f64 / (self.cells.len() as f64 * self.cell_pixels as f64 * 255.0))
    }
}

/// Appends `width` cells of `row`, each the luma of `step_x` pixels of `pixel_stride` bytes,
/// as read by `luma`.
fn sum_cells(
    cells: &mut Vec<u32>,
    row: &[u8],
    width: usize,
    step_x: usize,
    pixel_stride: usize,
    luma: impl Fn(&[u8]) -> u32,
) {
    cells.extend(
        row.chunks_exact(step_x * pixel_stride)
            .take(width)
            .map(|c| c.chunks_exact(pixel_stride).map(&luma).sum::<u32>()),
    );
}

/// A completed freeze.
pub type Freeze = Span;
/// A freeze starts (once it has lasted the minimum) or ends.
pub type FreezeEvent = EpisodeEvent;

#[derive(Debug)]
pub struct FreezeDetector {
    threshold: f64,
    min_duration: Nanos,
    reference: Thumbnail,
    /// The latest frame's thumbnail.
    previous: Thumbnail,
    scratch: Thumbnail,
    /// The reference is the latest frame (it changed the picture): `reference` itself is
    /// stale then, and `previous` stands for it, so that moving pictures cost no copy.
    reference_is_previous: bool,
    /// The run of unchanged frames since the reference (its start is the reference's time).
    episodes: Episodes,
    /// Differences of recent changed frames to the frames before them.
    motion: VecDeque<f64>,
    /// How far frames that each differ little from the one before may drift from the
    /// reference and still count as unchanged.
    drift_limit: f64,
}

impl FreezeDetector {
    /// `threshold`: largest MAFD (fraction of full scale) for a frame to count as unchanged.
    pub fn new(threshold: f64, min_duration: Nanos) -> Self {
        FreezeDetector {
            threshold,
            min_duration,
            reference: Thumbnail::default(),
            previous: Thumbnail::default(),
            scratch: Thumbnail::default(),
            reference_is_previous: false,
            episodes: Episodes::default(),
            motion: VecDeque::with_capacity(MOTION_FRAMES),
            drift_limit: threshold,
        }
    }

    pub fn set_threshold(&mut self, threshold: f64) {
        self.threshold = threshold;
    }

    pub fn set_min_duration(&mut self, min_duration: Nanos) {
        self.min_duration = min_duration;
    }

    pub fn is_frozen(&self) -> bool {
        self.episodes.is_on()
    }

    /// The luma thumbnail of the latest frame observed, for other picture checks.
    pub fn thumbnail(&self) -> &Thumbnail {
        &self.previous
    }

    /// A frame shown at `time` for `duration`. Returns the event it causes, if any.
    pub fn observe(
        &mut self,
        time: Nanos,
        duration: Nanos,
        plane: &LumaPlane,
    ) -> Result<Option<FreezeEvent>, PlaneError> {
        self.scratch.fill(plane)?;
        self.episodes.saw_frame_until(time + duration);
        let to_previous = self.scratch.mafd(&self.previous);
        let to_reference = if self.reference_is_previous {
            to_previous
        } else {
            self.scratch.mafd(&self.reference)
        };
        let unchanged = match (self.episodes.run_start(), to_reference) {
            // A frame earlier than the reference (a jump back) starts afresh.
            (Some(reference_time), Some(drift)) if time >= reference_time => {
                drift <= self.threshold
                    || (to_previous.is_some_and(|d| d <= self.threshold)
                        && drift <= self.drift_limit)
            }
            _ => false,
        };
        if unchanged && self.reference_is_previous {
            // The still picture's first frame becomes the reference proper.
            std::mem::swap(&mut self.reference, &mut self.previous);
            self.reference_is_previous = false;
        }
        std::mem::swap(&mut self.previous, &mut self.scratch);
        if unchanged {
            let start = self.episodes.run_start().expect("checked above");
            if time - start >= self.min_duration {
                return Ok(self.episodes.lasted());
            }
            return Ok(None);
        }
        let ended = self.episodes.restart(time);
        if let Some(difference) = to_previous {
            if self.motion.len() == MOTION_FRAMES {
                self.motion.pop_front();
            }
            self.motion.push_back(difference);
        }
        self.drift_limit = (self.motion_level() / DRIFT_SHARE)
            .clamp(self.threshold, DRIFT_MAX_THRESHOLDS * self.threshold);
        self.reference_is_previous = true;
        Ok(ended)
    }

    /// The median difference of recent changed frames to the frames before them.
    fn motion_level(&self) -> f64 {
        let mut recent: Vec<f64> = self.motion.iter().copied().collect();
        if recent.is_empty() {
            return 0.0;
        }
        recent.sort_by(f64::total_cmp);
        recent[recent.len() / 2]
    }

    /// The picture changed shape (caps change) or the stream jumped (flush): the next frame
    /// becomes the reference. An open freeze ends where the last frame ended.
    pub fn reset(&mut self) -> Option<FreezeEvent> {
        let ended = self.episodes.finish();
        self.reference_is_previous = false;
        self.reference.cells.clear();
        self.previous.cells.clear();
        self.motion.clear();
        ended
    }

    /// End of stream: an open freeze ends where the last frame ended.
    pub fn finish(&mut self) -> Option<FreezeEvent> {
        self.reset()
    }

    /// Freezes so far, the open one included.
    pub fn count(&self) -> u64 {
        self.episodes.count()
    }

    /// Total frozen time, the open freeze's time so far included.
    pub fn total(&self) -> Nanos {
        self.episodes.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const FRAME: Nanos = 40 * MS;

    fn gray(width: usize, height: usize, seed: u8) -> Vec<u8> {
        (0..width * height)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    fn plane(data: &[u8], width: usize, height: usize) -> LumaPlane<'_> {
        LumaPlane {
            data,
            width,
            height,
            stride: width,
            layout: LumaLayout::Luma8 {
                pixel_stride: 1,
                offset: 0,
            },
        }
    }

    #[test]
    fn thumbnail_of_1080p_is_small_and_exact_for_flat_pictures() {
        let data = vec![100u8; 1920 * 1080];
        let mut t = Thumbnail::default();
        t.fill(&plane(&data, 1920, 1080)).unwrap();
        assert_eq!((t.width, t.height, t.cell_pixels), (160, 90, 12));
        assert!(t.cells.iter().all(|&c| c == 1200));
    }

    #[test]
    fn layouts_agree_on_the_same_luma() {
        let (w, h) = (64, 36);
        let y = gray(w, h, 3);
        let mut planar = Thumbnail::default();
        planar.fill(&plane(&y, w, h)).unwrap();

        // UYVY: luma at odd bytes.
        let uyvy: Vec<u8> = y.iter().flat_map(|&v| [128, v]).collect();
        let mut packed = Thumbnail::default();
        packed
            .fill(&LumaPlane {
                data: &uyvy,
                width: w,
                height: h,
                stride: 2 * w,
                layout: LumaLayout::Luma8 {
                    pixel_stride: 2,
                    offset: 1,
                },
            })
            .unwrap();
        assert_eq!(planar, packed);

        // P010: 10 bits in the top of 16.
        let p010: Vec<u8> = y
            .iter()
            .flat_map(|&v| (((v as u16) << 2) << 6).to_le_bytes())
            .collect();
        let mut deep = Thumbnail::default();
        deep.fill(&LumaPlane {
            data: &p010,
            width: w,
            height: h,
            stride: 2 * w,
            layout: LumaLayout::Luma16Le {
                pixel_stride: 2,
                offset: 0,
                shift: 6,
                depth: 10,
            },
        })
        .unwrap();
        assert_eq!(planar, deep);

        // Gray RGBx: luma equals the component (the weights sum to 256).
        let rgbx: Vec<u8> = y.iter().flat_map(|&v| [v, v, v, 0]).collect();
        let mut rgb = Thumbnail::default();
        rgb.fill(&LumaPlane {
            data: &rgbx,
            width: w,
            height: h,
            stride: 4 * w,
            layout: LumaLayout::Rgb8 {
                pixel_stride: 4,
                r: 0,
                g: 1,
                b: 2,
            },
        })
        .unwrap();
        assert_eq!(planar, rgb);
    }

    #[test]
    fn short_plane_is_an_error_not_a_panic() {
        let data = vec![0u8; 100];
        let err = Thumbnail::default()
            .fill(&plane(&data, 64, 36))
            .unwrap_err();
        assert!(err.0.contains("too small"), "{err}");
    }

    #[test]
    fn mafd_is_a_fraction_of_full_scale() {
        let (a, b) = (vec![10u8; 320 * 180], vec![61u8; 320 * 180]);
        let (mut ta, mut tb) = (Thumbnail::default(), Thumbnail::default());
        ta.fill(&plane(&a, 320, 180)).unwrap();
        tb.fill(&plane(&b, 320, 180)).unwrap();
        assert!((ta.mafd(&tb).unwrap() - 51.0 / 255.0).abs() < 1e-12);
        assert_eq!(ta.mafd(&ta), Some(0.0));
    }

    #[test]
    fn freeze_starts_at_the_reference_and_ends_at_the_first_change() {
        let (w, h) = (64, 36);
        let mut d = FreezeDetector::new(0.001, 1000 * MS);
        let mut events = Vec::new();
        // Frames 0..10 move, 10..50 are a copy of frame 10, 50.. move again.
        for i in 0..70u64 {
            let seed = if (10..50).contains(&i) { 10 } else { i as u8 };
            let data = gray(w, h, seed);
            if let Some(ev) = d.observe(i * FRAME, FRAME, &plane(&data, w, h)).unwrap() {
                events.push((i, ev));
            }
        }
        assert_eq!(
            events,
            vec![
                // Reported once a second of unchanged frames has passed.
                (35, FreezeEvent::Started { start: 10 * FRAME }),
                (
                    50,
                    FreezeEvent::Ended(Freeze {
                        start: 10 * FRAME,
                        duration: 40 * FRAME
                    })
                ),
            ]
        );
        assert_eq!(d.count(), 1);
        assert_eq!(d.total(), 40 * FRAME);
    }

    /// A picture that stops after motion and is then refined by the encoder: each frame
    /// differs from the one before by a tenth of the threshold, and the refinements add up
    /// past the threshold. The freeze starts at the first repeated picture all the same.
    #[test]
    fn encoder_refinement_of_a_still_picture_does_not_delay_the_freeze() {
        let (w, h) = (64, 36);
        let threshold = 0.002;
        let mut d = FreezeDetector::new(threshold, 1000 * MS);
        let still = gray(w, h, 10);
        let mut events = Vec::new();
        for i in 0..80u64 {
            let data = match i {
                0..10 => gray(w, h, i as u8 * 3),
                // 0.1 level more on every 5th pixel per frame for 12 frames: 0.0002 of full
                // scale from frame to frame, 0.0024 in all.
                10..60 => {
                    let steps = (i - 10).min(12) as u8;
                    still
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| {
                            if k % 5 == 0 {
                                v.saturating_add(steps / 2)
                            } else {
                                v
                            }
                        })
                        .collect()
                }
                _ => gray(w, h, i as u8 * 3),
            };
            if let Some(ev) = d.observe(i * FRAME, FRAME, &plane(&data, w, h)).unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(
            events,
            vec![
                FreezeEvent::Started { start: 10 * FRAME },
                FreezeEvent::Ended(Freeze {
                    start: 10 * FRAME,
                    duration: 50 * FRAME
                })
            ]
        );
    }

    /// A slow fade, each frame a little darker, is no freeze: the motion before it is as
    /// small as its steps, so the drift limit is the threshold itself.
    #[test]
    fn a_slow_fade_is_not_a_freeze() {
        let (w, h) = (64, 36);
        let mut d = FreezeDetector::new(0.002, 1000 * MS);
        // Levels 120 to 219, so that 100 levels of fade never clip.
        let base: Vec<u8> = (0..w * h).map(|k| 120 + (k * 7 % 100) as u8).collect();
        for i in 0..200u64 {
            // One level less on every 4th pixel every 2nd frame: 0.001 per step.
            let fade = (i / 2) as u8;
            let data: Vec<u8> = base
                .iter()
                .enumerate()
                .map(|(k, &v)| if k % 4 == 0 { v - fade } else { v })
                .collect();
            let event = d.observe(i * FRAME, FRAME, &plane(&data, w, h)).unwrap();
            assert_eq!(event, None, "frame {i}");
        }
    }

    #[test]
    fn short_still_is_not_a_freeze() {
        let (w, h) = (64, 36);
        let mut d = FreezeDetector::new(0.001, 1000 * MS);
        for i in 0..60u64 {
            let seed = if (10..30).contains(&i) { 10 } else { i as u8 };
            let data = gray(w, h, seed);
            assert_eq!(
                d.observe(i * FRAME, FRAME, &plane(&data, w, h)).unwrap(),
                None
            );
        }
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn noise_below_threshold_still_freezes() {
        let (w, h) = (64, 36);
        let mut d = FreezeDetector::new(0.01, 500 * MS);
        let base = gray(w, h, 0);
        let mut started = false;
        for i in 0..30u64 {
            // ±1 level of noise on every pixel: 0.4% of full scale.
            let noisy: Vec<u8> = base
                .iter()
                .enumerate()
                .map(|(k, &v)| {
                    if (k + i as usize).is_multiple_of(2) {
                        v.saturating_add(1)
                    } else {
                        v
                    }
                })
                .collect();
            started |= matches!(
                d.observe(i * FRAME, FRAME, &plane(&noisy, w, h)).unwrap(),
                Some(FreezeEvent::Started { .. })
            );
        }
        assert!(started);
    }

    #[test]
    fn reset_closes_an_open_freeze_and_drops_the_reference() {
        let (w, h) = (64, 36);
        let mut d = FreezeDetector::new(0.001, 200 * MS);
        let data = gray(w, h, 1);
        for i in 0..10u64 {
            d.observe(i * FRAME, FRAME, &plane(&data, w, h)).unwrap();
        }
        assert!(d.is_frozen());
        assert_eq!(d.total(), 10 * FRAME);
        assert_eq!(
            d.reset(),
            Some(FreezeEvent::Ended(Freeze {
                start: 0,
                duration: 10 * FRAME
            }))
        );
        // A new size after the reset: the first frame is a reference, not a change.
        let small = gray(32, 18, 1);
        assert_eq!(
            d.observe(10 * FRAME, FRAME, &plane(&small, 32, 18))
                .unwrap(),
            None
        );
        assert!(!d.is_frozen());
        assert_eq!(d.count(), 1);
    }
}
