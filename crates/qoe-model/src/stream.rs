// SPDX-License-Identifier: MPL-2.0
//! Rolling-window scoring of a stream, free of GStreamer types: features are computed once
//! per keyframe and per frame as frames arrive, kept while a window may still need them, and
//! assembled into each window; only the decoder runs per window.
//!
//! - VQA² (`Family::Vqa2`): vision tokens per keyframe; motion features per
//!   frame in chunks with the manifest's `context_frames` of context on each side
//!   ([`MotionChunker`]), so they equal a computation over the whole stream (zero-padded only
//!   at its true ends, at holes and at resets).
//! - LMM-VQA (`Family::LmmVqa`): CLIP tokens per keyframe and one SlowFast token per
//!   second, from the `chunk_frames` frames that start at its keyframe (the last frame repeated
//!   at the end of the stream, as the reference pads).
//! - CP-LLM (`Family::CpLlm`): a score per keyframe; a window's score is their mean.
//!
//! A window is requested once the stream has passed its end, and comes out of
//! [`StreamScorer::ready`] once every feature it needs exists (VQA² motion needs
//! `context_frames` more frames; LMM-VQA chunks need their frames).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use qoe_core::sampling::{MotionChunk, MotionChunker, Window};
use qoe_core::stall::WindowStalls;
use qoe_core::time::Nanos;

use crate::bundle::{Family, Role};
use crate::error::Result;
use crate::preprocess::RgbImage;
use crate::scorer::{Scorer, WindowFeatures};

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Resizing sampled frames to the encoders' sizes.
    pub preprocess: f64,
    /// Keyframe encoders (and CP-LLM's head).
    pub vision: f64,
    /// Motion encoder.
    pub motion: f64,
    /// Projectors, prompt and decoder (per window).
    pub decoder: f64,
}

impl StageTimes {
    pub fn total(&self) -> f64 {
        self.preprocess + self.vision + self.motion + self.decoder
    }

    fn take(&mut self) -> StageTimes {
        std::mem::take(self)
    }
}

/// What a [`StreamScorer`] holds: the cache's size, for memory checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Keyframe features (and LMM-VQA chunk tokens).
    pub keyframes: usize,
    /// VQA² per-frame motion features.
    pub motion: usize,
    /// Prepared frames waiting for the motion graphs.
    pub inputs: usize,
}

/// A window with everything needed to score it.
#[derive(Debug, Clone)]
pub struct ReadyWindow {
    pub window: Window,
    pub features: WindowFeatures,
    /// Motion frames (VQA²) or chunks (LMM-VQA) in the window.
    pub motion_frames: usize,
    /// Feature time spent since the previous ready window.
    pub spent: StageTimes,
    /// The caller's time at which the window was due (the element: running time).
    pub due: Nanos,
}

/// Why a requested window will not be scored.
#[derive(Debug, Clone, PartialEq)]
pub enum Unscorable {
    /// Frames inside it were lost (a dropped frame, a failed feature).
    Hole,
    /// No keyframe or motion frame fell inside it.
    Empty,
}

#[derive(Debug)]
struct Pending {
    window: Window,
    stall: Option<WindowStalls>,
    due: Nanos,
    /// Motion features (VQA²) that must exist first: motion frames added before the request.
    motion_needed: usize,
}

/// A feature stamped with the stream time of its frame (or keyframe).
type Timed = (Nanos, Arc<Vec<f32>>);

/// The rolling-window feature cache of one stream.
pub struct StreamScorer {
    scorer: Arc<Scorer>,
    family: Family,
    window: Nanos,
    keyframes: VecDeque<Timed>,
    /// VQA²: prepared motion inputs from `inputs_base` on, and their times.
    inputs: VecDeque<(Nanos, RgbImage)>,
    inputs_base: usize,
    added: usize,
    chunker: MotionChunker,
    context: usize,
    chunk: usize,
    motion: VecDeque<Timed>,
    /// LMM-VQA: chunks still collecting frames, and finished chunk tokens.
    open_chunks: VecDeque<(Nanos, Vec<RgbImage>)>,
    chunk_frames: usize,
    chunks: VecDeque<Timed>,
    pending: VecDeque<Pending>,
    /// Windows starting before this time lost frames.
    hole: Option<Nanos>,
    latest: Option<Nanos>,
    spent: StageTimes,
    max_frames: Option<usize>,
    multiple: usize,
}

