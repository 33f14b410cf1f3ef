// SPDX-License-Identifier: MPL-2.0
//! LMM-VQA: CLIP tokens per keyframe and one SlowFast token per second's chunk, fused by a
//! visual projector into one block of the prompt; the score is the first number of a greedy
//! answer, scaled from the manifest's range to 0–1.

use std::sync::Arc;

use crate::bundle::{Dim, PartName, Role, Segment};
use crate::error::{Error, Result};
use crate::preprocess::RgbImage;
use crate::prompt::first_number;
use crate::scorer::{
    Scored, Scorer, WindowFeatures, f32_tensor, keyframe_indices, refs, split, to_channels_first,
};

impl Scorer {
    /// One SlowFast token per chunk of prepared frames.
    pub fn chunk_tokens(&self, chunks: &[Vec<&RgbImage>]) -> Result<Vec<Arc<Vec<f32>>>> {
        let (mut batch, mut size, mut frames) = (Vec::new(), (0, 0), 0);
        for chunk in chunks {
            let (shape, data) = self.pixels(Role::MotionEncoder, chunk)?;
            frames = shape[0];
            batch.extend(to_channels_first(
                &data,
                shape[0] as usize,
                (shape[2] * shape[3]) as usize,
            ));
            size = (shape[2], shape[3]);
        }
        let shape = vec![chunks.len() as i64, 3, frames, size.0, size.1];
        let (_, tokens) = self.run(
            &PartName::own(Role::MotionEncoder),
            vec![("chunks", f32_tensor(shape, batch))],
        )?;
        Ok(split(tokens, chunks.len()))
    }

    /// Frames per SlowFast chunk.
    pub fn chunk_frames(&self) -> Result<usize> {
        self.bundle
            .manifest
            .sampling
            .motion
            .as_ref()
            .and_then(|m| m.chunk_frames)
            .ok_or_else(|| {
                Error::Bundle(format!(
                    "{}: sampling.motion.chunk_frames is missing",
                    self.manifest_path()
                ))
            })
    }

    /// A whole clip's CLIP tokens and one chunk token per second.
    pub(crate) fn lmm_vqa_clip_features(
        &self,
        frames: &[RgbImage],
        fps: f64,
    ) -> Result<WindowFeatures> {
        let chunk_frames = self.chunk_frames()?;
        let r = (fps.round() as usize).max(1);
        let chunks: Vec<Vec<RgbImage>> = (0..frames.len())
            .step_by(r)
            .map(|start| {
                let idx: Vec<usize> = (0..chunk_frames)
                    .map(|i| (start + i).min(frames.len() - 1))
                    .collect();
                self.prepare_each(Role::MotionEncoder, frames, &idx)
            })
            .collect::<Result<_>>()?;
        let chunks: Vec<Vec<&RgbImage>> = chunks.iter().map(|c| refs(c)).collect();
        let kf = keyframe_indices(frames.len(), fps, self.keyframe_phase());
        let keyframes = self.prepare_each(Role::KeyframeEncoder, frames, &kf)?;
        Ok(WindowFeatures {
            keyframes: self.encode_pictures(Role::KeyframeEncoder, &refs(&keyframes))?,
            motion: self.chunk_tokens(&chunks)?,
            stall: None,
        })
    }

    /// CLIP tokens and per-second SlowFast chunk tokens fused into one visual block, then a
    /// generated answer whose first number is the score.
    pub(crate) fn score_by_answer(&self, features: &WindowFeatures) -> Result<Scored> {
        let m = &self.bundle.manifest;
        let count = m.sampling.keyframes.count.ok_or_else(|| {
            Error::Bundle(format!(
                "{}: sampling.keyframes.count is needed for a fused visual block",
                self.manifest_path()
            ))
        })?;
        let (k, chunks) = (features.keyframes.len(), features.motion.len());
        if k == 0 || chunks == 0 {
            return Err(Error::Input(format!(
                "{k} keyframes and {chunks} motion chunks: nothing to score"
            )));
        }
        // The first `count` keyframes, the last repeated to fill; keyframe i takes the chunk
        // of its second, padded keyframes the last chunk.
        let pick = |i: usize| i.min(k - 1);
        let clip: Vec<f32> = (0..count)
            .flat_map(|i| features.keyframes[pick(i)].iter().copied())
            .collect();
        let width = features.motion[0].len();
        let motion: Vec<f32> = (0..count)
            .flat_map(|i| {
                features.motion[i.min(k - 1).min(chunks - 1)]
                    .iter()
                    .copied()
            })
            .collect();
        let per_clip = clip.len() / count.max(1);
        let clip_shape = self.token_shape(Role::KeyframeEncoder, count, per_clip)?;
        let (_, visual) = self.run(
            &PartName::own(Role::VisualProjector),
            vec![
                ("clip_tokens", f32_tensor(clip_shape, clip)),
                (
                    "motion_tokens",
                    f32_tensor(vec![count as i64, width as i64], motion),
                ),
            ],
        )?;
        let prompt = self.prompt()?;
        let mut sequence = Vec::new();
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { .. } => sequence.extend_from_slice(&visual),
                Segment::Text { text } => sequence.extend_from_slice(&self.embed_text(text)?),
            }
        }
        let generated_ids = self.greedy(sequence, m.score.max_new_tokens.unwrap_or(8), None)?;
        let text = self.decode(&generated_ids, false)?;
        let [low, high] = m.score.range.unwrap_or([0.0, 1.0]);
        let score = first_number(&text).map(|v| ((v - low) / (high - low)).clamp(0.0, 1.0));
        Ok(Scored {
            score,
            generated_ids,
            ..Default::default()
        })
    }

    /// The shape of `n` outputs of graph `role` holding `per_item` values each: the declared
    /// output shape with its first dimension set to `n`.
    fn token_shape(&self, role: Role, n: usize, per_item: usize) -> Result<Vec<i64>> {
        let part = self.bundle.part(&PartName::own(role))?;
        let mut shape = vec![n as i64];
        let first = part.outputs.first().ok_or_else(|| {
            Error::Bundle(format!(
                "{}: parts.{role} declares no output",
                self.manifest_path()
            ))
        })?;
        for dim in first.shape.iter().skip(1) {
            match dim {
                Dim::Fixed(d) => shape.push(*d),
                Dim::Named(name) => {
                    return Err(Error::Bundle(format!(
                        "{}: parts.{role}: output dimension {name} must be fixed",
                        self.manifest_path()
                    )));
                }
            }
        }
        let declared: i64 = shape[1..].iter().product();
        if declared as usize != per_item {
            return Err(Error::Input(format!(
                "{role}: {per_item} values per item, the manifest declares {declared}"
            )));
        }
        Ok(shape)
    }
}
