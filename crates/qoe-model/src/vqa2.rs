// SPDX-License-Identifier: MPL-2.0
//! VQA² (UGC-Scorer, Streaming-Scorer, Assistant): vision tokens per keyframe, SlowFast
//! fast-pathway features per frame, projectors into the decoder's embedding space, and one
//! prefill whose level-word logits give the score (spec sections 3–6). Ensembles average the
//! level probabilities of several such models over one prompt and decoder.

use std::sync::Arc;

use crate::bundle::{Block, PartName, Role, Segment};
use crate::error::{Error, Result, panic_message};
use crate::preprocess::RgbImage;
use crate::prompt::{fill_text, stall_text};
use crate::scorer::{
    Scored, Scorer, Values, WindowFeatures, f32_tensor, i64_tensor, keyframe_indices,
    motion_indices, refs, to_channels_first,
};

/// `f`'s result, or its panic as an error: in a batch, a panic on one stream's window must
/// fail only that window (the batch is retried window by window).
fn unpanicked<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::graph(
            PartName::own(Role::DecoderScore),
            format!("the decoder call panicked: {}", panic_message(&*panic)),
        ))
    })
}

/// Whether two rows' pasts are one: the same cached opening, or none (no tokens).
fn same_past(a: &Arc<Vec<Values>>, b: &Arc<Vec<Values>>) -> bool {
    let empty = |p: &Arc<Vec<Values>>| p.iter().all(|(_, data)| data.is_empty());
    Arc::ptr_eq(a, b) || (empty(a) && empty(b))
}

/// One decoder prefill: a window's token embeddings after the prompt opening whose keys and
/// values `past` holds (batch 1).
pub(crate) struct PrefillRow {
    embeds: Vec<f32>,
    past: Arc<Vec<Values>>,
}

impl Scorer {
    /// VQA² fast pathway over consecutive prepared frames (zero-padded at both ends): one
    /// feature vector per frame.
    pub fn motion_features(&self, prepared: &[&RgbImage]) -> Result<Vec<Arc<Vec<f32>>>> {
        let (shape, data) = self.pixels(Role::MotionEncoder, prepared)?;
        // [T, 3, H, W] → [1, 3, T, H, W]
        let (t, hw) = (shape[0] as usize, (shape[2] * shape[3]) as usize);
        let clip = to_channels_first(&data, t, hw);
        self.run_models(Role::MotionEncoder, t, || {
            Ok(vec![(
                "frames",
                f32_tensor(vec![1, 3, t as i64, shape[2], shape[3]], clip.clone()),
            )])
        })
    }

    /// A whole clip's keyframe tokens and per-frame motion features.
    pub(crate) fn vqa2_clip_features(
        &self,
        frames: &[RgbImage],
        fps: f64,
    ) -> Result<WindowFeatures> {
        let motion = self
            .bundle
            .manifest
            .sampling
            .motion
            .as_ref()
            .ok_or_else(|| {
                Error::Bundle(format!(
                    "{}: sampling.motion is missing: a VQA² bundle needs it",
                    self.manifest_path()
                ))
            })?;
        let mo = motion_indices(
            frames.len(),
            motion.stride,
            motion.trim_before_stride,
            motion.multiple,
        );
        if mo.is_empty() {
            return Err(Error::Input(format!(
                "{} frames give no motion frames under this bundle's sampling",
                frames.len()
            )));
        }
        let kf = keyframe_indices(frames.len(), fps, self.keyframe_phase());
        let keyframes = self.prepare_each(Role::KeyframeEncoder, frames, &kf)?;
        let dense = self.prepare_each(Role::MotionEncoder, frames, &mo)?;
        Ok(WindowFeatures {
            keyframes: self.encode_pictures(Role::KeyframeEncoder, &refs(&keyframes))?,
            motion: self.motion_features(&refs(&dense))?,
            stall: None,
        })
    }