impl Drop for StreamScorer {
    fn drop(&mut self) {
        self.scorer.stream_left();
    }
}

impl StreamScorer {
    /// `window`: the longest window that will be requested (features older than the latest
    /// frame by more than this are dropped). `chunk`: motion frames per fast-pathway run.
    pub fn new(scorer: Arc<Scorer>, window: Nanos, chunk: usize) -> Result<Self> {
        let family = scorer.family();
        let motion = scorer.bundle().manifest.sampling.motion.clone();
        let context = motion.as_ref().and_then(|m| m.context_frames).unwrap_or(0);
        let chunk_frames = match family {
            Family::LmmVqa => scorer.chunk_frames()?,
            _ => 0,
        };
        scorer.stream_joined();
        Ok(StreamScorer {
            scorer,
            family,
            window,
            keyframes: VecDeque::new(),
            inputs: VecDeque::new(),
            inputs_base: 0,
            added: 0,
            chunker: MotionChunker::new(context, chunk),
            context,
            chunk,
            motion: VecDeque::new(),
            open_chunks: VecDeque::new(),
            chunk_frames,
            chunks: VecDeque::new(),
            pending: VecDeque::new(),
            hole: None,
            latest: None,
            spent: StageTimes::default(),
            max_frames: motion.as_ref().and_then(|m| m.max_frames),
            multiple: motion.as_ref().map_or(1, |m| m.multiple.max(1)),
        })
    }

    /// A sampled frame at stream time `time`. On error the frame counts as lost (a hole).
    pub fn add_frame(
        &mut self,
        time: Nanos,
        image: &RgbImage,
        keyframe: bool,
        motion: bool,
    ) -> Result<()> {
        self.latest = Some(time);
        let result = self.features_of(time, image, keyframe, motion);
        if result.is_err() {
            self.lose(time);
        }
        self.prune();
        result
    }

