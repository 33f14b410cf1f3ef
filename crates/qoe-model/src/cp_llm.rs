// SPDX-License-Identifier: MPL-2.0
//! CP-LLM: a high-level and a low-level encoder per keyframe and a quality head over both;
//! a window's score is the mean of its keyframes' scores.

use std::sync::Arc;

use crate::bundle::{PartName, Role};
use crate::error::{Error, Result};
use crate::preprocess::RgbImage;
use crate::scorer::{Scored, Scorer, WindowFeatures, f32_tensor, keyframe_indices, refs, split};

impl Scorer {
    /// Each keyframe's score from its two encodings.
    pub fn frame_scores(
        &self,
        high: &[&RgbImage],
        low: &[&RgbImage],
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        let h = self.pixels(Role::HighLevelEncoder, high)?;
        let h = self.run(
            &PartName::own(Role::HighLevelEncoder),
            vec![("pixel_values", f32_tensor(h.0, h.1))],
        )?;
        let l = self.pixels(Role::LowLevelEncoder, low)?;
        let l = self.run(
            &PartName::own(Role::LowLevelEncoder),
            vec![("pixel_values", f32_tensor(l.0, l.1))],
        )?;
        let (_, scores) = self.run(
            &PartName::own(Role::QualityHead),
            vec![
                ("high_level", f32_tensor(h.0, h.1)),
                ("low_level", f32_tensor(l.0, l.1)),
            ],
        )?;
        Ok(split(scores, high.len()))
    }

    /// A whole clip's keyframe scores.
    pub(crate) fn cp_llm_clip_features(
        &self,
        frames: &[RgbImage],
        fps: f64,
    ) -> Result<WindowFeatures> {
        let kf = keyframe_indices(frames.len(), fps, self.keyframe_phase());
        let high = self.prepare_each(Role::HighLevelEncoder, frames, &kf)?;
        let low = self.prepare_each(Role::LowLevelEncoder, frames, &kf)?;
        Ok(WindowFeatures {
            keyframes: self.frame_scores(&refs(&high), &refs(&low))?,
            ..Default::default()
        })
    }

    /// The window's score: the mean of its keyframes' scores.
    pub(crate) fn score_by_head(&self, features: &WindowFeatures) -> Result<Scored> {
        let frame_scores: Vec<f32> = features
            .keyframes
            .iter()
            .flat_map(|s| s.iter())
            .copied()
            .collect();
        if frame_scores.is_empty() {
            return Err(Error::Input("no keyframe in the window".into()));
        }
        let score = frame_scores.iter().map(|&v| v as f64).sum::<f64>() / frame_scores.len() as f64;
        Ok(Scored {
            score: Some(score),
            frame_scores,
            ..Default::default()
        })
    }
}