    /// The embedded VQA² prompt of model `model` (an index into [`crate::bundle::Bundle::models`]):
    /// keyframe and motion blocks between the text segments. Also returns the stages' outputs
    /// and where the prompt's constant opening ends (in tokens).
    pub(crate) fn vqa2_sequence(
        &self,
        features: &WindowFeatures,
        question: &str,
        model: usize,
    ) -> Result<(Vec<f32>, Scored, usize)> {
        let (k, t) = (features.keyframes.len(), features.motion.len());
        if k == 0 || t == 0 {
            return Err(Error::Input(format!(
                "{k} keyframes and {t} motion frames: nothing to score"
            )));
        }
        let keyframe_embeds = self.model_blocks(&features.keyframes, model);
        let motion_feat = self.model_blocks(&features.motion, model);
        let feat_len = motion_feat.len() / t;
        let mut inputs = vec![(
            "motion_feat",
            f32_tensor(vec![t as i64, feat_len as i64], motion_feat.clone()),
        )];
        // VQA²'s projector adds position embeddings; the micro bundle's pools over time.
        let projector = PartName::of(Role::MotionProjector, self.models[model].as_deref());
        let part = self.bundle.part(&projector)?;
        if part.inputs.iter().any(|i| i.name == "positions") {
            inputs.push((
                "positions",
                i64_tensor(vec![t as i64], (0..t as i64).collect()),
            ));
        }
        let (_, motion_embeds) = self.run(&projector, inputs)?;
        let prompt = self.prompt()?;
        let stall_sentence = stall_text(
            &prompt.stall_format,
            &prompt.stall_text,
            &features.stall.clone().unwrap_or_default(),
        );
        let mut sequence: Vec<f32> = Vec::new();
        let mut prefix = None;
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { embed } => {
                    prefix.get_or_insert(sequence.len() / self.hidden);
                    match embed {
                        Block::Keyframes => {
                            sequence.extend_from_slice(&keyframe_embeds);
                            sequence.extend_from_slice(&self.newline);
                        }
                        Block::Motion => sequence.extend_from_slice(&motion_embeds),
                        Block::Visual => {
                            return Err(Error::Bundle(format!(
                                "{}: prompt block \"visual\" is LMM-VQA's, not VQA²'s",
                                self.manifest_path()
                            )));
                        }
                    }
                }
                Segment::Text { text } => {
                    let filled = fill_text(text, k, t, question, &stall_sentence);
                    sequence.extend_from_slice(&self.embed_text(&filled)?);
                }
            }
        }
        Ok((
            sequence,
            Scored {
                keyframe_embeds,
                motion_feat,
                ..Default::default()
            },
            prefix.unwrap_or(0),
        ))
    }

    /// Level probabilities (averaged over an ensemble's models) and the weighted score. The
    /// models' prefills go to the decoder together, with other streams' where it batches.
    pub(crate) fn score_levels(&self, features: &WindowFeatures) -> Result<Scored> {
        let mut rows = Vec::with_capacity(self.models.len());
        let mut stages = Vec::with_capacity(self.models.len());
        for model in 0..self.models.len() {
            let (row, scored) = self.model_prefill(features, model)?;
            rows.push(row);
            stages.push(scored);
        }
        let logits = self.run_prefills(rows)?;
        let mut first: Option<Scored> = None;
        let mut mean = Vec::new();
        for (logits, stages) in logits.into_iter().zip(stages) {
            let scored = self.levels_of(&logits, stages);
            mean.resize(scored.probabilities.len(), 0.0);
            for (m, p) in mean.iter_mut().zip(&scored.probabilities) {
                *m += p / self.models.len() as f64;
            }
            first.get_or_insert(scored);
        }
        let first = first.ok_or_else(|| Error::Bundle("this bundle has no model".into()))?;
        if self.models.len() == 1 {
            return Ok(first);
        }
        Ok(Scored {
            score: Some(self.weighted_score(&mean)),
            level_logits: mean.iter().map(|p| p.ln()).collect(),
            probabilities: mean,
            ..first
        })
    }

    /// One model's decoder prefill for a window (the tokens after the cached prompt opening),
    /// and its stages' outputs.
    fn model_prefill(
        &self,
        features: &WindowFeatures,
        model: usize,
    ) -> Result<(PrefillRow, Scored)> {
        let m = &self.bundle.manifest;
        let (mut sequence, stages, prefix) = self.vqa2_sequence(features, "", model)?;
        let length = sequence.len() / self.hidden;
        let position = m.score.logit_position.unwrap_or(-1);
        // Under a causal mask nothing after the logit position affects it.
        let keep = (length as i64 + position + 1).max(1) as usize;
        sequence.truncate(keep * self.hidden);
        let past_names = self.past_names(Role::DecoderScore)?;
        let cached = m.decoder.as_ref().is_some_and(|d| d.prefix_cache)
            && !past_names.is_empty()
            && 0 < prefix
            && prefix < keep;
        let row = if cached {
            let rest = sequence.split_off(prefix * self.hidden);
            PrefillRow {
                embeds: rest,
                past: self.prefix_past(sequence, &past_names)?,
            }
        } else {
            PrefillRow {
                embeds: sequence,
                past: Arc::new(self.empty_past(&past_names)?),
            }
        };
        Ok((
            row,
            Scored {
                sequence_length: length,
                ..stages
            },
        ))
    }

    /// Level probabilities and score from one model's level logits.
    fn levels_of(&self, logits: &[f32], stages: Scored) -> Scored {
        let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        let probabilities: Vec<f64> = exp.iter().map(|e| e / total).collect();
        Scored {
            score: Some(self.weighted_score(&probabilities)),
            probabilities,
            level_logits: logits,
            ..stages
        }
    }

    /// The score of level probabilities: their sum weighted by the levels' weights.
    fn weighted_score(&self, probabilities: &[f64]) -> f64 {
        probabilities
            .iter()
            .zip(&self.bundle.manifest.score.levels)
            .map(|(p, level)| p * level.weight)
            .sum()
    }

    /// Each row's level logits: through the batcher where the decoder batches, else one
    /// call per row.
    fn run_prefills(&self, rows: Vec<PrefillRow>) -> Result<Vec<Vec<f32>>> {
        match &self.prefills {
            Some(batcher) => batcher.submit(rows, |requests| self.prefill_requests(requests)),
            None => rows
                .iter()
                .map(|row| Ok(self.prefill_rows(std::slice::from_ref(row))?.swap_remove(0)))
                .collect(),
        }
    }

    /// A batch of requests (each a window's rows, from any stream): one call when they share
    /// the prompt opening's past; if that call fails, each request alone, so that a bad
    /// window fails only its own stream.
    fn prefill_requests(&self, requests: Vec<Vec<PrefillRow>>) -> Vec<Result<Vec<Vec<f32>>>> {
        let alone = |requests: &[Vec<PrefillRow>]| {
            requests
                .iter()
                .map(|rows| unpanicked(|| self.prefill_rows(rows)))
                .collect::<Vec<_>>()
        };
        let first = &requests[0][0].past;
        let shared = requests.iter().flatten().all(|r| same_past(&r.past, first));
        if requests.len() == 1 || !shared {
            return alone(&requests);
        }
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        let all: Vec<PrefillRow> = requests.into_iter().flatten().collect();
        match unpanicked(|| self.prefill_rows(&all)) {
            Ok(logits) => {
                let mut logits = logits.into_iter();
                sizes
                    .iter()
                    .map(|&n| Ok(logits.by_ref().take(n).collect()))
                    .collect()
            }
            Err(_) => {
                let mut all = all.into_iter();
                let requests: Vec<Vec<PrefillRow>> = sizes
                    .iter()
                    .map(|&n| all.by_ref().take(n).collect())
                    .collect();
                alone(&requests)
            }
        }
    }

    /// One `decoder_score` call on `rows` (which share their past): each row's level logits.
    fn prefill_rows(&self, rows: &[PrefillRow]) -> Result<Vec<Vec<f32>>> {
        #[cfg(feature = "test-faults")]
        if let Some(limit) = self.faults.fail_rows_over
            && rows.iter().any(|r| r.embeds.len() / self.hidden > limit)
        {
            return Err(Error::graph(
                PartName::own(Role::DecoderScore),
                format!("test fault: a row of more than {limit} tokens"),
            ));
        }
        let past_names = self.past_names(Role::DecoderScore)?;
        let inputs = self.prefill_inputs(rows, &past_names);
        let (shape, logits) = self
            .run_all(&PartName::own(Role::DecoderScore), inputs)?
            .swap_remove(0);
        let width = shape.last().copied().unwrap_or(0).max(0) as usize;
        if width == 0 || logits.len() != width * rows.len() {
            return Err(Error::graph(
                PartName::own(Role::DecoderScore),
                format!(
                    "level logits of shape {shape:?} for {} rows of {} levels",
                    rows.len(),
                    self.bundle.manifest.score.levels.len()
                ),
            ));
        }
        Ok(logits.chunks_exact(width).map(<[f32]>::to_vec).collect())
    }

    /// A `decoder_score` call's inputs for `rows`, which share their past: their tokens
    /// left-padded to the longest, the attention mask where the graph takes one (1 for the
    /// past and each row's own tokens), and the past once per row.
    fn prefill_inputs(
        &self,
        rows: &[PrefillRow],
        past_names: &[String],
    ) -> Vec<(String, crate::runner::Input)> {
        let hidden = self.hidden;
        let lengths: Vec<usize> = rows.iter().map(|r| r.embeds.len() / hidden).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let past = &rows[0].past;
        let past_len = past.first().map_or(0, |(shape, _)| shape[2] as usize);
        let batch = rows.len();
        let mut embeds = vec![0f32; batch * longest * hidden];
        let mut mask = vec![0i64; batch * (past_len + longest)];
        for (i, (row, &n)) in rows.iter().zip(&lengths).enumerate() {
            let end = (i + 1) * longest * hidden;
            embeds[end - n * hidden..end].copy_from_slice(&row.embeds);
            let row_mask = &mut mask[i * (past_len + longest)..(i + 1) * (past_len + longest)];
            row_mask[..past_len].fill(1);
            row_mask[past_len + longest - n..].fill(1);
        }
        let mut inputs = vec![(
            "inputs_embeds".to_owned(),
            f32_tensor(vec![batch as i64, longest as i64, hidden as i64], embeds),
        )];
        if self.decoder_takes_mask {
            inputs.push((
                "attention_mask".to_owned(),
                i64_tensor(vec![batch as i64, (past_len + longest) as i64], mask),
            ));
        }
        for (name, (shape, data)) in past_names.iter().zip(past.iter()) {
            let mut shape = shape.clone();
            shape[0] = batch as i64;
            inputs.push((name.clone(), f32_tensor(shape, data.repeat(batch))));
        }
        inputs
    }

    /// The decoder's keys and values for the prompt opening `prefix` (embeddings), computed
    /// once and kept while the opening stays the same.
    fn prefix_past(&self, prefix: Vec<f32>, past_names: &[String]) -> Result<Arc<Vec<Values>>> {
        let mut cache = self.prefix_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((embeds, past)) = cache.as_ref()
            && *embeds == prefix
        {
            return Ok(past.clone());
        }
        let row = PrefillRow {
            embeds: prefix.clone(),
            past: Arc::new(self.empty_past(past_names)?),
        };
        let inputs = self.prefill_inputs(std::slice::from_ref(&row), past_names);
        let mut outputs = self.run_all(&PartName::own(Role::DecoderScore), inputs)?;
        let past = Arc::new(outputs.split_off(1));
        *cache = Some((prefix, past.clone()));
        Ok(past)
    }

    /// A greedy answer about a clip to `question` (Assistant bundles): token ids and text.
    pub fn explain(
        &self,
        frames: &[RgbImage],
        fps: f64,
        question: &str,
        max_new_tokens: usize,
        step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(Vec<u32>, String)> {
        let features = self.clip_features(frames, fps)?;
        self.explain_window(&features, question, max_new_tokens, step_logits)
    }

    /// A greedy answer about a window's features to `question` (Assistant bundles).
    pub fn explain_window(
        &self,
        features: &WindowFeatures,
        question: &str,
        max_new_tokens: usize,
        step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(Vec<u32>, String)> {
        // An ensemble explains with its own model: a greedy answer cannot be averaged.
        let (sequence, _, _) = self.vqa2_sequence(features, question, 0)?;
        let ids = self.greedy(sequence, max_new_tokens, step_logits)?;
        let text = self.decode(&ids, true)?;
        Ok((ids, text))
    }
}