    fn features_of(
        &mut self,
        time: Nanos,
        image: &RgbImage,
        keyframe: bool,
        motion: bool,
    ) -> Result<()> {
        let scorer = self.scorer.clone();
        let timed = |spent: &mut f64, f: &mut dyn FnMut() -> Result<RgbImage>| {
            let t0 = Instant::now();
            let out = f();
            *spent += t0.elapsed().as_secs_f64();
            out
        };
        match self.family {
            Family::CpLlm => {
                if keyframe {
                    let high = timed(&mut self.spent.preprocess, &mut || {
                        scorer.prepare(Role::HighLevelEncoder, image)
                    })?;
                    let low = timed(&mut self.spent.preprocess, &mut || {
                        scorer.prepare(Role::LowLevelEncoder, image)
                    })?;
                    let t0 = Instant::now();
                    let score = scorer.frame_scores(&[&high], &[&low])?;
                    self.spent.vision += t0.elapsed().as_secs_f64();
                    self.keyframes.push_back((time, score[0].clone()));
                }
            }
            Family::Vqa2 | Family::LmmVqa => {
                if keyframe {
                    let prepared = timed(&mut self.spent.preprocess, &mut || {
                        scorer.prepare(Role::KeyframeEncoder, image)
                    })?;
                    let t0 = Instant::now();
                    let tokens = scorer.encode_pictures(Role::KeyframeEncoder, &[&prepared])?;
                    self.spent.vision += t0.elapsed().as_secs_f64();
                    self.keyframes.push_back((time, tokens[0].clone()));
                }
                if motion {
                    let prepared = timed(&mut self.spent.preprocess, &mut || {
                        scorer.prepare(Role::MotionEncoder, image)
                    })?;
                    if self.family == Family::Vqa2 {
                        self.inputs.push_back((time, prepared));
                        self.added += 1;
                        self.run_motion(false)?;
                    } else {
                        if keyframe {
                            self.open_chunks.push_back((time, Vec::new()));
                        }
                        for (_, frames) in self.open_chunks.iter_mut() {
                            if frames.len() < self.chunk_frames {
                                frames.push(prepared.clone());
                            }
                        }
                        self.close_chunks(false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the fast pathway on every chunk that has its context (all, at an end).
    fn run_motion(&mut self, ended: bool) -> Result<()> {
        while let Some(MotionChunk { input, output }) = self.chunker.next(self.added, ended) {
            let from = input.0 - self.inputs_base;
            let frames: Vec<&RgbImage> = self
                .inputs
                .range(from..input.1 - self.inputs_base)
                .map(|(_, image)| image)
                .collect();
            let t0 = Instant::now();
            let feats = self.scorer.motion_features(&frames)?;
            self.spent.motion += t0.elapsed().as_secs_f64();
            let skip = output.0 - input.0;
            for (i, feat) in feats
                .into_iter()
                .skip(skip)
                .take(output.1 - output.0)
                .enumerate()
            {
                let time = self.inputs[from + skip + i].0;
                self.motion.push_back((time, feat));
            }
            // The next chunk reaches back `context` frames before its first output.
            let keep_from = self.chunker.done().saturating_sub(self.context);
            while self.inputs_base < keep_from {
                self.inputs.pop_front();
                self.inputs_base += 1;
            }
        }
        Ok(())
    }

    /// LMM-VQA: tokens for chunks that have their frames (all, padded, at an end).
    fn close_chunks(&mut self, ended: bool) -> Result<()> {
        while let Some((time, frames)) = self.open_chunks.front() {
            if frames.len() < self.chunk_frames && !ended {
                break;
            }
            let (time, mut frames) = (*time, frames.clone());
            self.open_chunks.pop_front();
            let Some(last) = frames.last().cloned() else {
                continue;
            };
            frames.resize(self.chunk_frames, last);
            let t0 = Instant::now();
            let token = self
                .scorer
                .chunk_tokens(&[frames.iter().collect::<Vec<_>>()])?;
            self.spent.motion += t0.elapsed().as_secs_f64();
            self.chunks.push_back((time, token[0].clone()));
        }
        Ok(())
    }

    /// Frames were lost at stream time `at` (dropped before reaching us, or failed): windows
    /// that start before it are not scored, and motion starts a new segment.
    pub fn lose(&mut self, at: Nanos) {
        // What was before the hole completes as if the stream ended there.
        let _ = self.run_motion(true);
        let _ = self.close_chunks(true);
        self.chunker = MotionChunker::new(self.context, self.chunk);
        self.inputs.clear();
        self.inputs_base = 0;
        self.added = 0;
        self.open_chunks.clear();
        self.hole = Some(self.hole.map_or(at, |h| h.max(at)));
        for pending in &mut self.pending {
            pending.motion_needed = 0;
        }
    }

    /// Asks for `window` to be scored (with the stall figures for streaming prompts).
    pub fn request(
        &mut self,
        window: Window,
        stall: Option<WindowStalls>,
        due: Nanos,
    ) -> Result<(), Unscorable> {
        if self.hole.is_some_and(|hole| window.start < hole) {
            return Err(Unscorable::Hole);
        }
        self.pending.push_back(Pending {
            window,
            stall,
            due,
            motion_needed: self.added,
        });
        Ok(())
    }

    /// End of stream: everything still waiting for frames completes.
    pub fn finish(&mut self) -> Result<()> {
        self.run_motion(true)?;
        self.close_chunks(true)?;
        for pending in &mut self.pending {
            pending.motion_needed = 0;
        }
        Ok(())
    }

    /// Forgets the stream (flushing seek, new stream).
    pub fn reset(&mut self) {
        let fresh = StreamScorer {
            scorer: self.scorer.clone(),
            chunker: MotionChunker::new(self.context, self.chunk),
            max_frames: self.max_frames,
            multiple: self.multiple,
            keyframes: VecDeque::new(),
            inputs: VecDeque::new(),
            motion: VecDeque::new(),
            open_chunks: VecDeque::new(),
            chunks: VecDeque::new(),
            pending: VecDeque::new(),
            hole: None,
            latest: None,
            spent: StageTimes::default(),
            inputs_base: 0,
            added: 0,
            ..*self
        };
        *self = fresh;
    }

    /// Windows whose features are complete, oldest first; with the windows that cannot be
    /// scored, each with the running time it was due at.
    pub fn ready(&mut self) -> Vec<Result<ReadyWindow, (Window, Nanos, Unscorable)>> {
        let mut out = Vec::new();
        while let Some(p) = self.pending.front() {
            let motion_done = self.chunker.done() >= p.motion_needed || self.family != Family::Vqa2;
            let chunks_done = self.family != Family::LmmVqa
                || self
                    .open_chunks
                    .front()
                    .is_none_or(|(time, _)| *time >= p.window.end);
            if !(motion_done && chunks_done) {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            out.push(self.assemble(p));
        }
        self.prune();
        out
    }

    fn assemble(&mut self, p: Pending) -> Result<ReadyWindow, (Window, Nanos, Unscorable)> {
        let w = p.window;
        let inside = |items: &VecDeque<Timed>| -> Vec<Arc<Vec<f32>>> {
            items
                .iter()
                .filter(|(t, _)| *t >= w.start && *t < w.end)
                .map(|(_, f)| f.clone())
                .collect()
        };
        let keyframes = inside(&self.keyframes);
        let motion = match self.family {
            Family::Vqa2 => self.trim_motion(inside(&self.motion)),
            Family::LmmVqa => inside(&self.chunks),
            Family::CpLlm => Vec::new(),
        };
        let empty = keyframes.is_empty() || (self.family != Family::CpLlm && motion.is_empty());
        if empty {
            return Err((w, p.due, Unscorable::Empty));
        }
        Ok(ReadyWindow {
            window: w,
            motion_frames: motion.len(),
            features: WindowFeatures {
                keyframes,
                motion,
                stall: p.stall,
            },
            spent: self.spent.take(),
            due: p.due,
        })
    }

    /// A window's motion frames as the reference takes a clip's: a multiple of `multiple`,
    /// at most `max_frames` (evenly spread when there are more).
    fn trim_motion(&self, mut frames: Vec<Arc<Vec<f32>>>) -> Vec<Arc<Vec<f32>>> {
        if let Some(max) = self.max_frames
            && frames.len() > max
        {
            let n = frames.len();
            frames = (0..max).map(|i| frames[i * n / max].clone()).collect();
        }
        let keep = frames.len() / self.multiple * self.multiple;
        frames.truncate(keep);
        frames
    }

    /// Drops features that no pending or future window can contain.
    fn prune(&mut self) {
        let Some(latest) = self.latest else { return };
        let mut oldest = latest.saturating_sub(self.window);
        if let Some(p) = self.pending.front() {
            oldest = oldest.min(p.window.start);
        }
        for items in [&mut self.keyframes, &mut self.motion, &mut self.chunks] {
            while items.front().is_some_and(|(t, _)| *t < oldest) {
                items.pop_front();
            }
        }
    }

    /// Features held now (for memory checks).
    pub fn held(&self) -> Held {
        Held {
            keyframes: self.keyframes.len() + self.chunks.len(),
            motion: self.motion.len(),
            inputs: self.inputs.len()
                + self.open_chunks.iter().map(|(_, f)| f.len()).sum::<usize>(),
        }
    }
}
